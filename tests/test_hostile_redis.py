"""Attack: Redis stalls while clients leave, and their cleanup must not be lost.

With `CHAT_STORE=redis://…`, a Redis that stops answering for longer than the store's socket
timeout (5 s) made every store call of a disconnect fail, and the connection was never
forgotten: it stayed a member in Redis, `chat_connections` stayed up, the room never heard
`left`, and the user lost one of their `CHAT_MAX_CONNECTIONS_PER_USER` slots for good.

What must hold instead (see `ChatService.disconnect` and `ChatService.settle_store_work`):

- the process forgets a closed connection at once (gauges, connection slots), store or not;
- once Redis answers again, each room the connection was in hears `left` exactly once, one
  `room_left` line is written for it (after the `client_disconnected` line, which did not wait),
  and Redis holds no member for it;
- a join whose store call fails is refused with `internal_error` and leaves no half member
  behind, even when Redis runs the join after the caller gave up on it;
- a membership that another process reaped meanwhile is not reported a second time.

The attack itself freezes a real redis-server (SIGSTOP, then SIGCONT) under a real chat-service
in eventlet and gevent. A stall cannot aim at one command, so the rest check the promises
behind it directly, against a real Redis: the store's records, and the domain with store calls
that fail in each way a timeout can (ran unanswered, ran later, never ran).
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import socketio
import structlog
from chatserver import ChatServer, RecordingClient, wait_until
from flask import Flask
from hostile_support import assert_service_sound, gauges
from redis_support import RedisServer, stoppable_redis

from service.extension import parts_of
from service.store.memory import MemoryStore
from service.store.redis import RedisStore

pytestmark = pytest.mark.redis

STALL_S = 7.0  # longer than the store's 5 s socket timeout: every store call in it fails
RECOVERY_S = 20.0  # retries back off to 5 s between attempts, plus a slow shared machine
MAX_PER_USER = 3


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


# -- what Redis holds (the key table in service/store/redis.py) --------------------------------
def members(raw: redis.Redis, room: str) -> dict[str, str]:
    return raw.hgetall(f"chat:room:{room}:members")  # type: ignore[no-any-return]


def connection_users(raw: redis.Redis, room: str) -> list[str]:
    """The user of every connection Redis holds in `room`."""
    fields = raw.hkeys(f"chat:room:{room}:conns")
    return sorted(json.loads(field)[0] for field in fields)


def instance_memberships(raw: redis.Redis) -> list[list[str]]:
    """Every membership any instance has recorded for reaping: [room, user, sid, field]."""
    found: list[list[str]] = []
    for key in raw.scan_iter("chat:instance:*:conns"):
        found.extend(json.loads(entry) for entry in raw.smembers(key))
    return found


@contextlib.contextmanager
def stopped(redis_server: RedisServer) -> Iterator[None]:
    """redis-server frozen with SIGSTOP; SIGCONT whatever happens, so no test leaves it frozen."""
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        redis_server.process.send_signal(signal.SIGCONT)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with stoppable_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def stalling_chat(
    redis_server: RedisServer, start_server: Callable[..., ChatServer]
) -> Callable[[str], ChatServer]:
    def start(async_mode: str) -> ChatServer:
        env = {
            "CHAT_STORE": redis_server.url(),
            "CHAT_MESSAGE_QUEUE": redis_server.url(),
            "CHAT_MAX_CONNECTIONS_PER_USER": str(MAX_PER_USER),
        }
        return start_server(env, async_mode)  # type: ignore[no-any-return]

    return start


def joined(server: ChatServer, http: Any, *rooms: str) -> RecordingClient:
    client = server.socket(http)
    for room in rooms:
        ack = client.request("join", {"room": room})
        assert ack["ok"], ack
    return client


def assert_refused_a_connection(server: ChatServer, http: Any) -> None:
    """The user holds CHAT_MAX_CONNECTIONS_PER_USER connections: one more is refused."""
    before = len(server.logged("connect_rejected", reason="too_many_connections"))
    with pytest.raises(socketio.exceptions.ConnectionError):
        server.socket(http)
    wait_until(
        lambda: len(server.logged("connect_rejected", reason="too_many_connections")) > before
    )


def lefts(client: RecordingClient, room: str, user: str) -> list[dict[str, Any]]:
    return [d for d in client.got("left") if d["room"] == room and d["user"] == user]


# -- the attack ---------------------------------------------------------------------------------
@pytest.mark.parametrize("async_mode", ["eventlet", "gevent"])
def test_connections_closed_while_redis_is_stalled_are_cleaned_up_once_it_answers(
    redis_server: RedisServer, stalling_chat: Callable[[str], ChatServer], async_mode: str
) -> None:
    server = stalling_chat(async_mode)
    raw = redis_server.client()
    room, other = unique("stall"), unique("other")
    alice_http, bob_http, carol_http = (server.login(n) for n in ("alice", "bob", "carol"))
    bob = joined(server, bob_http, room, other)  # the watcher, another user
    carol = server.socket(carol_http)  # will try to join during the stall
    alices = [joined(server, alice_http, *((room, other) if n == 0 else (room,))) for n in range(3)]
    assert_refused_a_connection(server, alice_http)
    wait_until(lambda: len([d for d in bob.got("joined") if d["user"] == "alice"]) == 4)
    sids = [a.get_sid() for a in alices]
    assert members(raw, room) == {"alice": "3", "bob": "1"}

    stalled_at = time.monotonic()
    with stopped(redis_server):
        for client in alices:
            client.disconnect()
        # The socket is gone: this process forgets it now, Redis or not.
        truth = {"chat_connections": 2.0, "chat_users_online": 2.0, "chat_rooms": 2.0}
        wait_until(lambda: gauges(server) == truth, timeout=10, interval=0.1)
        for sid in sids:
            server.wait_for_event("client_disconnected", timeout=10, sid=sid)
        ack = carol.request("join", {"room": room}, timeout=20)
        assert (ack["ok"], ack["error"]) == (False, "internal_error")
        assert not server.logged("room_left", user="alice")  # the store has not confirmed yet
        time.sleep(max(0.0, STALL_S - (time.monotonic() - stalled_at)))
        resumed_at_line = len(server.logged())

    # Each room hears `left` once per connection, in the order the connections closed.
    wait_until(lambda: len(lefts(bob, room, "alice")) == 3, timeout=RECOVERY_S, interval=0.1)
    wait_until(lambda: len(lefts(bob, other, "alice")) == 1, timeout=5)
    assert [d["members"] for d in lefts(bob, room, "alice")] == [
        ["alice", "bob"], ["alice", "bob"], ["bob"],
    ]  # fmt: skip
    assert lefts(bob, other, "alice") == [{"room": other, "user": "alice", "members": ["bob"]}]

    # Redis holds nothing of alice's: members, connections, reaping records.
    assert members(raw, room) == {"bob": "1"} and members(raw, other) == {"bob": "1"}
    assert connection_users(raw, room) == ["bob"] and connection_users(raw, other) == ["bob"]
    assert [m for m in instance_memberships(raw) if m[1] != "bob"] == []

    # One `client_disconnected` per connection at once, one `room_left` per (room, sid) once
    # the store confirmed it.
    lines = server.logged()
    for sid in sids:
        [closed] = [n for n, e in enumerate(lines) if e["event"] == "client_disconnected"
                    and e["sid"] == sid]  # fmt: skip
        assert lines[closed]["reason"] in ("client_disconnect", "transport_close")
        left_lines = [n for n, e in enumerate(lines) if e["event"] == "room_left"
                      and e["sid"] == sid]  # fmt: skip
        assert sorted(lines[n]["room"] for n in left_lines) == (
            sorted([room, other]) if sid == sids[0] else [room]
        )
        assert closed < resumed_at_line <= min(left_lines)
        assert all(lines[n]["reason"] == "disconnect" for n in left_lines)
    # The outage shows as errors: the first failed cleanup (once, not per retry), the refused
    # join, the missed heartbeats; nothing else went wrong.
    errors = [e["where"] for e in lines if e["event"] == "unhandled_error"]
    assert errors.count("store cleanup") == 1
    assert set(errors) <= {"store cleanup", "socket:join", "store upkeep"}
    assert gauges(server) == truth

    # No connection slot leaked: alice can hold MAX_PER_USER connections again, and no more.
    again = [server.socket(alice_http) for _ in range(MAX_PER_USER)]
    assert_refused_a_connection(server, alice_http)
    for client in again:
        client.disconnect()

    # carol's refused join left her in no room, here or in Redis; she can join for real now.
    assert "carol" not in members(raw, room)
    refused = carol.request("message", {"room": room, "text": "am I in?"})
    assert (refused["ok"], refused["error"]) == (False, "not_in_room")
    assert carol.request("join", {"room": room})["members"] == ["bob", "carol"]
    carol.disconnect()
    bob.wait_for("left", lambda d: d["user"] == "carol")
    bob.disconnect()
    wait_until(lambda: raw.scard("chat:active") == 0, timeout=10)
    assert_service_sound(server)


# -- the store's promises behind it -----------------------------------------------------------
@pytest.fixture
def new_store(redis_server: RedisServer) -> Callable[..., RedisStore]:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"

    def make(**options: Any) -> RedisStore:
        return RedisStore(redis_server.url(), **{"prefix": prefix, **options})

    return make


def test_a_leave_whose_first_reply_was_lost_is_not_taken_for_a_reap(
    new_store: Callable[..., RedisStore],
) -> None:
    store = new_store()
    store.join("lobby", "alice", "a1")
    store.join("lobby", "bob", "b1")
    store.leave("lobby", "alice", "a1")  # ran in Redis; say its reply never came back
    again = store.leave("lobby", "alice", "a1")
    assert (again.removed, again.reaped, again.members) == (False, False, ["bob"])


def test_a_leave_of_a_connection_another_process_reaped_says_so_once(
    new_store: Callable[..., RedisStore], redis_server: RedisServer
) -> None:
    stalled, survivor = new_store(), new_store()
    stalled.heartbeat()
    survivor.heartbeat()
    stalled.join("lobby", "alice", "a1")
    stalled.join("lobby", "alice", "a2")
    survivor.join("lobby", "bob", "b1")
    redis_server.client().delete(f"{stalled.prefix}instance:{stalled.instance_id}")
    assert sorted(r.sid for r in survivor.reap_dead_instances()) == ["a1", "a2"]  # sent `left`

    late = stalled.leave("lobby", "alice", "a1")
    assert (late.removed, late.reaped, late.members) == (False, True, ["bob"])
    assert not stalled.leave("lobby", "alice", "a1").reaped  # the record is used up
    # A membership made again after the reap is this process's own again.
    stalled.join("lobby", "alice", "a2")
    assert stalled.leave("lobby", "alice", "a2").removed
    assert not stalled.leave("lobby", "alice", "a2").reaped
    reaped_key = f"{stalled.prefix}instance:{stalled.instance_id}:reaped"
    assert not redis_server.client().exists(reaped_key)


def test_a_cancelled_join_attempt_never_takes_effect(
    new_store: Callable[..., RedisStore], redis_server: RedisServer
) -> None:
    store = new_store()
    # The join ran, its reply was lost: cancelling removes what it did.
    store.join("lobby", "alice", "a1", attempt="first")
    store.cancel_join("lobby", "alice", "a1", "first", remove=True)
    assert not store.is_member("lobby", "alice")
    # The join had not run yet when it was cancelled: when it runs, it does nothing.
    store.cancel_join("lobby", "alice", "a1", "second", remove=True)
    with pytest.raises(RuntimeError):
        store.join("lobby", "alice", "a1", attempt="second")
    assert not store.is_member("lobby", "alice")
    assert store.active_rooms() == {}
    # Without `remove`, a membership the connection still holds stays.
    store.join("lobby", "alice", "a1", attempt="third")
    store.cancel_join("lobby", "alice", "a1", "fourth", remove=False)
    assert store.is_member("lobby", "alice")
    ttl = redis_server.client().pttl(f"{store.prefix}cancelled:fourth")
    assert 0 < ttl <= 3_600_000  # the fence does not outlive a late command by much


def test_the_memory_store_keeps_the_same_promises() -> None:
    store = MemoryStore()
    store.join("lobby", "alice", "a1", attempt="first")
    store.cancel_join("lobby", "alice", "a1", "first", remove=True)
    assert not store.is_member("lobby", "alice")
    store.join("lobby", "alice", "a1")
    store.cancel_join("lobby", "alice", "a1", "second", remove=False)
    assert store.is_member("lobby", "alice")
    left = store.leave("lobby", "alice", "a1")
    assert (left.removed, left.reaped) == (True, False)


# -- the domain's promises behind it ----------------------------------------------------------
class InProcess:
    """An app on the Redis store driven by Flask-SocketIO test clients (threading mode)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        parts = parts_of(app)
        self.socketio = parts.socketio
        self.chat = parts.chat
        store = parts.store
        assert isinstance(store, RedisStore)
        self.store = store

    def socket(self, name: str, *rooms: str) -> Any:
        http = self.app.test_client()
        body = {"username": name, "password": "correct horse battery"}
        http.post("/register", json=body)
        assert http.post("/login", json=body).status_code == 200
        sock = self.socketio.test_client(self.app, flask_test_client=http)
        for room in rooms:
            assert sock.emit("join", {"room": room}, callback=True)["ok"]
        return sock

    @staticmethod
    def lefts(sock: Any) -> list[Any]:
        found = [p["args"] for p in sock.get_received() if p["name"] == "left"]
        return [args[0] if isinstance(args, list) else args for args in found]


def test_a_missed_departure_is_reported_once_and_never_after_a_reap(
    make_app: Callable[..., Flask],
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    redis_server.client().flushdb()
    chat = InProcess(make_app(STORE=redis_server.url()))
    service, store, connections = chat.chat, chat.store, chat.chat.connections
    first, second = chat.socket("alice", "lobby"), chat.socket("alice", "lobby")
    first_sid, second_sid = (c.sid for c in connections.all())
    emitted: list[tuple[str, Any]] = []
    emit = service.broadcaster.emit

    def spy(event: str, data: Any, room: str, skip_sid: str | None = None) -> None:
        emitted.append((event, data))
        emit(event, data, room, skip_sid)

    monkeypatch.setattr(service.broadcaster, "emit", spy)
    real_leave = store.leave

    def lost_reply(room: str, user: str, sid: str) -> Any:
        real_leave(room, user, sid)
        raise redis.TimeoutError("the reply never came")

    def unreachable(room: str, user: str, sid: str) -> Any:
        raise redis.ConnectionError("Redis is not answering")

    with structlog.testing.capture_logs() as logs:
        monkeypatch.setattr(store, "leave", lost_reply)
        first.disconnect()  # its leave ran in Redis, but the service does not know it
        assert (connections.count(), connections.users_online()) == (1, 1)  # forgotten at once
        monkeypatch.setattr(store, "leave", unreachable)
        second.disconnect()  # its leave never reached Redis
        assert (connections.count(), connections.users_online()) == (0, 0)
        assert connections.active_rooms() == 0
        assert service.owes_store_work()
        # Meanwhile another process found this one silent and reaped `second` (and sent `left`).
        redis_server.client().delete(f"chat:instance:{store.instance_id}")
        reaped = RedisStore(redis_server.url()).reap_dead_instances()
        assert [(r.user, r.sid) for r in reaped] == [("alice", second_sid)]

        monkeypatch.setattr(store, "leave", real_leave)
        assert service.settle_store_work()
        assert not service.owes_store_work()
        assert service.settle_store_work()  # nothing left to do, nothing done twice

    # `first` is reported once (its first attempt ran unanswered); `second` not at all here.
    assert emitted == [("left", {"room": "lobby", "user": "alice", "members": []})]
    room_lefts = [(e["sid"], e["reason"]) for e in logs if e["event"] == "room_left"]
    assert room_lefts == [(first_sid, "disconnect")]
    closed = [e["sid"] for e in logs if e["event"] == "client_disconnected"]
    assert closed == [first_sid, second_sid]
    assert [e["where"] for e in logs if e["event"] == "unhandled_error"] == ["store cleanup"]
    assert [e["event"] for e in logs if e.get("sid") == first_sid] == [
        "client_disconnected", "room_left",
    ]  # fmt: skip
    assert store.active_rooms() == {}


def test_a_join_whose_store_call_fails_leaves_no_half_member(
    make_app: Callable[..., Flask],
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store call that times out may still run: before the caller knows (its reply was lost)
    or after it gave up (the command waited in a socket of a frozen Redis)."""
    redis_server.client().flushdb()
    chat = InProcess(make_app(STORE=redis_server.url()))
    service, store = chat.chat, chat.store
    carol = chat.socket("carol")
    real_join = store.join
    late: list[Callable[[], Any]] = []

    def ran_unanswered(*args: Any, **kwargs: Any) -> Any:
        real_join(*args, **kwargs)
        raise redis.TimeoutError("the reply never came")

    def runs_later(*args: Any, **kwargs: Any) -> Any:
        late.append(lambda: real_join(*args, **kwargs))
        raise redis.TimeoutError("Redis is frozen")

    for failure in (ran_unanswered, runs_later):
        monkeypatch.setattr(store, "join", failure)
        ack = carol.emit("join", {"room": "lobby"}, callback=True)
        assert (ack["ok"], ack["error"]) == (False, "internal_error")
        monkeypatch.setattr(store, "join", real_join)
        assert service.settle_store_work()
        for command in late:  # Redis runs the frozen join now: it must do nothing
            with pytest.raises(RuntimeError):
                command()
        assert not store.is_member("lobby", "carol")
        assert store.active_rooms() == {}
        assert service.connections.active_rooms() == 0
        refused = carol.emit("message", {"room": "lobby", "text": "in?"}, callback=True)
        assert refused["error"] == "not_in_room"

    assert carol.emit("join", {"room": "lobby"}, callback=True)["members"] == ["carol"]
    assert store.active_rooms() == {"lobby": 1}
    carol.disconnect()
    assert store.active_rooms() == {}


@pytest.mark.parametrize("failing", ["append_message", "is_member"])
def test_a_message_the_store_fails_is_one_counted_internal_error(
    make_app: Callable[..., Flask],
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
) -> None:
    """Through both doors: refused as `internal_error`, one `message_rejected` line and one count
    of `chat_messages_rejected_total{reason="internal_error"}` (the message SLO's bad events),
    nothing stored. (`is_member` is the HTTP door's membership check; a socket checks its own.)"""
    redis_server.client().flushdb()
    chat = InProcess(make_app(STORE=redis_server.url()))
    alice = chat.socket("alice", "lobby")
    http = chat.app.test_client()
    body = {"username": "alice", "password": "correct horse battery"}
    assert http.post("/login", json=body).status_code == 200

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("Redis is not answering")

    def failures(source: str) -> float:
        registry = parts_of(chat.app).telemetry.metrics.registry
        value = registry.get_sample_value(
            "chat_messages_rejected_total", {"source": source, "reason": "internal_error"}
        )
        return float(value or 0.0)

    monkeypatch.setattr(chat.store, failing, unreachable)
    with structlog.testing.capture_logs() as logs:
        if failing == "append_message":
            ack = alice.emit("message", {"room": "lobby", "text": "lost?"}, callback=True)
            assert (ack["ok"], ack["error"]) == (False, "internal_error")
        reply = http.post("/send", json={"room": "lobby", "text": "lost too?"})
        assert reply.status_code == 500 and reply.json["error"] == "internal_error"
    sources = ["socket", "http"] if failing == "append_message" else ["http"]
    rejected = [e for e in logs if e["event"] == "message_rejected"]
    assert [(e["source"], e["reason"], e["room"]) for e in rejected] == [
        (source, "internal_error", "lobby") for source in sources
    ]
    assert {source: failures(source) for source in ("socket", "http")} == {
        "socket": 1.0 if failing == "append_message" else 0.0,
        "http": 1.0,
    }
    assert not [e for e in logs if e["event"] == "message_sent"]
    monkeypatch.undo()
    assert chat.store.history("lobby", after=0, limit=10) == []


def test_no_join_reaches_a_store_that_still_owes_a_leave(
    make_app: Callable[..., Flask],
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What is owed goes first and, while it fails, joins are refused without a store call: the
    owed work cannot grow past the memberships that existed when the store failed. A leave is
    done here at once (acked), and reaches the store, and the room, in its turn."""
    redis_server.client().flushdb()
    chat = InProcess(make_app(STORE=redis_server.url()))
    service, store = chat.chat, chat.store
    alice, dave = chat.socket("alice", "lobby"), chat.socket("dave", "lobby")
    carol = chat.socket("carol")
    real_leave, real_join = store.leave, store.join
    joins: list[str] = []

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("Redis is not answering")

    def counted_join(*args: Any, **kwargs: Any) -> Any:
        joins.append(args[0])
        return real_join(*args, **kwargs)

    monkeypatch.setattr(store, "join", counted_join)
    monkeypatch.setattr(store, "leave", unreachable)
    alice.disconnect()
    assert dave.emit("leave", {"room": "lobby"}, callback=True) == {"ok": True, "room": "lobby"}
    assert service.connections.active_rooms() == 0
    for room in ("lobby", "other", "third"):
        ack = carol.emit("join", {"room": room}, callback=True)
        assert (ack["ok"], ack["error"]) == (False, "internal_error")
    assert joins == []
    assert len(service.connections.owed) == 2

    monkeypatch.setattr(store, "leave", real_leave)
    emitted: list[tuple[str, str]] = []
    emit = service.broadcaster.emit

    def spy(event: str, data: Any, room: str, skip_sid: str | None = None) -> None:
        emitted.append((event, data["user"]))
        emit(event, data, room, skip_sid)

    monkeypatch.setattr(service.broadcaster, "emit", spy)
    with structlog.testing.capture_logs() as logs:
        assert carol.emit("join", {"room": "lobby"}, callback=True)["members"] == ["carol"]
    assert emitted == [("left", "alice"), ("left", "dave"), ("joined", "carol")]
    assert [(e["user"], e["reason"]) for e in logs if e["event"] == "room_left"] == [
        ("alice", "disconnect"), ("dave", "leave"),
    ]  # fmt: skip
    assert not service.owes_store_work()
