"""`GET /readyz`: can this process reach what it needs (its store, its message queue) now?"""

from __future__ import annotations

from typing import Any

from service.store import ChatStore


class Readiness:
    """The store is pinged through its own client; the message queue through a client of its
    own here (one per app, pooled), since Flask-SocketIO's queue client is not ours to probe."""

    def __init__(self, store: ChatStore, message_queue: str | None) -> None:
        self.store = store
        self.queue: Any = None
        if message_queue is not None:
            import redis

            self.queue = redis.Redis.from_url(
                message_queue, socket_timeout=1, socket_connect_timeout=1
            )

    def checks(self) -> dict[str, str]:
        """Each part: `ok`, `unreachable`, or `disabled` (no message queue configured)."""
        found = {"store": "ok", "message_queue": "disabled"}
        try:
            self.store.ping()
        except Exception:
            found["store"] = "unreachable"
        if self.queue is not None:
            found["message_queue"] = "ok" if self._queue_answers() else "unreachable"
        return found

    def _queue_answers(self) -> bool:
        import redis

        try:
            return bool(self.queue.ping())
        except redis.RedisError:
            return False
