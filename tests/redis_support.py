"""A real, throwaway redis-server for tests (no persistence, loopback only, its own directory)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import redis
from chatserver import end_process, free_port, require_program, wait_until


class RedisServer:
    """`redis-server` on a free loopback port; `stop()` ends it, `start()` starts it again."""

    def __init__(self, directory: Path) -> None:
        self.program = require_program("redis-server")
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis.from_url(self.url(db), decode_responses=True, socket_timeout=5)

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [self.program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        try:
            wait_until(self._answers, timeout=10, interval=0.05)
        except AssertionError:
            self.stop()
            raise RuntimeError(f"redis-server did not start: {self.log()}") from None
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {self.log()}")
        probe = redis.Redis(port=self.port, socket_timeout=1, retry=None)
        try:
            return bool(probe.ping())
        except redis.ConnectionError:
            return False
        finally:
            probe.close()

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            end_process(self.process)
        self.process = None


@contextlib.contextmanager
def stoppable_redis(directory: Path) -> Iterator[RedisServer]:
    """A redis-server a test may stop with SIGSTOP: it is continued before it is ended (a
    stopped process cannot end on SIGTERM)."""
    server = RedisServer(directory).start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)
        server.stop()
