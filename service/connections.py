"""The Socket.IO connections this process holds: who is behind each sid, and its rooms.

This is the process's own view, kept beside the store: it answers "is this connection in that
room" without a store round trip, and it is what the gauges report (connections, users online,
rooms and their members, as seen by this process; with several processes Prometheus sums them).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field


@dataclass
class Connection:
    sid: str
    user: str
    session_token: str
    transport: str
    connected_at: float = field(default_factory=time.monotonic)
    rooms: set[str] = field(default_factory=set)


class ConnectionRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_sid: dict[str, Connection] = {}
        self._room_users: dict[str, Counter[str]] = {}  # room -> user -> connections in it
        self._per_user: Counter[str] = Counter()  # user -> connections
        self._rooms_of: dict[str, Counter[str]] = {}  # user -> room -> their connections in it

    def add(self, connection: Connection) -> None:
        with self._lock:
            self._by_sid[connection.sid] = connection
            self._per_user[connection.user] += 1

    def remove(self, sid: str) -> Connection | None:
        """Forget a connection; it must have left its rooms (`exit`) first."""
        with self._lock:
            connection = self._by_sid.pop(sid, None)
            if connection is not None:
                self._per_user[connection.user] -= 1
                if self._per_user[connection.user] <= 0:
                    del self._per_user[connection.user]
            return connection

    def count_of(self, user: str) -> int:
        return self._per_user.get(user, 0)

    def rooms_of(self, user: str) -> Collection[str]:
        """The rooms `user` is in through any of their connections here."""
        return self._rooms_of.get(user, {}).keys()

    def get(self, sid: str) -> Connection | None:
        return self._by_sid.get(sid)

    def enter(self, connection: Connection, room: str) -> bool:
        """The connection is in `room` now. True when the room had nobody here before."""
        with self._lock:
            connection.rooms.add(room)
            users = self._room_users.setdefault(room, Counter())
            activated = not users
            users[connection.user] += 1
            self._rooms_of.setdefault(connection.user, Counter())[room] += 1
            return activated

    def exit(self, connection: Connection, room: str) -> bool:
        """The connection left `room`. True when nobody here is in it any more."""
        with self._lock:
            if room not in connection.rooms:
                return False
            connection.rooms.discard(room)
            users = self._room_users[room]
            users[connection.user] -= 1
            if users[connection.user] <= 0:
                del users[connection.user]
            rooms = self._rooms_of[connection.user]
            rooms[room] -= 1
            if rooms[room] <= 0:
                del rooms[room]
                if not rooms:
                    del self._rooms_of[connection.user]
            if users:
                return False
            del self._room_users[room]
            return True

    def all(self) -> list[Connection]:
        with self._lock:
            return list(self._by_sid.values())

    def with_session(self, token: str) -> list[Connection]:
        with self._lock:
            return [c for c in self._by_sid.values() if c.session_token == token]

    def count(self) -> int:
        return len(self._by_sid)

    def users_online(self) -> int:
        return len(self._per_user)

    def room_member_counts(self) -> dict[str, int]:
        """Users in each room that has somebody here."""
        with self._lock:
            return {room: len(users) for room, users in self._room_users.items()}

    def active_rooms(self) -> int:
        return len(self._room_users)
