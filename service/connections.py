"""The Socket.IO connections this process holds: who is behind each sid, and its rooms.

This is the process's own view, kept beside the store: it answers "is this connection in that
room" without a store round trip, and it is what the gauges report (connections, users online,
rooms and their members, as seen by this process; with several processes Prometheus sums them).

It changes first, the store follows: a closed socket or a left room is gone from here at once,
even while the store does not answer, so the gauges and each user's connection slots always
follow the sockets. What the store still has to be told is `owed` (`OwedStoreWork`): membership
changes in the order they happened here, done by `ChatService.settle_store_work` now or, when
the store fails, by its retries.

The queue is bounded by the connections, with no cap of its own: no join reaches the store
while anything is owed, so from the moment the queue stops being empty no new membership is
made except by the joins already in flight (one per connection: a connection's joins run one at
a time). Each entry is the departure of a membership that existed then (at most
`CHAT_MAX_ROOMS_PER_CONNECTION` per connection) or the outcome of one of those joins: at most
`CHAT_MAX_CONNECTIONS` * (`CHAT_MAX_ROOMS_PER_CONNECTION` + 1) entries of a few hundred bytes.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Collection
from dataclasses import dataclass, field

from service.telemetry.metrics import LeaveReason


@dataclass
class Connection:
    sid: str
    user: str
    session_token: str
    connected_at: float = field(default_factory=time.monotonic)
    rooms: set[str] = field(default_factory=set)
    departed: bool = False  # the transport ended: forgotten here, maybe not yet in the store
    # Held while the connection joins or leaves a room, so the store and this view change in
    # the same order for it (a join's outcome must not land after a later leave).
    membership_lock: threading.Lock = field(
        default_factory=threading.Lock, repr=False, compare=False
    )


@dataclass(frozen=True, slots=True)
class Departure:
    """The connection left `room` here; the store must drop it, then the room hears `left`."""

    room: str
    user: str
    sid: str
    reason: LeaveReason


@dataclass(frozen=True, slots=True)
class CancelledJoin:
    """A join whose store call failed (it may still run there): fence the attempt off, and with
    `remove` take the connection out of the room in the store (this view never had it in)."""

    room: str
    user: str
    sid: str
    attempt: str
    remove: bool


StoreWork = Departure | CancelledJoin


class OwedStoreWork:
    """Membership changes made here that the store has not confirmed, oldest first.

    One caller at a time works through it (`settling`), head first, and removes an entry only
    once the store confirmed it: so entries reach the store in order, and each is reported once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.settling = threading.Lock()
        self._entries: deque[tuple[int, StoreWork]] = deque()
        self._next = 0
        self.failing = False  # the last attempt failed: inline callers leave it to the retries

    def add(self, *entries: StoreWork) -> int:
        """Queue `entries`; returns the number of the last one (numbers grow, in queue order)."""
        with self._lock:
            for entry in entries:
                self._next += 1
                self._entries.append((self._next, entry))
            return self._next

    def head(self) -> tuple[int, StoreWork] | None:
        with self._lock:
            return self._entries[0] if self._entries else None

    def pop(self, number: int) -> None:
        """The head entry `number` is confirmed by the store."""
        with self._lock:
            if self._entries and self._entries[0][0] == number:
                self._entries.popleft()

    def __len__(self) -> int:
        return len(self._entries)


class ConnectionRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_sid: dict[str, Connection] = {}
        self._room_users: dict[str, Counter[str]] = {}  # room -> user -> connections in it
        self._per_user: Counter[str] = Counter()  # user -> connections
        self._rooms_of: dict[str, Counter[str]] = {}  # user -> room -> their connections in it
        self.owed = OwedStoreWork()

    def add(self, connection: Connection) -> None:
        with self._lock:
            self._by_sid[connection.sid] = connection
            self._per_user[connection.user] += 1

    def depart(self, sid: str) -> tuple[Connection, list[str]] | None:
        """The transport ended: forget the connection and its rooms here now, whatever the
        store says. Returns it with the rooms it was in (sorted), which the store must still
        drop; None when it was not here."""
        with self._lock:
            connection = self._by_sid.pop(sid, None)
            if connection is None:
                return None
            connection.departed = True
            rooms = sorted(connection.rooms)
            for room in rooms:
                self._exit(connection, room)
            self._per_user[connection.user] -= 1
            if self._per_user[connection.user] <= 0:
                del self._per_user[connection.user]
            return connection, rooms

    def count_of(self, user: str) -> int:
        return self._per_user.get(user, 0)

    def rooms_of(self, user: str) -> Collection[str]:
        """The rooms `user` is in through any of their connections here."""
        return self._rooms_of.get(user, {}).keys()

    def get(self, sid: str) -> Connection | None:
        return self._by_sid.get(sid)

    def enter(self, connection: Connection, room: str) -> bool | None:
        """The connection is in `room` now. True when the room had nobody here before; None
        when the connection departed meanwhile (then nothing changes)."""
        with self._lock:
            if connection.departed:
                return None
            if room in connection.rooms:
                return False
            connection.rooms.add(room)
            users = self._room_users.setdefault(room, Counter())
            activated = not users
            users[connection.user] += 1
            self._rooms_of.setdefault(connection.user, Counter())[room] += 1
            return activated

    def exit(self, connection: Connection, room: str) -> bool:
        """The connection left `room`. True when nobody here is in it any more."""
        with self._lock:
            return self._exit(connection, room)

    def _exit(self, connection: Connection, room: str) -> bool:
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

    def users_in(self, room: str) -> list[str]:
        """The users with a connection here in `room`."""
        with self._lock:
            return list(self._room_users.get(room, ()))

    def room_is_active(self, room: str) -> bool:
        """Somebody here is in `room`."""
        return room in self._room_users

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
