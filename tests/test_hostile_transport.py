"""Attacks on the transport, below any chat code: Engine.IO/Socket.IO packets and raw HTTP.

Each test attacks a real `chat-service` process, under eventlet and under gevent, with raw
sockets or websocket-client, then checks that the service still serves (`assert_service_sound`)
and that each refusal was logged and counted as `request_rejected` with its reason:

1. long-polling POSTs carrying a bad packet (`9`, `6`, a body over the size limit) used to get
   no reply at all, and enough of them filled the connection pool for good;
2. a garbage WebSocket frame was answered with a 500 whose body was the Python traceback;
3. a malformed packet wrote one JSON line plus a dozen raw text lines (and Redis reconnect
   messages came out raw);
4. a binary event announcing a huge attachment count buffered every binary frame that followed;
5. a connection that never finished its request headers was kept open forever.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from chatserver import ChatServer, wait_until
from hostile_support import assert_service_sound, chat_websocket, polling_sid, session_cookie
from structlog.testing import capture_logs

from service.telemetry.events import Telemetry
from service.telemetry.logging import LoggingStream
from service.telemetry.metrics import ChatMetrics
from service.transport import HEADERS_TIMEOUT_S, WSGIGuard

MODES = ["eventlet", "gevent"]
StartServer = Callable[..., ChatServer]

REJECTED = "chat_requests_rejected_total"
LIBRARY_LOGGERS = ("engineio", "socketio", "stderr", "geventwebsocket", "gevent", "eventlet")


# -- raw HTTP and WebSocket helpers ------------------------------------------------------------
def read_response(conn: socket.socket, timeout: float) -> tuple[int, bytes] | None:
    """One HTTP response (status, body) from `conn`, or None when none came within `timeout`."""
    conn.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
    except (TimeoutError, ConnectionError):
        return None
    return int(head.split(b" ")[1]), body


def post_packets(server: ChatServer, sid: str, body: bytes) -> bytes:
    return (
        f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\nContent-Type: text/plain;charset=UTF-8\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def bad_post(server: ChatServer, body: bytes, timeout: float = 3.0) -> tuple[int, bytes] | None:
    """Open an Engine.IO polling session and POST `body` to it on a fresh connection."""
    sid = polling_sid(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as conn:
        conn.sendall(post_packets(server, sid, body))
        return read_response(conn, timeout)


def session_is_gone(server: ChatServer, sid: str) -> bool:
    url = f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
    return requests.get(url, timeout=5).status_code == 400


def ws_frame(payload: bytes, opcode: int = 0x1, final: bool = True) -> bytes:
    """One masked client frame (RFC 6455), as a browser would send it."""
    mask = os.urandom(4)
    size = len(payload)
    first = (0x80 if final else 0) | opcode
    if size < 126:
        head = bytes([first, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([first, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([first, 0x80 | 127]) + size.to_bytes(8, "big")
    key = (mask * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
    return head + mask + masked


def raw_websocket(server: ChatServer, cookie: str = "") -> tuple[socket.socket, bytes]:
    """A WebSocket handshake on a raw socket; returns it and what the server sent so far."""
    conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    extra = f"Cookie: {cookie}\r\n" if cookie else ""
    conn.sendall(
        f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n".encode()
    )
    greeting = b""
    while b'"maxPayload"' not in greeting:  # the 101 and the Engine.IO open packet
        chunk = conn.recv(65536)
        assert chunk, greeting
        greeting += chunk
    return conn, greeting


def read_until_closed(conn: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes the connection; (data, closed in time)."""
    conn.settimeout(timeout)
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except TimeoutError:
        return data, False
    except ConnectionError:
        pass
    return data, True


def closed_by_server(ws: websocket.WebSocket, timeout: float = 5.0) -> bool:
    """True when the server ends the connection within `timeout` (frames before are drained)."""
    ws.settimeout(timeout)
    try:
        while True:
            opcode, _ = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return True
    except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
        return True
    except websocket.WebSocketTimeoutException:
        return False


def rejections(server: ChatServer, reason: str) -> float:
    return server.metric(REJECTED, reason=reason) or 0.0


def library_lines(server: ChatServer) -> list[dict[str, Any]]:
    """Lines written by a library's own logger or through stderr (none are expected)."""
    return [e for e in server.logged() if str(e.get("logger", "")).startswith(LIBRARY_LOGGERS)]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# -- 1. stuck long-polling POSTs -------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_a_polling_post_with_a_bad_packet_is_answered_400_and_its_session_closed(
    mode: str, start_server: StartServer
) -> None:
    server = start_server(async_mode=mode)
    cases = [
        (b"9", "invalid_packet"),  # no such Engine.IO packet type
        (b"6", "invalid_packet"),  # NOOP: only ever sent by the server
        (b"4" + b"x" * (64 * 1024), "payload_too_large"),  # one byte over CHAT_MAX_CONTENT_LENGTH
    ]
    for body, _ in cases:
        sid = polling_sid(server)
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
            conn.sendall(post_packets(server, sid, body))
            reply = read_response(conn, timeout=3)
        assert reply is not None, f"POST {body[:8]!r}: no reply within 3 s"
        assert reply[0] == 400, reply
        assert time.monotonic() - started < 1.0
        assert session_is_gone(server, sid)
    lines = server.logged("request_rejected")
    assert [(e["method"], e["path"], e["reason"]) for e in lines] == [
        ("POST", "/socket.io/", reason) for _, reason in cases
    ]
    assert all(e["level"] == "warning" and e["remote_addr"] == "127.0.0.1" for e in lines)
    assert rejections(server, "invalid_packet") == 2
    assert rejections(server, "payload_too_large") == 1
    assert_service_sound(server)


@pytest.mark.parametrize("mode", MODES)
def test_bad_polling_posts_cannot_fill_the_connection_pool(
    mode: str, start_server: StartServer
) -> None:
    """CHAT_MAX_CONNECTIONS=200 and 199 stuck POSTs stopped /healthz for good; here 30 and 40."""
    server = start_server({"CHAT_MAX_CONNECTIONS": "30"}, async_mode=mode)
    sids = [polling_sid(server) for _ in range(40)]
    attackers = []
    try:
        for sid in sids:  # all at once, as an attacker would, without waiting for replies
            conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            conn.sendall(post_packets(server, sid, b"9"))
            attackers.append(conn)
        deadline = time.monotonic() + 5
        replies = []
        for conn in attackers:  # each hangs up once answered, freeing its slot for the next
            replies.append(read_response(conn, max(0.1, deadline - time.monotonic())))
            conn.close()
    finally:
        for conn in attackers:
            conn.close()
    assert [r[0] if r else None for r in replies] == [400] * 40
    assert requests.get(server.url + "/healthz", timeout=3).json() == {"status": "ok"}
    assert rejections(server, "invalid_packet") == 40
    assert 1 <= len(server.logged("request_rejected", reason="invalid_packet")) <= 40
    assert all(session_is_gone(server, sid) for sid in sids[:3])
    assert_service_sound(server)


# -- 2. tracebacks sent to strangers ---------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_no_reply_carries_a_traceback(mode: str, start_server: StartServer) -> None:
    server = start_server(async_mode=mode)
    conn, _ = raw_websocket(server)
    with conn:
        conn.sendall(ws_frame(b"garbage"))
        after, closed = read_until_closed(conn, timeout=5)
    assert b"Traceback" not in after and b"HTTP/1.1 500" not in after, after[:300]
    assert closed, "the server kept a connection that sent garbage"

    reply = bad_post(server, b"4" + b"x" * 70_000)
    assert reply is not None and reply[0] == 400 and b"Traceback" not in reply[1]

    # the reply can arrive before the line is read from the server's stdout
    wait_until(lambda: len(server.logged("request_rejected")) >= 2)
    assert [e["reason"] for e in server.logged("request_rejected")] == [
        "invalid_packet",
        "payload_too_large",
    ]
    assert rejections(server, "invalid_packet") == 1
    assert not server.logged("unhandled_error")
    assert not library_lines(server), library_lines(server)[:5]
    assert_service_sound(server)


def test_the_wsgi_guard_answers_an_exception_with_a_json_500_and_one_line() -> None:
    """What the servers run: any exception below becomes a plain 500 and an unhandled_error."""
    import structlog

    telemetry = Telemetry(ChatMetrics(10))

    def broken(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        raise ValueError("invalid literal for int() with base 10: 'g'")

    replies: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        replies.append((status, headers))
        return lambda data: None

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/socket.io/", "wsgi.input": io.BytesIO()}
    with structlog.testing.capture_logs() as logs:
        body = b"".join(WSGIGuard(broken, telemetry)(environ, start_response))
    assert replies[0][0].startswith("500")
    assert ("Content-Type", "application/json") in replies[0][1]
    assert json.loads(body) == {
        "error": "internal_error",
        "message": "the server failed; try again",
    }
    assert b"Traceback" not in body and b"invalid literal" not in body
    assert [(e["event"], e["where"]) for e in logs] == [("unhandled_error", "wsgi:GET /socket.io/")]

    # After a WebSocket handshake there is no HTTP reply left to give: nothing is written.
    replies.clear()
    upgraded = {**environ, "wsgi.websocket": object()}
    with structlog.testing.capture_logs() as logs:
        assert list(WSGIGuard(broken, telemetry)(upgraded, start_response)) == []
    assert replies == [] and [e["event"] for e in logs] == ["unhandled_error"]


# -- 3. one JSON line per malformed packet -------------------------------------------------------
MALFORMED_FRAMES = [
    "garbage",  # not an Engine.IO packet type
    "",  # empty
    "9",  # no such Engine.IO packet type
    "6",  # NOOP, a server's packet
    "0",  # OPEN, a server's packet
    "2",  # PING, a server's packet (only "2probe" belongs to an upgrade)
    "42[",  # broken JSON
    '42{"room":"lobby"}',  # an event that is not a list
    "42[1]",  # an event whose name is not a string
    "42[]",  # an event with no name
    "42",  # an event with no data
    '44"nope"',  # CONNECT_ERROR, a server's packet
    "47",  # no such Socket.IO packet type
    '40"auth"',  # a connect whose auth is not an object
    "4x",  # not a Socket.IO packet at all
    "42" + "1" * 101 + '["message"]',  # an ack id longer than any number
]


@pytest.mark.parametrize("mode", MODES)
def test_malformed_packets_are_one_rate_limited_json_line_each(
    mode: str, start_server: StartServer
) -> None:
    server = start_server(async_mode=mode)
    cookie = session_cookie(server, "mallory")
    for frame in MALFORMED_FRAMES:
        ws = chat_websocket(server, cookie)
        ws.send(frame)
        assert closed_by_server(ws), f"{frame[:20]!r} did not close the connection"
        ws.close()
    wait_until(lambda: rejections(server, "invalid_packet") == len(MALFORMED_FRAMES))
    lines = server.logged("request_rejected")
    assert len(lines) == len(MALFORMED_FRAMES) < 20  # under the per-second budget: all written
    assert {(e["method"], e["path"], e["reason"], e["level"]) for e in lines} == {
        ("GET", "/socket.io/", "invalid_packet", "warning")
    }

    # A flood: 150 bad polling POSTs in a burst are all counted, but the lines are bounded.
    started = time.monotonic()
    http = requests.Session()
    for _ in range(150):
        sid = polling_sid(server, http)
        reply = http.post(
            f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}", data=b"42[", timeout=5
        )
        assert reply.status_code == 400
    http.close()
    seconds = time.monotonic() - started
    assert rejections(server, "invalid_packet") == len(MALFORMED_FRAMES) + 150
    flood_lines = len(server.logged("request_rejected")) - len(lines)
    assert 1 <= flood_lines <= 20 * (int(seconds) + 2)
    assert not library_lines(server), library_lines(server)[:5]
    assert not server.logged("unhandled_error")
    assert_service_sound(server)


def test_a_traceback_written_to_stderr_is_one_record() -> None:
    """eventlet's hub, gevent's hub and http.server print tracebacks to stderr themselves."""
    records: list[logging.LogRecord] = []
    collector = logging.Handler()
    collector.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("stderr")
    logger.addHandler(collector)
    stream = LoggingStream("stderr")
    with capture_logs() as reports:  # a traceback is a structlog event; plain lines are records
        try:
            try:
                int("g")
            except ValueError as first:
                raise KeyError("second") from first
        except KeyError:
            traceback.print_exc(file=stream)
        # gevent's hub ends its report with a time stamp and the failed greenlet, in pieces
        stream.write("2026-11-24T07:15:28Z")
        stream.write(" ")
        stream.write("<Greenlet at 0x7f: handle> failed with KeyError\n\n")
        stream.write("a plain line\nand a half")
        stream.write(" line\n")
        stream.flush()
    logger.removeHandler(collector)
    assert len(reports) == 1, reports
    (report,) = reports
    assert report["event"] == "unhandled_error" and report["log_level"] == "error"
    assert report["where"] == "stderr"
    text = report["exception"]
    assert text.startswith("Traceback (most recent call last):")
    assert "ValueError: invalid literal" in text and "The above exception" in text
    assert "KeyError: 'second'" in text and text.endswith("failed with KeyError")
    assert [r.getMessage() for r in records] == ["a plain line", "and a half line"]


@pytest.mark.redis
def test_redis_reconnect_messages_are_json_lines(tmp_path: Path, start_server: StartServer) -> None:
    from redis_support import RedisServer

    redis = RedisServer(tmp_path).start()
    try:
        server = start_server({"CHAT_STORE": redis.url(), "CHAT_MESSAGE_QUEUE": redis.url()})
        polling_sid(server)  # the first Socket.IO request starts the message queue's listener
        time.sleep(0.5)
        redis.stop()
        found = wait_until(
            lambda: [e for e in server.logged() if "Cannot receive from redis" in e["event"]],
            timeout=10,
        )
        assert found[0]["logger"] == "socketio.server" and found[0]["level"] == "error"
        server.assert_every_line_json()
    finally:
        redis.stop()


# -- 4. unbounded binary attachments ---------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_binary_events_and_frames_are_refused(mode: str, start_server: StartServer) -> None:
    server = start_server(async_mode=mode)
    cookie = session_cookie(server, "mallory")
    assert server.process is not None
    rss_before = rss_kib(server.process.pid)

    ws = chat_websocket(server, cookie)
    ws.send('451000000-["message",{"_placeholder":true,"num":0}]')
    sent = 0
    try:
        for _ in range(500):  # 30 MB of attachments, unless the server hangs up first
            ws.send_binary(b"\x00" * 60_000)
            sent += 60_000
    except (websocket.WebSocketException, OSError):
        pass
    assert closed_by_server(ws)
    ws.close()
    rss_growth_mib = (rss_kib(server.process.pid) - rss_before) / 1024
    assert rss_growth_mib < 10, f"RSS grew {rss_growth_mib:.1f} MiB after {sent} bytes"

    # A bare binary frame, and the same refusals over long-polling.
    ws = chat_websocket(server, cookie)
    ws.send_binary(b"\x04\x00\xff")
    assert closed_by_server(ws)
    ws.close()
    for body in (b'451-["message",{"_placeholder":true,"num":0}]', b"bAAECAw=="):
        reply = bad_post(server, body)
        assert reply is not None and reply[0] == 400, reply

    wait_until(lambda: rejections(server, "binary_attachment") == 4)
    assert [e["reason"] for e in server.logged("request_rejected")] == ["binary_attachment"] * 4
    assert_service_sound(server)


@pytest.mark.parametrize("mode", MODES)
def test_a_websocket_message_over_the_size_limit_is_not_buffered(
    mode: str, start_server: StartServer
) -> None:
    """eventlet and gevent-websocket assembled a message split into continuation frames with
    no total cap (30 MB of frames: RSS +35 MB), and gevent-websocket read any frame whole."""
    server = start_server(async_mode=mode)
    assert server.process is not None
    rss_before = rss_kib(server.process.pid)
    conn, _ = raw_websocket(server)
    with conn:
        sent = 0
        try:
            for i in range(500):  # 30 MB in 60 kB frames, none of them final
                opcode = 0x1 if i == 0 else 0x0
                conn.sendall(ws_frame(b"4" * 60_000, opcode, final=False))
                sent += 60_000
        except OSError:
            pass
        _, closed = read_until_closed(conn, timeout=5)
    assert closed and sent < 5_000_000, f"{sent} bytes of one message were accepted"
    rss_growth_mib = (rss_kib(server.process.pid) - rss_before) / 1024
    assert rss_growth_mib < 10, f"RSS grew {rss_growth_mib:.1f} MiB"

    conn, _ = raw_websocket(server)
    with conn:
        announced = 1 << 30  # one text frame of 1 GiB, of which 1 kB is sent
        header = bytes([0x81, 0x80 | 127]) + announced.to_bytes(8, "big") + os.urandom(4)
        conn.sendall(header + b"4" * 1024)
        _, closed = read_until_closed(conn, timeout=5)
    assert closed, "the server waited for the rest of a frame over the size limit"

    # eventlet refuses a frame over the limit itself (close code 1009), below the transport.
    expected = 2 if mode == "gevent" else 1
    assert rejections(server, "payload_too_large") == expected
    assert [e["reason"] for e in server.logged("request_rejected")] == [
        "payload_too_large"
    ] * expected
    assert_service_sound(server)


# -- 5. header and idle timeouts -----------------------------------------------------------------
@pytest.fixture
def slow_clients() -> Iterator[list[socket.socket]]:
    conns: list[socket.socket] = []
    yield conns
    for conn in conns:
        conn.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_connection_without_complete_headers_is_closed_in_time(
    mode: str, start_server: StartServer, slow_clients: list[socket.socket]
) -> None:
    server = start_server(async_mode=mode)
    # Legitimate waits that must outlive the header timeout: a Socket.IO websocket, a
    # long-polling GET (the server holds it up to pingInterval), a keep-alive between requests.
    chat = server.socket(server.login("patient"))
    assert chat.request("join", {"room": "waiting"})["ok"]
    poll_sid = polling_sid(server)
    long_poll = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    slow_clients.append(long_poll)
    long_poll.sendall(
        f"GET /socket.io/?EIO=4&transport=polling&sid={poll_sid} HTTP/1.1\r\n"
        f"Host: x\r\n\r\n".encode()
    )
    keep_alive = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    slow_clients.append(keep_alive)
    keep_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(keep_alive, 5) == (200, b'{"status":"ok"}\n')

    partial = [
        b"",  # connects and says nothing
        b"GET /healthz HT",  # half a request line
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ",  # half the headers
    ]
    started = time.monotonic()
    attackers = []
    for i in range(15):
        conn = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        conn.sendall(partial[i % 3])
        attackers.append(conn)
    slow_clients.extend(attackers)
    time.sleep(HEADERS_TIMEOUT_S - 2)
    for conn in attackers[1::3]:
        conn.sendall(b"T")  # trickling bytes does not buy more time
    closed_at: list[float] = []
    for conn in attackers:
        left = started + HEADERS_TIMEOUT_S + 3 - time.monotonic()
        _, closed = read_until_closed(conn, timeout=max(0.1, left))
        assert closed, "a connection without complete headers was kept past the timeout"
        closed_at.append(time.monotonic() - started)
    assert min(closed_at) > HEADERS_TIMEOUT_S - 1

    # The legitimate ones are still there: none was answered or closed by the timeout.
    long_poll.settimeout(0.2)
    with pytest.raises(TimeoutError):
        long_poll.recv(1)
    keep_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(keep_alive, 5) == (200, b'{"status":"ok"}\n')
    assert chat.request("message", {"room": "waiting", "text": "still connected"})["ok"]

    assert rejections(server, "idle_timeout") == 15
    lines = server.logged("request_rejected")
    assert len(lines) == 15 and {e["reason"] for e in lines} == {"idle_timeout"}
    assert all(e["remote_addr"] == "127.0.0.1" for e in lines)
    chat.disconnect()
    assert_service_sound(server)
