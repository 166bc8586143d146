"""The Socket.IO door in process: acks, broadcasts, isolation, presence, limits, gauges."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import InProcessChat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from service.extension import parts_of


def joined_pair(chat: InProcessChat, room: str = "lobby") -> tuple[Any, Any]:
    alice, bob = chat.socket(chat.user("alice")), chat.socket(chat.user("bob"))
    assert alice.emit("join", {"room": room}, callback=True)["ok"]
    assert bob.emit("join", {"room": room}, callback=True)["ok"]
    return alice, bob


def test_connect_needs_a_logged_in_session(chat: InProcessChat) -> None:
    with capture_logs() as logs:
        anonymous = chat.socketio.test_client(chat.app, flask_test_client=chat.app.test_client())
    assert not anonymous.is_connected()
    assert [(e["event"], e["reason"]) for e in logs] == [("connect_rejected", "unauthorized")]
    assert chat.metric("chat_connect_rejections_total", reason="unauthorized") == 1.0
    assert chat.metric("chat_connections") == 0.0


def test_join_acks_members_and_history_and_tells_the_room(chat: InProcessChat) -> None:
    alice_http = chat.user("alice")
    alice = chat.socket(alice_http)
    ack = alice.emit("join", {"room": "lobby"}, callback=True)
    assert ack == {
        "ok": True,
        "room": "lobby",
        "members": ["alice"],
        "history": [],
        "epoch": ack["epoch"],
    }
    alice.emit("message", {"room": "lobby", "text": "first"}, callback=True)
    bob = chat.socket(chat.user("bob"))
    alice.get_received()
    ack = bob.emit("join", {"room": "lobby"}, callback=True)
    assert ack["members"] == ["alice", "bob"]
    assert [m["text"] for m in ack["history"]] == ["first"]
    assert chat.received(alice, "joined") == [
        {"room": "lobby", "user": "bob", "members": ["alice", "bob"]}
    ]
    assert chat.metric("chat_room_joins_total", room="lobby") == 2.0
    assert chat.metric("chat_room_members", room="lobby") == 2.0
    assert chat.metric("chat_rooms") == 1.0


def test_messages_reach_the_room_sender_included_and_nobody_else(chat: InProcessChat) -> None:
    alice, bob = joined_pair(chat)
    carol = chat.socket(chat.user("carol"))
    carol.emit("join", {"room": "elsewhere"}, callback=True)
    for sock in (alice, bob, carol):
        sock.get_received()
    with capture_logs() as logs:
        ack = alice.emit("message", {"room": "lobby", "text": "hello bob"}, callback=True)
    assert ack == {"ok": True, "id": 1}
    for sock in (alice, bob):
        [message] = chat.received(sock, "message")
        assert message["text"] == "hello bob" and message["user"] == "alice" and message["id"] == 1
    assert carol.get_received() == []
    [sent] = [e for e in logs if e["event"] == "message_sent"]
    assert sent["message_id"] == 1 and sent["source"] == "socket" and sent["length"] == 9
    assert sent["text"] == "hello bob"
    assert chat.metric("chat_messages_total", room="lobby", source="socket") == 1.0
    assert chat.metric("chat_message_size_bytes_sum", source="socket") == 9.0


def test_a_client_cannot_reach_a_room_it_has_not_joined(chat: InProcessChat) -> None:
    alice, bob = joined_pair(chat)
    mallory = chat.socket(chat.user("mallory"))
    for event in ("message", "leave"):
        ack = mallory.emit(event, {"room": "lobby", "text": "psst"}, callback=True)
        assert ack["ok"] is False and ack["error"] == "not_in_room"
    mallory.emit("typing", {"room": "lobby"})
    # a room named like somebody's Socket.IO sid (each connection's own room in python-socketio)
    # must not reach that connection
    alice_sid = chat.socketio.server.manager.sid_from_eio_sid(alice.eio_sid, "/")
    assert isinstance(alice_sid, str) and alice_sid
    joined = mallory.emit("join", {"room": alice_sid}, callback=True)
    sent = mallory.emit("message", {"room": alice_sid, "text": "psst"}, callback=True)
    if alice_sid.startswith("_"):  # 1 in 64: a name reserved for the service, so no room at all
        assert joined["error"] == sent["error"] == "invalid_room"
    else:
        assert joined["ok"] and sent["ok"]
    assert chat.received(alice, "message") == [] and chat.received(bob, "typing") == []
    # the message, the leave and the typing: every refusal of the socket door is counted
    assert chat.metric("chat_messages_rejected_total", source="socket", reason="not_in_room") == 3


def test_typing_goes_to_the_others_only(chat: InProcessChat) -> None:
    alice, bob = joined_pair(chat)
    alice.get_received()
    bob.get_received()
    alice.emit("typing", {"room": "lobby"})
    assert chat.received(bob, "typing") == [{"room": "lobby", "user": "alice"}]
    assert chat.received(alice, "typing") == []


def test_leave_and_disconnect_tell_the_room_and_restore_gauges(chat: InProcessChat) -> None:
    alice, bob = joined_pair(chat)
    alice.emit("join", {"room": "second"}, callback=True)
    bob.get_received()
    with capture_logs() as logs:
        assert alice.emit("leave", {"room": "lobby"}, callback=True) == {
            "ok": True,
            "room": "lobby",
        }
    assert chat.received(bob, "left") == [{"room": "lobby", "user": "alice", "members": ["bob"]}]
    [left] = [e for e in logs if e["event"] == "room_left"]
    assert left["reason"] == "leave" and left["members"] == 1
    with capture_logs() as logs:
        alice.disconnect()
        bob.disconnect()
    assert [(e["event"], e.get("room"), e.get("reason")) for e in logs] == [
        ("room_left", "second", "disconnect"),
        ("client_disconnected", None, "client_disconnect"),
        ("room_left", "lobby", "disconnect"),
        ("client_disconnected", None, "client_disconnect"),
    ]
    assert chat.metric("chat_room_leaves_total", room="lobby", reason="leave") is None  # emptied
    for gauge in ("chat_connections", "chat_users_online", "chat_rooms"):
        assert chat.metric(gauge) == 0.0, gauge
    assert chat.metric("chat_room_members", room="lobby") is None


def test_a_user_is_a_member_while_one_of_their_connections_is_in(chat: InProcessChat) -> None:
    http = chat.user("alice")
    first, second = chat.socket(http), chat.socket(http)
    first.emit("join", {"room": "lobby"}, callback=True)
    assert second.emit("join", {"room": "lobby"}, callback=True)["members"] == ["alice"]
    assert chat.metric("chat_room_members", room="lobby") == 1.0
    assert chat.metric("chat_users_online") == 1.0 and chat.metric("chat_connections") == 2.0
    first.disconnect()
    assert http.post("/send", json={"room": "lobby", "text": "still here"}).status_code == 201
    assert chat.metric("chat_room_members", room="lobby") == 1.0
    second.emit("leave", {"room": "lobby"}, callback=True)
    assert http.post("/send", json={"room": "lobby", "text": "gone"}).status_code == 403


def test_join_twice_is_idempotent(chat: InProcessChat) -> None:
    alice = chat.socket(chat.user("alice"))
    alice.emit("join", {"room": "lobby"}, callback=True)
    with capture_logs() as logs:
        ack = alice.emit("join", {"room": "lobby"}, callback=True)
    assert ack["ok"] and ack["members"] == ["alice"]
    assert not [e for e in logs if e["event"] == "room_joined"]
    assert chat.metric("chat_room_joins_total", room="lobby") == 1.0


BAD_PAYLOADS = [
    None,
    42,
    "lobby",
    [],
    ["lobby"],
    {},
    {"room": None},
    {"room": 5},
    {"room": ["lobby"]},
    {"room": {"$ne": 1}},
]
BAD_ROOMS = ["", "has space", "x" * 65, "../etc", "é", "a/b", "<script>", "room\n"]


@pytest.mark.parametrize("event", ["join", "leave", "message"])
def test_malformed_payloads_are_refused_and_change_nothing(chat: InProcessChat, event: str) -> None:
    alice, bob = joined_pair(chat)
    bob.get_received()
    for payload in BAD_PAYLOADS:
        ack = alice.emit(event, payload, callback=True)
        assert ack["ok"] is False and ack["error"] == "invalid_payload", payload
    for room in BAD_ROOMS:
        ack = alice.emit(event, {"room": room, "text": "hi"}, callback=True)
        assert ack["ok"] is False and ack["error"] == "invalid_room", room
    if event == "message":
        for text, code in [
            (None, "invalid_payload"),
            (7, "invalid_payload"),
            ("  ", "empty_message"),
            ("x" * 2001, "message_too_long"),
        ]:
            ack = alice.emit(event, {"room": "lobby", "text": text}, callback=True)
            assert ack["error"] == code
        expected = len(BAD_PAYLOADS) + 2
        assert (
            chat.metric("chat_messages_rejected_total", source="socket", reason="invalid_payload")
            == expected
        )
    assert bob.get_received() == []
    assert chat.metric("chat_rooms") == 1.0 and chat.metric("chat_room_members", room="lobby") == 2
    assert alice.emit("message", {"room": "lobby", "text": "still fine"}, callback=True)["id"] == 1


def test_messages_are_numbered_per_room_without_gaps(chat: InProcessChat) -> None:
    alice = chat.socket(chat.user("alice"))
    for room in ("one", "two"):
        alice.emit("join", {"room": room}, callback=True)
    ids = [
        alice.emit("message", {"room": room, "text": "x"}, callback=True)["id"]
        for room in ("one", "two", "one", "one", "two")
    ]
    assert ids == [1, 1, 2, 3, 2]


def test_message_rate_limit(make_app: Any) -> None:
    chat = InProcessChat(make_app(MESSAGE_RATE_LIMIT="3 per minute"))
    alice = chat.socket(chat.user("alice"))
    alice.emit("join", {"room": "lobby"}, callback=True)
    acks = [
        alice.emit("message", {"room": "lobby", "text": "spam"}, callback=True) for _ in range(4)
    ]
    assert [a["ok"] for a in acks] == [True, True, True, False]
    assert acks[-1]["error"] == "rate_limited" and acks[-1]["retry_after"] >= 1


def test_message_text_can_be_kept_out_of_the_logs(make_app: Any) -> None:
    chat = InProcessChat(make_app(LOG_MESSAGE_TEXT=False))
    alice = chat.socket(chat.user("alice"))
    alice.emit("join", {"room": "lobby"}, callback=True)
    with capture_logs() as logs:
        alice.emit("message", {"room": "lobby", "text": "secret"}, callback=True)
    [sent] = [e for e in logs if e["event"] == "message_sent"]
    assert "text" not in sent and sent["length"] == 6


def test_room_limits(make_app: Any) -> None:
    chat = InProcessChat(make_app(MAX_ROOMS=2, MAX_ROOMS_PER_CONNECTION=2))
    alice = chat.socket(chat.user("alice"))
    bob = chat.socket(chat.user("bob"))
    alice.emit("join", {"room": "a"}, callback=True)
    alice.emit("join", {"room": "b"}, callback=True)
    ack = alice.emit("join", {"room": "c"}, callback=True)
    assert ack["error"] == "room_limit_reached"  # per connection
    ack = bob.emit("join", {"room": "c"}, callback=True)
    assert ack["error"] == "room_limit_reached"  # server-wide: both rooms have members
    alice.emit("leave", {"room": "a"}, callback=True)
    assert bob.emit("join", {"room": "c"}, callback=True)["ok"]  # idle room "a" was evicted


def test_room_labels_are_capped_and_freed(make_app: Any) -> None:
    chat = InProcessChat(make_app(METRICS_MAX_ROOMS=2))
    alice = chat.socket(chat.user("alice"))
    for room in ("r1", "r2", "r3", "r4"):
        alice.emit("join", {"room": room}, callback=True)
        alice.emit("message", {"room": room, "text": "x"}, callback=True)
    assert chat.metric("chat_room_members", room="r1") == 1.0
    assert chat.metric("chat_room_members", room="r3") is None
    assert chat.metric("chat_room_members", room="_other") == 2.0
    assert chat.metric("chat_messages_total", room="_other", source="socket") == 2.0
    assert chat.metric("chat_room_joins_total", room="_other") == 2.0
    alice.emit("leave", {"room": "r1"}, callback=True)
    for metric, labels in [
        ("chat_room_members", {}),
        ("chat_room_joins_total", {}),
        ("chat_messages_total", {"source": "socket"}),
    ]:
        assert chat.metric(metric, room="r1", **labels) is None, metric
    alice.emit("join", {"room": "r5"}, callback=True)  # takes the freed place
    assert chat.metric("chat_room_members", room="r5") == 1.0
    assert chat.metric("chat_room_members", room="_other") == 2.0
    exposition = chat.app.test_client().get("/metrics").get_data(as_text=True)
    rooms = {
        line.split('room="')[1].split('"')[0]
        for line in exposition.splitlines()
        if 'room="' in line
    }
    assert rooms == {"r2", "r5", "_other"}


def test_a_session_ended_elsewhere_ends_the_socket(chat: InProcessChat) -> None:
    http = chat.user("alice")
    sock = chat.socket(http)
    cookie = http.get_cookie("chat_session")
    assert cookie is not None
    other_tab = chat.app.test_client()
    other_tab.set_cookie("chat_session", cookie.value)
    other_tab.post("/logout", json={})
    assert not sock.is_connected()


# -- the gauges equal the real state after any sequence of operations ------------------------
OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["connect", "join", "leave", "disconnect", "message"]),
        st.integers(0, 2),  # user
        st.integers(0, 3),  # connection slot of that user
        st.sampled_from(["a", "b", "c"]),  # room
    ),
    max_size=40,
)


@pytest.fixture(scope="module")
def shared_chat() -> tuple[InProcessChat, list[Any]]:
    """One app and three logged-in users for every generated example (hashing is slow)."""
    from conftest import TEST_CONFIG

    from service import create_app

    chat = InProcessChat(create_app({**TEST_CONFIG, "METRICS_MAX_ROOMS": 2}))
    return chat, [chat.user(f"user{n}") for n in range(3)]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=OPERATIONS)
def test_gauges_equal_the_state_after_any_sequence(
    shared_chat: tuple[InProcessChat, list[Any]], operations: list[Any]
) -> None:
    chat, users = shared_chat
    assert chat.metric("chat_connections") == 0.0  # the previous example cleaned up
    sockets: dict[tuple[int, int], Any] = {}
    model: dict[tuple[int, int], set[str]] = {}  # connection -> rooms
    for op, user, slot, room in operations:
        key = (user, slot)
        sock = sockets.get(key)
        if op == "connect" and sock is None:
            sockets[key], model[key] = chat.socket(users[user]), set()
        elif sock is None:
            continue
        elif op == "join":
            assert sock.emit("join", {"room": room}, callback=True)["ok"]
            model[key].add(room)
        elif op == "leave":
            ack = sock.emit("leave", {"room": room}, callback=True)
            assert ack["ok"] is (room in model[key])
            model[key].discard(room)
        elif op == "message":
            ack = sock.emit("message", {"room": room, "text": "x"}, callback=True)
            assert ack["ok"] is (room in model[key])
        elif op == "disconnect":
            sock.disconnect()
            del sockets[key], model[key]
        members = {r: {u for (u, _), rooms in model.items() if r in rooms} for r in "abc"}
        assert chat.metric("chat_connections") == len(model)
        assert chat.metric("chat_users_online") == len({u for u, _ in model})
        assert chat.metric("chat_rooms") == sum(1 for m in members.values() if m)
        per_label: dict[str, float] = {}
        registry = parts_of(chat.app).telemetry.metrics.registry
        for family in registry.collect():
            if family.name == "chat_room_members":
                for sample in family.samples:
                    per_label[sample.labels["room"]] = sample.value
        assert sum(per_label.values()) == sum(len(m) for m in members.values())
        assert len(per_label) <= 3  # two rooms of their own at most, plus _other
    for sock in sockets.values():
        sock.disconnect()
    assert chat.metric("chat_connections") == 0.0 and chat.metric("chat_rooms") == 0.0


def test_connections_per_user_are_capped(make_app: Any) -> None:
    chat = InProcessChat(make_app(MAX_CONNECTIONS_PER_USER=2))
    http = chat.user("alice")
    first, _second = chat.socket(http), chat.socket(http)
    with capture_logs() as logs:
        third = chat.socketio.test_client(chat.app, flask_test_client=http)
    assert not third.is_connected()
    assert [(e["event"], e["reason"]) for e in logs] == [
        ("connect_rejected", "too_many_connections")
    ]
    assert chat.metric("chat_connect_rejections_total", reason="too_many_connections") == 1.0
    assert chat.socket(chat.user("bob")).is_connected()  # others are not affected
    first.disconnect()
    assert chat.socket(http).is_connected()  # a place freed up
    assert chat.metric("chat_connections") == 3.0 and chat.metric("chat_users_online") == 2.0
