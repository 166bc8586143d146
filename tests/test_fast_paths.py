"""The fast paths of #9, each held to what it replaces.

- `unmask` returns exactly what eventlet's own `_apply_mask` returns.
- `utc_now_iso` returns exactly what `datetime` formats, across second boundaries.
- Over a real server (eventlet and gevent): frames that arrive together in one TCP segment, and
  a frame that arrives a byte at a time, are each handled once and in order (the read-ahead);
  a receiver gets every broadcast of a burst in order (the batched writes); a client's events
  are handled in the order it sent them (handlers run in the reading green thread).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import websocket
from chatserver import ChatServer, wait_until
from hostile_support import chat_websocket, session_cookie
from hypothesis import given, settings
from hypothesis import strategies as st

from service import clock
from service.transport import unmask

StartServer = Callable[..., ChatServer]

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # eventlet's deprecation notice
    from eventlet.websocket import RFC6455WebSocket


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=700),
    mask=st.binary(min_size=4, max_size=4),
    offset=st.integers(min_value=0, max_value=11),
    cut=st.integers(min_value=0, max_value=700),
)
def test_unmask_is_eventlets_own_unmasking(data: bytes, mask: bytes, offset: int, cut: int) -> None:
    assert unmask(data, mask, offset=offset) == RFC6455WebSocket._apply_mask(
        data, mask, offset=offset
    )
    length = min(cut, len(data))
    assert unmask(data, mask, length=length, offset=offset) == RFC6455WebSocket._apply_mask(
        data, mask, length=length, offset=offset
    )


@pytest.mark.parametrize(
    "instant",
    [0.0, 1.0, 59.9995, 1764115199.999, 1764115200.0, 1764115200.0005, 1795651199.9999],
)
def test_the_timestamp_is_what_datetime_formats(
    instant: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One second before, the instant, and after, so the cached second is crossed both ways.
    for moment in (instant - 1.0, instant, instant + 0.25, instant - 1.0):
        monkeypatch.setattr(clock.time, "time", lambda moment=moment: moment)
        expected = datetime.fromtimestamp(moment, UTC)
        expected = expected.replace(microsecond=expected.microsecond // 1000 * 1000)
        assert clock.utc_now_iso() == expected.isoformat(timespec="milliseconds").replace(
            "+00:00", "Z"
        )


def ws_frame(payload: bytes) -> bytes:
    """One masked client text frame (RFC 6455), as a browser sends it."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes([0x81, 0x80 | size])
    else:
        head = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    return head + mask + unmask(payload, mask)


def connected(server: ChatServer, name: str) -> websocket.WebSocket:
    ws = chat_websocket(server, session_cookie(server, name))
    ws.settimeout(10)
    return ws


def event(ack: int, name: str, data: dict[str, Any]) -> bytes:
    return f"42{ack}{json.dumps([name, data])}".encode()


def read_socketio(ws: websocket.WebSocket, wanted: Callable[[list[str]], bool]) -> list[str]:
    """Socket.IO packets (pings answered) until `wanted(packets)`; fails after 15 s."""
    packets: list[str] = []
    deadline = time.monotonic() + 15
    while not wanted(packets):
        assert time.monotonic() < deadline, f"gave up after {len(packets)} packets: {packets[-3:]}"
        packet = ws.recv()
        if packet == "2":
            ws.send("3")
        elif packet.startswith("4"):
            packets.append(packet[1:])
    return packets


def acks(packets: list[str]) -> list[tuple[int, Any]]:
    """(ack id, reply) of each ack, in arrival order."""
    found = []
    for packet in packets:
        if packet.startswith("3"):
            head, _, body = packet.partition("[")
            found.append((int(head[1:]), json.loads("[" + body)[0]))
    return found


def broadcasts(packets: list[str], name: str) -> list[dict[str, Any]]:
    return [
        json.loads(p[1:])[1] for p in packets if p.startswith("2[") and json.loads(p[1:])[0] == name
    ]


@pytest.mark.parametrize("mode", ["eventlet", "gevent"])
def test_frames_together_or_in_pieces_are_each_handled_once_in_order(
    mode: str, start_server: StartServer
) -> None:
    server = start_server(async_mode=mode)
    sender, receiver = connected(server, "sender"), connected(server, "receiver")
    for ws in (sender, receiver):
        ws.send(event(1, "join", {"room": "fast"}).decode())
        assert read_socketio(ws, lambda p: bool(acks(p)))
    burst = 60
    # 60 messages written as one segment: the server reads them from one recv.
    sender.sock.sendall(
        b"".join(
            ws_frame(event(10 + n, "message", {"room": "fast", "text": f"m{n}"}))
            for n in range(burst)
        )
    )
    # Then one written a byte at a time: header, mask and payload each arrive in pieces.
    piecemeal = ws_frame(event(10 + burst, "message", {"room": "fast", "text": f"m{burst}"}))
    for byte in piecemeal:
        sender.sock.sendall(bytes([byte]))
        time.sleep(0.002)
    total = burst + 1
    sent = read_socketio(sender, lambda p: len(acks(p)) == total)
    replies = acks(sent)
    assert [ack for ack, _ in replies] == [10 + n for n in range(total)], "acks out of order"
    ids = [reply["id"] for _, reply in replies]
    assert all(reply["ok"] for _, reply in replies)
    assert ids == sorted(ids) and len(set(ids)) == total, "handled out of order, or twice"
    got = read_socketio(receiver, lambda p: len(broadcasts(p, "message")) == total)
    seen = broadcasts(got, "message")
    assert [m["text"] for m in seen] == [f"m{n}" for n in range(total)]
    assert [m["id"] for m in seen] == ids
    assert server.metric("chat_messages_total", room="fast", source="socket") == total
    for ws in (sender, receiver):
        ws.close()


@pytest.mark.parametrize("mode", ["eventlet", "gevent"])
def test_a_scrape_answered_below_flask_is_what_the_route_answers(
    start_server: StartServer, mode: str
) -> None:
    """`GET /metrics` in the text format is answered by `ScrapeFastPath`, without Flask: the
    same headers as the route's own reply (its `HEAD`), the body Prometheus parses, and the
    same `http_request` line and metrics. What it does not take (a wrong token, OpenMetrics
    alone, `HEAD`) still reaches the route: `test_hostile` and `test_http` hold those."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    server = start_server(async_mode=mode)
    route = requests.head(server.url + "/metrics", timeout=5)  # through Flask
    for accept in ("", "text/plain;version=0.0.4;q=0.5,application/openmetrics-text;q=1"):
        fast = requests.get(server.url + "/metrics", headers={"Accept": accept}, timeout=5)
        assert fast.status_code == 200
        # Flask's reply says `Vary: Cookie` (its hooks read the session): the fast path's does
        # not, which shows the request did not go through Flask.
        assert "Vary" not in fast.headers and route.headers["Vary"] == "Cookie"
        skip = {"Date", "Vary", "Content-Length"}
        assert {k: v for k, v in fast.headers.items() if k not in skip} == {
            k: v for k, v in route.headers.items() if k not in skip
        }
        assert int(fast.headers["Content-Length"]) == len(fast.content)
        names = {family.name for family in text_string_to_metric_families(fast.text)}
        assert {"chat_http_requests", "chat_room_members", "process_cpu_seconds"} <= names

    wait_until(lambda: len(server.logged("http_request", path="/metrics")) >= 3)
    scrapes = server.logged("http_request", path="/metrics")
    assert [(e["method"], e["status"], e["remote_addr"]) for e in scrapes] == [
        ("HEAD", 200, "127.0.0.1"),
        ("GET", 200, "127.0.0.1"),
        ("GET", 200, "127.0.0.1"),
    ]
    assert all(isinstance(e["duration_ms"], float | int) for e in scrapes)
    # this scrape reads the counts before its own request is counted: 2 GETs, 1 HEAD so far
    assert (
        server.metric("chat_http_requests_total", method="GET", route="/metrics", status="200") == 2
    )
    assert (
        server.metric("chat_http_requests_total", method="HEAD", route="/metrics", status="200")
        == 1
    )
    assert server.metric("chat_event_duration_seconds_count", event="GET /metrics") == 4


def test_the_wsgi_layers_over_a_connection_are_two_and_called_inline(make_app: Any) -> None:
    """Every idle WebSocket connection keeps a green thread parked under the WSGI layers: the
    service has two of its own there (`WSGIGuard`, then `FrontDoor`), each calling the next
    through a bound method, which CPython runs without a C frame. A third layer cost about
    4 KB of RSS per idle connection (B5: 63.5 KB against 59.2 KB with two, at 3,000)."""
    import types

    from flask_socketio import _SocketIOMiddleware

    from service.http import FrontDoor
    from service.inline import inline
    from service.server import Service
    from service.transport import WSGIGuard

    app = make_app()
    service = Service(app)
    assert isinstance(service.wsgi, types.MethodType)
    guard = service.wsgi.__self__
    assert isinstance(guard, WSGIGuard) and isinstance(guard.app, types.MethodType)
    front = guard.app.__self__  # Flask.__call__ skipped: it only calls `wsgi_app`
    assert isinstance(front, FrontDoor) and front is app.wsgi_app
    assert isinstance(front.app.__self__, _SocketIOMiddleware)

    def plain(environ: Any, start_response: Any) -> list[bytes]:
        return []

    class Layer:
        def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
            return []

    assert inline(plain) is plain
    layer = Layer()
    bound = inline(layer)
    assert isinstance(bound, types.MethodType) and bound.__self__ is layer
    assert inline(bound) is bound
