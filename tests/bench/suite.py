"""The benchmark suite: observable-chat beside a bare Flask-SocketIO chat and Node socket.io.

`make bench` runs it (then the older login-stall benchmark); `--quick` is one short run:

    .venv/bin/python tests/bench/run.py [--quick] [--runs N] [--repo PATH] [--out DIR]
                                        [--idle-connections N] [--only B1,B3]

Each run starts every server in turn on a free loopback port, pinned to CPU 0 (`taskset -c 0`),
and drives it with one Node process pinned to CPU 1 (`driver.js`, a hand-written Socket.IO
client over the `ws` package), then stops it: observable-chat at log level info (every line,
metrics, rate limiter, session check; stdout to a log file), the same at level warning (what
logging costs), the bare Flask-SocketIO chat (`bare_server.py`, eventlet, TCP_NODELAY on), the
same bare chat with `socketio.run`'s defaults (Nagle on, B1-B3 only), and Node socket.io 4
(`node_server.js`, npm-installed into test-artifacts/bench/node). Runs repeat that order, so a
server's neighbours in time are the others, and every ratio is taken between two servers of the
same run before the median over runs.

The driver measures its own CPU over each measurement window; a run in which it used more than
`DRIVER_SATURATED_PCT` of its core is discarded (it may have been the bottleneck) and said so.
Medians and ranges are over the runs kept. The table goes to stdout and `bench.md`, everything
measured to `bench.json` (in `--out`, test-artifacts/bench by default), the servers' logs to
`logs/` beside them.

observable-chat runs with `servers.OBSERVABLE_ENV`: the message rate limit at
1000000 per second (the limiter still runs on every message), login and registration limits
raised for the set-up's logins, 10000 connections per user.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import servers as S

DRIVER_SATURATED_PCT = 90.0
USERS = 10  # observable-chat users holding the benchmark's connections (blocks of connections)
LOGIN_BURST = 20

SERVERS = {
    "obs-info": "observable-chat (info)",
    "obs-warn": "observable-chat (warning)",
    "bare": "bare Flask-SocketIO",
    "bare-nagle": "bare, Nagle on",
    "node": "Node socket.io",
}


@dataclass(frozen=True)
class Profile:
    runs: int
    warmup_s: float
    duration_s: float
    idle_connections: int
    scrape_s: float
    drain_s: float = 10.0


FULL = Profile(runs=3, warmup_s=1.0, duration_s=3.0, idle_connections=10_000, scrape_s=3.0)
QUICK = Profile(runs=1, warmup_s=0.5, duration_s=1.5, idle_connections=1_000, scrape_s=1.5)


# -- the workloads, as driver configurations -------------------------------------------------------
def b1(p: Profile) -> dict[str, Any]:
    return {"workload": "fanout", "members": 50, "window": 32, "warmup_s": p.warmup_s,
            "duration_s": p.duration_s, "drain_s": p.drain_s, "max_messages": 300_000,
            "room_prefix": "b1"}  # fmt: skip


def b2(p: Profile) -> dict[str, Any]:
    rate = 600
    return {"workload": "paced", "members": 50, "rate": rate, "warmup_s": p.warmup_s,
            "duration_s": p.duration_s, "drain_s": p.drain_s, "max_outstanding": 5000,
            "max_messages": int(rate * (p.warmup_s + p.duration_s + 2))}  # fmt: skip


def b3(p: Profile) -> dict[str, Any]:
    return {"workload": "fanout", "members": 2, "window": 64, "warmup_s": p.warmup_s,
            "duration_s": p.duration_s, "drain_s": p.drain_s, "max_messages": 1_000_000,
            "room_prefix": "b3"}  # fmt: skip


def b4(p: Profile, logins: list[str]) -> dict[str, Any]:
    rate = 200
    return {"workload": "logins", "members": 20, "rate": rate, "warmup_s": p.warmup_s,
            "duration_s": p.duration_s, "drain_s": p.drain_s, "max_outstanding": 5000,
            "max_messages": rate * 60,
            "logins": [{"username": name, "password": S.PASSWORD} for name in logins]}  # fmt: skip


def b5(p: Profile) -> dict[str, Any]:
    return {"workload": "idle", "connections": p.idle_connections, "room_size": 20,
            "concurrency": 50, "settle_s": 2.0}  # fmt: skip


def b6_burst(p: Profile) -> dict[str, Any]:
    return {"workload": "burst", "members": 50, "per_sender": 10, "drain_s": 60.0}


def b7(p: Profile) -> dict[str, Any]:
    rate = 200
    return {"workload": "scrape", "rooms": 100, "members_per_room": 2, "rate": rate,
            "warmup_s": p.warmup_s, "duration_s": p.scrape_s, "drain_s": p.drain_s,
            "scrape_interval_ms": 200, "max_scrapes": 100,
            "max_messages": int(rate * (p.warmup_s + 2 * p.scrape_s + 10))}  # fmt: skip


# -- running ------------------------------------------------------------------------------------
@dataclass
class Suite:
    profile: Profile
    repo: Path
    out: Path
    only: set[str]
    node_modules: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: list[S.Server] = field(default_factory=list)

    def wants(self, workload: str) -> bool:
        return not self.only or workload in self.only

    def log_path(self, run: int, name: str) -> Path:
        return self.out / "logs" / f"run{run}-{name}.log"

    def start(self, server: S.Server) -> S.Server:
        self.started.append(server)
        server.start()
        if server.cwd == self.repo:  # observable-chat: `python -m service` from --repo
            cwd = Path(os.readlink(f"/proc/{server.pid}/cwd"))
            if cwd != self.repo:
                raise S.BenchError(f"{server.name} runs in {cwd}, not {self.repo}")
        return server

    def stop(self, server: S.Server) -> None:
        server.stop()
        if server in self.started:
            self.started.remove(server)

    def stop_all(self) -> None:
        for server in list(self.started):
            self.stop(server)

    def record(
        self, run: int, workload: str, server: str, result: dict[str, Any] | None, error: str = ""
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {"run": run, "workload": workload, "server": server}
        if result is None:
            entry.update(valid=False, error=error)
            print(f"  run {run} {workload:3} {server:10} ERROR {error.splitlines()[0][:150]}")
        else:
            driver = float(result.get("driver_cpu_pct") or 0.0)
            window = result.get("window") or {}
            others = window.get("others_cpu_pct")
            entry.update(result=result, driver_cpu_pct=driver, others_cpu_pct=others)
            entry["valid"] = driver <= DRIVER_SATURATED_PCT
            if not entry["valid"]:
                entry["discarded"] = f"driver used {driver:.0f}% of its core"
            flag = "" if entry["valid"] else ", DISCARDED"
            busy = "" if others is None else f", others {others:.0f}%"
            print(
                f"  run {run} {workload:3} {server:10} {progress(workload, result)}"
                f"  [driver {driver:.0f}% CPU{flag}{busy}]"
            )
        self.records.append(entry)
        return entry

    def drive(
        self,
        run: int,
        workload: str,
        key: str,
        servers: list[S.Server],
        cookies: list[str],
        config: dict[str, Any],
        timeout: float = 120.0,
    ) -> dict[str, Any] | None:
        waited = S.wait_idle(servers)
        before = [s.log_size() for s in servers]
        config = {"urls": [s.url for s in servers], "cookies": cookies,
                  "server_pids": [s.pid for s in servers], **config}  # fmt: skip
        try:
            result = S.run_driver(self.node_modules, config, timeout)
        except S.BenchError as error:
            self.record(run, workload, key, None, str(error))
            return None
        after = [s.log_size() for s in servers]
        result["log_lines"] = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
        result["log_bytes"] = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
        result["waited_for_idle_s"] = round(waited, 2)
        result["server_cpu"] = "0"
        result["driver_cpu"] = "1"
        self.record(run, workload, key, result)
        return result


def progress(workload: str, r: dict[str, Any]) -> str:
    exact = "" if r.get("exact", True) else "  COUNTS WRONG: " + json.dumps(
        {k: r.get(k) for k in ("sent", "expected_deliveries", "deliveries", "duplicates",
                               "unexpected", "delivery_id_mismatch", "ack_errors",
                               "first_error", "failures", "first_failure")})  # fmt: skip
    if workload in ("B1", "B6"):
        server = r["window"]["server_cpu_pct"]
        text = f"{r['deliveries_per_s']:9,.0f} deliveries/s, server {server:.0f}%"
    elif workload == "B2":
        lat = r["latency_ms"]
        text = f"p50 {lat['p50']:.1f} ms p99 {lat['p99']:.1f} ms ({r['achieved_rate']:.0f} msg/s)"
    elif workload == "B3":
        server = r["window"]["server_cpu_pct"]
        text = (f"{r['messages_per_s']:9,.0f} msg/s, {r['server_cpu_us_per_message']:.0f} us "
                f"CPU/msg, server {server:.0f}%")  # fmt: skip
    elif workload == "B4":
        text = (f"p99 {r['latency_without_ms']['p99']:.1f} ms without, "
                f"{r['latency_during_ms']['p99']:.1f} ms during {r['logins_ok']} logins "
                f"({r['burst_s']:.2f} s)")  # fmt: skip
    elif workload == "B5":
        text = (f"{r['connections']} connections in {r['open_join_s']:.1f} s, "
                f"{r['rss_per_connection_kb']:.1f} KB RSS each")  # fmt: skip
    elif workload == "B6b":
        text = f"{r['concurrent_emits']} emits, all delivered in {r['all_done_ms']:.0f} ms"
    elif workload == "B7":
        text = (f"scrape p50 {r['scrape_ms']['p50']:.1f} ms max {r['scrape_ms']['max']:.1f} ms, "
                f"{r['body_bytes']} B; worst gap {r['stall_without_ms']['worst_ms']:.1f} -> "
                f"{r['stall_during_ms']['worst_ms']:.1f} ms")  # fmt: skip
    else:
        text = ""
    return text + exact


def logins(suite: Suite, server: S.Server, prefix: str = "bench") -> list[str]:
    return [S.login(server.url, f"{prefix}{n}") for n in range(USERS)]


def shared_block(suite: Suite, run: int, key: str) -> None:
    """B1-B3 on one server (and B7, B4 on observable-chat at level info)."""
    p = suite.profile
    wanted = [w for w in ("B1", "B2", "B3") if suite.wants(w)]
    if key == "obs-info":
        wanted += [w for w in ("B7", "B4") if suite.wants(w)]
    if key == "bare-nagle" or key == "obs-warn":
        wanted = [w for w in wanted if w in ("B1", "B2", "B3")]
    if not wanted:
        return
    log = suite.log_path(run, key)
    if key.startswith("obs"):
        server = S.observable(suite.repo, log, "info" if key == "obs-info" else "warning")
    elif key.startswith("bare"):
        server = S.bare(log, nagle=key == "bare-nagle")
    else:
        server = S.node(log, suite.node_modules)
    try:
        suite.start(server)
    except S.BenchError as error:
        for workload in wanted:
            suite.record(run, workload, key, None, str(error))
        return
    try:
        cookies = logins(suite, server) if key.startswith("obs") else []
        configs = {"B1": b1(p), "B2": b2(p), "B3": b3(p), "B7": b7(p)}
        for workload in wanted:
            if workload == "B4":
                names = [f"login{n}" for n in range(LOGIN_BURST)]
                for name in names:
                    S.register(server.url, name)
                suite.drive(run, "B4", key, [server], cookies, b4(p, names))
            else:
                suite.drive(run, workload, key, [server], cookies, configs[workload])
    except S.BenchError as error:  # a login or registration failed: the rest cannot run
        done = {e["workload"] for e in suite.records if e["run"] == run and e["server"] == key}
        for workload in wanted:
            if workload not in done:
                suite.record(run, workload, key, None, str(error))
    finally:
        suite.stop(server)


def idle_block(suite: Suite, run: int, key: str) -> None:
    """B5 on a fresh server: RSS before and after the idle connections."""
    p = suite.profile
    log = suite.log_path(run, f"{key}-idle")
    if key == "obs-info":
        limit = str(max(10_000, p.idle_connections + 1_000))
        server = S.observable(suite.repo, log, "info", {"CHAT_MAX_CONNECTIONS": limit})
    elif key == "bare":
        server = S.bare(log)
    else:
        server = S.node(log, suite.node_modules)
    try:
        suite.start(server)
        cookies = logins(suite, server) if key.startswith("obs") else []
    except S.BenchError as error:
        suite.record(run, "B5", key, None, str(error))
        suite.stop(server)
        return
    try:
        suite.drive(run, "B5", key, [server], cookies, b5(p), timeout=600)
    finally:
        suite.stop(server)


def redis_block(suite: Suite, run: int, redis: S.Redis) -> None:
    """B6: fan-out on one Redis, one process vs two (the room split), and 500 emits at once."""
    p = suite.profile
    for key, count in (("redis-1", 1), ("redis-2", 2)):
        burst: dict[str, Any] | None = None
        redis.flush()
        env = {"CHAT_STORE": redis.url(0), "CHAT_MESSAGE_QUEUE": redis.url(0)}
        group = [
            S.observable(suite.repo, suite.log_path(run, f"{key}-{n}"), "info", env)
            for n in range(count)
        ]
        try:
            for server in group:
                suite.start(server)
            cookies = logins(suite, group[0])
        except S.BenchError as error:
            suite.record(run, "B6", key, None, str(error))
            for server in group:
                suite.stop(server)
            continue
        try:
            suite.drive(run, "B6", key, group, cookies, {**b1(p), "room_prefix": "b6"})
            if count == 2:
                burst = suite.drive(run, "B6b", key, group, cookies, b6_burst(p))
        finally:
            for server in group:
                suite.stop(server)
        if count == 2 and burst is not None:
            errors = [line for server in group for line in server.error_lines()]
            burst["error_lines"] = len(errors)
            burst["first_error_lines"] = errors[:3]
            print(f"  run {run} B6b error lines in the two servers' logs: {len(errors)}")


def run_suite(suite: Suite) -> None:
    p = suite.profile
    redis: S.Redis | None = None
    if suite.wants("B6"):
        missing = S.install_redis()
        if missing:
            suite.notes.append(f"B6 not run: {missing}")
        else:
            redis = S.Redis(suite.out / "redis").start()
    try:
        for run in range(1, p.runs + 1):
            print(f"\nrun {run} of {p.runs}  (load average {load()})")
            for key in ("obs-info", "obs-warn", "bare", "bare-nagle", "node"):
                shared_block(suite, run, key)
            if suite.wants("B5"):
                for key in ("obs-info", "bare", "node"):
                    idle_block(suite, run, key)
            if redis is not None:
                redis_block(suite, run, redis)
    finally:
        suite.stop_all()
        if redis is not None:
            redis.stop()


# -- summarising --------------------------------------------------------------------------------
def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == int(value) and abs(value) < 1000:
        return str(int(value))
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


Metric = Callable[[dict[str, Any]], float | None]


@dataclass
class Row:
    workload: str
    title: str
    metric: str
    value: Metric
    servers: tuple[str, ...]
    ratios: tuple[tuple[str, str], ...] = ()
    # a pair row compares two measurements of one record (before -> after)
    pair: Metric | None = None


def values(
    records: list[dict[str, Any]], workload: str, server: str, fn: Metric
) -> dict[int, float]:
    found: dict[int, float] = {}
    for entry in records:
        if entry["workload"] == workload and entry["server"] == server and entry["valid"]:
            value = fn(entry["result"])
            if value is not None:
                found[entry["run"]] = float(value)
    return found


def ratio_text(a: dict[int, float], b: dict[int, float]) -> list[float]:
    return [a[run] / b[run] for run in a if b.get(run)]


def rows() -> list[Row]:
    def lat(name: str, q: str) -> Metric:
        return lambda r: r[name][q]

    python = ("obs-info", "obs-warn", "bare", "bare-nagle")
    return [
        Row("B1", "fan-out: room of 50, 1 sender, window 32", "deliveries/s",
            lambda r: r["deliveries_per_s"], (*python, "node"),
            (("obs-info", "bare"), ("obs-info", "node"), ("obs-warn", "bare"),
             ("bare-nagle", "bare"))),
        Row("B1", "", "server CPU % of its core", lambda r: r["window"]["server_cpu_pct"],
            (*python, "node")),
        Row("B1", "", "log bytes per message", lambda r: r["log_bytes"] / max(1, r["sent"]),
            ("obs-info", "obs-warn")),
        Row("B2", "600 msg/s paced into a room of 50", "delivery p50 ms",
            lat("latency_ms", "p50"), (*python, "node"),
            (("obs-info", "bare"), ("obs-warn", "bare"))),
        Row("B2", "", "delivery p99 ms", lat("latency_ms", "p99"), (*python, "node"),
            (("obs-info", "bare"), ("obs-warn", "bare"))),
        Row("B2", "", "messages/s achieved", lambda r: r["achieved_rate"], (*python, "node")),
        Row("B3", "inbound: 1 sender, 1 receiver, window 64", "messages/s",
            lambda r: r["messages_per_s"], (*python, "node"),
            (("obs-info", "bare"), ("obs-warn", "bare"), ("bare-nagle", "bare"))),
        Row("B3", "", "server CPU µs per message", lambda r: r["server_cpu_us_per_message"],
            (*python, "node"), (("obs-info", "bare"), ("obs-warn", "bare"))),
        Row("B3", "", "server CPU % of its core", lambda r: r["window"]["server_cpu_pct"],
            (*python, "node")),
        Row("B4", f"{LOGIN_BURST} logins during 200 msg/s into 20, server on 1 core",
            "delivery p99 ms: without → with logins", lat("latency_without_ms", "p99"),
            ("obs-info",), pair=lat("latency_during_ms", "p99")),
        Row("B4", "", "delivery p50 ms: without → with logins", lat("latency_without_ms", "p50"),
            ("obs-info",), pair=lat("latency_during_ms", "p50")),
        Row("B4", "", "each login ms (p50)", lat("login_ms", "p50"), ("obs-info",)),
        Row("B5", "idle joined connections (rooms of 20)", "server RSS KB per connection",
            lambda r: r["rss_per_connection_kb"], ("obs-info", "bare", "node"),
            (("obs-info", "bare"),)),
        Row("B5", "", "seconds to open and join all", lambda r: r["open_join_s"],
            ("obs-info", "bare", "node"), (("obs-info", "bare"),)),
        Row("B6", "Redis store + queue: fan-out, room of 50, window 32",
            "deliveries/s: 1 process → members split over 2", lambda r: r["deliveries_per_s"],
            ("redis-1",), pair=None),
        Row("B6b", "Redis, 2 processes: 50 members x 10 emits at once",
            "emits refused (of 500)", lambda r: r["ack_errors"], ("redis-2",)),
        Row("B6b", "", "accepted emits' deliveries missing",
            lambda r: r["acked"] * r["members"] - r["deliveries"], ("redis-2",)),
        Row("B6b", "", "ms until every accepted emit was delivered", lambda r: r["all_done_ms"],
            ("redis-2",)),
        Row("B6b", "", "error lines in both logs", lambda r: r.get("error_lines"), ("redis-2",)),
        Row("B7", "GET /metrics every 200 ms, 101 active rooms, 200 msg/s",
            "scrape ms p50", lat("scrape_ms", "p50"), ("obs-info",)),
        Row("B7", "", "scrape ms max", lat("scrape_ms", "max"), ("obs-info",)),
        Row("B7", "", "body KB", lambda r: r["body_bytes"] / 1024, ("obs-info",)),
        Row("B7", "", "worst delivery gap ms: not scraping → scraping",
            lambda r: r["stall_without_ms"]["worst_ms"], ("obs-info",),
            pair=lambda r: r["stall_during_ms"]["worst_ms"]),
        Row("B7", "", "delivery latency p99 ms: not scraping → scraping",
            lambda r: r["latency_without_ms"]["p99"], ("obs-info",),
            pair=lambda r: r["latency_during_ms"]["p99"]),
        Row("B7", "", "delivery latency max ms: not scraping → scraping",
            lambda r: r["latency_without_ms"]["max"], ("obs-info",),
            pair=lambda r: r["latency_during_ms"]["max"]),
    ]  # fmt: skip


COLUMNS = ("obs-info", "obs-warn", "bare", "bare-nagle", "node")


def table(records: list[dict[str, Any]]) -> list[str]:
    header = ["workload", "metric", *(SERVERS[c] for c in COLUMNS), "ratio (same run)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows():
        cells = dict.fromkeys(COLUMNS, "")
        ratio = []
        if row.workload == "B6" and row.servers == ("redis-1",):
            one = values(records, "B6", "redis-1", row.value)
            two = values(records, "B6", "redis-2", row.value)
            if not one and not two:
                continue
            cells["obs-info"] = f"{spread(list(one.values()))} → {spread(list(two.values()))}"
            ratio.append(f"2 processes / 1: {spread(ratio_text(two, one))}")
        elif row.pair is not None:
            before = values(records, row.workload, row.servers[0], row.value)
            after = values(records, row.workload, row.servers[0], row.pair)
            if not before:
                continue
            cells["obs-info"] = f"{spread(list(before.values()))} → {spread(list(after.values()))}"
            ratio.append(f"with / without: {spread(ratio_text(after, before))}")
        else:
            found = {s: values(records, row.workload, s, row.value) for s in row.servers}
            if not any(found.values()):
                continue
            for server, by_run in found.items():
                column = "obs-info" if server.startswith("redis") else server
                cells[column] = spread(list(by_run.values()))
            for a, b in row.ratios:
                if found.get(a) and found.get(b):
                    ratio.append(f"{short(a)}/{short(b)} {spread(ratio_text(found[a], found[b]))}")
        title = f"**{row.workload}** {row.title}" if row.title else ""
        lines.append(
            "| " + " | ".join([title, row.metric, *cells.values(), "; ".join(ratio)]) + " |"
        )
    return lines


def short(key: str) -> str:
    return {"obs-info": "info", "obs-warn": "warning", "bare-nagle": "bare Nagle"}.get(key, key)


def driver_table(records: list[dict[str, Any]]) -> list[str]:
    """The driver's CPU use (% of its core) per workload and server: median, max, discarded."""
    keys = sorted({(e["workload"], e["server"]) for e in records if "result" in e})
    lines = ["| workload | server | driver CPU % median (max) | runs kept / measured "
             "| other processes' CPU % on the 2 CPUs, median (max) |",
             "|---|---|---|---|---|"]  # fmt: skip
    for workload, server in keys:
        mine = [e for e in records if e["workload"] == workload and e["server"] == server]
        cpu = [e["driver_cpu_pct"] for e in mine if "driver_cpu_pct" in e]
        kept = sum(1 for e in mine if e["valid"])
        median, worst = statistics.median(cpu), max(cpu)
        name = SERVERS.get(server, server)
        others = [e["others_cpu_pct"] for e in mine if e.get("others_cpu_pct") is not None]
        busy = f"{statistics.median(others):.0f} ({max(others):.0f})" if others else "-"
        lines.append(
            f"| {workload} | {name} | {median:.0f} ({worst:.0f}) | {kept} / {len(mine)} | {busy} |"
        )
    return lines


def problems(records: list[dict[str, Any]]) -> list[str]:
    found = []
    for e in records:
        where = f"run {e['run']} {e['workload']} {SERVERS.get(e['server'], e['server'])}"
        if "error" in e:
            found.append(f"{where}: error: {e['error'].splitlines()[0][:200]}")
        elif not e["result"].get("exact", True):
            r = e["result"]
            found.append(f"{where}: counts not exact: sent {r.get('sent')}, expected "
                         f"{r.get('expected_deliveries')}, got {r.get('deliveries')}, duplicates "
                         f"{r.get('duplicates')}, unexpected {r.get('unexpected')}, id mismatches "
                         f"{r.get('delivery_id_mismatch')}, ack errors {r.get('ack_errors')}, "
                         f"failures {r.get('failures')}")  # fmt: skip
        if e.get("discarded"):
            found.append(f"{where}: discarded, {e['discarded']}")
        if "result" in e and e["result"].get("fell_behind_by"):
            found.append(f"{where}: the server fell behind the paced rate (by up to "
                         f"{e['result']['fell_behind_by']} messages)")  # fmt: skip
        if "result" in e and e["result"].get("error_lines"):
            first = e["result"]["first_error_lines"][0]
            try:
                line = json.loads(first)
                tail = line.get("exception", "").strip().splitlines()[-1:]
                first = f"{line.get('event')} ({line.get('where')}): {' '.join(tail)}"
            except (ValueError, AttributeError):
                pass
            found.append(f"{where}: {e['result']['error_lines']} error lines, the first: "
                         f"{first[:300]}")  # fmt: skip
    return found


def machine(repo: Path, node_modules: Path) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    memory = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))  # fmt: skip
    git = ["git", "-C", str(repo)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "service"], capture_output=True,
                           text=True)  # fmt: skip
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "memory_gb": round(int(memory) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": S.node_version(),
        "socket.io": S.package_version(node_modules, "socket.io"),
        "ws": S.package_version(node_modules, "ws"),
        "repo": str(repo),
        "repo_head": head.stdout.strip() or None,
        "repo_service_modified": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None,
        "service_imported_from": S.service_file(repo),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="observable-chat benchmark suite")
    parser.add_argument("--quick", action="store_true", help="one short run (B5: 1,000)")
    parser.add_argument("--runs", type=int, help="interleaved runs (default 3, --quick 1)")
    parser.add_argument(
        "--repo",
        type=Path,
        default=S.REPO,
        help="the checkout whose `python -m service` runs (default: this one)",
    )
    parser.add_argument("--out", type=Path, default=S.ARTIFACTS, help="where results go")
    parser.add_argument("--idle-connections", type=int, help="B5's connections (10,000)")
    parser.add_argument("--only", default="", help="workloads, e.g. B1,B3")  # fmt: skip
    parser.add_argument("--report", type=Path, help="print the table of a bench.json again")
    parser.add_argument("--label", default="", help="names the code measured (a commit)")
    args = parser.parse_args(argv)
    if args.report:
        return rerender(args.report.resolve())
    profile = QUICK if args.quick else FULL
    if args.runs:
        profile = Profile(**{**profile.__dict__, "runs": args.runs})
    if args.idle_connections:
        profile = Profile(**{**profile.__dict__, "idle_connections": args.idle_connections})
    repo = args.repo.resolve()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    open_files = S.raise_open_file_limit()
    if open_files < profile.idle_connections + 500:
        sys.exit(f"the open-file limit ({open_files}) is too low for B5's "
                 f"{profile.idle_connections} connections: use --idle-connections")  # fmt: skip
    started = time.monotonic()
    try:
        node_modules = S.ensure_node_modules()
    except S.BenchError as error:
        sys.exit(f"bench: {error}")
    info = machine(repo, node_modules)
    info["label"] = args.label
    expected = str(repo / "service" / "__init__.py")
    if info["service_imported_from"] != expected:
        sys.exit(f"python -m service in {repo} would import {info['service_imported_from']}, "
                 f"not {expected}")  # fmt: skip
    only = {w.strip().upper() for w in args.only.split(",") if w.strip()}
    suite = Suite(profile, repo, out, only, node_modules)
    info["load_average_start"] = load()
    print(
        f"benchmark suite: {profile.runs} run(s); servers on CPU {S.SERVER_CPU}, driver on "
        f"CPU {S.DRIVER_CPU}; observable-chat from {repo} (imports {expected})"
    )
    print(settings_line())
    try:
        run_suite(suite)
    except KeyboardInterrupt:
        suite.stop_all()
        raise
    info["load_average_end"] = load()
    info["wall_s"] = round(time.monotonic() - started, 1)
    report(suite, info)
    return 0


def settings_line() -> str:
    chosen = ", ".join(f"{k}={v}" for k, v in S.OBSERVABLE_ENV.items() if k != "CHAT_SECRET_KEY")
    return (
        f"observable-chat runs with {chosen} (the message limiter still runs on every message; "
        f"B5 adds CHAT_MAX_CONNECTIONS = connections + 1000)"
    )


def static_notes(suite: Suite) -> list[str]:
    p = suite.profile
    notes = []
    if suite.wants("B5"):
        notes.append(
            f"B5: observable-chat's {p.idle_connections:,} connections are held by {USERS} "
            f"logged-in users ({p.idle_connections // USERS:,} each, in rooms of 20)"
        )
    if suite.wants("B6"):
        notes.append(
            "B6: both observable-chat processes and redis-server share CPU "
            f"{S.SERVER_CPU} (the driver has the other core), so splitting the room over two "
            "processes shows the Redis queue's cost, not a scale-out gain; '1 process' also "
            "runs on the Redis store and queue; their 'other processes' CPU includes redis-server"
        )
    return notes


def rerender(path: Path) -> int:
    """The table and notes of an earlier bench.json, written again beside it."""
    document = json.loads(path.read_text())
    records = document["records"]
    only = (
        {e["workload"] for e in records} | {"B6"}
        if any(e["workload"] == "B6" for e in records)
        else {e["workload"] for e in records}
    )
    suite = Suite(Profile(**document["profile"]), Path(document["machine"]["repo"]),
                  path.parent, only, Path())  # fmt: skip
    suite.records = records
    suite.notes = [n for n in document.get("notes", []) if n.startswith("B6 not run")]
    report(suite, document["machine"])
    return 0


def report(suite: Suite, info: dict[str, Any]) -> None:
    p = suite.profile
    head = (
        f"{info['cpus']} x {info['cpu_model']}, {info['memory_gb']} GB, Linux {info['kernel']}, "
        f"Python {info['python']}, Node {info['node']} (socket.io {info['socket.io']}, ws "
        f"{info['ws']}); load average {info['load_average_start']} at the start, "
        f"{info['load_average_end']} at the end; {p.runs} run(s) in {info['wall_s']:.0f} s"
    )
    text = [
        f"observable-chat {info.get('label') or info['repo_head'] or ''} from {info['repo']}",
        head,
        f"Servers pinned to CPU {S.SERVER_CPU}, the driver (driver.js, Node) to CPU "
        f"{S.DRIVER_CPU}. " + settings_line() + ".",
        "",
        *table(suite.records),
        "",
        f"Cells: median (min-max) over the runs kept; ratios are taken within a run first. "
        f"B5: {p.idle_connections:,} connections. A run whose driver used more than "
        f"{DRIVER_SATURATED_PCT:.0f}% of its core is discarded.",
        "",
        *driver_table(suite.records),
    ]
    issues = static_notes(suite) + problems(suite.records) + suite.notes
    if issues:
        text += ["", "Notes:", *(f"- {issue}" for issue in issues)]
    print("\n" + "\n".join(text))
    (suite.out / "bench.md").write_text("\n".join(text) + "\n")
    document = {
        "machine": info,
        "profile": p.__dict__,
        "driver_saturated_pct": DRIVER_SATURATED_PCT,
        "observable_env": {k: v for k, v in S.OBSERVABLE_ENV.items() if k != "CHAT_SECRET_KEY"},
        "servers": SERVERS,
        "table": table(suite.records),
        "driver_cpu": driver_table(suite.records),
        "notes": issues,
        "records": suite.records,
    }
    (suite.out / "bench.json").write_text(json.dumps(document, indent=1) + "\n")
    print(f"\nwritten: {suite.out / 'bench.md'}, {suite.out / 'bench.json'}, logs in "
          f"{suite.out / 'logs'}")  # fmt: skip
