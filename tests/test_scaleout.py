"""Scale-out: two real chat-service processes on one real Redis are one chat.

Both processes run with `CHAT_STORE` and `CHAT_MESSAGE_QUEUE` on the same redis-server and the
same secret key, as the README's scale-out setup does. Users on either process see each other,
share message ids, sessions and rate limits; a process killed without a goodbye has its
connections reaped by the survivor.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio
from chatserver import ChatServer, RecordingClient, wait_until
from redis_support import RedisServer

pytestmark = pytest.mark.redis

SECRET_KEY = "scale-out-test-key"
REAP_WITHIN_S = 35.0  # heartbeat TTL 15 s + reap every 10 s, with slack for a busy machine

Pair = Callable[..., tuple[ChatServer, ChatServer]]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def shared_env(redis: RedisServer, **extra: str) -> dict[str, str]:
    return {
        "CHAT_STORE": redis.url(),
        "CHAT_MESSAGE_QUEUE": redis.url(),
        "CHAT_SECRET_KEY": SECRET_KEY,
        **extra,
    }


@pytest.fixture
def pair(redis_server: RedisServer, start_server: Callable[..., ChatServer]) -> Pair:
    """Start two processes on a freshly flushed Redis (stopped by `start_server`)."""
    redis_server.client().flushdb()

    def start(async_mode: str = "eventlet", **env: str) -> tuple[ChatServer, ChatServer]:
        shared = shared_env(redis_server, **env)
        return start_server(shared, async_mode), start_server(shared, async_mode)

    return start


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def joined_socket(server: ChatServer, http: requests.Session, room: str) -> RecordingClient:
    client = server.socket(http)
    ack = client.request("join", {"room": room})
    assert ack["ok"], ack
    return client


def messages_in(client: RecordingClient, room: str) -> list[tuple[int, str, str]]:
    return [(m["id"], m["user"], m["text"]) for m in client.got("message") if m["room"] == room]


def send_http(server: ChatServer, http: requests.Session, room: str, text: str) -> Any:
    reply = http.post(server.url + "/send", json={"room": room, "text": text}, timeout=10)
    assert reply.status_code == 201, reply.text
    return reply.json()


# -- one chat ---------------------------------------------------------------------------------
@pytest.mark.parametrize("async_mode", ["eventlet", "gevent"])
def test_users_on_two_processes_talk_in_one_room(pair: Pair, async_mode: str) -> None:
    one, two = pair(async_mode)
    room, elsewhere = unique("lobby"), unique("elsewhere")
    alice_http, carol_http = one.login("alice"), one.login("carol")
    bob_http = two.login("bob")
    carol = joined_socket(one, carol_http, elsewhere)
    alice = joined_socket(one, alice_http, room)
    bob = two.socket(bob_http)
    ack = bob.request("join", {"room": room})
    assert ack["members"] == ["alice", "bob"]
    joined = alice.wait_for("joined", lambda d: d["user"] == "bob")  # across processes
    assert joined == {"room": room, "user": "bob", "members": ["alice", "bob"]}

    ack = alice.request("message", {"room": room, "text": "socket from 1"})
    assert ack == {"ok": True, "id": 1}
    bob.wait_for("message", lambda m: m["id"] == 1)
    ack = bob.request("message", {"room": room, "text": "socket from 2"})
    assert ack == {"ok": True, "id": 2}
    alice.wait_for("message", lambda m: m["id"] == 2)
    assert send_http(two, bob_http, room, "http on 2")["id"] == 3
    alice.wait_for("message", lambda m: m["id"] == 3)
    assert send_http(one, alice_http, room, "http on 1")["id"] == 4
    bob.wait_for("message", lambda m: m["id"] == 4)

    expected = [
        (1, "alice", "socket from 1"),
        (2, "bob", "socket from 2"),
        (3, "bob", "http on 2"),
        (4, "alice", "http on 1"),
    ]
    alice.wait_for("message", lambda m: m["id"] == 4)
    bob.wait_for("message", lambda m: m["id"] == 3)
    assert messages_in(alice, room) == messages_in(bob, room) == expected
    history = alice_http.get(two.url + f"/rooms/{room}/messages", timeout=10)
    assert [(m["id"], m["user"], m["text"]) for m in history.json()] == expected
    for server in (one, two):
        rooms = bob_http.get(server.url + "/rooms", timeout=10).json()
        assert rooms == [{"name": room, "members": 2}, {"name": elsewhere, "members": 1}]

    time.sleep(0.5)  # whatever was broadcast to the lobby has long reached process 1
    assert [e for e, data in carol.received if data and data.get("room") == room] == []
    assert messages_in(carol, elsewhere) == []


def test_history_on_join_comes_from_the_other_process(pair: Pair) -> None:
    one, two = pair()
    room = unique("history")
    alice = joined_socket(one, one.login("alice"), room)
    first_epoch = alice.request("join", {"room": room})["epoch"]
    for n in range(1, 4):
        assert alice.request("message", {"room": room, "text": f"m{n}"})["id"] == n
    bob = two.socket(two.login("bob"))
    ack = bob.request("join", {"room": room})
    assert [(m["id"], m["user"], m["text"]) for m in ack["history"]] == [
        (1, "alice", "m1"), (2, "alice", "m2"), (3, "alice", "m3"),
    ]  # fmt: skip
    assert ack["epoch"] == first_epoch  # one store, one epoch


# -- sessions and limits ----------------------------------------------------------------------
def test_a_session_from_one_process_works_on_the_other_until_logout(pair: Pair) -> None:
    one, two = pair()
    room = unique("session")
    alice_http = one.login("alice")
    assert alice_http.get(two.url + "/", allow_redirects=False, timeout=10).status_code == 200
    alice_on_two = joined_socket(two, alice_http, room)  # the same cookie opens a socket there
    alice = joined_socket(one, alice_http, room)
    assert alice.request("message", {"room": room, "text": "before"})["ok"]
    alice_on_two.wait_for("message", lambda m: m["text"] == "before")

    assert alice_http.post(two.url + "/logout", json={}, timeout=10).status_code == 204
    try:
        ack = alice.request("message", {"room": room, "text": "after logout"}, timeout=10)
    except socketio.exceptions.TimeoutError:
        pytest.fail(
            "no ack for the first event after a logout on the other process "
            f"(the client is {'still' if alice.connected else 'no longer'} connected)"
        )
    assert (ack["ok"], ack["error"]) == (False, "unauthorized")
    assert alice_http.get(one.url + "/", allow_redirects=False, timeout=10).status_code == 302
    assert not one.logged("message_sent", text="after logout")


def test_the_login_rate_limit_is_shared_by_both_processes(pair: Pair) -> None:
    one, two = pair(CHAT_LOGIN_RATE_LIMIT_PER_USER="3 per minute")
    assert one.register("alice").status_code == 201

    def login(server: ChatServer) -> requests.Response:
        body = {"username": "alice", "password": "wrong password"}
        return requests.post(server.url + "/login", json=body, timeout=10)

    assert [login(s).status_code for s in (one, two, one)] == [401, 401, 401]
    for server in (two, one):
        refused = login(server)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1


# -- readiness --------------------------------------------------------------------------------
def test_readyz_follows_the_redis_server(
    tmp_path: Path, start_server: Callable[..., ChatServer]
) -> None:
    redis = RedisServer(tmp_path).start()  # this test stops it: its own server
    try:
        env = shared_env(redis)
        servers = [start_server(env), start_server(env)]
        for server in servers:
            reply = requests.get(server.url + "/readyz", timeout=10)
            assert reply.status_code == 200, reply.text
            assert reply.json() == {"status": "ok", "store": "ok", "message_queue": "ok"}

        redis.stop()
        for server in servers:
            reply = requests.get(server.url + "/readyz", timeout=30)
            assert reply.status_code == 503, reply.text
            body = reply.json()
            assert body["error"] == "not_ready"
            assert (body["store"], body["message_queue"]) == ("unreachable", "unreachable")

        redis.start()  # back on the same port: ready again, without a restart of ours
        for server in servers:
            reply = requests.get(server.url + "/readyz", timeout=10)
            assert reply.status_code == 200, reply.text
    finally:
        redis.stop()


# -- a process that dies without a goodbye ----------------------------------------------------
def test_a_killed_process_leaves_its_rooms_within_seconds(pair: Pair) -> None:
    one, two = pair()
    room = unique("crash")
    joined_socket(one, one.login("alice"), room)
    bob_http = two.login("bob")
    bob = joined_socket(two, bob_http, room)
    bob.wait_for("joined", lambda d: d["user"] == "bob")
    assert bob_http.get(two.url + "/rooms", timeout=10).json() == [{"name": room, "members": 2}]

    one.stop(signal.SIGKILL)
    left = bob.wait_for("left", lambda d: d["user"] == "alice", timeout=REAP_WITHIN_S)
    assert left == {"room": room, "user": "alice", "members": ["bob"]}
    assert bob_http.get(two.url + "/rooms", timeout=10).json() == [{"name": room, "members": 1}]
    two.wait_for_event("room_left", user="alice", room=room, reason="disconnect")
    time.sleep(1)
    assert len([d for d in bob.got("left") if d["user"] == "alice"]) == 1  # reported once


@pytest.mark.parametrize("async_mode", ["eventlet", "gevent"])
def test_a_burst_of_concurrent_emits_crosses_the_queue_without_an_error(
    pair: Pair, async_mode: str
) -> None:
    """500 messages sent at once, each handled in its own green thread and published to Redis
    at the same time: the queue's pool waits for a free connection instead of failing."""
    one, two = pair(async_mode)
    room, burst = unique("burst"), 500
    sender = joined_socket(one, one.login(unique("alice")), room)
    receiver = joined_socket(two, two.login(unique("bob")), room)
    acks: list[Any] = []
    for n in range(burst):
        sender.emit("message", {"room": room, "text": f"m{n}"}, callback=acks.append)
    wait_until(lambda: len(messages_in(receiver, room)) >= burst and len(acks) == burst, 60)
    assert sorted(m[0] for m in messages_in(receiver, room)) == list(range(1, burst + 1))
    assert len(acks) == burst and all(ack["ok"] for ack in acks)
    for server in (one, two):
        assert server.logged(level="error") == [], server.logged(level="error")[:3]
