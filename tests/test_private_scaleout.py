"""Leaving a private room with several processes: the user is out of it on every process.

Two real chat-service processes on one real redis-server (`CHAT_STORE` and
`CHAT_MESSAGE_QUEUE`), one user with a connection on each. When the user leaves a private room
on one process, their connection on the other one must stop receiving the room at once (not
only at its next join or reconnect), must not be able to send to it through either door, and
is told (`removed`); the room hears each connection leave once, and each process logs and
counts the departure of its own connection once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import requests
from chatserver import ChatServer, RecordingClient, wait_until
from redis_support import RedisServer
from test_probe import DeafeningProxy

pytestmark = pytest.mark.redis

SECRET_KEY = "private-scale-out-test-key"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def on_redis(url: str) -> dict[str, str]:
    return {"CHAT_STORE": url, "CHAT_MESSAGE_QUEUE": url, "CHAT_SECRET_KEY": SECRET_KEY}


@pytest.fixture
def pair(
    redis_server: RedisServer, start_server: Callable[..., ChatServer]
) -> Callable[[str], tuple[ChatServer, ChatServer]]:
    redis_server.client().flushdb()
    env = on_redis(redis_server.url())
    return lambda async_mode: (start_server(env, async_mode), start_server(env, async_mode))


def texts(client: RecordingClient, room: str) -> list[str]:
    return [m["text"] for m in client.got("message") if m["room"] == room]


def send_http(server: ChatServer, http: requests.Session, room: str, text: str) -> int:
    reply = http.post(server.url + "/send", json={"room": room, "text": text}, timeout=10)
    assert reply.status_code == 201, reply.text
    return int(reply.json()["id"])


@pytest.mark.parametrize("async_mode", ["eventlet", "gevent"])
def test_leaving_a_private_room_takes_the_user_out_on_every_process(
    pair: Callable[[str], tuple[ChatServer, ChatServer]], async_mode: str
) -> None:
    one, two = pair(async_mode)
    alice_http = one.login("alice")  # one session: a tab on each process
    alice_one, alice_two = one.socket(alice_http), two.socket(alice_http)
    bob_http, carol_http = one.login("bob"), two.login("carol")
    bob, carol = one.socket(bob_http), two.socket(carol_http)
    room = alice_one.request("create_private", {"name": "plans"})["room"]
    for invitee in ("bob", "carol"):
        assert alice_one.request("invite", {"room": room, "user": invitee})["ok"]
    for client in (alice_one, alice_two, bob, carol):
        assert client.request("join", {"room": room})["ok"]
    assert bob.request("message", {"room": room, "text": "before"})["ok"]
    alice_two.wait_for("message", lambda m: m["text"] == "before")

    assert alice_one.request("leave", {"room": room}) == {"ok": True, "room": room}
    # At once, from both processes and through both doors: first bob, on the process alice
    # left from (his messages reach process two through the queue, after the revocation),
    # then carol, on alice's other process (hers are broadcast there directly).
    after = ["socket on one", "http on one", "socket on two", "http on two"]
    assert bob.request("message", {"room": room, "text": after[0]})["ok"]
    send_http(one, bob_http, room, after[1])
    assert carol.request("message", {"room": room, "text": after[2]})["ok"]
    send_http(two, carol_http, room, after[3])
    for member in (bob, carol):
        wait_until(lambda member=member: texts(member, room) == ["before", *after])
    time.sleep(0.5)  # anything process two broadcast to the room has reached its sockets
    assert texts(alice_two, room) == ["before"], "a message reached a user who left the room"

    # The connection on process two cannot send there any more, by either door, nor type.
    refused = alice_two.request("message", {"room": room, "text": "still here?"})
    assert (refused["ok"], refused["error"]) == (False, "not_invited")
    reply = alice_http.post(two.url + "/send", json={"room": room, "text": "x"}, timeout=10)
    assert reply.status_code == 403 and reply.json()["error"] == "not_invited"
    alice_two.emit("typing", {"room": room})
    assert carol.request("message", {"room": room, "text": "last"})["ok"]
    bob.wait_for("message", lambda m: m["text"] == "last")
    assert [t for t in carol.got("typing") if t["user"] == "alice"] == []
    assert alice_two.request("join", {"room": room})["error"] == "not_invited"
    assert texts(alice_two, room) == ["before"]

    # It was told, once; the room heard each of alice's connections leave, once.
    assert alice_two.wait_for("removed") == {"room": room}
    for member in (bob, carol):
        member.wait_for("left", lambda d: d["user"] == "alice" and "alice" not in d["members"])
    time.sleep(0.3)
    assert alice_two.got("removed") == [{"room": room}]
    for member in (bob, carol):  # one `left` per connection (from two processes: any order)
        lefts = sorted(d["members"] for d in member.got("left") if d["user"] == "alice")
        assert lefts == [["alice", "bob", "carol"], ["bob", "carol"]]
    # Each process logged and counted its own connection's departure, once.
    for server in (one, two):
        [line] = server.logged("room_left", user="alice", room=room)
        assert line["reason"] == "leave"
        assert server.metric("chat_room_members", room="_private") == 1.0
        assert server.metric("chat_room_leaves_total", room="_private", reason="leave") == 1.0
        assert server.logged(level="error") == []
    sids = {server.logged("room_left", user="alice")[0]["sid"] for server in (one, two)}
    assert len(sids) == 2
    assert alice_http.get(one.url + "/conversations", timeout=10).json()["private"] == []


def test_a_send_on_a_process_the_revocation_has_not_reached_is_not_delivered_to_the_user(
    redis_server: RedisServer, start_server: Callable[..., ChatServer]
) -> None:
    """Process two's own senders' messages are broadcast there directly, not through the
    queue: one sent before the revocation has come through the queue still must not reach the
    user. Process two's queue listener is made deaf (test_probe's `DeafeningProxy`: its store
    calls and publishes still work), so the revocation never comes; the send finds it."""
    redis_server.client().flushdb()
    proxy = DeafeningProxy(redis_server.port)
    try:
        one = start_server(on_redis(redis_server.url()))
        two = start_server(on_redis(proxy.url()))
        alice_http, carol_http = one.login("alice"), two.login("carol")
        alice_one, alice_two, carol = (
            one.socket(alice_http), two.socket(alice_http), two.socket(carol_http)
        )  # fmt: skip
        room = alice_one.request("create_private", {"name": "plans"})["room"]
        assert alice_one.request("invite", {"room": room, "user": "carol"})["ok"]
        for client in (alice_one, alice_two, carol):
            assert client.request("join", {"room": room})["ok"]
        assert carol.request("message", {"room": room, "text": "before"})["ok"]
        alice_two.wait_for("message", lambda m: m["text"] == "before")

        proxy.deafen()
        assert alice_one.request("leave", {"room": room})["ok"]
        time.sleep(0.5)  # a listener that hears would have had the revocation by now
        assert alice_two.got("removed") == []
        assert carol.request("message", {"room": room, "text": "after"})["ok"]
        assert send_http(two, carol_http, room, "after, by http") == 3
        carol.wait_for("message", lambda m: m["text"] == "after, by http")
        time.sleep(0.5)
        assert texts(alice_two, room) == ["before"], "a message reached a user who left the room"
        assert alice_two.wait_for("removed") == {"room": room}
        refused = alice_two.request("message", {"room": room, "text": "still here?"})
        assert refused["error"] == "not_invited"
        [line] = two.logged("room_left", user="alice", room=room)
        assert line["reason"] == "leave"
        assert two.metric("chat_room_members", room="_private") == 1.0
        assert alice_two.got("removed") == [{"room": room}]
    finally:
        proxy.close()
