"""The stores agree: one behavioural suite runs against MemoryStore and RedisStore.

RedisStore's own promises follow: several instances (processes) share one chat through one
Redis, concurrent appends keep ids and history in order, the epoch follows the Redis data, and
the connections of an instance that stopped beating are reaped once.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_support import RedisServer

from service.store.base import ChatStore, RoomLimitReached
from service.store.memory import MAX_SESSIONS_PER_USER, MemoryStore
from service.store.redis import RedisStore

StoreFactory = Callable[..., Any]  # (history_limit=…, max_rooms=…) -> a ChatStore


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def new_redis_store(redis_server: RedisServer, redis_prefix: str) -> StoreFactory:
    """RedisStores sharing this test's own prefix (so tests never see each other's keys)."""

    def make(**options: Any) -> RedisStore:
        return RedisStore(redis_server.url(), **{"prefix": redis_prefix, **options})

    return make


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def new_store(request: pytest.FixtureRequest) -> StoreFactory:
    """Stores of one kind; for Redis every store of a test shares the test's prefix."""
    if request.param == "memory":
        return MemoryStore
    factory: StoreFactory = request.getfixturevalue("new_redis_store")
    return factory


@pytest.fixture
def store(new_store: StoreFactory) -> ChatStore:
    return new_store()  # type: ignore[no-any-return]


def ids(messages: list[Any]) -> list[int]:
    return [m.id for m in messages]


# -- users ------------------------------------------------------------------------------------
def test_usernames_are_unique_regardless_of_case(store: ChatStore) -> None:
    assert store.user_count() == 0
    assert store.add_user("Alice", "hash-1")
    assert not store.add_user("alice", "hash-2")
    assert not store.add_user("ALICE", "hash-3")
    assert store.add_user("bob", "hash-4")
    assert store.find_user("aLiCe") == ("Alice", "hash-1")
    assert store.find_user("Bob") == ("bob", "hash-4")
    assert store.find_user("carol") is None
    assert store.user_count() == 2


def test_a_username_with_special_characters_round_trips(store: ChatStore) -> None:
    name, password_hash = 'a.b-c_d"é/\\', "scrypt:32768:8:1$salt$abc"
    assert store.add_user(name, password_hash)
    assert store.find_user(name.upper()) == (name, password_hash)


# -- sessions ---------------------------------------------------------------------------------
def test_a_session_names_its_user_until_deleted(store: ChatStore) -> None:
    store.create_session("token-1", "alice", 60)
    store.create_session("token-2", "alice", 60)
    assert store.session_user("token-1") == "alice"
    assert store.session_user("unknown") is None
    store.delete_session("token-1")
    assert store.session_user("token-1") is None
    assert store.session_user("token-2") == "alice"
    store.delete_session("token-1")  # twice, or unknown: nothing happens
    store.delete_session("never-made")


def test_a_session_expires_after_its_lifetime(store: ChatStore) -> None:
    store.create_session("short", "alice", 0.3)
    store.create_session("long", "alice", 60)
    assert store.session_user("short") == "alice"
    time.sleep(0.5)
    assert store.session_user("short") is None
    assert store.session_user("long") == "alice"


def test_a_user_keeps_at_most_the_newest_sessions(store: ChatStore) -> None:
    tokens = [f"t{n}" for n in range(MAX_SESSIONS_PER_USER + 2)]
    for token in tokens:
        store.create_session(token, "alice", 60)
    store.create_session("bob's", "bob", 60)
    assert [t for t in tokens if store.session_user(t)] == tokens[2:]
    assert store.session_user("bob's") == "bob"  # another user's cap is their own


def test_deleted_and_expired_sessions_do_not_count_against_the_cap(store: ChatStore) -> None:
    store.create_session("gone", "alice", 60)
    store.delete_session("gone")
    for n in range(3):
        store.create_session(f"brief{n}", "alice", 0.2)
    time.sleep(0.4)
    tokens = [f"t{n}" for n in range(MAX_SESSIONS_PER_USER)]
    for token in tokens:
        store.create_session(token, "alice", 60)
    assert all(store.session_user(t) == "alice" for t in tokens)


# -- rooms and members ------------------------------------------------------------------------
def test_membership_follows_connections(store: ChatStore) -> None:
    first = store.join("lobby", "bob", "b1")
    assert (first.members, first.history, first.added) == (["bob"], [], True)
    second = store.join("lobby", "alice", "a1")
    assert (second.members, second.added) == (["alice", "bob"], True)
    again = store.join("lobby", "alice", "a1")  # the same connection: nothing changes
    assert (again.members, again.added) == (["alice", "bob"], False)
    other = store.join("lobby", "alice", "a2")  # a second connection of alice
    assert (other.members, other.added) == (["alice", "bob"], True)
    assert store.active_rooms() == {"lobby": 2}

    left = store.leave("lobby", "alice", "a1")
    assert (left.members, left.removed) == (["alice", "bob"], True)
    assert store.is_member("lobby", "alice")  # a2 is still in
    left = store.leave("lobby", "alice", "a1")
    assert (left.members, left.removed) == (["alice", "bob"], False)
    left = store.leave("lobby", "alice", "a2")
    assert (left.members, left.removed) == (["bob"], True)
    assert not store.is_member("lobby", "alice")
    assert store.is_member("lobby", "bob")
    assert store.active_rooms() == {"lobby": 1}


def test_leaving_what_was_never_joined_changes_nothing(store: ChatStore) -> None:
    left = store.leave("nowhere", "alice", "a1")
    assert (left.members, left.removed) == ([], False)
    store.join("lobby", "bob", "b1")
    left = store.leave("lobby", "alice", "b1")  # the sid is bob's, not alice's
    assert (left.members, left.removed) == (["bob"], False)
    assert not store.is_member("nowhere", "alice")
    assert store.is_member("lobby", "bob")


def test_a_sid_is_a_connection_of_one_user(store: ChatStore) -> None:
    store.join("lobby", "alice", "same")
    joined = store.join("lobby", "bob", "same")
    assert (joined.members, joined.added) == (["alice", "bob"], True)
    assert store.leave("lobby", "alice", "same").members == ["bob"]


def test_active_rooms_counts_users_of_rooms_with_members(store: ChatStore) -> None:
    assert store.active_rooms() == {}
    store.join("a", "alice", "a1")
    store.join("a", "alice", "a2")
    store.join("a", "bob", "b1")
    store.join("b", "carol", "c1")
    store.join("c", "dave", "d1")
    store.append_message("c", "dave", "hello", "ts")
    store.leave("c", "dave", "d1")  # c keeps its history but has no members
    assert store.active_rooms() == {"a": 2, "b": 1}


# -- messages ---------------------------------------------------------------------------------
def test_messages_take_the_rooms_next_id_and_keep_their_fields(store: ChatStore) -> None:
    store.join("a", "alice", "a1")
    store.join("b", "bob", "b1")
    first = store.append_message("a", "alice", "hello", "2026-11-24T07:15:28.123Z")
    assert first.as_dict() == {
        "id": 1, "room": "a", "user": "alice", "text": "hello", "ts": "2026-11-24T07:15:28.123Z",
    }  # fmt: skip
    assert store.append_message("a", "alice", "again", "ts").id == 2
    assert store.append_message("b", "bob", "own sequence", "ts").id == 1
    odd = 'quotes " \\ slash / é ✓ 😀 \n lone \ud800 {"id": 7}'
    assert store.append_message("a", "alice", odd, "ts").text == odd
    assert [m.text for m in store.history("a")] == ["hello", "again", odd]


def test_history_is_oldest_first_with_after_and_limit(store: ChatStore) -> None:
    store.join("a", "alice", "a1")
    for n in range(1, 6):
        store.append_message("a", "alice", f"m{n}", "ts")
    assert ids(store.history("a")) == [1, 2, 3, 4, 5]
    assert ids(store.history("a", after=2)) == [3, 4, 5]
    assert ids(store.history("a", after=2, limit=2)) == [3, 4]
    assert ids(store.history("a", limit=0)) == []
    assert ids(store.history("a", after=5)) == []
    assert ids(store.history("a", after=99)) == []
    assert ids(store.history("a", after=-3, limit=1)) == [1]
    assert store.history("never") == []
    assert ids(store.join("a", "bob", "b1").history) == [1, 2, 3, 4, 5]


def test_history_is_trimmed_but_ids_go_on(new_store: StoreFactory) -> None:
    store = new_store(history_limit=3)
    store.join("a", "alice", "a1")
    for n in range(1, 8):
        assert store.append_message("a", "alice", f"m{n}", "ts").id == n
    assert ids(store.history("a")) == [5, 6, 7]
    assert ids(store.history("a", after=1)) == [5, 6, 7]
    assert ids(store.history("a", after=5, limit=1)) == [6]
    assert ids(store.join("a", "bob", "b1").history) == [5, 6, 7]
    store.leave("a", "alice", "a1")
    store.leave("a", "bob", "b1")
    assert store.append_message("a", "alice", "m8", "ts").id == 8  # an idle room goes on too


def test_no_history_is_kept_with_a_zero_limit(new_store: StoreFactory) -> None:
    store = new_store(history_limit=0)
    store.join("a", "alice", "a1")
    assert store.append_message("a", "alice", "m1", "ts").id == 1
    assert store.append_message("a", "alice", "m2", "ts").id == 2
    assert store.history("a") == []


# -- the room limit ---------------------------------------------------------------------------
def test_a_new_room_evicts_the_least_recently_active_idle_room(new_store: StoreFactory) -> None:
    store = new_store(max_rooms=3)
    for room in ("a", "b", "c"):
        store.join(room, "alice", "a1")
        store.append_message(room, "alice", f"in {room}", "ts")
    for room in ("a", "b", "c"):
        store.leave(room, "alice", "a1")
    store.append_message("a", "alice", "a is active again", "ts")  # a message is activity
    store.join("d", "bob", "b1")  # b is now the least recently active: it goes
    assert store.history("b") == []
    assert ids(store.history("a")) == [1, 2]
    assert ids(store.history("c")) == [1]
    store.join("c", "carol", "c1")  # a join is activity, even on an idle room
    store.leave("c", "carol", "c1")
    store.join("e", "bob", "b1")  # a goes, not c
    assert store.history("a") == []
    assert ids(store.history("c")) == [1]
    rejoined = store.join("b", "bob", "b1")  # b comes back empty, its ids from 1; c goes
    assert rejoined.history == []
    assert store.append_message("b", "bob", "new b", "ts").id == 1
    assert store.history("c") == []
    assert store.active_rooms() == {"b": 1, "d": 1, "e": 1}


def test_leaving_is_not_activity(new_store: StoreFactory) -> None:
    store = new_store(max_rooms=2)
    store.join("a", "alice", "a1")
    store.append_message("a", "alice", "in a", "ts")
    store.join("b", "bob", "b1")
    store.append_message("b", "bob", "in b", "ts")  # b is the more recently active room
    store.leave("b", "bob", "b1")
    store.leave("a", "alice", "a1")  # the last thing that happened, but not activity
    store.join("c", "carol", "c1")  # so a, not b, is the least recently active: it goes
    assert store.history("a") == []
    assert ids(store.history("b")) == [1]


def test_rooms_with_members_are_never_evicted(new_store: StoreFactory) -> None:
    store = new_store(max_rooms=2)
    store.join("old", "alice", "a1")  # the oldest room, but it has a member
    store.join("idle", "bob", "b1")
    store.append_message("idle", "bob", "gone soon", "ts")
    store.leave("idle", "bob", "b1")
    store.join("new", "carol", "c1")
    assert store.history("idle") == []
    assert store.active_rooms() == {"old": 1, "new": 1}
    with pytest.raises(RoomLimitReached):
        store.join("one-too-many", "dave", "d1")
    assert store.active_rooms() == {"old": 1, "new": 1}
    assert not store.is_member("one-too-many", "dave")
    assert store.join("old", "dave", "d1").members == ["alice", "dave"]  # existing rooms: fine


def test_a_room_without_members_or_history_still_takes_a_place(new_store: StoreFactory) -> None:
    store = new_store(max_rooms=1)
    store.join("a", "alice", "a1")
    store.leave("a", "alice", "a1")
    store.join("b", "bob", "b1")  # evicts a, which had neither members nor history
    with pytest.raises(RoomLimitReached):
        store.join("c", "carol", "c1")


def test_the_epoch_names_the_stores_lifetime(store: ChatStore) -> None:
    epoch = store.join("a", "alice", "a1").epoch
    assert isinstance(epoch, str) and epoch
    store.append_message("a", "alice", "hi", "ts")
    assert store.join("b", "bob", "b1").epoch == epoch


def test_ping_heartbeat_and_reaping_are_quiet_when_all_is_well(store: ChatStore) -> None:
    store.ping()
    store.heartbeat()
    store.join("a", "alice", "a1")
    assert store.reap_dead_instances() == []
    assert store.is_member("a", "alice")


# -- Redis: several instances, one chat ---------------------------------------------------------
@pytest.mark.redis
def test_instances_share_users_sessions_rooms_and_the_epoch(
    new_redis_store: StoreFactory,
) -> None:
    one, two = new_redis_store(), new_redis_store()
    epochs = {one.join("r", "alice", "a1").epoch, two.join("r", "bob", "b1").epoch}
    assert len(epochs) == 1
    one.leave("r", "alice", "a1")
    two.leave("r", "bob", "b1")
    assert one.instance_id != two.instance_id
    assert one.add_user("Alice", "h")
    assert not two.add_user("alice", "h2")
    assert two.find_user("ALICE") == ("Alice", "h")
    assert two.user_count() == 1

    one.create_session("tok", "Alice", 60)
    assert two.session_user("tok") == "Alice"
    two.delete_session("tok")
    assert one.session_user("tok") is None

    one.join("lobby", "Alice", "a1")
    joined = two.join("lobby", "bob", "b1")
    assert joined.members == ["Alice", "bob"]
    assert one.append_message("lobby", "Alice", "from one", "ts").id == 1
    assert two.append_message("lobby", "bob", "from two", "ts").id == 2
    assert [m.text for m in one.history("lobby")] == ["from one", "from two"]
    assert two.is_member("lobby", "Alice")
    assert one.active_rooms() == two.active_rooms() == {"lobby": 2}
    assert two.leave("lobby", "Alice", "a1").removed  # whichever process the sid is on
    assert one.active_rooms() == {"lobby": 1}


@pytest.mark.redis
def test_concurrent_appends_from_two_instances_keep_ids_and_history_in_order(
    new_redis_store: StoreFactory,
) -> None:
    threads_per_store, per_thread = 4, 40
    total = 2 * threads_per_store * per_thread
    stores = [new_redis_store(history_limit=total), new_redis_store(history_limit=total)]
    stores[0].join("busy", "alice", "a1")
    got: dict[str, list[int]] = {}
    start = threading.Barrier(2 * threads_per_store)

    def send(store: RedisStore, name: str) -> None:
        start.wait()
        got[name] = [
            store.append_message("busy", name, f"{name}:{n}", "ts").id for n in range(per_thread)
        ]

    workers = [
        threading.Thread(target=send, args=(store, f"s{s}t{t}"))
        for s, store in enumerate(stores)
        for t in range(threads_per_store)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    all_ids = sorted(itertools.chain.from_iterable(got.values()))
    assert all_ids == list(range(1, total + 1))  # each id once, no gaps
    assert all(ids_ == sorted(ids_) for ids_ in got.values())
    history = stores[1].history("busy")
    assert ids(history) == list(range(1, total + 1))
    for message in history:  # every message stored under the id its sender was given
        assert message.id == got[message.user][int(message.text.split(":")[1])]


@pytest.mark.redis
def test_concurrent_joins_never_exceed_the_room_limit(new_redis_store: StoreFactory) -> None:
    stores = [new_redis_store(max_rooms=5) for _ in range(4)]
    outcomes: list[str] = []
    start = threading.Barrier(20)

    def join(store: RedisStore, n: int) -> None:
        start.wait()
        try:
            store.join(f"room{n}", f"user{n}", f"sid{n}")
            outcomes.append("joined")
        except RoomLimitReached:
            outcomes.append("full")

    workers = [
        threading.Thread(target=join, args=(stores[n % 4], n)) for n in range(20)
    ]  # fmt: skip
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(outcomes) == ["full"] * 15 + ["joined"] * 5
    assert len(stores[0].active_rooms()) == 5


@pytest.mark.redis
def test_the_epoch_changes_when_the_redis_data_is_wiped(
    new_redis_store: StoreFactory, redis_server: RedisServer
) -> None:
    before = new_redis_store()
    epoch = before.join("a", "alice", "a1").epoch
    assert new_redis_store().join("a", "bob", "b1").epoch == epoch
    before.append_message("a", "alice", "hi", "ts")
    redis_server.client().flushdb()
    after = new_redis_store().join("z", "zed", "z1").epoch
    assert after != epoch
    joined = before.join("a", "alice", "a1")  # a process that outlived the wipe follows
    assert joined.epoch == after
    assert (joined.history, joined.added) == ([], True)
    assert before.append_message("a", "alice", "again", "ts").id == 1


@pytest.mark.redis
def test_ping_raises_when_redis_is_unreachable(tmp_path: Path) -> None:
    nobody = RedisServer(tmp_path)  # a free port that nothing listens on
    store = RedisStore(nobody.url())  # constructing does not need Redis yet
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        store.ping()
    assert time.monotonic() - started < 5


@pytest.mark.redis
def test_every_key_is_under_the_prefix_json_and_bounded(redis_server: RedisServer) -> None:
    raw = redis_server.client(db=3)
    raw.flushdb()
    store = RedisStore(redis_server.url(db=3), history_limit=2, max_rooms=2, prefix="app:")
    store.add_user("alice", "h")
    store.create_session("tok", "alice", 0.3)
    store.heartbeat()
    for room in ("a", "b", "c"):
        store.join(room, "alice", "a1")
        for n in range(5):
            store.append_message(room, "alice", f"m{n}", "ts")
        store.leave(room, "alice", "a1")
    keys = set(raw.keys("*"))
    assert keys and all(k.startswith("app:") for k in keys)
    assert not any(k.startswith("app:room:a:") for k in keys)  # evicted with its room
    assert raw.llen("app:room:c:history") == 2
    for value in raw.lrange("app:room:c:history", 0, -1):
        assert json.loads(value)["room"] == "c"
    assert json.loads(raw.hget("app:users", "alice") or "") == ["alice", "h"]
    assert 0 < raw.pttl("app:instance:" + store.instance_id) <= 15_000
    assert 0 < raw.pttl("app:sessions:alice") <= 300
    time.sleep(0.5)
    assert not any(k.startswith("app:session") for k in raw.keys("*"))  # sessions expire
    assert "app:instances" not in set(raw.keys("*"))  # no memberships: nothing to reap


# -- Redis: reaping the connections of dead instances -----------------------------------------
@pytest.mark.redis
def test_the_connections_of_a_silent_instance_are_reaped_once(
    new_redis_store: StoreFactory,
) -> None:
    dead = new_redis_store(heartbeat_ttl_s=0.5)
    alive, other = new_redis_store(), new_redis_store()
    dead.heartbeat()
    alive.heartbeat()
    dead.join("a", "alice", "a1")
    dead.join("b", "alice", "a1")
    dead.join("a", "carol", "c1")
    alive.join("a", "bob", "b1")
    alive.join("a", "carol", "c2")  # carol stays in a through her other connection
    assert other.reap_dead_instances() == []  # every instance is alive so far

    time.sleep(0.7)  # dead stops beating; its heartbeat key expires
    alive.heartbeat()
    reaped = other.reap_dead_instances()
    assert sorted((r.room, r.user, r.sid) for r in reaped) == [
        ("a", "alice", "a1"), ("a", "carol", "c1"), ("b", "alice", "a1"),
    ]  # fmt: skip
    final = {r.room: r.members for r in reaped if r.user == "alice"}
    assert final["b"] == []
    assert "alice" not in final["a"] and {"bob", "carol"} <= set(final["a"])
    assert alive.reap_dead_instances() == []  # each removal is reported once
    assert other.reap_dead_instances() == []
    assert alive.active_rooms() == {"a": 2}
    assert not alive.is_member("b", "alice")
    assert alive.join("a", "dave", "d1").members == ["bob", "carol", "dave"]
    # the dead instance's own view: its connections are no longer in, so no second `left`
    assert not dead.leave("a", "alice", "a1").removed


@pytest.mark.redis
def test_an_instance_whose_heartbeat_key_is_deleted_is_reaped(
    new_redis_store: StoreFactory, redis_server: RedisServer, redis_prefix: str
) -> None:
    crashed, survivor = new_redis_store(), new_redis_store()
    crashed.heartbeat()
    survivor.heartbeat()
    crashed.join("lobby", "alice", "a1")
    survivor.join("lobby", "bob", "b1")
    redis_server.client().delete(f"{redis_prefix}instance:{crashed.instance_id}")
    [gone] = survivor.reap_dead_instances()
    assert (gone.room, gone.user, gone.sid, gone.members) == ("lobby", "alice", "a1", ["bob"])
    assert survivor.active_rooms() == {"lobby": 1}


@pytest.mark.redis
def test_an_instance_that_keeps_beating_is_never_reaped(new_redis_store: StoreFactory) -> None:
    beating, reaper = new_redis_store(heartbeat_ttl_s=0.3), new_redis_store()
    beating.join("lobby", "alice", "a1")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        beating.heartbeat()
        assert reaper.reap_dead_instances() == []
        time.sleep(0.1)
    assert reaper.is_member("lobby", "alice")
    assert beating.reap_dead_instances() == []  # nor does an instance reap itself


@pytest.mark.redis
def test_concurrent_reapers_report_each_connection_once(
    new_redis_store: StoreFactory, redis_server: RedisServer, redis_prefix: str
) -> None:
    crashed = new_redis_store(max_rooms=100)
    crashed.heartbeat()
    connections = {(f"room{n % 50}", f"user{n % 7}", f"sid{n}") for n in range(450)}
    for room, user, sid in connections:  # more than one reap batch
        crashed.join(room, user, sid)
    redis_server.client().delete(f"{redis_prefix}instance:{crashed.instance_id}")
    reapers = [new_redis_store() for _ in range(4)]
    results: list[list[tuple[str, str, str]]] = [[] for _ in reapers]
    start = threading.Barrier(len(reapers))

    def reap(n: int) -> None:
        start.wait()
        results[n] = [(r.room, r.user, r.sid) for r in reapers[n].reap_dead_instances()]

    workers = [threading.Thread(target=reap, args=(n,)) for n in range(len(reapers))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    reported = list(itertools.chain.from_iterable(results))
    assert len(reported) == len(set(reported)) == len(connections)
    assert set(reported) == connections
    assert reapers[0].active_rooms() == {}
