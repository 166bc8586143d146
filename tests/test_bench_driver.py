"""The benchmark driver (tests/bench/driver.js) counts every delivery exactly once.

The driver runs briefly against a real observable-chat process, the bare Flask-SocketIO chat and
Node socket.io, as `make bench` runs it: every message carries the driver's sequence number and
comes back with the server's id, so sent x members must equal the deliveries counted, with no
duplicates, nothing unexpected and each id the one its ack gave. A bare server told to deliver
every 10th message twice, or to skip its sender, shows that the driver catches both.

Needs node, npm (the pinned packages are installed once into test-artifacts/bench/node) and
taskset; without them the tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench import servers as S
from chatserver import require_program

FANOUT = {"workload": "fanout", "warmup_s": 0.2, "duration_s": 0.8, "drain_s": 10,
          "max_messages": 200_000}  # fmt: skip


@pytest.fixture(scope="module")
def node_modules() -> Path:
    for program in ("node", "npm", "taskset"):
        require_program(program)
    try:
        return S.ensure_node_modules()
    except S.BenchError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(str(error))
        pytest.skip(str(error))


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[S.Server]]:
    servers: list[S.Server] = []
    yield servers
    for server in servers:
        server.stop()


def start(started: list[S.Server], server: S.Server) -> S.Server:
    started.append(server)
    return server.start()


def drive(node_modules: Path, server: S.Server, cookies: list[str], **config: Any) -> Any:
    config = {"urls": [server.url], "cookies": cookies, "server_pids": [server.pid], **config}
    return S.run_driver(node_modules, config, timeout=60)


def assert_exact(result: dict[str, Any], members: int) -> None:
    assert result["sent"] > 20, result
    assert result["members"] == members
    assert result["acked"] == result["sent"], result
    assert result["deliveries"] == result["sent"] * members == result["expected_deliveries"]
    assert result["missing"] == 0
    assert result["duplicates"] == 0
    assert result["unexpected"] == 0
    assert result["delivery_id_mismatch"] == 0
    assert result["ack_id_duplicates"] == 0
    assert result["ack_errors"] == 0
    assert result["exact"] is True
    assert result["counters"]["unexpected_closes"] == 0
    assert 0 < result["driver_cpu_pct"] < 200


def test_observable_chat_deliveries_counted_once(
    node_modules: Path, started: list[S.Server], tmp_path: Path
) -> None:
    server = start(
        started, S.observable(S.REPO, tmp_path / "chat.log", env={"CHAT_STRICT_LOGS": "true"})
    )
    cookies = [S.login(server.url, f"driver{n}") for n in range(3)]

    fanout = drive(node_modules, server, cookies, members=12, window=16, **FANOUT)
    assert_exact(fanout, members=12)
    burst = drive(
        node_modules, server, cookies, workload="burst", members=6, per_sender=5, drain_s=20
    )
    assert_exact(burst, members=6)
    assert burst["sent"] == 30

    server.stop()  # every message the driver counted is one the server logged as sent
    lines = [json.loads(line) for line in server.log.read_text().splitlines()]
    assert sum(1 for e in lines if e["event"] == "message_sent") == fanout["sent"] + 30
    assert not server.error_lines()


@pytest.mark.parametrize("kind", ["bare", "node"])
def test_peer_deliveries_counted_once(
    node_modules: Path, started: list[S.Server], tmp_path: Path, kind: str
) -> None:
    log = tmp_path / f"{kind}.log"
    server = start(started, S.bare(log) if kind == "bare" else S.node(log, node_modules))
    assert_exact(drive(node_modules, server, [], members=10, window=16, **FANOUT), members=10)
    paced = drive(node_modules, server, [], workload="paced", members=5, rate=200,
                  warmup_s=0.2, duration_s=0.5, drain_s=10, max_messages=1000)  # fmt: skip
    assert_exact(paced, members=5)
    assert paced["latency_ms"]["count"] > 0


@pytest.mark.parametrize("fault", ["duplicate", "drop"])
def test_a_wrong_delivery_is_caught(
    node_modules: Path, started: list[S.Server], tmp_path: Path, fault: str
) -> None:
    server = start(started, S.bare(tmp_path / "bare.log", env={"BENCH_FAULT": fault}))
    result = drive(node_modules, server, [], members=5, window=8, **{**FANOUT, "drain_s": 2})
    faulty = result["sent"] // 10  # message ids 10, 20, ... (ids count from 1 in a new room)
    assert faulty > 0
    assert result["exact"] is False
    if fault == "duplicate":
        assert result["duplicates"] == faulty * 5
        assert result["deliveries"] == result["sent"] * 5
    else:
        assert result["missing"] == faulty
        assert result["duplicates"] == 0
