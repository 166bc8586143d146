"""Attacks by logged-in users and strangers on a real chat-service process, each closed for good.

Each test runs one attack from issue #7 against its own server, then checks with
`assert_service_sound` that a normal user is still served, the gauges equal the real state and
every stdout line is JSON. Transport-level attacks (stuck polling, tracebacks, malformed and
binary packets, slow clients) live in `test_hostile_transport.py`; the Redis stall in
`test_hostile_redis.py`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
import socketio
import websocket
from chatserver import ChatServer, RecordingClient, wait_until
from hostile_support import assert_service_sound, polling_sid

StartServer = Callable[..., ChatServer]


def lines(server: ChatServer, event: str, **fields: Any) -> list[dict[str, Any]]:
    return server.logged(event, **fields)


# -- 1. reserved event names ------------------------------------------------------------------
def test_a_client_event_named_connect_or_disconnect_reaches_no_lifecycle_handler(
    start_server: StartServer,
) -> None:
    server = start_server()
    alice = server.login("alice")
    a = server.socket(alice)
    for room in ("r1", "r2"):
        assert a.request("join", {"room": room})["ok"]

    for name in ("connect", "disconnect", "connect_error"):
        ack = a.request(name, {"room": "r1"})
        assert ack["ok"] is False and ack["error"] == "invalid_payload", ack
    a.emit("connect")  # without an ack: refused all the same
    a.emit("disconnect")
    wait_until(lambda: len(lines(server, "event_rejected", user="alice")) == 5)
    rejected = lines(server, "event_rejected", user="alice")
    assert [e["socket_event"] for e in rejected] == [
        "connect", "disconnect", "connect_error", "connect", "disconnect",
    ]  # fmt: skip
    assert {e["sid"] for e in rejected} == {a.get_sid()}
    assert len(lines(server, "client_connected")) == 1  # not registered again
    assert lines(server, "client_disconnected") == []  # not unregistered
    assert server.metric("chat_messages_rejected_total", source="socket", reason="invalid_payload")
    assert server.metric("chat_connections") == 1
    # still a member of both rooms, and still heard in them
    assert a.request("message", {"room": "r2", "text": "still in"})["ok"]
    a.wait_for("message", lambda m: m["room"] == "r2")
    a.disconnect()
    wait_until(lambda: len(lines(server, "room_left", user="alice")) == 2)
    assert_service_sound(server)


def test_a_client_event_named_disconnect_frees_no_connection_slot(
    start_server: StartServer,
) -> None:
    server = start_server({"CHAT_MAX_CONNECTIONS_PER_USER": "2"})
    alice = server.login("alice")
    sockets = [server.socket(alice), server.socket(alice)]
    for sock in sockets:
        assert sock.request("disconnect", None)["error"] == "invalid_payload"
    assert server.metric("chat_connections") == 2
    extra = RecordingClient()
    refusals: list[Any] = []
    extra.on("connect_error", refusals.append)
    cookie = "; ".join(f"{c.name}={c.value}" for c in alice.cookies)
    with pytest.raises(socketio.exceptions.ConnectionError):
        extra.connect(server.url, headers={"Cookie": cookie}, transports=["websocket"])
    assert refusals == [{"message": "too_many_connections"}]
    for sock in sockets:
        sock.disconnect()
    assert_service_sound(server)


# -- 5. a lone surrogate in a message ---------------------------------------------------------
SURROGATE_TEXT = '{"room": "lobby", "text": "secret \\ud800 payload"}'


def test_a_lone_surrogate_is_refused_up_front_through_both_doors(
    start_server: StartServer,
) -> None:
    server = start_server()
    alice = server.login("alice")
    a = server.socket(alice)
    assert a.request("join", {"room": "lobby"})["ok"]

    ack = a.request("message", json.loads(SURROGATE_TEXT))
    assert ack["ok"] is False and ack["error"] == "invalid_payload", ack
    reply = alice.post(
        server.url + "/send",
        data=SURROGATE_TEXT,
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_payload"
    # a password that is no Unicode text cannot be hashed: refused, not a 500
    for route in ("/register", "/login"):
        refused = requests.post(
            server.url + route,
            data='{"username": "mallory", "password": "long enough \\udfff"}',
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_payload"

    # nothing stored, nothing sent, every refusal logged and counted; the next id is 1
    assert alice.get(server.url + "/rooms/lobby/messages", timeout=5).json() == []
    assert a.got("message") == []
    rejected = lines(server, "message_rejected", reason="invalid_payload")
    assert [e["source"] for e in rejected] == ["socket", "http"]
    for source in ("socket", "http"):
        assert (
            server.metric("chat_messages_rejected_total", source=source, reason="invalid_payload")
            == 1
        )
    assert lines(server, "message_sent") == [] and lines(server, "unhandled_error") == []
    assert a.request("message", {"room": "lobby", "text": "fine 😀"}) == {"ok": True, "id": 1}
    a.disconnect()
    assert_service_sound(server)


# -- 8. one account cannot fill every room place ----------------------------------------------
def test_one_account_cannot_take_every_room_place(start_server: StartServer) -> None:
    server = start_server(
        {
            "CHAT_MAX_ROOMS": "12",
            "CHAT_MAX_ROOMS_PER_USER": "4",
            "CHAT_MAX_ROOMS_PER_CONNECTION": "3",
        }
    )
    mallory = server.login("mallory")
    sockets = [server.socket(mallory) for _ in range(3)]
    acks = [sock.request("join", {"room": f"m{i}-{j}"}) for i, sock in enumerate(sockets)
            for j in range(3)]  # fmt: skip
    assert [ack["ok"] for ack in acks] == [True] * 4 + [False] * 5
    assert {ack["error"] for ack in acks[4:]} == {"room_limit_reached"}
    # a room mallory is in already may be joined from another connection
    assert sockets[2].request("join", {"room": "m0-0"})["ok"]
    refused = lines(server, "event_rejected", user="mallory", reason="room_limit_reached")
    assert len(refused) == 5
    assert (
        server.metric("chat_messages_rejected_total", source="socket", reason="room_limit_reached")
        == 5
    )
    # others still find places: 12 - 4
    bob = server.login("bob")
    b = server.socket(bob)
    users = [server.login(f"user{i}") for i in range(3)]
    extra = [server.socket(http) for http in users]
    joined = [sock.request("join", {"room": f"u{i}-{j}"})["ok"] for i, sock in enumerate(extra)
              for j in range(3)]  # fmt: skip
    assert joined == [True] * 8 + [False], joined  # 12 places, 4 of them mallory's
    # the server is full now: refused as such, logged and counted
    full = b.request("join", {"room": "one-more"})
    assert full["error"] == "room_limit_reached" and "server" in full["message"]
    for sock in [*sockets, b, *extra]:
        sock.disconnect()
    assert_service_sound(server)


# -- 9. smaller ones --------------------------------------------------------------------------
def test_a_deeply_nested_body_is_a_400_not_a_500(start_server: StartServer) -> None:
    server = start_server()
    alice = server.login("alice")
    deep = "[" * 20_000 + "]" * 20_000
    for route in ("/send", "/login", "/register"):
        reply = alice.post(
            server.url + route, data=deep, headers={"Content-Type": "application/json"}, timeout=5
        )
        assert reply.status_code == 400, (route, reply.status_code, reply.text[:200])
        assert reply.json()["error"] == "invalid_payload"
    # the same depth in a Socket.IO packet: refused without harm
    a = server.socket(alice)
    assert a.request("join", {"room": "lobby"})["ok"]
    cookie = "; ".join(f"{c.name}={c.value}" for c in alice.cookies)
    ws = websocket.create_connection(
        server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
        header=[f"Cookie: {cookie}"],
        timeout=5,
    )
    try:
        assert ws.recv().startswith("0")
        ws.send("40")
        assert ws.recv().startswith("40")
        ws.send('421["message",' + deep + "]")
    finally:
        ws.close()
    assert a.request("message", {"room": "lobby", "text": "after"})["ok"]
    assert lines(server, "unhandled_error") == []
    a.disconnect()
    assert_service_sound(server)


def test_a_room_cannot_take_the_name_of_the_metrics_overflow_bucket(
    start_server: StartServer,
) -> None:
    server = start_server({"CHAT_METRICS_MAX_ROOMS": "1"})
    alice, mallory = server.login("alice"), server.login("mallory")
    a, m = server.socket(alice), server.socket(mallory)
    for room in ("labelled", "overflow"):
        assert a.request("join", {"room": room})["ok"]
    assert a.request("message", {"room": "overflow", "text": "counted under _other"})["ok"]
    for name in ("_other", "_private", "_"):
        ack = m.request("join", {"room": name})
        assert ack["error"] == "invalid_room", ack
    assert m.request("join", {"room": "a_b"})["ok"]  # "_" inside a name is fine
    m.disconnect()
    assert server.metric("chat_messages_total", room="_other", source="socket") == 1
    assert server.metric("chat_room_joins_total", room="_other") == 2  # overflow and a_b
    a.disconnect()
    assert_service_sound(server)


def test_x_forwarded_host_counts_only_behind_a_trusted_proxy(start_server: StartServer) -> None:
    forged = {"Origin": "https://evil.example", "X-Forwarded-Host": "evil.example"}
    direct = start_server()
    alice = direct.login("alice")
    a = direct.socket(alice)
    assert a.request("join", {"room": "lobby"})["ok"]
    reply = alice.post(
        direct.url + "/send", json={"room": "lobby", "text": "x"}, headers=forged, timeout=5
    )
    assert reply.status_code == 400 and reply.json()["error"] == "csrf_failed"
    assert direct.metric("chat_requests_rejected_total", reason="csrf_failed") == 1
    assert lines(direct, "request_rejected", reason="csrf_failed", path="/send")
    # a Socket.IO handshake from that origin is refused as well
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(
            direct.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
            origin=forged["Origin"],
            header=[f"X-Forwarded-Host: {forged['X-Forwarded-Host']}"],
            timeout=5,
        )
    a.disconnect()
    assert_service_sound(direct)

    proxied = start_server({"CHAT_TRUSTED_PROXIES": "1"})
    bob = proxied.login("bob")
    b = proxied.socket(bob)
    assert b.request("join", {"room": "lobby"})["ok"]
    reply = bob.post(
        proxied.url + "/send", json={"room": "lobby", "text": "x"}, headers=forged, timeout=5
    )
    assert reply.status_code == 201, reply.text
    b.disconnect()
    assert_service_sound(proxied)


def test_a_refused_connect_does_not_keep_its_socket(start_server: StartServer) -> None:
    server = start_server()
    # WebSocket: the refusal arrives, then the server closes the connection
    ws = websocket.create_connection(
        server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket", timeout=5
    )
    try:
        assert ws.recv().startswith("0")
        ws.send("40")
        assert ws.recv() == '44{"message":"unauthorized"}'
        assert ws.recv() == "1"  # Engine.IO's close packet, well within the 5 s timeout
        assert ws.recv() == ""  # then the connection ends
    finally:
        ws.close()
    # long polling: the refusal arrives, then the Engine.IO session is gone
    sid = polling_sid(server)
    url = f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
    assert requests.post(url, data="40", timeout=5).status_code == 200
    assert "44" in requests.get(url, timeout=5).text
    wait_until(lambda: requests.get(url, timeout=30).status_code == 400, timeout=10)
    rejected = lines(server, "connect_rejected", reason="unauthorized")
    assert len(rejected) == 2
    assert server.metric("chat_connect_rejections_total", reason="unauthorized") == 2
    assert_service_sound(server)


def test_metrics_can_require_a_bearer_token(start_server: StartServer) -> None:
    open_server = start_server()
    assert requests.get(open_server.url + "/metrics", timeout=5).status_code == 200

    server = start_server({"CHAT_METRICS_TOKEN": "s3cret-scrape-token"})
    attempts = [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic czNjcmV0LXNjcmFwZS10b2tlbg=="},
        {"Authorization": "Bearer s3cr\u00e9t"},  # non-ASCII: refused, not a 500
    ]
    for headers in attempts:
        reply = requests.get(server.url + "/metrics", headers=headers, timeout=5)
        assert reply.status_code == 401, (headers, reply.status_code)
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        assert reply.json()["error"] == "unauthorized"
        assert "chat_" not in reply.text
    good = requests.get(
        server.url + "/metrics",
        headers={"Authorization": "Bearer s3cret-scrape-token"},
        timeout=5,
    )
    assert good.status_code == 200 and "chat_logins_total" in good.text
    assert server.metric("chat_requests_rejected_total", reason="unauthorized") == len(attempts)
    assert len(lines(server, "request_rejected", path="/metrics", reason="unauthorized")) == 4
    assert_service_sound(server)


def test_a_form_with_a_non_ascii_csrf_token_is_refused_not_a_500(
    start_server: StartServer,
) -> None:
    server = start_server()
    alice = server.login("alice")
    assert alice.get(server.url + "/login", timeout=5).status_code == 200  # it makes a token
    reply = alice.post(
        server.url + "/send",
        data={"room": "lobby", "text": "x", "csrf_token": "caf\u00e9"},
        timeout=5,
    )
    assert reply.status_code == 400 and reply.json()["error"] == "csrf_failed"
    assert lines(server, "unhandled_error") == []
    assert_service_sound(server)
