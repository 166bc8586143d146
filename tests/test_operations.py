"""What an operator meets, on real `chat-service` processes: every failure is one event.

A port already in use, a crash at start-up or in the server loop: one `service_failed` line
(one readable line on a terminal) and exit status 1. A log reader that closes its pipe or stops
reading: the chat keeps serving, and the lines it could not write are counted. `make run`
writes nothing on stdout but the service's lines, so the README's `make run | jq` works.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from chatserver import BASE_ENV, REPO, ChatServer, free_port, require_program, responds, wait_until

from service.telemetry.logging import LineWriter

MODES = ["eventlet", "gevent"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
EXIT_FAILED = 1
# Enough 2000-character messages that their `message_sent` lines (about 2.1 kB each) overflow
# the pipe (64 KiB) and the writer's buffer (1 MiB) together: lines must be dropped.
FLOOD_MESSAGES = 700
FLOOD_TEXT = "x" * 2000


def service_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env.update(BASE_ENV)
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def json_lines(output: str) -> list[dict[str, Any]]:
    """Every line of `output` as JSON (each must parse: no stray text)."""
    lines = [line for line in output.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]
    assert all(isinstance(e, dict) for e in events), lines
    return events


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        yield int(squatter.getsockname()[1])


def run_service(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command) or [sys.executable, "-m", "service"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_failure(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The run ended in exactly one `service_failed` line, its last, and nothing else failed."""
    assert events and events[-1]["event"] == "service_failed", events
    assert [e for e in events if e["level"] != "info"] == [events[-1]], events
    assert not [e for e in events if "logger" in e], "library or stderr lines"
    failed = events[-1]
    assert failed["level"] == "error" and set(failed) == {
        "timestamp", "level", "event", "reason", "exception"
    }  # fmt: skip
    assert "\n" not in failed["reason"]
    return failed


# -- failures: one event, whole ------------------------------------------------------------------
@pytest.mark.parametrize("mode", [*MODES, "threading"])
def test_a_port_in_use_is_one_service_failed_line_and_exit_1(mode: str, taken_port: int) -> None:
    done = run_service(service_env(CHAT_PORT=str(taken_port), CHAT_ASYNC_MODE=mode))
    assert done.returncode == EXIT_FAILED, done.stdout
    failed = assert_one_failure(json_lines(done.stdout))
    assert failed["reason"] == (
        f"cannot listen on 127.0.0.1:{taken_port}: Address already in use "
        "(another process listens there: stop it, or choose another CHAT_PORT)"
    )
    assert failed["exception"].startswith("Traceback (most recent call last):")
    assert "OSError: [Errno 98] Address already in use" in failed["exception"]


@pytest.mark.parametrize("mode", MODES)
def test_a_second_chat_service_on_a_running_ones_port_fails(
    mode: str, start_server: Callable[..., ChatServer]
) -> None:
    """Not a shared port: eventlet's listener would take SO_REUSEPORT unless told not to."""
    running = start_server(async_mode=mode)
    done = run_service(service_env(CHAT_PORT=str(running.port), CHAT_ASYNC_MODE=mode))
    assert done.returncode == EXIT_FAILED, done.stdout
    failed = assert_one_failure(json_lines(done.stdout))
    assert "Address already in use" in failed["reason"]
    assert responds(running.url)  # the first one serves on


def test_on_a_terminal_a_port_in_use_is_one_readable_line(taken_port: int) -> None:
    env = service_env(CHAT_PORT=str(taken_port))
    del env["CHAT_LOG_FORMAT"]  # auto: a terminal gets the console format
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "service"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    output = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 30)
        assert ready, f"no output for 30 s: {output!r}"
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the process closed the terminal's last descriptor
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(30) == EXIT_FAILED
    lines = [ANSI.sub("", line) for line in output.decode().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert re.fullmatch(
        r"\S+Z \[error\s*\] service_failed\s+reason='cannot listen on "
        rf"127\.0\.0\.1:{taken_port}: Address already in use \(another process listens there: "
        r"stop it, or choose another CHAT_PORT\)'\s*",
        lines[0],
    ), lines[0]


def test_a_crash_at_start_up_is_one_service_failed_line() -> None:
    nobody = free_port()  # no Redis listens here: building the store fails
    done = run_service(service_env(CHAT_STORE=f"redis://127.0.0.1:{nobody}/0"))
    assert done.returncode == EXIT_FAILED, done.stdout
    failed = assert_one_failure(json_lines(done.stdout))
    assert failed["reason"].startswith("start-up failed: redis.exceptions.ConnectionError: ")
    assert "Connection refused" in failed["exception"] or "ECONNREFUSED" in failed["exception"]


# The server loop of the chosen mode raises once the service has announced itself.
CRASHING_LOOP = """
import warnings
warnings.filterwarnings("ignore", message=r"\\s*Eventlet is deprecated")
import {mode}
{patch}
import service.server

def crash(service):
    service.announce()
    raise RuntimeError("the loop broke\\non two lines")

service.server.run_{mode} = crash
from service.cli import main
main()
"""
PATCHES = {
    "eventlet": "eventlet.monkey_patch()",
    "gevent": "from gevent import monkey; monkey.patch_all()",
}


@pytest.mark.parametrize("mode", MODES)
def test_a_crash_in_the_server_loop_is_one_service_failed_line(mode: str) -> None:
    script = CRASHING_LOOP.format(mode=mode, patch=PATCHES[mode])
    env = service_env(CHAT_PORT=str(free_port()), CHAT_ASYNC_MODE=mode)
    done = run_service(env, sys.executable, "-c", script)
    assert done.returncode == EXIT_FAILED, done.stdout
    events = json_lines(done.stdout)
    assert [e["event"] for e in events] == ["service_started", "service_failed"]
    failed = assert_one_failure(events)
    assert failed["reason"] == "the server loop failed: RuntimeError: the loop broke on two lines"
    assert failed["exception"].endswith("RuntimeError: the loop broke\non two lines")
    assert ", in crash\n" in failed["exception"]  # the whole traceback, down to the raise


# -- a log reader that goes away or falls behind -------------------------------------------------
class PipedServer(ChatServer):
    """A chat-service whose stdout is a pipe this test reads, or stops reading, itself."""

    def start(self, timeout: float = 30.0, announces: bool = True) -> PipedServer:
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=service_env(**self.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: responds(self.url) or self.process.poll() is not None, timeout)
        assert self.process.poll() is None, "chat-service exited early"
        return self

    @property
    def pipe(self) -> Any:
        assert self.process is not None and self.process.stdout is not None
        return self.process.stdout

    def read_until(self, event: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Read whole lines until one is `event`; every line read must be JSON."""
        deadline = time.monotonic() + timeout
        events = []
        while time.monotonic() < deadline:
            line = self.pipe.readline()
            assert line, "stdout ended"
            events.append(json.loads(line))
            if events[-1]["event"] == event:
                return events
        raise AssertionError(f"no {event} within {timeout} s: {events[-3:]}")

    def dropped(self) -> float:
        return self.metric("chat_log_lines_dropped_total") or 0.0

    def chat_works(self, tag: str) -> None:
        """Two people join a room and a message reaches the other, over both doors."""
        ann, bob = self.login(f"{tag}_ann"), self.login(f"{tag}_bob")
        ann_socket, bob_socket = self.socket(ann), self.socket(bob)
        assert ann_socket.request("join", {"room": tag})["ok"]
        assert bob_socket.request("join", {"room": tag})["ok"]
        assert ann_socket.request("message", {"room": tag, "text": "still here"})["ok"]
        assert bob_socket.wait_for("message")["text"] == "still here"
        sent = bob.post(self.url + "/send", json={"room": tag, "text": "me too"}, timeout=10)
        assert sent.status_code == 201
        ann_socket.wait_for("message", lambda m: m["text"] == "me too")


@pytest.fixture
def piped() -> Iterator[list[PipedServer]]:
    servers: list[PipedServer] = []
    yield servers
    for server in servers:
        server.stop(signal.SIGKILL)


@pytest.mark.parametrize("mode", MODES)
def test_a_reader_that_closes_stdout_does_not_stop_the_chat(
    mode: str, piped: list[PipedServer]
) -> None:
    """`chat-service | head -1`: the reader takes one line and closes the pipe."""
    server = PipedServer(async_mode=mode)
    piped.append(server)
    server.start()
    assert json.loads(server.pipe.readline())["event"] == "service_started"
    server.pipe.close()
    for attempt in ("first", "second"):
        server.chat_works(f"{mode}_{attempt}")
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    # Every line since the reader left was dropped, and counted (within one upkeep tick).
    wait_until(lambda: server.dropped() >= 20, timeout=5)
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(15) == 0  # a clean stop; its service_stopping has no reader


def test_a_reader_that_stops_reading_costs_lines_not_messages(piped: list[PipedServer]) -> None:
    """The reader stops reading (stdout blocks): messages are delivered as before, the lines
    beyond the writer's buffer are dropped and counted, and when the reader comes back it is
    told how many it missed, with every line it gets whole."""
    server = PipedServer()
    piped.append(server)
    server.start()
    server.read_until("service_started")  # from here on nobody reads
    ann, bob = server.login("flood_ann"), server.login("flood_bob")
    ann_socket, bob_socket = server.socket(ann), server.socket(bob)
    assert ann_socket.request("join", {"room": "flood"})["ok"]
    assert bob_socket.request("join", {"room": "flood"})["ok"]
    acked: list[float] = []
    slowest = 0.0
    for batch in range(0, FLOOD_MESSAGES, 50):
        started = time.monotonic()
        for _ in range(50):
            ann_socket.emit(
                "message",
                {"room": "flood", "text": FLOOD_TEXT},
                callback=lambda ack: acked.append(time.monotonic()) if ack["ok"] else None,
            )
        wait_until(lambda b=batch: len(acked) >= b + 50, timeout=20)
        slowest = max(slowest, time.monotonic() - started)
    wait_until(lambda: len(bob_socket.got("message")) == FLOOD_MESSAGES, timeout=20)
    assert slowest < 10, f"a batch of 50 messages took {slowest:.1f} s"
    wait_until(lambda: server.dropped() > 0, timeout=5)
    dropped = server.dropped()
    # The reader comes back: it reads everything and is told what it missed.
    resumed: list[dict[str, Any]] = []
    reading = threading.Thread(target=lambda: resumed.extend(read_all(server.pipe)), daemon=True)
    reading.start()
    server.chat_works("after")  # lines keep coming: the gap is reported once the reader keeps up
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(15) == 0
    reading.join(10)
    gaps = [e for e in resumed if e["event"] == "log_lines_dropped"]
    assert gaps and gaps[0]["level"] == "warning" and gaps[0]["count"] >= 1, resumed[-5:]
    assert sum(gap["count"] for gap in gaps) >= dropped  # and those dropped after the scrape
    assert resumed[-1]["event"] == "service_stopping"


def read_all(pipe: Any) -> Iterator[dict[str, Any]]:
    """Every line until the pipe ends, each parsed: a dropped line never leaves half a line."""
    for line in pipe:
        yield json.loads(line)


def test_the_line_writer_buffers_then_drops_whole_lines_and_counts_them() -> None:
    """The writer itself, in process: nobody reads, so the pipe fills, then the buffer; every
    line beyond is dropped whole and counted; after the reader closes the pipe, every line is."""
    reading, writing = os.pipe()
    line = b'{"event": "x", "pad": "' + b"." * 74 + b'"}\n'
    assert len(line) == 100
    os.set_blocking(writing, False)
    prefilled = 0
    with contextlib.suppress(BlockingIOError):  # a reader that stopped: its pipe is full
        while True:
            os.write(writing, line)  # under PIPE_BUF: written whole or not at all
            prefilled += 1
    os.set_blocking(writing, True)
    writer = LineWriter(writing, capacity=10_000)
    for _ in range(2000):  # 200 kB: far more than the buffer (10 kB) holds
        writer.write(line.decode())
    assert not writer.drain(0.5), "nobody reads, yet the queue drained"
    dropped = writer.take_dropped()
    assert dropped > 0 and not writer.keeping_up()
    received = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the reader is back: it gets the rest, in order
        if select.select([reading], [], [], 0.2)[0]:
            received += os.read(reading, 1 << 20)
        elif writer.drain(0):
            break
    kept = received.splitlines(keepends=True)
    assert set(kept) == {line}, "a line came out broken"
    assert len(kept) - prefilled + dropped == 2000 and writer.keeping_up()
    assert 50 <= len(kept) - prefilled <= 100  # what the buffer held
    os.close(reading)  # the reader goes away
    writer.write(line.decode())  # queued; its write fails (EPIPE)
    assert writer.drain(5)
    writer.write(line.decode())  # dropped at once
    assert writer.take_dropped() == 2
    os.close(writing)


# -- make run | jq --------------------------------------------------------------------------------
def test_make_run_piped_into_jq_gets_only_the_services_lines() -> None:
    """The README's recipe: `make run | jq -c 'select(.event=="service_started")'`, stopped
    with SIGTERM (make passes it on to the service)."""
    jq = require_program("jq")
    require_program("make")
    port = free_port()
    # As typed in a shell: not inside another make (which would add "Entering directory").
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    env = {k: v for k, v in env.items() if not k.startswith("CHAT_")}
    env["CHAT_PORT"] = str(port)
    make = subprocess.Popen(
        ["make", "run"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    reader = subprocess.Popen(
        [jq, "-c", 'select(.event=="service_started")'],
        stdin=make.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert make.stdout is not None
    make.stdout.close()  # jq holds the pipe's reading end now
    try:
        wait_until(lambda: responds(f"http://127.0.0.1:{port}") or make.poll() is not None, 300)
        assert make.poll() is None, "make run ended early"
        make.send_signal(signal.SIGTERM)
        make.wait(30)
        out, err = reader.communicate(timeout=30)
    finally:
        for process in (make, reader):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert err == b"" and reader.returncode == 0, err.decode()
    (line,) = out.decode().splitlines()
    started = json.loads(line)
    assert (started["event"], started["port"]) == ("service_started", port)
    assert not responds(f"http://127.0.0.1:{port}"), "the service outlived make"
