"""Benchmark: what a login costs, and how long the event loop stalls during 20 logins at once.

Run with `make bench` (or `.venv/bin/python tests/bench_login_stall.py`). For each async mode it
starts the real chat-service, keeps one Socket.IO client probing the loop (an idempotent `join`
every 5 ms, timing the ack), and compares the probe's latency while 20 logins hash at once with
the same probe on the idle server, measured in the same run. It also times one Werkzeug hash
in this process, the cost the server pays per login, as the peer for the stall: a loop that
hashed in place would stall for about 20 such hashes. Last, it compares failed logins for a
real user with those for a name nobody registered: the ratio should be about 1 (no user
enumeration by timing).
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chatserver import ChatServer
from werkzeug.security import check_password_hash, generate_password_hash

CONCURRENT_LOGINS = 20


def hash_cost_ms(rounds: int = 10) -> float:
    stored = generate_password_hash("correct horse battery")
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        check_password_hash(stored, "correct horse battery")
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def probe(client: object, stop: threading.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        client.request("join", {"room": "probe"})  # type: ignore[attr-defined]
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.005)


def probe_while(server: ChatServer, work: object, seconds: float | None = None) -> list[float]:
    client = server.socket(server.login("prober"))
    client.request("join", {"room": "probe"})
    latencies: list[float] = []
    stop = threading.Event()
    thread = threading.Thread(target=probe, args=(client, stop, latencies))
    thread.start()
    if seconds is not None:
        time.sleep(seconds)
    else:
        work()  # type: ignore[operator]
    stop.set()
    thread.join()
    client.disconnect()
    return latencies


def logins(server: ChatServer, wall_ms: list[float]) -> None:
    def one(n: int) -> None:
        started = time.perf_counter()
        reply = requests.post(
            server.url + "/login",
            json={"username": f"user{n}", "password": "correct horse battery"},
            timeout=120,
        )
        assert reply.status_code == 200, reply.text
        wall_ms.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(CONCURRENT_LOGINS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def failed_login_ms(server: ChatServer, username: str) -> float:
    started = time.perf_counter()
    reply = requests.post(
        server.url + "/login",
        json={"username": username, "password": "not the password"},
        timeout=60,
    )
    assert reply.status_code == 401, reply.text
    return (time.perf_counter() - started) * 1000


def enumeration_timing(server: ChatServer, rounds: int = 15) -> tuple[float, float]:
    """Median time of a wrong password for a real user, and of any password for nobody."""
    known, unknown = [], []
    for n in range(rounds):  # alternate, so drift in machine load hits both alike
        known.append(failed_login_ms(server, f"user{n % CONCURRENT_LOGINS}"))
        unknown.append(failed_login_ms(server, f"nobody{n}"))
    return statistics.median(known), statistics.median(unknown)


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):6.1f} ms  p99 {p99:6.1f} ms  max {ordered[-1]:6.1f} ms"


def main() -> None:
    cost = hash_cost_ms()
    print(f"one Werkzeug password check in this process: {cost:.1f} ms (median of 10)")
    for mode in ("eventlet", "gevent"):
        server = ChatServer(async_mode=mode).start()
        try:
            for n in range(CONCURRENT_LOGINS):
                server.register(f"user{n}")
            idle = probe_while(server, None, seconds=1.0)
            wall: list[float] = []
            busy = probe_while(server, lambda: logins(server, wall))  # noqa: B023
            known_ms, unknown_ms = enumeration_timing(server)
        finally:
            server.stop()
        print(f"\n[{mode}] loop probe (socket `join` ack round trip)")
        print(f"  idle server:                {summary(idle)}  ({len(idle)} probes)")
        during = f"during {CONCURRENT_LOGINS} logins at once:"
        print(f"  {during}  {summary(busy)}  ({len(busy)} probes)")
        print(f"  each login, client-observed: {summary(wall)}")
        print(
            f"  failed login, real user {known_ms:.1f} ms vs unknown user {unknown_ms:.1f} ms: "
            f"ratio {unknown_ms / known_ms:.2f}"
        )
        print(f"  worst stall / idle worst:          {max(busy) / max(idle):5.2f}x")
        print(
            f"  worst stall / one password check:  {max(busy) / cost:5.2f}x "
            f"(hashing on the loop would be ~{CONCURRENT_LOGINS}x)"
        )


if __name__ == "__main__":
    main()
