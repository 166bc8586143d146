"""Redis connection pools that make a command wait for a connection instead of failing.

Under eventlet or gevent every green thread that talks to Redis holds a connection while it
waits for the reply, so a burst of concurrent messages needs as many connections at once.
redis-py's default pool refuses the command past its cap (100 connections in redis-py 8:
"Too many connections"); a blocking pool keeps at most `POOL_SIZE` connections and lets the
rest wait up to `POOL_WAIT_S` for one to come back. The store, the shared rate limits and the
message queue each have one.
"""

from __future__ import annotations

from typing import Any, Final

import redis

POOL_SIZE: Final = 50  # connections per pool and process
POOL_WAIT_S: Final = 5.0  # how long a command waits for a free connection before it fails


def blocking_pool(url: str, **options: Any) -> redis.BlockingConnectionPool:
    return redis.BlockingConnectionPool.from_url(
        url, max_connections=POOL_SIZE, timeout=POOL_WAIT_S, **options
    )
