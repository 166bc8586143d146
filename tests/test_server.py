"""The real chat-service process, driven over loopback by real Socket.IO and HTTP clients.

Every test here runs under eventlet (the default) and gevent: the same suite, both modes.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import socketio
import websocket
from chatserver import ChatServer, RecordingClient, wait_until

MODES = ["eventlet", "gevent"]


@pytest.fixture(params=MODES, scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[ChatServer]:
    chat = ChatServer(async_mode=request.param).start()
    yield chat
    chat.stop()
    chat.assert_every_line_json()


@pytest.fixture(params=MODES)
def fresh_server(
    request: pytest.FixtureRequest, start_server: Callable[..., ChatServer]
) -> ChatServer:
    return start_server(async_mode=request.param)


def counts(server: ChatServer) -> Counter[str]:
    return Counter(e["event"] for e in server.logged() if e["event"] != "http_request")


def test_the_scripted_scenario_logs_and_counts_exactly(fresh_server: ChatServer) -> None:
    srv = fresh_server
    alice, bob, carol = srv.login("alice"), srv.login("bob"), srv.login("carol")
    assert srv.register("alice").status_code == 409
    wrong = requests.post(
        srv.url + "/login", json={"username": "alice", "password": "nope-nope"}, timeout=10
    )
    unknown = requests.post(
        srv.url + "/login", json={"username": "zed", "password": "nope-nope"}, timeout=10
    )
    assert wrong.status_code == unknown.status_code == 401 and wrong.json() == unknown.json()
    refused = RecordingClient()
    refusals: list[Any] = []
    refused.on("connect_error", refusals.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        refused.connect(srv.url, transports=["websocket"], wait_timeout=5)
    assert refusals == [{"message": "unauthorized"}]

    a, b, c = srv.socket(alice), srv.socket(bob, ["polling", "websocket"]), srv.socket(carol)
    assert a.request("join", {"room": "lobby"})["members"] == ["alice"]
    assert b.request("join", {"room": "lobby"})["members"] == ["alice", "bob"]
    assert c.request("join", {"room": "side"})["ok"]
    a.wait_for("joined", lambda d: d["user"] == "bob")

    assert a.request("message", {"room": "lobby", "text": "hi bob"}) == {"ok": True, "id": 1}
    sent = bob.post(srv.url + "/send", json={"room": "lobby", "text": "hi alice"})
    assert sent.status_code == 201 and sent.json()["id"] == 2
    assert carol.post(srv.url + "/send", json={"room": "lobby", "text": "x"}).status_code == 403
    assert a.request("message", {"room": "lobby"})["error"] == "invalid_payload"
    b.emit("typing", {"room": "lobby"})
    a.wait_for("typing")
    for client in (a, b):
        got = client.wait_for("message", lambda m: m["id"] == 2)
        assert got["text"] == "hi alice" and got["user"] == "bob"
        assert [m["id"] for m in client.got("message")] == [1, 2]
    assert (
        c.got("message") == [] and c.got("typing") == [] and c.got("joined")[-1]["room"] == "side"
    )

    assert srv.metric("chat_messages_total", room="lobby", source="socket") == 1
    assert srv.metric("chat_messages_total", room="lobby", source="http") == 1
    assert srv.metric("chat_room_members", room="lobby") == 2
    assert srv.metric("chat_room_members", room="side") == 1
    assert srv.metric("chat_connections") == 3 and srv.metric("chat_users_online") == 3
    assert srv.metric("chat_rooms") == 2

    assert b.request("leave", {"room": "lobby"}) == {"ok": True, "room": "lobby"}
    a.wait_for("left", lambda d: d["user"] == "bob" and d["members"] == ["alice"])
    assert srv.metric("chat_room_leaves_total", room="lobby", reason="leave") == 1
    for client in (a, b, c):
        client.disconnect()
    wait_until(lambda: len(srv.logged("client_disconnected")) == 3)
    assert bob.post(srv.url + "/logout", json={}).status_code == 204
    srv.wait_for_event("logout")  # stdout is read by another thread: let it catch up

    assert counts(srv) == {
        "service_started": 1,
        "user_registered": 3,
        "registration_failed": 1,
        "login_succeeded": 3,
        "login_failed": 2,
        "connect_rejected": 1,
        "client_connected": 3,
        "room_joined": 3,
        "message_sent": 2,
        "message_rejected": 2,
        "room_left": 3,
        "client_disconnected": 3,
        "logout": 1,
    }
    assert sorted((e["room"], e["reason"]) for e in srv.logged("room_left")) == [
        ("lobby", "disconnect"),
        ("lobby", "leave"),
        ("side", "disconnect"),
    ]
    assert {e["source"] for e in srv.logged("message_sent")} == {"socket", "http"}
    for event in srv.logged():
        assert {"timestamp", "level", "event"} <= set(event)
        assert event["timestamp"].endswith("Z") and len(event["timestamp"]) == 24

    expected = {
        ("chat_registrations_total", ()): 3,
        ("chat_logins_total", (("result", "success"),)): 3,
        ("chat_logins_total", (("result", "failure"),)): 2,
        ("chat_logins_total", (("result", "rate_limited"),)): 0,
        ("chat_logouts_total", ()): 1,
        ("chat_connects_total", ()): 3,
        ("chat_connect_rejections_total", (("reason", "unauthorized"),)): 1,
        ("chat_messages_rejected_total", (("reason", "not_in_room"), ("source", "http"))): 1,
        ("chat_messages_rejected_total", (("reason", "invalid_payload"), ("source", "socket"))): 1,
        ("chat_message_size_bytes_count", (("source", "socket"),)): 1,
        ("chat_message_size_bytes_count", (("source", "http"),)): 1,
        ("chat_connections", ()): 0,
        ("chat_users_online", ()): 0,
        ("chat_rooms", ()): 0,
    }
    metrics = srv.metrics()
    for (name, labels), value in expected.items():
        assert metrics[(name, frozenset(labels))] == value, (name, labels)
    assert sum(v for (n, _), v in metrics.items() if n == "chat_disconnects_total") == 3
    leftover = [
        k
        for k in metrics
        if k[0]
        in (
            "chat_room_members",
            "chat_room_joins_total",
            "chat_messages_total",
            "chat_room_leaves_total",
        )
    ]
    assert leftover == [], "every room emptied, so its series must be gone"
    assert metrics[("chat_event_duration_seconds_count", frozenset({("event", "join")}))] == 3
    assert metrics[("chat_event_duration_seconds_count", frozenset({("event", "POST /send")}))] == 2


def test_nothing_a_client_sends_crashes_the_server(server: ChatServer) -> None:
    http = server.login("fuzzer")
    cookie = "; ".join(f"{c.name}={c.value}" for c in http.cookies)
    port = server.port
    junk_frames = [
        "",
        "x",
        "4",
        "42",
        "42[",
        '42["join"',
        '42["join",{"room":{"$gt":""}}]',
        '42["message",{"room":"lobby","text":' + "[" * 5000 + "]}]",
        '42["nope"]',
        '421["join"]',
        "6",
        "5",
        "3probe",
        "\x00\xff",
        "9" * 1000,
        '451-["message",{"_placeholder":true,"num":0}]',
    ]
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket",
        header=[f"Cookie: {cookie}"],
        timeout=5,
    )
    ws.recv()  # engine.io open packet
    ws.send("40")  # socket.io connect
    for frame in junk_frames:
        try:
            ws.send(frame)
            ws.send_binary(b"\x04\x00\xff" + frame.encode())
        except (websocket.WebSocketException, OSError):
            break
    ws.close()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"GARBAGE / HTTP/9.9\r\n\r\n\x00\x01\x02")
    requests.post(
        server.url + "/send",
        data=b"\xff\xfe",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    # everyone else is still served
    alice, bob = server.socket(server.login("alice")), server.socket(server.login("bob"))
    alice.request("join", {"room": "after-fuzz"})
    bob.request("join", {"room": "after-fuzz"})
    assert alice.request("message", {"room": "after-fuzz", "text": "alive"})["ok"]
    assert bob.wait_for("message")["text"] == "alive"
    assert requests.get(server.url + "/healthz", timeout=5).json() == {"status": "ok"}
    assert not server.logged("unhandled_error")
    alice.disconnect()
    bob.disconnect()


def test_hashing_does_not_stall_the_event_loop(server: ChatServer) -> None:
    """While 20 logins hash, a health check is answered long before the last login returns."""
    server.register("hasher")
    done: list[float] = []

    def login() -> None:
        requests.post(
            server.url + "/login",
            json={"username": "hasher", "password": "wrong password!"},
            timeout=60,
        )
        done.append(time.monotonic())

    threads = [threading.Thread(target=login) for _ in range(20)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    assert requests.get(server.url + "/healthz", timeout=10).ok
    answered = time.monotonic()
    for thread in threads:
        thread.join()
    assert answered < max(done), "the health check waited for every login's hashing"


def test_sigterm_disconnects_everyone_then_stops_with_an_event(fresh_server: ChatServer) -> None:
    srv = fresh_server
    a = srv.socket(srv.login("alice"))
    b = srv.socket(srv.login("bob"), ["polling"])
    a.request("join", {"room": "lobby"})
    b.request("join", {"room": "lobby"})
    idle = socket.create_connection(("127.0.0.1", srv.port))  # a keep-alive nobody closes
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    started = time.monotonic()
    assert srv.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5
    idle.close()
    tail = [(e["event"], e.get("reason")) for e in srv.logged() if e["event"] != "http_request"]
    assert tail[-5:] == [
        ("room_left", "disconnect"),
        ("client_disconnected", "server_disconnect"),
        ("room_left", "disconnect"),
        ("client_disconnected", "server_disconnect"),
        ("service_stopping", "SIGTERM"),
    ]


def test_sigint_stops_an_idle_server_at_once(fresh_server: ChatServer) -> None:
    time.sleep(1.5)  # idle: nothing wakes the event loop but the signal itself
    started = time.monotonic()
    assert fresh_server.stop(signal.SIGINT) == 0
    assert time.monotonic() - started < 3
    assert [e["reason"] for e in fresh_server.logged("service_stopping")] == ["SIGINT"]


@pytest.mark.parametrize("mode", MODES)
def test_more_connections_than_eventlets_default_1024(
    mode: str, start_server: Callable[..., ChatServer]
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2400:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    server = start_server(async_mode=mode)
    idle = []
    try:
        for _ in range(1100):  # each holds a connection the server must keep serving
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            idle.append(sock)
        for sock in idle[-5:]:
            assert b"200 OK" in sock.recv(4096)
        assert requests.get(server.url + "/healthz", timeout=10).ok
    finally:
        for sock in idle:
            sock.close()


def test_console_format_escapes_control_characters() -> None:
    server = ChatServer({"CHAT_LOG_FORMAT": "console"}).start()
    try:
        http = server.login("alice")
        sock = server.socket(http)
        sock.request("join", {"room": "lobby"})
        sock.request("message", {"room": "lobby", "text": "red \x1b[31m alert \x07 bell"})
        line = wait_until(lambda: [x for x in server.bad_lines if "message_sent" in x])[0]
        sock.disconnect()
    finally:
        server.stop()
    assert "\x1b" not in line and "\x07" not in line  # stdout is a pipe: no colours either
    assert "\\x1b[31m" in line and "\\x07" in line


def test_flask_run_gives_a_working_chat() -> None:
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    dev = ChatServer(async_mode="threading")
    dev.command = [flask, "--app", "service", "run", "--port", str(dev.port)]
    dev.start(announces=False)  # the seed's dev server: Flask's own banner, no service_started
    try:
        a = dev.socket(dev.login("alice"), ["polling", "websocket"])
        b = dev.socket(dev.login("bob"))
        a.request("join", {"room": "lobby"})
        b.request("join", {"room": "lobby"})
        assert a.request("message", {"room": "lobby", "text": "dev server"})["ok"]
        assert b.wait_for("message")["text"] == "dev server"
    finally:
        dev.stop()
    assert {"user_registered", "message_sent", "room_joined"} <= {e["event"] for e in dev.logged()}
