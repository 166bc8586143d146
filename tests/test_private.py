"""Private conversations (#12): direct conversations and private rooms with invitations.

Store level against both stores; the domain in process with exact log lines and metrics; then
real chat-service processes with real Socket.IO clients over both doors, in memory and on a
real Redis, and two processes on one Redis for the live `invited` event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import test_store
from chatserver import ChatServer, RecordingClient, wait_until
from conftest import InProcessChat
from redis_support import RedisServer
from structlog.testing import capture_logs
from test_store import StoreFactory

from service.store.base import Conversation

# The stores' fixtures, shared with test_store (a memory store, and a store on a real Redis).
new_store = test_store.new_store
new_redis_store = test_store.new_redis_store
redis_prefix = test_store.redis_prefix
redis_server = test_store.redis_server

SECRET_KEY = "private-conversations-test-key"
ROOM_SAMPLE_LABELS = ("chat_room_joins_total", "chat_messages_total", "chat_room_members")


# -- the stores ---------------------------------------------------------------------------------
def test_stores_keep_access_invitations_and_lists(new_store: StoreFactory) -> None:
    store = new_store()
    room = "_p:0123456789abcdef"
    assert store.private_name(room) is None and not store.admit(room, "alice")
    store.create_private(room, "plans", "alice")
    assert store.private_name(room) == "plans"
    assert store.has_access(room, "alice") and not store.has_access(room, "bob")
    assert store.have_access(room, ["bob", "alice"]) == [False, True]
    assert store.have_access("_p:ffffffffffffffff", ["alice"]) == [False]
    assert not store.admit(room, "bob")  # no invitation
    assert store.invite(room, "bob", Conversation(room, "private", "plans", "alice"))
    assert not store.invite(room, "alice", Conversation(room, "private", "plans", "alice"))
    assert store.conversations("bob") == ([], [Conversation(room, "private", "plans", "alice")])
    assert store.admit(room, "bob") and store.has_access(room, "bob")
    assert store.conversations("bob") == ([Conversation(room, "private", "plans")], [])
    store.revoke(room, "bob")
    assert not store.has_access(room, "bob") and not store.admit(room, "bob")
    assert store.conversations("bob") == ([], [])
    direct = Conversation("_dm:alice:bob", "direct", "bob")
    assert store.add_conversation("alice", direct, 2)
    assert store.add_conversation("alice", direct, 2)  # listed already: no change
    assert not store.add_conversation("alice", Conversation("_dm:alice:x", "direct", "x"), 2)
    listed, _ = store.conversations("alice")
    assert sorted(listed, key=lambda c: c.room) == [direct, Conversation(room, "private", "plans")]


def test_a_name_registered_later_does_not_inherit_its_conversations(
    new_store: StoreFactory,
) -> None:
    store = new_store()
    room = "_dm:alice:ghost"
    store.add_conversation("ghost", Conversation(room, "direct", "alice"), 10)
    store.join(room, "alice", "sid-1")
    store.append_message(room, "alice", "are you there?", "2026-01-01T00:00:00.000Z")
    store.invite(
        "_p:0123456789abcdef", "ghost", Conversation("_p:0123456789abcdef", "private", "x")
    )
    store.forget_conversations("ghost")
    assert store.conversations("ghost") == ([], [])
    assert store.history(room) == []


# -- the domain in process: exact log lines and metrics -------------------------------------------
def events(logs: list[dict[str, Any]], *names: str) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in e.items() if k not in ("log_level", "timestamp", "exc_info")}
        for e in logs
        if e["event"] in names
    ]


def test_a_direct_conversation_is_for_its_two_users_only(chat: InProcessChat) -> None:
    alice_http, bob_http, carol_http = chat.user("alice"), chat.user("Bob"), chat.user("carol")
    alice, carol = chat.socket(alice_http), chat.socket(carol_http)
    bob = chat.socket(bob_http)
    with capture_logs() as logs:
        ack = alice.emit("open_dm", {"user": "bob"}, callback=True)
    assert ack == {"ok": True, "room": "_dm:alice:bob", "user": "bob"}
    assert events(logs, "dm_opened") == [
        {"event": "dm_opened", "user": "alice", "room": "_dm:alice:bob", "source": "socket"}
    ]
    assert chat.received(bob, "dm_opened") == [{"room": "_dm:alice:bob", "user": "alice"}]
    assert chat.received(carol, "dm_opened") == []
    assert chat.metric("chat_conversations_opened_total", kind="direct") == 1.0
    room = ack["room"]
    assert alice.emit("join", {"room": room}, callback=True)["ok"]
    assert bob.emit("join", {"room": room}, callback=True)["members"] == ["Bob", "alice"]
    with capture_logs() as logs:
        assert alice.emit("message", {"room": room, "text": "psst"}, callback=True)["id"] == 1
        refused = carol.emit("join", {"room": room}, callback=True)
        sent = carol.emit("message", {"room": room, "text": "hi"}, callback=True)
    assert refused["error"] == sent["error"] == "not_invited"
    assert events(logs, "message_sent", "access_refused") == [
        {"event": "message_sent", "user": "alice", "room": room, "message_id": 1,
         "source": "socket", "length": 4},
        {"event": "access_refused", "user": "carol", "room": room, "source": "socket",
         "action": "join", "reason": "not_invited"},
        {"event": "access_refused", "user": "carol", "room": room, "source": "socket",
         "action": "message", "reason": "not_invited"},
    ]  # fmt: skip
    assert not [e for e in logs if e["event"] in ("event_rejected", "message_rejected")]
    assert chat.received(carol, "message") == []
    # HTTP: the history and POST /send refuse her too, and count it once each
    with capture_logs() as logs:
        assert carol_http.get(f"/rooms/{room}/messages").json["error"] == "not_invited"
        reply = carol_http.post("/send", json={"room": room, "text": "hi"})
    assert reply.status_code == 403 and reply.json["error"] == "not_invited"
    assert [(e["action"], e["source"]) for e in events(logs, "access_refused")] == [
        ("history", "http"),
        ("message", "http"),
    ]
    assert not [e for e in logs if e["event"] in ("request_rejected", "message_rejected")]
    for source, count in (("socket", 2.0), ("http", 2.0)):
        assert (
            chat.metric("chat_messages_rejected_total", source=source, reason="not_invited")
            == count
        )
    assert [m["text"] for m in bob_http.get(f"/rooms/{room}/messages").json] == ["psst"]
    assert bob_http.post("/send", json={"room": room, "text": "ok"}).status_code == 201
    # Metrics: one `_direct` label for every direct conversation, never a user name
    assert chat.metric("chat_room_members", room="_direct") == 2.0
    assert chat.metric("chat_room_joins_total", room="_direct") == 2.0
    assert chat.metric("chat_messages_total", room="_direct", source="socket") == 1.0
    assert chat.metric("chat_messages_total", room="_direct", source="http") == 1.0
    exposition = chat.app.test_client().get("/metrics").get_data(as_text=True)
    assert "_dm:" not in exposition and "alice" not in exposition and "Bob" not in exposition
    # Private text stays out of the log by default; public text does not
    with capture_logs() as logs:
        alice.emit("message", {"room": room, "text": "secret"}, callback=True)
    [line] = events(logs, "message_sent")
    assert "text" not in line
    # Both lists, a third user's empty one; GET /rooms shows no private conversation
    assert bob.emit("conversations", None, callback=True) == {
        "ok": True, "direct": [{"room": room, "user": "alice"}], "private": [], "invitations": [],
    }  # fmt: skip
    assert alice_http.get("/conversations").json["direct"] == [{"room": room, "user": "bob"}]
    assert carol_http.get("/conversations").json == {
        "direct": [], "private": [], "invitations": []
    }  # fmt: skip
    assert alice_http.get("/rooms").json == []
    # Typing reaches the other one only
    bob.get_received()
    alice.emit("typing", {"room": room})
    assert chat.received(bob, "typing") == [{"room": room, "user": "alice"}]


def test_opening_a_direct_conversation_tells_nothing_of_who_exists(chat: InProcessChat) -> None:
    alice = chat.socket(chat.user("alice"))
    known = alice.emit("open_dm", {"user": "alice2"}, callback=True)
    chat.user("somebody")
    registered = alice.emit("open_dm", {"user": "somebody"}, callback=True)
    assert known.keys() == registered.keys() == {"ok", "room", "user"}
    assert known["ok"] and registered["ok"]
    for payload, code in [
        ({"user": "alice"}, "invalid_username"),
        ({"user": "x"}, "invalid_username"),
        ({"user": 5}, "invalid_payload"),
        (None, "invalid_payload"),
    ]:
        assert alice.emit("open_dm", payload, callback=True)["error"] == code
    assert chat.metric("chat_messages_rejected_total", source="socket", reason="invalid_username")
    # A name registered later starts with nothing that was sent to it before
    room = known["room"]
    assert alice.emit("join", {"room": room}, callback=True)["ok"]
    assert alice.emit("message", {"room": room, "text": "hello?"}, callback=True)["ok"]
    late = chat.user("alice2")
    assert late.get("/conversations").json["direct"] == []
    late_socket = chat.socket(late)
    assert late_socket.emit("join", {"room": room}, callback=True)["history"] == []


def test_a_private_room_is_joined_by_invitation_only(chat: InProcessChat) -> None:
    alice_http, bob_http, carol_http = chat.user("alice"), chat.user("bob"), chat.user("carol")
    alice, bob, carol = (chat.socket(h) for h in (alice_http, bob_http, carol_http))
    with capture_logs() as logs:
        created = alice.emit("create_private", {"name": "plans"}, callback=True)
    room = created["room"]
    assert created == {"ok": True, "room": room, "name": "plans"}
    assert room.startswith("_p:") and len(room) == 19
    assert events(logs, "private_room_created") == [
        {"event": "private_room_created", "user": "alice", "room": room, "source": "socket"}
    ]
    assert chat.metric("chat_conversations_opened_total", kind="private") == 1.0
    assert alice.emit("join", {"room": room}, callback=True)["ok"]
    assert bob.emit("join", {"room": room}, callback=True)["error"] == "not_invited"
    # only a member can invite
    with capture_logs() as logs:
        assert carol.emit("invite", {"room": room, "user": "carol"}, callback=True)["error"] == (
            "not_invited"
        )
    assert [(e["event"], e["action"]) for e in events(logs, "access_refused")] == [
        ("access_refused", "invite")
    ]
    with capture_logs() as logs:
        ack = alice.emit("invite", {"room": room, "user": "BOB"}, callback=True)
    assert ack == {"ok": True, "room": room, "user": "BOB"}
    assert events(logs, "user_invited") == [
        {"event": "user_invited", "user": "alice", "room": room, "invitee": "BOB",
         "source": "socket"}
    ]  # fmt: skip
    assert chat.metric("chat_invitations_total") == 1.0
    assert chat.received(bob, "invited") == [{"room": room, "name": "plans", "by": "alice"}]
    assert chat.received(carol, "invited") == []
    assert bob_http.get("/conversations").json["invitations"] == [
        {"room": room, "name": "plans", "by": "alice"}
    ]
    assert bob.emit("join", {"room": room}, callback=True)["members"] == ["alice", "bob"]
    assert bob_http.get("/conversations").json == {
        "direct": [], "private": [{"room": room, "name": "plans"}], "invitations": []
    }  # fmt: skip
    assert carol.emit("join", {"room": room}, callback=True)["error"] == "not_invited"
    assert carol_http.get(f"/rooms/{room}/messages").status_code == 403
    assert bob.emit("message", {"room": room, "text": "in"}, callback=True)["ok"]
    assert chat.metric("chat_room_members", room="_private") == 2.0
    assert chat.metric("chat_messages_total", room="_private", source="socket") == 1.0
    # leaving gives up access: no history, no sending, no joining until invited again
    assert bob.emit("leave", {"room": room}, callback=True)["ok"]
    assert bob_http.get(f"/rooms/{room}/messages").json["error"] == "not_invited"
    assert bob.emit("join", {"room": room}, callback=True)["error"] == "not_invited"
    assert bob_http.post("/send", json={"room": room, "text": "x"}).status_code == 403
    assert bob_http.get("/conversations").json["private"] == []
    assert alice.emit("invite", {"room": room, "user": "bob"}, callback=True)["ok"]
    assert bob.emit("join", {"room": room}, callback=True)["ok"]
    # not in GET /rooms for anyone; no invitation to a public room or a direct conversation
    assert alice_http.get("/rooms").json == carol_http.get("/rooms").json == []
    for target in ("lobby", "_dm:alice:bob"):
        assert alice.emit("invite", {"room": target, "user": "bob"}, callback=True)["error"] == (
            "invalid_room"
        )
    # nor of yourself (as with open_dm): a refusal the page can show
    refused = alice.emit("invite", {"room": room, "user": "ALICE"}, callback=True)
    assert refused["error"] == "invalid_username"
    # a room id nobody created is refused like one the user is not invited to
    assert carol.emit("join", {"room": "_p:ffffffffffffffff"}, callback=True)["error"] == (
        "not_invited"
    )
    assert carol.emit("join", {"room": "_p:nothex"}, callback=True)["error"] == "invalid_room"
    assert carol.emit("join", {"room": "_dm:bob:alice"}, callback=True)["error"] == "invalid_room"


def test_leaving_a_private_room_takes_every_tab_of_the_user_out(chat: InProcessChat) -> None:
    alice_http, bob_http = chat.user("alice"), chat.user("Bob")
    alice = chat.socket(alice_http)
    bob_tab, bob_other_tab = chat.socket(bob_http), chat.socket(bob_http)
    room = alice.emit("create_private", {"name": "plans"}, callback=True)["room"]
    assert alice.emit("invite", {"room": room, "user": "bob"}, callback=True)["ok"]
    for sock in (alice, bob_tab, bob_other_tab):
        assert sock.emit("join", {"room": room}, callback=True)["ok"]
    for sock in (alice, bob_tab, bob_other_tab):
        sock.get_received()
    with capture_logs() as logs:
        assert bob_tab.emit("leave", {"room": room}, callback=True) == {"ok": True, "room": room}
    # the tab that did not ask is told; the one that did has its ack
    assert chat.received(bob_other_tab, "removed") == [{"room": room}]
    assert chat.received(bob_tab, "removed") == []
    assert [(e["user"], e["reason"], e["members"]) for e in events(logs, "room_left")] == [
        ("Bob", "leave", 2),
        ("Bob", "leave", 1),
    ]
    assert len({e["sid"] for e in events(logs, "room_left")}) == 2
    assert [d["members"] for d in chat.received(alice, "left")] == [["Bob", "alice"], ["alice"]]
    assert alice.emit("message", {"room": room, "text": "gone?"}, callback=True)["ok"]
    assert chat.received(bob_other_tab, "message") == []
    refused = bob_other_tab.emit("message", {"room": room, "text": "x"}, callback=True)
    assert refused["error"] == "not_invited"
    assert chat.metric("chat_room_members", room="_private") == 1.0


def test_private_text_can_be_logged_on_purpose(make_app: Any) -> None:
    chat = InProcessChat(make_app(LOG_PRIVATE_MESSAGE_TEXT=True))
    alice = chat.socket(chat.user("alice"))
    room = alice.emit("create_private", {"name": "notes"}, callback=True)["room"]
    alice.emit("join", {"room": room}, callback=True)
    with capture_logs() as logs:
        alice.emit("message", {"room": room, "text": "logged"}, callback=True)
    [line] = events(logs, "message_sent")
    assert line["text"] == "logged"


# -- real processes, both doors, both stores ------------------------------------------------------
@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def server(
    request: pytest.FixtureRequest, start_server: Callable[..., ChatServer]
) -> Iterator[ChatServer]:
    env = {}
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        redis.client().flushdb()
        env = {"CHAT_STORE": redis.url(), "CHAT_MESSAGE_QUEUE": redis.url()}
    yield start_server(env)


def post(server: ChatServer, http: requests.Session, path: str, body: Any) -> requests.Response:
    return http.post(server.url + path, json=body, timeout=10)


def test_a_third_user_reaches_no_private_conversation(server: ChatServer) -> None:
    alice, bob, carol = (server.login(n) for n in ("alice", "bob", "carol"))
    reply = post(server, alice, "/dm", {"user": "bob"})
    assert reply.status_code == 201 and reply.json() == {"room": "_dm:alice:bob", "user": "bob"}
    dm = reply.json()["room"]
    reply = post(server, alice, "/private", {"name": "plans"})
    assert reply.status_code == 201
    private = reply.json()["room"]
    bob_socket = server.socket(bob)  # connected after the DM started: finds it in the list
    listed = bob_socket.request("conversations", {})
    assert listed["direct"] == [{"room": dm, "user": "alice"}] and listed["private"] == []
    alice_socket, carol_socket = server.socket(alice), server.socket(carol)
    for room in (dm, private):
        assert alice_socket.request("join", {"room": room})["ok"]
    assert bob_socket.request("join", {"room": dm})["ok"]
    assert bob_socket.request("join", {"room": private})["error"] == "not_invited"
    reply = post(server, alice, "/invite", {"room": private, "user": "bob"})
    assert reply.status_code == 201
    bob_socket.wait_for("invited", lambda d: d["room"] == private)
    assert bob_socket.request("join", {"room": private})["ok"]
    for room in (dm, private):
        assert alice_socket.request("message", {"room": room, "text": f"to {room}"})["ok"]
        assert post(server, bob, "/send", {"room": room, "text": "back"}).status_code == 201
        # carol: no join, no history, no send, not in her list, not in /rooms
        assert carol_socket.request("join", {"room": room})["error"] == "not_invited"
        history = carol.get(f"{server.url}/rooms/{room}/messages", timeout=10)
        assert history.status_code == 403 and history.json()["error"] == "not_invited"
        reply = post(server, carol, "/send", {"room": room, "text": "hi"})
        assert reply.status_code == 403 and reply.json()["error"] == "not_invited"
        assert carol_socket.request("message", {"room": room, "text": "hi"})["error"] == (
            "not_invited"
        )
        reply = post(server, carol, "/invite", {"room": private, "user": "carol"})
        assert reply.status_code == 403
        # catch-up after a reconnect, as in any room
        missed = bob.get(f"{server.url}/rooms/{room}/messages?after=1", timeout=10).json()
        assert [(m["id"], m["text"]) for m in missed] == [(2, "back")]
    assert carol.get(server.url + "/conversations", timeout=10).json() == {
        "direct": [], "private": [], "invitations": []
    }  # fmt: skip
    assert carol.get(server.url + "/rooms", timeout=10).json() == []
    assert carol_socket.got("message") == [] and carol_socket.got("invited") == []
    # bob leaves the private room: out until invited again
    assert bob_socket.request("leave", {"room": private})["ok"]
    assert bob_socket.request("join", {"room": private})["error"] == "not_invited"
    assert bob.get(f"{server.url}/rooms/{private}/messages", timeout=10).status_code == 403
    assert post(server, alice, "/invite", {"room": private, "user": "bob"}).status_code == 201
    assert bob_socket.request("join", {"room": private})["ok"]
    # the log: each new action once, each refusal once; metrics without names
    wait_until(lambda: len(server.logged("access_refused", user="carol")) == 10)
    assert len(server.logged("access_refused", user="bob")) == 3
    assert [(e["user"], e["room"], e["source"]) for e in server.logged("dm_opened")] == [
        ("alice", dm, "http")
    ]
    assert len(server.logged("private_room_created", room=private, source="http")) == 1
    assert [(e["user"], e["invitee"]) for e in server.logged("user_invited")] == [
        ("alice", "bob"),
        ("alice", "bob"),
    ]
    assert not server.logged("request_rejected") and not server.logged("event_rejected")
    for line in server.logged("message_sent"):
        assert "text" not in line, line
    assert server.metric("chat_messages_rejected_total", source="http", reason="not_invited") == 7
    assert server.metric("chat_messages_rejected_total", source="socket", reason="not_invited") == 6
    assert server.metric("chat_invitations_total") == 2.0
    assert server.metric("chat_conversations_opened_total", kind="direct") == 1.0
    assert server.metric("chat_conversations_opened_total", kind="private") == 1.0
    assert server.metric("chat_messages_total", room="_direct", source="socket") == 1.0
    assert server.metric("chat_messages_total", room="_private", source="http") == 1.0
    assert server.metric("chat_room_members", room="_direct") == 2.0
    text = requests.get(server.url + "/metrics", timeout=5).text
    assert "_dm:" not in text and "_p:" not in text and "alice" not in text


@pytest.mark.redis
def test_an_invitation_reaches_a_user_on_another_process(
    redis_server: RedisServer, start_server: Callable[..., ChatServer]
) -> None:
    redis_server.client().flushdb()
    env = {
        "CHAT_STORE": redis_server.url(),
        "CHAT_MESSAGE_QUEUE": redis_server.url(),
        "CHAT_SECRET_KEY": SECRET_KEY,
    }
    one, two = start_server(env), start_server(env)
    alice, bob = one.login("alice"), two.login("bob")
    alice_socket, bob_socket = one.socket(alice), two.socket(bob)
    room = alice_socket.request("create_private", {"name": "plans"})["room"]
    assert alice_socket.request("join", {"room": room})["ok"]
    assert two.socket(two.login("carol")).request("join", {"room": room})["error"] == (
        "not_invited"
    )
    assert alice_socket.request("invite", {"room": room, "user": "bob"})["ok"]
    assert bob_socket.wait_for("invited") == {"room": room, "name": "plans", "by": "alice"}
    assert one.logged("user_invited", user="alice", room=room, invitee="bob", source="socket")
    assert one.metric("chat_invitations_total") == 1.0
    ack = bob_socket.request("join", {"room": room})
    assert ack["ok"] and ack["members"] == ["alice", "bob"]
    assert bob_socket.request("message", {"room": room, "text": "from two"})["ok"]
    alice_socket.wait_for("message", lambda m: m["text"] == "from two")
    # a direct conversation opened on one process is in the list read on the other
    dm = alice_socket.request("open_dm", {"user": "bob"})["room"]
    bob_socket.wait_for("dm_opened", lambda d: d["room"] == dm)
    listed = bob.get(two.url + "/conversations", timeout=10).json()
    assert listed["direct"] == [{"room": dm, "user": "alice"}]
    assert listed["private"] == [{"room": room, "name": "plans"}]
    # bob leaves on process two; process one refuses him too
    assert bob_socket.request("leave", {"room": room})["ok"]
    other: RecordingClient = one.socket(one.login("bob"))
    assert other.request("join", {"room": room})["error"] == "not_invited"
