"""The Socket.IO message queue that carries broadcasts between processes (`CHAT_MESSAGE_QUEUE`).

python-socketio's `RedisManager` on a blocking connection pool (`service.redispool`): its own
client's pool refuses a publish when all its connections are in use, and python-socketio drops
such an emit after one retry; here a burst of concurrent emits waits for a connection instead.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlparse

import socketio

from service.redispool import blocking_pool

CHANNEL: Final = "flask-socketio"  # Flask-SocketIO's default: processes must agree on it


class PooledRedisManager(socketio.RedisManager):  # type: ignore[misc]
    def __init__(self, url: str) -> None:
        super().__init__(url, channel=CHANNEL)

    def _redis_connect(self) -> None:
        if urlparse(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            super()._redis_connect()  # Sentinel, Valkey: python-socketio's own way
            return
        import redis

        client: Any = redis.Redis(connection_pool=blocking_pool(self.redis_url))
        self.redis = client
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.connected = True
