"""Rate limits on logins, registrations and messages: moving windows, in memory or in Redis.

Limits are written in the `limits` library's syntax (`20 per 10 seconds`) and parsed by it.
With a Redis store the counters live in Redis through `limits`' moving-window strategy, so
every process shares them. In memory they live here (`MemoryWindows`): `limits`' in-memory
storage starts an expiry timer thread every few milliseconds while hits arrive, which under
eventlet or gevent is a green thread and a hub wake-up per message; a moving window needs no
timer when each key keeps only the times of its latest hits and expired keys are dropped as
the oldest ones are touched.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from functools import lru_cache
from typing import Protocol

from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from service.redispool import blocking_pool

SWEEP_PER_HIT = 2  # idle keys looked at (and dropped when expired) with every hit


@lru_cache(maxsize=32)
def _parse(limit: str) -> RateLimitItem:
    return parse(limit)


class Windows(Protocol):
    def hit(self, item: RateLimitItem, *keys: str) -> float | None: ...


class MemoryWindows:
    """Moving windows in this process: a key keeps the times of its last `amount` hits.

    A hit is refused when the key's oldest kept hit is still inside the window. Keys are kept
    least recently hit first; each hit drops up to `SWEEP_PER_HIT` of the oldest keys whose
    newest hit has left its window, so memory holds only the keys active within their window.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (limit, keys) -> (window seconds, times of the latest hits, oldest first)
        self._keys: OrderedDict[tuple[str, ...], tuple[float, deque[float]]] = OrderedDict()

    def hit(self, item: RateLimitItem, *keys: str) -> float | None:
        window = float(item.get_expiry())
        key = (str(item), *keys)
        now = time.monotonic()
        with self._lock:
            entry = self._keys.get(key)
            if entry is None:
                entry = self._keys[key] = (window, deque(maxlen=item.amount))
            else:
                self._keys.move_to_end(key)
            _, hits = entry
            if len(hits) == hits.maxlen and hits[0] > now - window:
                return max(1.0, math.ceil(hits[0] + window - now))
            hits.append(now)
            self._sweep(now)
        return None

    def _sweep(self, now: float) -> None:
        for _ in range(SWEEP_PER_HIT):
            oldest = next(iter(self._keys.items()), None)
            if oldest is None:
                return
            key, (window, hits) = oldest
            if hits and hits[-1] > now - window:
                return
            del self._keys[key]

    def __len__(self) -> int:
        return len(self._keys)


class SharedWindows:
    """Moving windows in the shared Redis, through `limits` (one Lua script per hit)."""

    def __init__(self, storage_uri: str) -> None:
        storage = RedisStorage(
            storage_uri, connection_pool=blocking_pool(storage_uri), key_prefix="chat:limits"
        )
        self.strategy = MovingWindowRateLimiter(storage)

    def hit(self, item: RateLimitItem, *keys: str) -> float | None:
        if self.strategy.hit(item, *keys):
            return None
        stats = self.strategy.get_window_stats(item, *keys)
        return max(1.0, math.ceil(stats.reset_time - time.time()))


class RateLimiter:
    """`hit(limit, key…)` counts one attempt; it returns the seconds to wait when over."""

    def __init__(self, storage_uri: str = "memory://") -> None:
        self.windows: Windows = (
            MemoryWindows() if storage_uri.startswith("memory") else SharedWindows(storage_uri)
        )

    def hit(self, limit: str, *keys: str) -> float | None:
        return self.windows.hit(_parse(limit), *keys)
