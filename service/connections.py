"""The Socket.IO connections this process holds: who is behind each sid, and its rooms."""

from __future__ import annotations

import threading
import time
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

    def add(self, connection: Connection) -> None:
        with self._lock:
            self._by_sid[connection.sid] = connection

    def remove(self, sid: str) -> Connection | None:
        with self._lock:
            return self._by_sid.pop(sid, None)

    def get(self, sid: str) -> Connection | None:
        return self._by_sid.get(sid)

    def all(self) -> list[Connection]:
        with self._lock:
            return list(self._by_sid.values())

    def with_session(self, token: str) -> list[Connection]:
        with self._lock:
            return [c for c in self._by_sid.values() if c.session_token == token]

    def count(self) -> int:
        return len(self._by_sid)

    def users_online(self) -> int:
        with self._lock:
            return len({c.user for c in self._by_sid.values()})
