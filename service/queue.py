"""The Socket.IO message queue that carries broadcasts between processes (`CHAT_MESSAGE_QUEUE`).

python-socketio's `RedisManager` on a blocking connection pool (`service.redispool`): its own
client's pool refuses a publish when all its connections are in use, and python-socketio drops
such an emit after one retry; here a burst of concurrent emits waits for a connection instead.

It also carries the chat's own word between its processes, on the same channel: a user gave up
a private room (`revoke_access`), so every process takes that user's connections out of the
room. The same channel, because the order matters: python-socketio delivers the messages of one
channel in the order Redis got them, so a message broadcast to the room after the revocation
reaches each process after it, once the user's connections there are out of the room.
python-socketio's listener (`PubSubManager._thread`) dispatches what it reads by `method` and
ignores methods it does not know; ours are taken out of what it reads (`_listen`) before it
sees them, and handed to the chat.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final
from urllib.parse import urlparse

import socketio

from service.redispool import blocking_pool

CHANNEL: Final = "flask-socketio"  # Flask-SocketIO's default: processes must agree on it
REVOKE: Final = "chat_revoke"  # {method, room, user, host_id}: see `revoke_access`
# Every message of ours holds this; python-socketio's never do (their methods are `emit`,
# `callback`, `disconnect`, `enter_room`, `leave_room`, `close_room`). A broadcast whose text
# holds it too is parsed once more and passed on: the test is only there to spare every other
# broadcast a second parse.
MARK: Final = REVOKE.encode()


class PooledRedisManager(socketio.RedisManager):  # type: ignore[misc]
    def __init__(self, url: str) -> None:
        super().__init__(url, channel=CHANNEL)
        # `ChatService.access_revoked`, set once the chat exists (`service.app`).
        self.on_revoke: Callable[[str, str], None] | None = None

    def _redis_connect(self) -> None:
        if urlparse(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            super()._redis_connect()  # Sentinel, Valkey: python-socketio's own way
            return
        import redis

        client: Any = redis.Redis(connection_pool=blocking_pool(self.redis_url))
        self.redis = client
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.connected = True

    def revoke_access(self, room: str, user: str) -> None:
        """Tell every other process that `user` (case-folded) gave up the private `room`.

        Raises when Redis did not take it (python-socketio's `_publish` tries twice, then gives
        up and returns None): the leave is refused, and the user can try again."""
        message = {"method": REVOKE, "room": room, "user": user, "host_id": self.host_id}
        if self._publish(message) is None:
            raise ConnectionError("the message queue did not take the revocation")

    def _listen(self) -> Iterator[Any]:
        """python-socketio's messages, in order; the chat's own are handled here, in turn."""
        for raw in super()._listen():
            if (MARK if isinstance(raw, bytes) else REVOKE) not in raw or not self._handled(raw):
                yield raw

    def _handled(self, raw: Any) -> bool:
        try:
            message = self.json.loads(raw)
        except ValueError:
            return False
        if not isinstance(message, dict) or message.get("method") != REVOKE:
            return False
        room, user = message.get("room"), message.get("user")
        # This process handled its own revocation before publishing it.
        if message.get("host_id") == self.host_id or self.on_revoke is None:
            return True
        if isinstance(room, str) and isinstance(user, str):
            try:
                self.on_revoke(room, user)
            except Exception:  # an exception here would end the listener's subscription
                self._get_logger().exception("chat_revoke handler failed")
        return True
