"""Rate limits on logins, registrations and messages, backed by the `limits` library.

`limits` gives moving windows over an in-memory or Redis storage with the same code, so the
scale-out setup shares its counters across processes without code of ours.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter


@lru_cache(maxsize=32)
def _parse(limit: str) -> RateLimitItem:
    return parse(limit)


class RateLimiter:
    """`hit(limit, key…)` counts one attempt; it returns the seconds to wait when over."""

    def __init__(self, storage_uri: str = "memory://") -> None:
        options = {} if storage_uri.startswith("memory") else {"key_prefix": "chat:limits"}
        self.storage = storage_from_string(storage_uri, **options)
        self.strategy = MovingWindowRateLimiter(self.storage)

    def hit(self, limit: str, *keys: str) -> float | None:
        item = _parse(limit)
        if self.strategy.hit(item, *keys):
            return None
        stats = self.strategy.get_window_stats(item, *keys)
        return max(1.0, math.ceil(stats.reset_time - time.time()))
