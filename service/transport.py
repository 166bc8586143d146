"""The transport under the chat: Engine.IO/Socket.IO and the WSGI servers, against strangers.

Anything here runs before a route or an event handler sees a request, and anyone can reach it
without an account. It screens what a client sends and refuses, with one `request_rejected`
event each (counted always, its line rate-limited), what the chat has no use for:

- `ChatEngineIOServer`: long-polling POST bodies (size, encoding, Engine.IO packet types) and
  WebSocket messages, checked before python-engineio decodes them, and the bytes read for one
  WebSocket message capped (`MessageBudget`); a refused session is closed. It also carries
  the fix for a hang in python-engineio (see `disconnect`).
- `ChatSocketIOServer`: Socket.IO packets (malformed ones, and every binary event or ack: the
  chat contract has none, and python-socketio buffers attachments without a total cap).
  `harden_socketio` installs both on a Flask-SocketIO object.
- `WSGIGuard`: whatever still raises becomes a plain JSON 500 and one `unhandled_error` line,
  never a traceback sent to the client (eventlet's WSGI server sends one by default).
- `eventlet_protocol` and `gevent_handler`: a connection must send complete request headers
  within `HEADERS_TIMEOUT_S` (and may idle between requests for `KEEPALIVE_TIMEOUT_S`); a
  socket operation waits at most `SOCKET_TIMEOUT_S`. Long-polling GETs (held up to
  pingInterval) and WebSockets (pinged every pingInterval) are not affected.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import socket
import sys
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, cast

import engineio
import socketio
from engineio import packet as eio_packet
from engineio import payload as eio_payload
from socketio import packet as sio_packet

from service.inline import inline
from service.telemetry.events import Telemetry
from service.telemetry.metrics import RequestRejection

# A new connection must have sent a complete request line and headers this soon after it was
# accepted; slower ones are closed and counted as `request_rejected` (idle_timeout).
HEADERS_TIMEOUT_S: Final = 10.0
# A keep-alive connection may wait this long for its next request (headers included), then it
# is closed quietly: idling between requests is what browsers do.
KEEPALIVE_TIMEOUT_S: Final = 30.0
# Any one read or write on a connection (a request body, a reply the client does not read).
# Above pingInterval + pingTimeout (45 s): a live WebSocket client answers a ping within it.
SOCKET_TIMEOUT_S: Final = 60.0

INVALID_PACKET: Final = RequestRejection.INVALID_PACKET
BINARY_ATTACHMENT: Final = RequestRejection.BINARY_ATTACHMENT
PAYLOAD_TOO_LARGE: Final = RequestRejection.PAYLOAD_TOO_LARGE
IDLE_TIMEOUT: Final = RequestRejection.IDLE_TIMEOUT

# What a client may send in a long-polling POST: CLOSE, PONG and MESSAGE. OPEN and NOOP are the
# server's packets, PING comes from the server in Engine.IO 4, UPGRADE only over a WebSocket.
_POLLING_CLIENT_PACKETS: Final = frozenset({eio_packet.CLOSE, eio_packet.PONG, eio_packet.MESSAGE})
# Over a WebSocket: the same, plus UPGRADE ("5") and the upgrade's probe ("2probe").
_WEBSOCKET_CLIENT_TYPES: Final = frozenset("1345")
_UPGRADE_PROBE: Final = "2probe"

_REFUSALS: Final = {  # the reply to a refused POST: always 400, as the Engine.IO protocol does
    INVALID_PACKET: ("invalid_payload", "not an Engine.IO/Socket.IO packet this server accepts"),
    BINARY_ATTACHMENT: ("invalid_payload", "binary packets are not accepted"),
    PAYLOAD_TOO_LARGE: ("payload_too_large", "the packets exceed the size limit"),
    IDLE_TIMEOUT: ("invalid_payload", "the request body did not arrive in time"),
}
INTERNAL_ERROR_BODY: Final = json.dumps(
    {"error": "internal_error", "message": "the server failed; try again"}
).encode()


def describe(environ: dict[str, Any]) -> tuple[str, str, str]:
    """Method, path and client address of a request, for a `request_rejected` line."""
    return (
        str(environ.get("REQUEST_METHOD") or "-"),
        str(environ.get("PATH_INFO") or "-"),
        str(environ.get("REMOTE_ADDR") or "-"),
    )


def websocket_frame_problem(data: object, max_size: int) -> RequestRejection | None:
    """Why a WebSocket message is refused before Engine.IO decodes it, or None."""
    if isinstance(data, bytes | bytearray):
        return BINARY_ATTACHMENT  # an Engine.IO binary message: a Socket.IO attachment
    if not isinstance(data, str) or not data:
        return INVALID_PACKET
    if len(data) > max_size:
        return PAYLOAD_TOO_LARGE
    if data[0] == "b":
        return BINARY_ATTACHMENT  # base64-encoded binary
    if data[0] in _WEBSOCKET_CLIENT_TYPES or data == _UPGRADE_PROBE:
        return None
    return INVALID_PACKET


def polling_body_problem(body: bytes) -> RequestRejection | None:
    """Why the body of a long-polling POST is refused before Engine.IO handles it, or None."""
    try:
        packets = eio_payload.Payload(encoded_payload=body.decode("utf-8")).packets
    except (ValueError, KeyError, IndexError):  # bad UTF-8, packet type, JSONP form, count
        return INVALID_PACKET
    for pkt in packets:
        if pkt.binary:
            return BINARY_ATTACHMENT
        if pkt.packet_type not in _POLLING_CLIENT_PACKETS:
            return INVALID_PACKET
    return None


class _Refused(Exception):
    def __init__(self, reason: RequestRejection) -> None:
        super().__init__(reason)
        self.reason = reason


class ChatEngineIOServer(engineio.Server):  # type: ignore[misc]
    """python-engineio's server, screening what clients send and never hanging a request."""

    sockets: dict[str, Any]  # python-engineio's sessions by sid
    _async: dict[str, Any]  # the async driver's primitives

    def __init__(self, *args: Any, telemetry: Telemetry, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.telemetry = telemetry
        self._posting: set[str] = set()  # sessions with a POST being handled now
        self._refused_posts: dict[str, RequestRejection] = {}  # ... refused meanwhile, and why
        websocket_app = self._async.get("websocket")
        if websocket_app is not None:
            # A copy: `_async` is the async driver's module-level dictionary, shared.
            self._async = {**self._async, "websocket": self._screened_websocket(websocket_app)}

    def refuse(self, sid: str, environ: dict[str, Any], reason: RequestRejection) -> None:
        """Log and count a refused packet, and close its session (the client hears CLOSE)."""
        self.telemetry.request_rejected(*describe(environ), reason)
        if sid in self._posting:
            self._refused_posts[sid] = reason
        session = self.sockets.get(sid)
        if session is not None and not session.closed:
            session.close(wait=False, abort=False, reason=self.reason.TRANSPORT_ERROR)
        self.sockets.pop(sid, None)

    def disconnect(self, sid: str | None = None) -> None:
        """Close one session or all of them, without waiting for their queues to drain.

        Upstream bug, seen in python-engineio 4.15.1: `Server.disconnect()` closes with
        `Socket.close(wait=True)`, which `queue.join()`s the session's outgoing queue. Only a
        long-polling GET or a WebSocket writer drains that queue, so a session with neither
        (a client that POSTs a bad packet and never polls) blocks its POST for ever: no reply,
        its TCP socket stuck in CLOSE-WAIT, one connection slot gone per request. (The same
        `queue.join()` hang on the WebSocket path was reported as python-engineio PR #60.)
        Closing without the wait still queues the CLOSE packet for the client's next poll.
        Drop this override once upstream no longer waits unboundedly here.
        """
        if sid is not None:
            session = self.sockets.get(sid)
            if session is not None:
                session.close(wait=False, reason=self.reason.SERVER_DISCONNECT)
            self.sockets.pop(sid, None)
            return
        for session in list(self.sockets.values()):
            session.close(wait=False, reason=self.reason.SERVER_DISCONNECT)
        self.sockets = {}

    def handle_request(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("REQUEST_METHOD") != "POST":
            return super().handle_request(environ, start_response)
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        sid = query.get("sid", [""])[0]
        session = self.sockets.get(sid)
        if session is None or session.closed or not session.connected or session.upgraded:
            return super().handle_request(environ, start_response)  # its own 400s
        try:
            body = self._read_body(environ)
            problem = polling_body_problem(body)
            if problem is not None:
                raise _Refused(problem)
        except _Refused as refused:
            self.refuse(sid, environ, refused.reason)
            return _refusal(start_response, refused.reason)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self._post_screened(sid, environ, start_response)

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        limit = int(self.max_http_buffer_size)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise _Refused(INVALID_PACKET) from None
        if length > limit:
            raise _Refused(PAYLOAD_TOO_LARGE)
        chunked = "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
        try:
            # A chunked body has no length up front (python-engineio would read none of it).
            body: bytes = environ["wsgi.input"].read(limit + 1 if chunked else length)
        except TimeoutError:
            raise _Refused(IDLE_TIMEOUT) from None
        if len(body) > limit:
            raise _Refused(PAYLOAD_TOO_LARGE)
        return body

    def _post_screened(self, sid: str, environ: dict[str, Any], start_response: Any) -> Any:
        """python-engineio's POST handling, answered 400 if a Socket.IO packet was refused.

        A refusal happens inside the `message` event, whose exceptions python-engineio logs
        and swallows (answering 200), so it is recorded instead and the reply replaced here;
        python-engineio answers a POST in one piece, through `start_response` and a list.
        """
        replies: list[tuple[str, list[tuple[str, str]]]] = []

        def hold(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            replies.append((status, headers))
            return _no_write

        self._posting.add(sid)
        try:
            body = super().handle_request(environ, hold)
        finally:
            self._posting.discard(sid)
            refused = self._refused_posts.pop(sid, None)
        if refused is not None:
            return _refusal(start_response, refused)
        status, headers = replies[0]
        start_response(status, headers)
        return body

    def _screened_websocket(self, websocket_app: Any) -> Callable[..., Any]:
        """The async driver's WebSocket app, with each received message screened first."""

        def build(handler: Any, server: Any) -> Any:
            engineio_socket = handler.__self__  # Socket._websocket_handler, bound

            def screened_handler(ws: Any) -> Any:
                return handler(_ScreenedWebSocket(ws, engineio_socket, self))

            return websocket_app(screened_handler, server)

        return build


def _no_write(data: bytes) -> None:
    raise RuntimeError("python-engineio answers through its return value")


def _refusal(start_response: Any, reason: RequestRejection) -> list[bytes]:
    code, message = _REFUSALS[reason]
    body = json.dumps({"error": code, "message": message}).encode()
    start_response(
        "400 BAD REQUEST",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


class _ScreenedWebSocket:
    """A WebSocket as python-engineio's read loop sees it: refused messages end the loop.

    python-engineio decodes a message outside any `try` (garbage raises to the WSGI server,
    which sent the traceback to the client) and ignores unknown packet types; here both are
    refused, and so is binary data. The bytes read for each message are metered (see
    `MessageBudget`). After a refusal (or any close) `wait` says the client is gone, so nothing
    more is read from it.
    """

    def __init__(self, ws: Any, engineio_socket: Any, server: ChatEngineIOServer) -> None:
        self._ws = ws
        self._socket = engineio_socket
        self._server = server
        self._budget = MessageBudget(int(server.max_http_buffer_size) + FRAMING_ALLOWANCE)
        _meter_websocket(ws, self._budget)
        # Frames the writer has packed and not yet written; None until the writer runs (see
        # `_batch_writes`), and always None under gevent, whose WebSocket writes each one.
        self._frames: list[bytes] | None = None
        if hasattr(ws, "_pack_message") and hasattr(ws, "_send") and hasattr(ws, "_apply_mask"):
            ws._apply_mask = unmask  # eventlet's RFC 6455 WebSocket: see `unmask`
            self._batch_writes()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    def _batch_writes(self) -> None:
        """Write the frames of one wake-up of python-engineio's writer with one `sendall`.

        The writer (python-engineio 4.15.1, `Socket._websocket_handler`) takes every packet
        queued for the connection with `poll()`, then sends them one `ws.send` each: one system
        call per packet, which is most of a delivery's cost in a busy room. Here `send` only
        packs the frame (eventlet's own framing, compression included) and the writer's next
        `poll()` writes what the previous batch packed before it waits again, so nothing is
        held back while the writer sleeps. A failed write ends the writer as a failed `send`
        would (`poll()` returning no packets means "closed"), and the writer closes the socket.
        Sends before the writer starts (the upgrade's probe answer) are written at once.
        """
        ws, poll = self._ws, self._socket.poll

        def batched_poll() -> Any:
            frames, self._frames = self._frames, []
            if frames:
                try:
                    ws._send(frames[0] if len(frames) == 1 else b"".join(frames))
                except Exception:
                    return []
            return poll()

        self._socket.poll = batched_poll

    def send(self, data: Any) -> None:
        if self._frames is None:
            self._ws.send(data)
        else:
            self._frames.append(self._ws._pack_message(data))

    def wait(self) -> Any:
        if self._socket.closed:
            return None
        self._budget.reset()
        try:
            data = self._ws.wait()
        except MessageTooLarge:
            data = None
        problem = PAYLOAD_TOO_LARGE if self._budget.exceeded else None
        if problem is None:
            if data is None or self._socket.closed:
                return None
            problem = websocket_frame_problem(data, int(self._server.max_http_buffer_size))
        if problem is not None:
            environ = getattr(self._ws, "environ", None) or {}
            self._server.refuse(self._socket.sid, environ, problem)
            return None
        return data


def unmask(data: bytes, mask: bytes, length: int | None = None, offset: int = 0) -> bytes:
    """What eventlet's `RFC6455WebSocket._apply_mask` returns, computed in C.

    eventlet 0.41 unmasks every byte a client sends in a Python generator (17 µs for a 60-byte
    message, 170 µs for 600 bytes); XOR-ing two big integers does the same in about 1 µs.
    `offset` is where `data` starts in the frame's payload (the mask cycles every 4 bytes).
    """
    size = len(data) if length is None else length
    if size <= 0:
        return b""
    shift = offset % 4
    key = (mask[shift:] + mask[:shift]) * (size // 4 + 1)
    value = int.from_bytes(data[:size], "big") ^ int.from_bytes(key[:size], "big")
    return value.to_bytes(size, "big")


# Frame headers and control frames that may come with one message of the size limit.
FRAMING_ALLOWANCE: Final = 16 * 1024


class MessageTooLarge(Exception):
    """More bytes than one message may take were read for it."""


class MessageBudget:
    """The bytes a client may send for one WebSocket message (its frames, control frames).

    eventlet and gevent-websocket assemble a message split into continuation frames with no
    cap on its total (30 MB of frames grew either server by about 30 MB); gevent-websocket
    even reads any single frame whole, however long it says it is. The WebSocket libraries'
    reads are metered for each message instead, and the connection is refused when over.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.exceeded = False

    def reset(self) -> None:
        self.used = 0

    def charge(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            self.exceeded = True
            raise MessageTooLarge(f"{self.used} bytes for one message")

    def before(self, read: Callable[[int], bytes]) -> Callable[[int], bytes]:
        """`read`, charged for what it is asked (a blocking read returns all of it)."""

        def metered(size: int) -> bytes:
            self.charge(size)
            return read(size)

        return metered


class _MeteredSocket:
    """eventlet's WebSocket socket, charging what each `recv` returned, and reading ahead.

    eventlet reads a frame in three `recv` calls (header, mask, payload), each a system call
    and a trip through the hub; here one read of up to `READ_AHEAD` bytes serves them, and the
    frames that came in the same segment, from what it holds. The read goes into one buffer
    the whole process shares (green threads never run at once, and nothing switches between
    the system call and the copy), and only what arrived is copied out: a `recv(65536)` of its
    own would allocate 64 KiB per call and shrink it, scattering the heap of a server with
    thousands of connections. What is held is released as soon as it has been handed over, so
    an idle connection holds nothing.
    """

    READ_AHEAD: Final = 64 * 1024
    _shared = memoryview(bytearray(READ_AHEAD))

    def __init__(self, sock: Any, budget: MessageBudget) -> None:
        self._sock = sock
        self._budget = budget
        self._held = b""
        self._at = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def recv(self, size: int, *args: Any) -> Any:
        if self._at >= len(self._held):
            if size >= self.READ_AHEAD:  # a large payload: read it as eventlet would
                data = self._sock.recv(size, *args)
                self._budget.charge(len(data))
                return data
            received = self._sock.recv_into(self._shared, self.READ_AHEAD, *args)
            held = bytes(self._shared[:received])
            if received <= size:  # all of it is asked for: nothing to hold
                self._budget.charge(received)
                return held
            self._held, self._at = held, 0
        data = self._held[self._at : self._at + size]
        self._at += len(data)
        if self._at >= len(self._held):
            self._held, self._at = b"", 0
        self._budget.charge(len(data))
        return data


def _meter_websocket(ws: Any, budget: MessageBudget) -> None:
    """Meter the reads of the WebSocket library under python-engineio's driver."""
    gevent_ws = getattr(ws, "_sock", None)  # engineio's gevent driver wraps gevent-websocket's
    if gevent_ws is not None and hasattr(gevent_ws, "raw_read"):
        # Frame headers are read from `stream`, payloads with `raw_read` (in one piece each).
        gevent_ws.raw_read = budget.before(gevent_ws.raw_read)
        gevent_ws.stream.read = budget.before(gevent_ws.stream.read)
    elif hasattr(ws, "_recv_frame") and hasattr(ws, "socket"):  # eventlet's RFC 6455 WebSocket
        ws.socket = _MeteredSocket(ws.socket, budget)


class ChatSocketIOServer(socketio.Server):  # type: ignore[misc]
    """python-socketio's server with `ChatEngineIOServer` under it and packets screened."""

    def __init__(self, telemetry: Telemetry, **options: Any) -> None:
        self.telemetry = telemetry
        super().__init__(**options)

    def _engineio_server_class(self) -> Any:
        return functools.partial(ChatEngineIOServer, telemetry=self.telemetry)

    def _refuse(self, eio_sid: str, reason: RequestRejection) -> None:
        environ = self.environ.get(eio_sid) or {}
        if isinstance(self.eio, ChatEngineIOServer):
            self.eio.refuse(eio_sid, environ, reason)
        else:  # pragma: no cover - only ChatEngineIOServer is ever built
            self.telemetry.request_rejected(*describe(environ), reason)

    def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        """Screen a Socket.IO packet, then dispatch it as python-socketio does.

        The dispatch is python-socketio 5.18.1's own, minus binary packets: decoding here and
        handing the packet over avoids parsing every message's JSON twice.
        """
        if isinstance(data, bytes | bytearray) or str(data)[:1] in ("5", "6"):
            self._refuse(eio_sid, BINARY_ATTACHMENT)  # BINARY_EVENT, BINARY_ACK, attachments
            return
        try:
            pkt = self.packet_class(encoded_packet=data)
        except Exception:  # any decoding failure: JSON, id, namespace, attachment count
            self._refuse(eio_sid, INVALID_PACKET)
            return
        kind, payload = pkt.packet_type, pkt.data
        if kind == sio_packet.EVENT:
            valid = isinstance(payload, list) and bool(payload) and isinstance(payload[0], str)
        elif kind == sio_packet.ACK:
            valid = isinstance(payload, list) and pkt.id is not None
        elif kind == sio_packet.CONNECT:
            valid = payload is None or isinstance(payload, dict)  # the optional auth object
        else:
            valid = kind == sio_packet.DISCONNECT
        if not valid:
            self._refuse(eio_sid, INVALID_PACKET)
            return
        try:
            if kind == sio_packet.CONNECT:
                self._handle_connect(eio_sid, pkt.namespace, payload)
            elif kind == sio_packet.DISCONNECT:
                self._handle_disconnect(eio_sid, pkt.namespace, self.reason.CLIENT_DISCONNECT)
            elif kind == sio_packet.EVENT:
                self._handle_event(eio_sid, pkt.namespace, pkt.id, payload)
            else:
                self._handle_ack(eio_sid, pkt.namespace, pkt.id, payload)
        except Exception:
            self.telemetry.unhandled_error(f"socket.io packet {sio_packet.packet_names[kind]}")


def harden_socketio(extension: Any, telemetry: Telemetry) -> None:
    """Give a just-built Flask-SocketIO object `ChatSocketIOServer`, with the same options.

    Flask-SocketIO 5.7.0 builds a plain `socketio.Server` in `init_app`, with no way to choose
    the class; this replaces it (and the middleware's reference to it) before any handler is
    registered, so the handlers land on the new one.
    """
    if extension.server.handlers:
        raise RuntimeError("harden_socketio must run before any Socket.IO handler is registered")
    server = ChatSocketIOServer(telemetry, **extension.server_options)
    extension.server = server
    extension.sockio_mw.engineio_app = server


class WSGIGuard:
    """The outermost WSGI app: an exception becomes a JSON 500 and one `unhandled_error` line.

    eventlet's server sends the traceback as the body of its 500 when `debug` is on (the
    default) and logs nothing either way; gevent's prints it to stderr. After a WebSocket
    handshake the connection is no longer HTTP: it is closed without a reply.
    """

    def __init__(self, app: Callable[..., Any], telemetry: Telemetry) -> None:
        self.app = inline(app)
        self.telemetry = telemetry

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        started = False

        def tracked(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal started
            started = True
            return start_response(status, headers, exc_info)

        try:
            result = self.app(environ, tracked)
        except Exception:
            exc_info = sys.exc_info()
            self.telemetry.unhandled_error(self._where(environ))
            return self._fail(environ, start_response, started, exc_info)
        if hasattr(result, "__len__"):
            # A list: nothing left to fail, and eventlet sets Content-Length from its length.
            return cast(Iterable[bytes], result)
        return _GuardedBody(result, self, environ, start_response)

    @staticmethod
    def _where(environ: dict[str, Any]) -> str:
        method, path, _ = describe(environ)
        return f"wsgi:{method} {path}"

    @staticmethod
    def _fail(
        environ: dict[str, Any], start_response: Any, started: bool, exc_info: Any
    ) -> list[bytes]:
        if environ.get("wsgi.websocket"):
            return []  # gevent-websocket: upgraded, its start_response is a no-op
        if "eventlet.input" in environ and not started and _asks_for_websocket(environ):
            # eventlet's WebSocket wrote its 101 straight to the socket: tell eventlet's server
            # the response is done (it closes the connection) instead of writing a 500 into it.
            from eventlet import wsgi

            wsgi.WSGI_LOCAL.already_handled = True
            return []
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(INTERNAL_ERROR_BODY))),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
        ]
        try:
            start_response("500 Internal Server Error", headers, exc_info)
        except Exception:
            return []  # the reply had begun: nothing more can be said on this connection
        return [INTERNAL_ERROR_BODY]


class _GuardedBody:
    """A streamed reply whose iteration is guarded too; `close` always reaches the original."""

    def __init__(
        self, result: Iterable[bytes], guard: WSGIGuard, environ: dict[str, Any], start: Any
    ) -> None:
        self._result, self._guard, self._environ, self._start = result, guard, environ, start

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._result
        except Exception:
            exc_info = sys.exc_info()
            self._guard.telemetry.unhandled_error(self._guard._where(self._environ))
            yield from self._guard._fail(self._environ, self._start, True, exc_info)

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            close()


def _asks_for_websocket(environ: dict[str, Any]) -> bool:
    return str(environ.get("HTTP_UPGRADE", "")).lower() == "websocket"


class HeadersTimeout(TimeoutError):
    """A connection did not send a request's headers in time (a TimeoutError, so both WSGI
    servers treat it as the socket timeout they already expect: the connection is closed)."""


def eventlet_protocol(telemetry: Telemetry) -> type:
    """eventlet's HTTP protocol with the header and keep-alive timeouts (see the module)."""
    import eventlet
    import eventlet.wsgi

    class TimedHttpProtocol(eventlet.wsgi.HttpProtocol):  # type: ignore[misc]
        requests_started = 0
        # The buffers of the connection's files live as long as the connection, and a
        # WebSocket never uses them (it reads and writes the socket itself): eventlet's 16 KiB
        # write buffer and the 8 KiB read buffer cost 6 KB of RSS per idle connection (B5,
        # 10,000 connections: 72.7 -> 66.4 KB each). Requests here are small and replies are
        # written in one piece; a larger read or write bypasses a buffer anyway.
        rbufsize = wbufsize = 1024
        _deadline: Any = None

        def handle_one_request(self) -> None:
            fresh = self.requests_started == 0
            limit = HEADERS_TIMEOUT_S if fresh else KEEPALIVE_TIMEOUT_S
            self._deadline = eventlet.Timeout(limit, HeadersTimeout())
            try:
                super().handle_one_request()
            except HeadersTimeout:
                self.close_connection = 1
                if fresh:
                    address = self.client_address[0] if self.client_address else "-"
                    telemetry.request_rejected("-", "-", str(address), IDLE_TIMEOUT)
            finally:
                self._deadline.cancel()

        def parse_request(self) -> bool:
            try:
                return bool(super().parse_request())
            finally:
                self._deadline.cancel()  # the headers are in: the request may take its time
                self.requests_started += 1

    return TimedHttpProtocol


def gevent_handler(telemetry: Telemetry) -> type:
    """gevent-websocket's handler with the header, keep-alive and socket timeouts."""
    import gevent
    from geventwebsocket.handler import WebSocketHandler

    class TimedWebSocketHandler(WebSocketHandler):  # type: ignore[misc]
        requests_started = 0
        _deadline: Any = None
        _timed_out = False

        def __init__(self, sock: Any, address: Any, server: Any, *args: Any) -> None:
            sock.settimeout(SOCKET_TIMEOUT_S)
            # pywsgi writes a reply's headers and body separately: with Nagle's algorithm the
            # body waits for the client's delayed ACK, 40 ms per keep-alive request.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().__init__(sock, address, server, *args)

        def handle_one_request(self) -> Any:
            fresh = self.requests_started == 0
            limit = HEADERS_TIMEOUT_S if fresh else KEEPALIVE_TIMEOUT_S
            self._timed_out = False
            self._deadline = gevent.Timeout.start_new(limit, HeadersTimeout())
            try:
                return super().handle_one_request()
            finally:
                self._deadline.close()
                if self._timed_out and fresh:
                    address = self.client_address[0] if self.client_address else "-"
                    telemetry.request_rejected("-", "-", str(address), IDLE_TIMEOUT)

        def read_requestline(self) -> Any:
            try:
                return super().read_requestline()
            except HeadersTimeout:
                self._timed_out = True  # gevent closes the connection on this socket error
                raise

        def read_request(self, raw_requestline: str) -> Any:
            try:
                return super().read_request(raw_requestline)
            except HeadersTimeout:
                self._timed_out = True
                raise
            finally:
                self._deadline.cancel()
                self.requests_started += 1

        def _handle_client_error(self, ex: Exception) -> Any:
            if isinstance(ex, HeadersTimeout):
                return None  # close without a reply (gevent would print a traceback)
            return super()._handle_client_error(ex)

    return TimedWebSocketHandler
