"""A real chat-service process for tests, and the clients that talk to it over loopback.

`ChatServer` starts `python -m service` (the same entry point as the `chat-service` script) on
a free port with JSON logs, reads every stdout line (each must parse as JSON) and exposes the
log events and the `/metrics` samples so a test can assert what really happened.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"

# Settings every test app and server starts with (limits a test suite would hit, and log lines
# checked against the catalogue); a test overrides what it is about.
TEST_SETTINGS = {
    "LOG_FORMAT": "json",
    "STRICT_LOGS": "true",
    "LOGIN_RATE_LIMIT_PER_ADDRESS": "1000 per minute",
    "LOGIN_RATE_LIMIT_PER_USER": "1000 per minute",
    "REGISTER_RATE_LIMIT": "1000 per minute",
    "MESSAGE_RATE_LIMIT": "1000 per minute",
}
BASE_ENV = {
    "CHAT_HOST": "127.0.0.1",
    "CHAT_SECRET_KEY": "test-secret-key-not-for-production",
    **{"CHAT_" + name: value for name, value in TEST_SETTINGS.items()},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_program(name: str) -> str:
    """The path of a system program a test needs: skip locally when absent, fail under CI."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} is not installed (make test installs it: bash .ci/install-system-packages)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def end_process(
    process: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0
) -> None:
    """Signal a child process and wait for it; kill it if it outstays `timeout`."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def responds(url: str) -> bool:
    """True when `url/healthz` answers 200 now."""
    try:
        return requests.get(url + "/healthz", timeout=1).ok
    except requests.RequestException:
        return False


class ChatServer:
    """One chat-service subprocess with its stdout parsed into log events."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        async_mode: str = "eventlet",
        command: list[str] | None = None,
        cwd: Path = REPO,
    ) -> None:
        """`command` runs instead of `python -m service` (an installed script, `flask run`);
        it must listen on `CHAT_PORT` or be given `self.port` itself."""
        self.command = command or [sys.executable, "-m", "service"]
        self.cwd = cwd
        self.env = {**BASE_ENV, "CHAT_ASYNC_MODE": async_mode, **(env or {})}
        self.port = int(self.env.get("CHAT_PORT") or free_port())
        self.env["CHAT_PORT"] = str(self.port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.events: list[dict[str, Any]] = []
        self.bad_lines: list[str] = []
        self.raw_lines: list[str] = []  # every line as the process wrote it (for log readers)
        self.process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._clients: list[RecordingClient | requests.Session] = []  # closed by stop()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 30.0, announces: bool = True) -> ChatServer:
        """Start and wait for `/healthz` (and the `service_started` line when `announces`)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"chat-service exited early:\n{self.output()}")
            if responds(self.url):
                if announces:
                    wait_until(self._announced_start)
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"chat-service did not become healthy:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        end_process(self.process, sig, timeout)
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.close_clients()
        return self.process.returncode

    def close_clients(self) -> None:
        """Disconnect the Socket.IO clients and close the HTTP sessions this server handed out."""
        while self._clients:
            client = self._clients.pop()
            if isinstance(client, RecordingClient):
                client.disconnect()
            else:
                client.close()

    def restart(self) -> ChatServer:
        """Stop and start again on the same port (the in-memory state starts empty)."""
        self.stop()
        self.events.clear()
        self.bad_lines.clear()
        return self.start()

    def _announced_start(self) -> bool:
        with self._lock:  # a console-format server's lines are not JSON: look at the text
            return any(e.get("event") == "service_started" for e in self.events) or any(
                "service_started" in line for line in self.bad_lines
            )

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip("\n")
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            with self._lock:
                self.raw_lines.append(line)
                if isinstance(event, dict):
                    self.events.append(event)
                else:
                    self.bad_lines.append(line)

    def assert_every_line_json(self) -> None:
        """Every line the server wrote to stdout so far parsed as a JSON object."""
        with self._lock:
            bad = list(self.bad_lines)
        assert not bad, f"stdout lines that are not JSON: {bad[:5]}"

    def output(self) -> str:
        with self._lock:
            lines = [json.dumps(e) for e in self.events] + self.bad_lines
        return "\n".join(lines[-80:])

    # -- logs ----------------------------------------------------------------------------------
    def logged(self, event: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        """Log events so far, filtered by name and exact field values."""
        with self._lock:
            snapshot = list(self.events)
        return [
            e
            for e in snapshot
            if (event is None or e.get("event") == event)
            and all(e.get(k) == v for k, v in fields.items())
        ]

    def wait_for_event(self, event: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        found = wait_until(lambda: self.logged(event, **fields), timeout)
        return found[-1]  # type: ignore[no-any-return]

    # -- metrics -------------------------------------------------------------------------------
    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        token = self.env.get("CHAT_METRICS_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        text = requests.get(self.url + "/metrics", headers=headers, timeout=5).text
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples

    def metric(self, name: str, default: float | None = 0.0, **labels: str) -> float | None:
        """One sample's value now; `default` when the series does not exist."""
        return self.metrics().get((name, frozenset(labels.items())), default)

    # -- clients -------------------------------------------------------------------------------
    def register(
        self,
        username: str,
        password: str = "correct horse battery",
        http: requests.Session | None = None,
    ) -> requests.Response:
        return (http or requests).post(
            self.url + "/register", json={"username": username, "password": password}, timeout=10
        )

    def login(self, username: str, password: str = "correct horse battery") -> requests.Session:
        """A logged-in HTTP session for `username` (registered first when new)."""
        http = requests.Session()
        self._clients.append(http)
        reply = self.register(username, password, http)
        assert reply.status_code in (201, 409), reply.text
        reply = http.post(
            self.url + "/login", json={"username": username, "password": password}, timeout=10
        )
        assert reply.status_code == 200, reply.text
        return http

    def socket(
        self, http: requests.Session, transports: list[str] | None = None
    ) -> RecordingClient:
        """A connected Socket.IO client carrying `http`'s session cookie."""
        client = RecordingClient()
        self._clients.append(client)
        cookie = "; ".join(f"{c.name}={c.value}" for c in http.cookies)
        client.connect(
            self.url,
            headers={"Cookie": cookie},
            transports=transports or ["websocket"],
            wait_timeout=10,
        )
        return client


class RecordingClient(socketio.Client):  # type: ignore[misc]
    """A python-socketio client that records every server event it receives."""

    def __init__(self) -> None:
        super().__init__(reconnection=False)
        self.received: list[tuple[str, Any]] = []
        self._received_lock = threading.Lock()
        self.on("*", self._record)

    def _record(self, event: str, data: Any = None) -> None:
        with self._received_lock:
            self.received.append((event, data))

    def got(self, event: str) -> list[Any]:
        with self._received_lock:
            return [data for name, data in self.received if name == event]

    def wait_for(
        self, event: str, predicate: Callable[[Any], bool] = lambda _: True, timeout: float = 5.0
    ) -> Any:
        return wait_until(lambda: [d for d in self.got(event) if predicate(d)], timeout)[-1]

    def request(self, event: str, payload: Any, timeout: float = 10.0) -> Any:
        """Emit and return the server's ack."""
        return self.call(event, payload, timeout=timeout)
