"""The end-to-end delivery probe (`service/probe.py`) on real processes.

Every test runs real `chat-service` processes (and a real `redis-server` where it says so),
with a short `CHAT_PROBE_INTERVAL`, and reads what an operator reads: `/metrics` and the JSON
log. Each prints the delivery p50/p99 it measured (estimated from the histogram's buckets, as
`histogram_quantile` would) and, for the deaf listener, the time to detection: run with `-s`
to see them.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio
from chatserver import REPO, ChatServer, wait_until
from redis_support import RedisServer, stoppable_redis

from service.probe import REGISTRY_KEY, TIMEOUT_SHARE
from service.queue import CHANNEL
from service.settings import Settings, SettingsError

StartServer = Callable[..., ChatServer]
PROBE_FAILED = "probe_failed"
FAST = "0.5"  # seconds between probes where a test only needs many of them


# -- reading the probe's metrics ----------------------------------------------------------------
def probe_state(server: ChatServer) -> dict[str, Any]:
    """The probe's series now: delivered count, failures by reason, cumulative buckets."""
    samples = server.metrics()
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == "chat_probe_delivery_seconds_bucket"
    )
    return {
        "delivered": samples.get(("chat_probe_delivery_seconds_count", frozenset())),
        "timeout": samples.get(("chat_probe_failures_total", frozenset({("reason", "timeout")}))),
        "error": samples.get(("chat_probe_failures_total", frozenset({("reason", "error")}))),
        "buckets": buckets,
    }


def delivered(server: ChatServer) -> float:
    return float(probe_state(server)["delivered"] or 0)


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' `histogram_quantile` over cumulative (upper bound, count) buckets."""
    total = buckets[-1][1]
    assert total > 0, "no probe delivered"
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def report_latency(what: str, server: ChatServer) -> tuple[float, float]:
    buckets = probe_state(server)["buckets"]
    total = server.metric("chat_probe_delivery_seconds_sum") or 0.0
    p50, p99 = quantile(0.5, buckets), quantile(0.99, buckets)
    print(
        f"\n[probe] {what}: {buckets[-1][1]:.0f} deliveries, p50 {p50 * 1000:.2f} ms, "
        f"p99 {p99 * 1000:.2f} ms (from the buckets), mean {total / buckets[-1][1] * 1000:.2f} ms"
    )
    return p50, p99


def failures(server: ChatServer) -> list[dict[str, Any]]:
    return server.logged("probe_failed")


def assert_stops_cleanly(server: ChatServer) -> None:
    """SIGTERM: exit 0, `service_stopping` the last line, and no probe failed on the way."""
    assert server.stop(signal.SIGTERM) == 0
    assert server.logged()[-1]["event"] == "service_stopping", server.output()
    assert failures(server) == []


def since(server: ChatServer, moment: float, event: str) -> list[dict[str, Any]]:
    """Lines of `event` stamped at or after the wall-clock time `moment`."""
    return [line for line in server.logged(event) if stamp(line) >= moment]


def stamp(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


# -- the setting ----------------------------------------------------------------------------------
def test_the_interval_is_read_strictly() -> None:
    assert Settings.load(environ={}).probe_interval == 10
    assert Settings.load(environ={"CHAT_PROBE_INTERVAL": "0.5"}).probe_interval == 0.5
    assert Settings.load(environ={"CHAT_PROBE_INTERVAL": "0"}).probe_interval == 0
    for bad in ("0.05", "-1", "often", "nan", "inf", ""):
        with pytest.raises(SettingsError, match=f"CHAT_PROBE_INTERVAL={bad!r}"):
            Settings.load(environ={"CHAT_PROBE_INTERVAL": bad})


# -- one process ----------------------------------------------------------------------------------
@pytest.mark.parametrize("async_mode", ["eventlet", "gevent"])
def test_probes_arrive_and_are_counted_on_one_process(
    start_server: StartServer, async_mode: str
) -> None:
    server = start_server({"CHAT_PROBE_INTERVAL": FAST}, async_mode)
    state = probe_state(server)
    # Every series exists from start-up, before the first probe.
    assert (state["timeout"], state["error"]) == (0.0, 0.0)
    assert [bound for bound, _ in state["buckets"]][:2] == [0.001, 0.002]
    wait_until(lambda: delivered(server) >= 20, timeout=30)
    state = probe_state(server)
    assert (state["timeout"], state["error"]) == (0.0, 0.0), failures(server)
    _, p99 = report_latency(f"one process ({async_mode}, in memory)", server)
    assert p99 < 0.5
    assert_stops_cleanly(server)


def test_probe_traffic_is_invisible_to_users(start_server: StartServer) -> None:
    """Users, rooms, message counters, gauges and log lines are exactly what the users did."""
    server = start_server({"CHAT_PROBE_INTERVAL": FAST})
    http = server.login("alice")
    alice = server.socket(http)
    assert alice.request("join", {"room": "lobby"})["ok"]
    assert alice.request("message", {"room": "lobby", "text": "hi"}) == {"ok": True, "id": 1}
    wait_until(lambda: delivered(server) >= 6, timeout=15)

    assert http.get(server.url + "/rooms", timeout=5).json() == [{"name": "lobby", "members": 1}]
    samples = server.metrics()

    def series(name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {labels: value for (n, labels), value in samples.items() if n == name}

    assert series("chat_connections") == {frozenset(): 1.0}
    assert series("chat_users_online") == {frozenset(): 1.0}
    assert series("chat_rooms") == {frozenset(): 1.0}
    assert series("chat_connects_total") == {frozenset(): 1.0}
    assert series("chat_room_members") == {frozenset({("room", "lobby")}): 1.0}
    assert series("chat_room_joins_total") == {frozenset({("room", "lobby")}): 1.0}
    assert series("chat_messages_total") == {
        frozenset({("room", "lobby"), ("source", "socket")}): 1.0
    }
    connect = frozenset({("event", "connect")})
    assert series("chat_event_duration_seconds_count")[connect] == 1.0
    for name in ("chat_requests_rejected_total", "chat_disconnects_total",
                 "chat_connect_rejections_total", "chat_messages_rejected_total"):  # fmt: skip
        assert set(series(name).values()) == {0.0}, (name, series(name))
    assert [line["user"] for line in server.logged("client_connected")] == ["alice"]
    assert [line["room"] for line in server.logged("room_joined")] == ["lobby"]
    assert [line["room"] for line in server.logged("message_sent")] == ["lobby"]
    assert {event for event, _ in alice.received} <= {"joined", "message"}

    # The probe's room cannot be joined or read by a user; its namespace refuses strangers.
    refused = alice.request("join", {"room": "_probe"})
    assert (refused["ok"], refused["error"]) == (False, "invalid_room")
    history = http.get(server.url + "/rooms/_probe/messages", timeout=5)
    assert history.status_code == 400 and history.json()["error"] == "invalid_room"
    stranger = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        stranger.connect(
            server.url, namespaces=["/_probe"], auth={"token": "a guess"},
            transports=["websocket"], wait_timeout=5,
        )  # fmt: skip
    stranger.disconnect()
    wait_until(lambda: server.logged("connect_rejected"))
    assert [line["reason"] for line in server.logged("connect_rejected")] == ["unauthorized"]
    rejections = server.metric("chat_connect_rejections_total", reason="unauthorized")
    assert rejections == 1.0
    assert failures(server) == []
    alice.disconnect()
    assert_stops_cleanly(server)


def test_an_interval_of_zero_turns_the_probe_off(start_server: StartServer) -> None:
    server = start_server({"CHAT_PROBE_INTERVAL": "0"})
    exported = {name for name, _ in server.metrics()}
    assert not any(name.startswith("chat_probe_") for name in exported)


def test_the_probe_runs_under_gunicorn(start_server: StartServer) -> None:
    """The documented gunicorn command (one gevent worker) probes its own bind address."""
    gunicorn = REPO / ".venv" / "bin" / "gunicorn"
    if not gunicorn.exists():
        pytest.skip("gunicorn is not installed in .venv")
    command = [str(gunicorn), "-c", "python:service.gunicorn_conf", "service:create_app()"]
    server = ChatServer(
        {"CHAT_PROBE_INTERVAL": FAST, "CHAT_ASYNC_MODE": "gevent"}, command=command
    ).start()
    try:
        wait_until(lambda: delivered(server) >= 5, timeout=20)
        state = probe_state(server)
        assert (state["timeout"], state["error"]) == (0.0, 0.0), failures(server)
    finally:
        server.stop()
    assert failures(server) == []
    server.assert_every_line_json()


# -- several processes on Redis -----------------------------------------------------------------
@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with stoppable_redis(tmp_path / "redis") as server:
        yield server


def on_redis(url: str, interval: str) -> dict[str, str]:
    return {
        "CHAT_STORE": url,
        "CHAT_MESSAGE_QUEUE": url,
        "CHAT_SECRET_KEY": "probe-test-key",
        "CHAT_PROBE_INTERVAL": interval,
    }


class ChannelTap:
    """A subscriber of Flask-SocketIO's channel in the test: what crosses Redis, and from whom."""

    def __init__(self, redis_server: RedisServer) -> None:
        self.pubsub = redis_server.client().pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(CHANNEL)
        self.seen: list[dict[str, Any]] = []

    def collect(self, seconds: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.1)
            if message and message["type"] == "message":
                self.seen.append(json.loads(message["data"]))
        self.pubsub.close()
        return self.seen


def test_probes_cross_the_queue_between_two_processes(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    env = on_redis(redis_server.url(), FAST)
    one, two = start_server(env), start_server(env)
    wait_until(lambda: delivered(one) >= 10 and delivered(two) >= 10, timeout=20)
    peers = redis_server.client().hgetall(REGISTRY_KEY)
    assert len(peers) == 2, peers

    # On the channel: each process's probes, and each one's answers to the other's.
    emits = [m for m in ChannelTap(redis_server).collect(3.0) if m.get("method") == "emit"]
    probes = {m["data"][0]["from"] for m in emits if m["event"] == "probe"}
    assert probes == set(peers)
    answers = {(m["data"][0]["from"], m["room"]) for m in emits if m["event"] == "probe_ack"}
    first, second = sorted(peers)
    assert answers == {(first, "to:" + second), (second, "to:" + first)}
    assert all(m["namespace"] == "/_probe" for m in emits)

    # Two arrivals awaited per probe (its own, the peer's answer), so twice the deliveries of a
    # lone process: the count grows by about 2 a round.
    before, started = delivered(one), time.monotonic()
    time.sleep(4)
    rounds = (time.monotonic() - started) / float(FAST)
    assert delivered(one) - before >= 1.5 * rounds
    for server in (one, two):
        state = probe_state(server)
        assert (state["timeout"], state["error"]) == (0.0, 0.0), failures(server)
    report_latency("two processes on Redis, process 1", one)
    report_latency("two processes on Redis, process 2", two)

    # A process that stops leaves the registry: its peer expects no more answers from it.
    assert_stops_cleanly(two)
    stopped_at = time.time()
    time.sleep(3 * float(FAST) + 1)
    assert since(one, stopped_at, "probe_failed") == []
    assert len(redis_server.client().hgetall(REGISTRY_KEY)) == 1
    assert_stops_cleanly(one)


class DeafeningProxy:
    """A TCP proxy to Redis for one chat-service process, able to make its listener deaf.

    It forwards every connection both ways, and notes the one that sent SUBSCRIBE: the message
    queue's listener. `deafen()` then drops what Redis sends on that connection, and nothing
    else: the TCP connection stays open, Redis still counts the subscriber (a PUBLISH reports
    it as a receiver), the process's store calls and publishes work, and python-socketio sees
    no error, so it neither logs nor resubscribes. That is the failure of python-socketio issue
    #1581 as the rest of the system sees it: a process that looks healthy and never hears a
    broadcast again. The same happens in the wild when a NAT, firewall or load balancer in
    between forgets an idle long-lived connection.

    Why not another way: `CLIENT KILL TYPE pubsub` is no deafness at all: python-socketio logs
    "Cannot receive from redis... retrying in 1 secs" and resubscribes a second later (tried:
    the probe sees two timeouts, then deliveries again), so it only tests a blip.
    `CLIENT PAUSE` stops every client, not one process's listener. Redis has no command to
    unsubscribe another client's connection, and revoking channel permissions with ACLs closes
    the connection, which python-socketio then reports and retries (and it also refuses the
    process's publishes): loud, not silent.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.deaf = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def deafen(self) -> None:
        self.deaf.set()

    def hear(self) -> None:
        self.deaf.clear()

    def close(self) -> None:
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.upstream)
                self.sockets += [client, upstream]
                listening = threading.Event()  # this connection carries a subscription
                threading.Thread(
                    target=self._forward, args=(client, upstream, listening, True), daemon=True
                ).start()
                threading.Thread(
                    target=self._forward, args=(upstream, client, listening, False), daemon=True
                ).start()

    def _forward(
        self, source: socket.socket, sink: socket.socket, listening: threading.Event, up: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if up and b"SUBSCRIBE" in data.upper():
                    listening.set()
                if not up and listening.is_set() and self.deaf.is_set():
                    continue  # Redis said something to the listener: it never arrives
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def test_a_deaf_listener_is_detected_within_two_intervals(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    interval = 1.0
    proxy = DeafeningProxy(redis_server.port)
    try:
        healthy = start_server(on_redis(redis_server.url(), str(interval)))
        deaf = start_server(on_redis(proxy.url(), str(interval)))
        # Both probe each other: two deliveries per round on each side.
        wait_until(lambda: delivered(healthy) >= 8 and delivered(deaf) >= 8, timeout=30)
        room = "deafness"
        alice_http, bob_http = healthy.login("alice"), deaf.login("bob")
        alice, bob = healthy.socket(alice_http), deaf.socket(bob_http)
        for client in (alice, bob):
            assert client.request("join", {"room": room})["ok"]
        assert alice.request("message", {"room": room, "text": "before"})["ok"]
        bob.wait_for("message", lambda m: m["text"] == "before")
        assert failures(healthy) == failures(deaf) == []

        proxy.deafen()
        deafened_at = time.time()
        # The chat itself shows nothing wrong: the message is stored, acked and logged...
        assert alice.request("message", {"room": room, "text": "unheard"})["ok"]
        healthy.wait_for_event("message_sent", text="unheard")

        def first_failure(server: ChatServer, path: str) -> dict[str, Any]:
            return wait_until(  # type: ignore[no-any-return]
                lambda: [
                    f for f in since(server, deafened_at, "probe_failed") if f["path"] == path
                ],
                timeout=4 * interval + 5,
            )[0]

        own = first_failure(deaf, "self")  # the deaf process misses its own probe
        peer = first_failure(healthy, "peer")  # ... and its peer misses its answers
        assert (own["reason"], peer["reason"]) == ("timeout", "timeout")
        assert peer["peer"] == own["peer"]  # the healthy process names the deaf one
        detected = {
            name: stamp(line) - deafened_at for name, line in (("self", own), ("peer", peer))
        }
        print(
            f"\n[probe] deaf listener (interval {interval} s, timeout "
            f"{TIMEOUT_SHARE * interval} s) detected after {detected['self']:.2f} s by itself, "
            f"{detected['peer']:.2f} s by its peer"
        )
        assert max(detected.values()) <= 2 * interval
        # ... while the user on the deaf process never got the message, and nothing else said so.
        time.sleep(0.5)
        assert [m["text"] for m in bob.got("message")] == ["before"]
        for server in (healthy, deaf):
            assert not [e for e in server.logged() if "redis" in str(e.get("event")).lower()]
        assert delivered(healthy) > 0 and probe_state(healthy)["error"] == 0

        # Heard again: the probes succeed again (the deaf process' pending ones aside).
        proxy.hear()
        heard_at = time.time()
        before = delivered(deaf)
        wait_until(lambda: delivered(deaf) >= before + 4, timeout=10)
        time.sleep(2 * interval)
        late = [f for f in since(deaf, heard_at + interval, "probe_failed")]
        assert late == []
    finally:
        proxy.close()


def test_a_stopped_redis_fails_probes_and_the_chat_recovers(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    server = start_server(on_redis(redis_server.url(), FAST))
    http = server.login("alice")
    alice = server.socket(http)
    assert alice.request("join", {"room": "lobby"})["ok"]
    wait_until(lambda: delivered(server) >= 5, timeout=15)
    assert redis_server.process is not None

    redis_server.process.send_signal(signal.SIGSTOP)
    stopped_at = time.time()
    try:
        found = wait_until(lambda: failures(server), timeout=10)
    finally:
        time.sleep(max(0.0, 3.0 - (time.time() - stopped_at)))
        redis_server.process.send_signal(signal.SIGCONT)
    resumed_at = time.time()
    print(f"\n[probe] stopped Redis: first probe_failed after {stamp(found[0]) - stopped_at:.2f} s")
    assert found[0]["reason"] in ("timeout", "error")
    assert server.process is not None and server.process.poll() is None  # no crash
    state = probe_state(server)
    assert state["timeout"] + state["error"] >= 1

    # Recovered: probes arrive again and stop failing, and the chat carries messages.
    before = delivered(server)
    wait_until(lambda: delivered(server) >= before + 5, timeout=20)
    settled = time.time()
    ack = alice.request("message", {"room": "lobby", "text": "back"}, timeout=10)
    assert ack["ok"], ack
    alice.wait_for("message", lambda m: m["text"] == "back")
    time.sleep(2)
    assert since(server, settled, "probe_failed") == []
    print(f"[probe] stopped Redis: probes arrive again {settled - resumed_at:.2f} s after SIGCONT")
    alice.disconnect()
    assert_stops_cleanly_after_failures(server)


def assert_stops_cleanly_after_failures(server: ChatServer) -> None:
    assert server.stop(signal.SIGTERM) == 0
    assert server.logged()[-1]["event"] == "service_stopping", server.output()


def test_a_process_alone_on_redis_probes_through_its_own_listener(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """With a message queue even a lone process's probe crosses Redis (`path` `self`)."""
    server = start_server(on_redis(redis_server.url(), FAST))
    tap = ChannelTap(redis_server)
    emits = [m for m in tap.collect(2.0) if m.get("method") == "emit"]
    assert [m["event"] for m in emits] and {m["event"] for m in emits} == {"probe"}
    wait_until(lambda: delivered(server) >= 5, timeout=15)
    assert failures(server) == []
    report_latency("one process on Redis", server)
    assert_stops_cleanly(server)


def test_users_see_nothing_of_probes_on_redis(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """The store's probe room holds no member: no process lists it."""
    env = on_redis(redis_server.url(), FAST)
    one, two = start_server(env), start_server(env)
    http = one.login("alice")
    alice = one.socket(http)
    assert alice.request("join", {"room": "lobby"})["ok"]
    wait_until(lambda: delivered(one) >= 6 and delivered(two) >= 6, timeout=20)
    for server in (one, two):
        rooms = requests.get(server.url + "/rooms", cookies=http.cookies, timeout=5).json()
        assert rooms == [{"name": "lobby", "members": 1}]
    raw = redis_server.client()
    assert raw.hlen("chat:room:_probe:members") == 0
    assert raw.llen("chat:room:_probe:history") > 0  # the probes went through the store
    for server in (one, two):
        assert failures(server) == []
