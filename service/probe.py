"""The end-to-end delivery probe (`CHAT_PROBE_INTERVAL`): would a message sent now arrive?

Every interval each process sends a probe down the path a chat message takes and waits for it
to arrive at a real Socket.IO connection:

1. the store: the probe is appended to the history of the service's own room `_probe`
   (`ChatStore.append_message`, the call `post_message` makes; the room holds no member, so it
   is in no room list, and users cannot name it: room names never start with `_`);
2. the broadcast: it is emitted to the probe's Socket.IO room, in a namespace of its own
   (`/_probe`), so no chat connection can be in that room and the chat's handlers, gauges and
   log lines never see it;
3. the message queue, when there is one: it is published on Flask-SocketIO's Redis channel by
   a write-only queue member with a host id of its own (the way python-socketio lets another
   process emit), so every process's listener delivers it, this one's included. python-socketio
   hands a process's own emits to its local clients without Redis; this way the probe crosses
   Redis even back to its sender;
4. the connection: each process holds one Socket.IO connection to its own port (Engine.IO 4
   over a WebSocket, through the same transport screening as any client), authenticated with
   a random per-process token. It is in the probe's rooms only.

With a message queue the processes of one chat know each other through a registry in Redis
(`chat:probe:peers`: each process's id and when its entry expires, by Redis's clock, refreshed
every interval). A process that receives another's probe answers it through the queue, so each
probe is expected by this process's own connection (`path` `self`) and by every live peer's
(`path` `peer`, timed until the peer's answer is back). Without a queue the one expectation is
this process's own connection (`path` `local`).

Each expected arrival is one observation of `chat_probe_delivery_seconds` (from the store step
to the arrival) or, when it is not there within the timeout (half the interval, at
most 5 s), one `timeout` in `chat_probe_failures_total` and one `probe_failed` line naming the
path and the process. A probe that cannot be sent at all (the store, the queue or the probe's
connection fails) is one `error` and one line. A listener that stopped receiving (python-socketio
issue #1581) thus fails its own process's next probe (`self`) and every peer's (`peer`, naming
it): detected within two intervals. A working probe writes nothing.

Memory is bounded: at most `MAX_IN_FLIGHT` probes wait at once, each for at most the live peers.
Everything runs in the server's own background tasks (`socketio.start_background_task`,
`socketio.sleep`) on monkey-patched sockets: nothing blocks the event loop. It runs under
eventlet and gevent (`chat-service`, and gunicorn's gevent worker, where it connects to
`CHAT_HOST:CHAT_PORT` as the bind); under `flask --app service run` (threading) it is off.

Shutdown: the server closes every connection that is not a chat connection when it stops
(`Service.disconnect_everyone`), the probe's included, with the reason `server disconnect`.
That is the probe's signal to stop: it drops its waiting probes silently, leaves the registry
(so the peers stop expecting it), and logs nothing more, so `service_stopping` stays the last
line. No other code closes the probe's connection with that reason.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
import os
import secrets
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import socketio
from flask import Flask
from flask_socketio import SocketIO

from service.clock import utc_now_iso
from service.queue import CHANNEL
from service.settings import Settings
from service.store import ChatStore
from service.store.base import RoomLimitReached
from service.telemetry.events import Telemetry
from service.telemetry.metrics import ConnectRejection, ProbeFailure

NAMESPACE: Final = "/_probe"  # the probe's Socket.IO namespace: no chat connection is in it
STORE_ROOM: Final = "_probe"  # the store room probes are appended to (a reserved name)
STORE_USER: Final = "_probe"
EVERYONE: Final = "all"  # the Socket.IO room (in NAMESPACE) of every process's probe connection
EXTENSION_KEY: Final = "chat_probe"  # app.extensions[...]: the app's DeliveryProbe, when it runs

# Paths a probe takes (the `path` of a `probe_failed` line).
LOCAL: Final = "local"  # no message queue: this process's broadcast to its own connection
SELF: Final = "self"  # through the message queue back to this process's own connection
PEER: Final = "peer"  # through the message queue to another process, and its answer back

TIMEOUT_SHARE: Final = 0.5  # of the interval: a fault is seen within 1.5 intervals (2 asked)
TIMEOUT_MAX_S: Final = 5.0  # the longest a probe waits (the histogram's last bucket)
MAX_IN_FLIGHT: Final = 16  # probes waiting at once; an older one is failed to make place
CONNECT_TIMEOUT_S: Final = 5.0  # for each step of the probe connection's handshake
REGISTRY_KEY: Final = "chat:probe:peers"  # hash: process id -> expiry (ms, Redis's clock)
ERROR_TEXT_LIMIT: Final = 200  # characters of an exception's text kept in a `probe_failed`

# Refresh this process's entry (unless the ttl is ''), drop expired ones, return the live ids.
# The time is Redis's own, so the processes' clocks need not agree.
_REGISTRY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2])) end
local live = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) < now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    live[#live + 1] = all[i]
  end
end
return live
"""


class ProbeError(Exception):
    """The probe's connection could not be opened."""


def install_probe(
    app: Flask, settings: Settings, store: ChatStore, socketio_ext: SocketIO, telemetry: Telemetry
) -> DeliveryProbe | None:
    """Start the probe when it is on (`CHAT_PROBE_INTERVAL` > 0) and the server has an event
    loop (eventlet, gevent); None otherwise. `CHAT_PORT=0` (a port the system picks) leaves it
    off too: the probe would not know where to connect."""
    if settings.probe_interval <= 0 or settings.async_mode == "threading" or not settings.port:
        return None
    probe = DeliveryProbe(
        interval=settings.probe_interval,
        url=loopback_url(settings.host, settings.port),
        port=settings.port,
        store=store,
        socketio_ext=socketio_ext,
        telemetry=telemetry,
        queue_url=settings.message_queue,
    )
    app.extensions[EXTENSION_KEY] = probe
    probe.start()
    return probe


def loopback_url(host: str, port: int) -> str:
    """Where the probe connects: the server's own address (a wildcard one as loopback)."""
    if host in ("", "0.0.0.0"):  # noqa: S104 (reading the setting, not binding)
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{port}/socket.io/?EIO=4&transport=websocket"


def describe_error(step: str, error: BaseException) -> str:
    text = f"{step}: {type(error).__name__}: {error}".replace("\n", " ")
    return text if len(text) <= ERROR_TEXT_LIMIT else text[:ERROR_TEXT_LIMIT] + "…"


@dataclass
class Probe:
    """One probe on its way: when it was sent, and who has still to receive it (id -> path)."""

    seq: int
    sent_at: float  # time.perf_counter()
    waiting: dict[str, str]


class DeliveryProbe:
    def __init__(
        self,
        *,
        interval: float,
        url: str,
        port: int,
        store: ChatStore,
        socketio_ext: SocketIO,
        telemetry: Telemetry,
        queue_url: str | None,
    ) -> None:
        self.interval = interval
        self.timeout = min(TIMEOUT_SHARE * interval, TIMEOUT_MAX_S)
        self.store = store
        self.socketio = socketio_ext
        self.telemetry = telemetry
        # Readable in a `probe_failed` line, unique even for processes that share a pid.
        self.id = f"{socket.gethostname()}:{port}:{os.getpid()}:{secrets.token_hex(2)}"
        self.token = secrets.token_urlsafe(32)
        self.queue = (
            QueueSide(queue_url, self.id, self._registry_ttl_ms(), self.timeout)
            if queue_url
            else None
        )
        self.client = LoopbackClient(url, self.token, self._on_event, self._spawn)
        self.server_sid: str | None = None  # the probe connection's sid on the server side
        self.stopped = False
        self._probes: OrderedDict[int, Probe] = OrderedDict()
        self._lock = threading.Lock()
        self._seq = 0
        socketio_ext.server.register_namespace(ProbeNamespace(self))
        telemetry.metrics.enable_probe()

    def _registry_ttl_ms(self) -> int:
        """A peer is expected while its entry lives: three intervals, plus a second of slack."""
        return int((3 * self.interval + 1.0) * 1000)

    def _spawn(self, target: Callable[..., Any], *args: Any) -> None:
        self.socketio.start_background_task(target, *args)

    # -- the loop ------------------------------------------------------------------------------
    def start(self) -> None:
        self._spawn(self._run)

    def _run(self) -> None:
        # Connect at once (the server listens by the time this task runs), so the connection
        # is there to be closed, and this probe stopped, whenever the server stops.
        with contextlib.suppress(Exception):
            self.client.connect()
        while True:
            self.socketio.sleep(self.interval)
            if self.stopped:
                return
            try:
                self.send()
            except Exception:  # whatever went wrong, the next interval probes again
                self.telemetry.unhandled_error("delivery probe")

    def send(self) -> None:
        """One probe: store it, broadcast it (through the queue when there is one), and have
        its arrivals awaited until the timeout."""
        own_path = SELF if self.queue is not None else LOCAL
        started = time.perf_counter()
        if not self.client.open:
            try:
                self.client.connect()
            except Exception as error:
                self._failed_to_send(own_path, started, describe_error("connection", error))
            if self.stopped:  # stopped while it connected: nobody closes it but this
                self.client.close()
            # A fresh connection gets one interval before its first probe: the message queue's
            # listener (started by a process's first connection) subscribes meanwhile.
            return
        receivers = {self.id: own_path}
        if self.queue is not None:
            try:
                peers = self.queue.register()
            except Exception as error:
                self._failed_to_send(own_path, started, describe_error("queue", error))
                return
            receivers.update((peer, PEER) for peer in peers if peer != self.id)
        self._seq += 1
        seq = self._seq
        started = time.perf_counter()
        self._await(Probe(seq, started, receivers))
        self._spawn(self._expire, seq)  # from now on a step that hangs fails it as a timeout
        step = "store"
        try:
            self._store(seq)
            if not self._still_waiting(seq):
                return  # it timed out while the store answered: reported already
            step = "queue" if self.queue is not None else "broadcast"
            payload = {"from": self.id, "seq": seq}
            if self.queue is not None:
                self.queue.publish("probe", payload, EVERYONE)
            else:
                self.socketio.server.emit("probe", payload, to=EVERYONE, namespace=NAMESPACE)
        except Exception as error:
            with self._lock:
                waiting = self._probes.pop(seq, None) is not None
            if waiting:  # else it timed out first, and was reported so
                self._failed_to_send(own_path, started, describe_error(step, error))

    def _still_waiting(self, seq: int) -> bool:
        with self._lock:
            return seq in self._probes

    def _store(self, seq: int) -> None:
        """Append the probe to `_probe`'s history; create the room when it is gone (first use,
        or evicted). Without a free room place the store still answered: nothing to append."""
        text, ts = f"delivery probe {seq}", utc_now_iso()
        try:
            self.store.append_message(STORE_ROOM, STORE_USER, text, ts)
            return
        except KeyError:
            pass
        try:
            self.store.join(STORE_ROOM, STORE_USER, self.id)
        except RoomLimitReached:
            return
        self.store.leave(STORE_ROOM, STORE_USER, self.id)
        self.store.append_message(STORE_ROOM, STORE_USER, text, ts)

    def _await(self, probe: Probe) -> None:
        overflow: list[Probe] = []
        with self._lock:
            self._probes[probe.seq] = probe
            while len(self._probes) > MAX_IN_FLIGHT:
                overflow.append(self._probes.popitem(last=False)[1])
        for old in overflow:
            self._report_timeouts(old)

    def _expire(self, seq: int) -> None:
        self.socketio.sleep(self.timeout)
        with self._lock:
            probe = self._probes.pop(seq, None)
        if probe is not None:
            self._report_timeouts(probe)

    def _report_timeouts(self, probe: Probe) -> None:
        waiting = dict(probe.waiting)
        if self.stopped or not waiting:
            return
        if self.queue is not None and PEER in waiting.values():
            # A peer that stopped meanwhile left the registry: it owes no answer.
            with contextlib.suppress(Exception):
                live = self.queue.peers()
                waiting = {r: p for r, p in waiting.items() if p != PEER or r in live}
        waited = time.perf_counter() - probe.sent_at
        for receiver, path in waiting.items():
            self.telemetry.probe_failed(ProbeFailure.TIMEOUT, path, receiver, waited)

    def _failed_to_send(self, path: str, started: float, error: str) -> None:
        if not self.stopped:
            waited = time.perf_counter() - started
            self.telemetry.probe_failed(ProbeFailure.ERROR, path, self.id, waited, error)

    # -- arrivals (on the probe connection's reader) ------------------------------------------
    def _on_event(self, event: str, data: Any) -> None:
        if not isinstance(data, dict) or self.stopped:
            return
        sender, seq = data.get("from"), data.get("seq")
        if not isinstance(sender, str) or not isinstance(seq, int):
            return
        if event == "probe_ack":
            self._arrived(seq, sender)
        elif event == "probe" and sender == self.id:
            self._arrived(seq, self.id)
        elif event == "probe" and self.queue is not None:
            # Another process's probe reached this one: answer it through the queue. When that
            # fails the sender times out, naming this process.
            with contextlib.suppress(Exception):
                self.queue.publish("probe_ack", {"from": self.id, "seq": seq}, "to:" + sender)

    def _arrived(self, seq: int, receiver: str) -> None:
        with self._lock:
            probe = self._probes.get(seq)
            if probe is None or probe.waiting.pop(receiver, None) is None:
                return  # late (already failed), a duplicate, or not one of this process's
            if not probe.waiting:
                del self._probes[seq]
        self.telemetry.probe_delivered(time.perf_counter() - probe.sent_at)

    # -- stopping ------------------------------------------------------------------------------
    def stop(self) -> None:
        """The server is stopping: no more probes, no more lines, out of the registry."""
        if self.stopped:
            return
        self.stopped = True
        with self._lock:
            self._probes.clear()
        self.client.close()
        if self.queue is not None:
            self._spawn(self.queue.leave)


class ProbeNamespace(socketio.Namespace):  # type: ignore[misc]
    """The server side of the probe's connection: only the token's holder may connect."""

    def __init__(self, probe: DeliveryProbe) -> None:
        super().__init__(NAMESPACE)
        self.probe = probe

    def on_connect(self, sid: str, environ: dict[str, Any], auth: object = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        expected = self.probe.token.encode()
        if not isinstance(token, str) or not hmac.compare_digest(
            token.encode("utf-8", "replace"), expected
        ):
            remote_addr = str(environ.get("REMOTE_ADDR") or "")
            self.probe.telemetry.connect_rejected(remote_addr, ConnectRejection.UNAUTHORIZED)
            raise socketio.exceptions.ConnectionRefusedError(ConnectRejection.UNAUTHORIZED.value)
        self.enter_room(sid, EVERYONE)
        self.enter_room(sid, "to:" + self.probe.id)
        self.probe.server_sid = sid

    def on_disconnect(self, sid: str, reason: object = None) -> None:
        if sid == self.probe.server_sid and reason == self.server.reason.SERVER_DISCONNECT:
            self.probe.stop()


class QueueSide:
    """The probe's own Redis client on the message queue: the peer registry, and a write-only
    queue member that publishes probes and answers (`ProbePublisher`)."""

    def __init__(self, url: str, probe_id: str, ttl_ms: int, timeout_s: float) -> None:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self.id = probe_id
        self.ttl_ms = ttl_ms
        # A command waits as long as a probe may (a stalled Redis fails the probe with an
        # `error`, it does not hang it). One quick retry on a broken connection (a restarted
        # Redis), none on a timeout.
        self.client: Any = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1, (redis.ConnectionError,)),
        )
        self.publisher = ProbePublisher(self.client)
        self._registry = self.client.register_script(_REGISTRY)

    def register(self) -> set[str]:
        """Refresh this process's entry; the live processes' ids (this one's included)."""
        return set(self._registry(keys=[REGISTRY_KEY], args=[self.id, self.ttl_ms]))

    def peers(self) -> set[str]:
        return set(self._registry(keys=[REGISTRY_KEY], args=[self.id, ""]))

    def leave(self) -> None:
        with contextlib.suppress(Exception):
            self.client.hdel(REGISTRY_KEY, self.id)

    def publish(self, event: str, data: Any, to: str) -> None:
        self.publisher.emit(event, data, namespace=NAMESPACE, to=to)


class ProbePublisher(socketio.RedisManager):  # type: ignore[misc]
    """A write-only member of Flask-SocketIO's Redis channel, as another process emits with
    python-socketio. Its host id is its own, so every server's listener delivers what it
    publishes, this process's included; and a publish that fails raises (python-socketio's
    own logs and drops it) so the probe counts it."""

    def __init__(self, client: Any) -> None:
        super().__init__("redis://", channel=CHANNEL, write_only=True)
        self.redis = client
        self.connected = True

    def _redis_connect(self) -> None:
        self.connected = True  # the client (re)connects by itself

    def _publish(self, data: Any) -> Any:
        return self.redis.publish(self.channel, self.json.dumps(data))


@functools.cache
def websocket_client_class() -> Any:
    """simple-websocket's client, reading what arrived with the handshake's answer.

    simple-websocket 1.1.0 takes the handshake's answer from the first bytes it reads and
    leaves any frame that came in the same read undecoded until more bytes arrive. gevent's
    server sends the Engine.IO handshake right behind its 101, so that packet would wait for
    the next ping (25 s). Imported here, not at the top: after the monkey-patching.
    """
    import simple_websocket  # type: ignore[import-untyped]

    class Client(simple_websocket.Client):  # type: ignore[misc]
        def handshake(self) -> None:
            super().handshake()
            self.connected = self._handle_events()

        def _thread(self) -> None:
            # Under eventlet a socket closed while its reader waits raises EOFError, which
            # simple-websocket 1.1.0 does not catch (it catches OSError): the thread died with
            # a traceback on stderr whenever the server closed the probe's connection first,
            # as it does at every stop. Either way the connection is over.
            try:
                super()._thread()
            except EOFError:
                self.connected = False
                self.event.set()

    return Client


def _daemon_thread(target: Callable[[], None]) -> threading.Thread:
    """simple-websocket's reader, as a daemon: it never holds up the process's exit."""
    return threading.Thread(target=target, daemon=True)


class LoopbackClient:
    """The probe's Socket.IO connection to its own server: Engine.IO 4 over a WebSocket
    (simple-websocket, already a dependency for the development server), connected to
    `NAMESPACE` only. It answers the server's pings and hands each event to `on_event`."""

    def __init__(
        self,
        url: str,
        token: str,
        on_event: Callable[[str, Any], None],
        spawn: Callable[..., None],
    ) -> None:
        self.url = url
        self.token = token
        self.on_event = on_event
        self.spawn = spawn
        self.open = False
        self._ws: Any = None
        self._event_prefix = "42" + NAMESPACE + ","

    def connect(self) -> None:
        ws = websocket_client_class()(self.url, thread_class=_daemon_thread)
        try:
            opened = ws.receive(timeout=CONNECT_TIMEOUT_S)
            if not isinstance(opened, str) or not opened.startswith("0"):
                raise ProbeError(f"no Engine.IO handshake: {str(opened)[:40]!r}")
            ws.send("40" + NAMESPACE + "," + json.dumps({"token": self.token}))
            while True:
                reply = ws.receive(timeout=CONNECT_TIMEOUT_S)
                if not isinstance(reply, str):
                    raise ProbeError("no answer to the namespace connect")
                if reply == "2":
                    ws.send("3")
                elif reply.startswith("40" + NAMESPACE + ","):
                    break
                elif reply.startswith("44" + NAMESPACE + ","):
                    raise ProbeError(f"refused: {reply[len(NAMESPACE) + 3 :][:80]}")
        except BaseException:
            with contextlib.suppress(Exception):
                ws.close()
            raise
        self._ws = ws
        self.open = True
        self.spawn(self._read, ws)

    def _read(self, ws: Any) -> None:
        try:
            while True:
                data = ws.receive()
                if not isinstance(data, str):
                    continue
                if data == "2":  # the server's ping
                    ws.send("3")
                elif data.startswith(self._event_prefix):
                    message = json.loads(data[len(self._event_prefix) :])
                    if isinstance(message, list) and message and isinstance(message[0], str):
                        self.on_event(message[0], message[1] if len(message) > 1 else None)
                elif data == "1" or data.startswith("41" + NAMESPACE):
                    break  # Engine.IO close, or the namespace disconnected
        except Exception:  # noqa: S110 (the connection ended: the next probe reconnects)
            pass
        finally:
            if self._ws is ws:
                self.open = False
            with contextlib.suppress(Exception):
                ws.close()

    def close(self) -> None:
        self.open = False
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()
