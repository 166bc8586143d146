"""Where users, sessions, rooms and messages live.

`memory` (the embedded default) keeps everything in this process. The interface in `base` is
what a shared store (Redis, for scale-out) implements as well.
"""

from __future__ import annotations

from service.store.base import ChatStore, JoinResult, LeaveResult, Message
from service.store.memory import MemoryStore

__all__ = ["ChatStore", "JoinResult", "LeaveResult", "MemoryStore", "Message", "open_store"]


def open_store(uri: str, history_limit: int, max_rooms: int) -> ChatStore:
    if uri == "memory":
        return MemoryStore(history_limit=history_limit, max_rooms=max_rooms)
    if uri.startswith(("redis://", "rediss://", "unix://")):
        from service.store.redis import RedisStore

        return RedisStore(uri, history_limit=history_limit, max_rooms=max_rooms)
    raise ValueError(f"CHAT_STORE={uri!r}: use 'memory' (the default) or a redis:// URL")


def rate_limit_storage(uri: str) -> str:
    """Where the rate limits count: in this process, or in the shared Redis."""
    return "memory://" if uri == "memory" else uri
