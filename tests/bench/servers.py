"""The processes of the benchmark: the servers under test (pinned to CPU 0), the driver (pinned
to CPU 1), a throwaway redis-server, and the scratch npm install they need.

Each server writes its stdout and stderr to a file of its own (observable-chat's JSON log lines
included) and is started on a free loopback port; `stop()` sends SIGTERM and waits (then
kills). Nothing here listens anywhere but 127.0.0.1.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent.parent
ARTIFACTS = REPO / "test-artifacts" / "bench"
NODE_DIR = ARTIFACTS / "node"  # the scratch npm install (git-ignored with test-artifacts/)
_CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPU = str(_CPUS[0])  # the servers (and redis-server) share this one
DRIVER_CPU = str(_CPUS[1] if len(_CPUS) > 1 else _CPUS[0])
SECRET_KEY = "bench-secret-key-not-for-production"
PASSWORD = "correct horse battery"

# What observable-chat runs with in the benchmark, besides the address and the log level. The
# message limit is raised so the limiter never refuses (it still runs on every message); the
# login and registration limits so the set-up's logins from one address pass; the connections
# per user so a handful of users can hold every connection (B5 holds 10,000).
OBSERVABLE_ENV = {
    "CHAT_ASYNC_MODE": "eventlet",
    "CHAT_LOG_FORMAT": "json",
    "CHAT_SECRET_KEY": SECRET_KEY,
    "CHAT_MESSAGE_RATE_LIMIT": "1000000 per second",
    "CHAT_LOGIN_RATE_LIMIT_PER_ADDRESS": "100000 per minute",
    "CHAT_LOGIN_RATE_LIMIT_PER_USER": "100000 per minute",
    "CHAT_REGISTER_RATE_LIMIT": "100000 per minute",
    "CHAT_MAX_CONNECTIONS_PER_USER": "10000",
}


class BenchError(RuntimeError):
    """The benchmark cannot go on (a program is missing, a server did not start)."""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_open_file_limit() -> int:
    """Raise this process's soft open-file limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def need(program: str, hint: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise BenchError(f"{program} is not installed: {hint}")
    return path


def pinned(cpu: str, command: list[str]) -> list[str]:
    """`command` run by taskset on `cpu` (taskset execs it: the process keeps its pid)."""
    taskset = need("taskset", "it is in util-linux (apt-get install util-linux)")
    return [taskset, "-c", cpu, *command]


# -- the scratch npm install ----------------------------------------------------------------------
def ensure_node_modules(node_dir: Path = NODE_DIR) -> Path:
    """`npm ci` the pinned packages (socket.io 4, ws) into `node_dir` once; their folder."""
    need("node", "install Node.js 18 or newer (https://nodejs.org or apt-get install nodejs)")
    npm = need("npm", "install npm (apt-get install npm)")
    node_dir.mkdir(parents=True, exist_ok=True)
    lock = (BENCH / "package-lock.json").read_text()
    with (node_dir / ".install.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # the tests and a bench may install at once
        installed = node_dir / "node_modules" / ".bench-lock.json"
        if installed.exists() and installed.read_text() == lock:
            return node_dir / "node_modules"
        shutil.copy(BENCH / "package.json", node_dir / "package.json")
        shutil.copy(BENCH / "package-lock.json", node_dir / "package-lock.json")
        try:
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=node_dir,
                check=True,
                timeout=600,
                capture_output=True,
                text=True,
            )
        except subprocess.CalledProcessError as error:
            raise BenchError(f"npm ci failed in {node_dir}:\n{error.stderr[-2000:]}") from None
        except subprocess.TimeoutExpired:
            raise BenchError(f"npm ci in {node_dir} took over 10 minutes") from None
        installed.write_text(lock)
    return node_dir / "node_modules"


def node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()


def package_version(node_modules: Path, package: str) -> str:
    return str(json.loads((node_modules / package / "package.json").read_text())["version"])


# -- processes --------------------------------------------------------------------------------
def end_process(process: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Server:
    """One server process under test, its stdout and stderr in `log`."""

    name: str
    command: list[str]
    cwd: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> Server:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        environment.update(self.env)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited at start:\n{self.tail()}")
            try:
                if requests.get(self.url + "/healthz", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise BenchError(f"{self.name} did not answer /healthz within {timeout} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.process is not None:
            end_process(self.process)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / clock_ticks()

    def tail(self, size: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else ""

    def log_size(self) -> tuple[int, int]:
        """Lines and bytes in the log so far."""
        if not self.log.exists():
            return 0, 0
        data = self.log.read_bytes()
        return data.count(b"\n"), len(data)

    def error_lines(self) -> list[str]:
        """Log lines at level error or above, and lines that are not JSON (raw tracebacks)."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                found.append(line)
                continue
            if not isinstance(event, dict) or event.get("level") in ("error", "critical"):
                found.append(line)
        return found


def observable(
    repo: Path, log: Path, log_level: str = "info", env: dict[str, str] | None = None
) -> Server:
    """observable-chat, `python -m service` from `repo` (so that copy's code runs)."""
    server = Server(
        name=f"observable-chat ({log_level})",
        command=pinned(SERVER_CPU, [sys.executable, "-m", "service"]),
        cwd=repo,
        log=log,
    )
    server.env = {
        **OBSERVABLE_ENV,
        "CHAT_HOST": "127.0.0.1",
        "CHAT_PORT": str(server.port),
        "CHAT_LOG_LEVEL": log_level,
        **(env or {}),
    }
    return server


def bare(log: Path, nagle: bool = False, env: dict[str, str] | None = None) -> Server:
    """The bare Flask-SocketIO chat (TCP_NODELAY on; `nagle` keeps socketio.run's defaults)."""
    name = "bare Flask-SocketIO" + (" (Nagle on)" if nagle else "")
    server = Server(name=name, command=[], cwd=BENCH, log=log, env=env or {})
    script = [sys.executable, str(BENCH / "bare_server.py"), "--port", str(server.port)]
    server.command = pinned(SERVER_CPU, script + (["--nagle"] if nagle else []))
    return server


def node(log: Path, node_modules: Path) -> Server:
    server = Server(
        name="Node socket.io", command=[], cwd=BENCH, log=log, env={"NODE_PATH": str(node_modules)}
    )
    server.command = pinned(SERVER_CPU, ["node", str(BENCH / "node_server.js"), str(server.port)])
    return server


def service_file(repo: Path) -> str:
    """Where `python -m service` started in `repo` imports the service from."""
    probe = "import service; print(service.__file__)"
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", probe], cwd=repo, env=environment, capture_output=True, text=True
    ).stdout.strip()


# -- accounts ---------------------------------------------------------------------------------
def login(url: str, username: str) -> str:
    """Register (when new) and log in `username`; the Cookie header value for its session."""
    with requests.Session() as http:
        body = {"username": username, "password": PASSWORD}
        reply = http.post(url + "/register", json=body, timeout=60)
        if reply.status_code not in (201, 409):
            raise BenchError(f"register {username}: {reply.status_code} {reply.text}")
        reply = http.post(url + "/login", json=body, timeout=60)
        if reply.status_code != 200:
            raise BenchError(f"login {username}: {reply.status_code} {reply.text}")
        return "; ".join(f"{c.name}={c.value}" for c in http.cookies)


def register(url: str, username: str) -> None:
    reply = requests.post(
        url + "/register", json={"username": username, "password": PASSWORD}, timeout=60
    )
    if reply.status_code not in (201, 409):
        raise BenchError(f"register {username}: {reply.status_code} {reply.text}")


# -- redis ------------------------------------------------------------------------------------
class Redis:
    """A throwaway redis-server on a free loopback port, pinned with the servers."""

    def __init__(self, directory: Path) -> None:
        self.program = need("redis-server", "apt-get install redis-server (make system-packages)")
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> Redis:
        import redis

        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "redis.log").open("wb") as out:
            self.process = subprocess.Popen(
                pinned(SERVER_CPU, [self.program, "--port", str(self.port), "--bind", "127.0.0.1",
                                    "--save", "", "--appendonly", "no",
                                    "--dir", str(self.directory)]),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=1).ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise BenchError("redis-server did not start")

    def flush(self) -> None:
        import redis

        redis.Redis(port=self.port, socket_timeout=5).flushall()

    def stop(self) -> None:
        if self.process is not None:
            end_process(self.process)


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


def install_redis() -> str | None:
    """Install redis-server with apt-get when missing and allowed; None, or why not."""
    if redis_available():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "redis-server is missing (apt-get install redis-server, or make system-packages)"
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                     "redis-server"]):  # fmt: skip
        if subprocess.run(command, env=environment, capture_output=True).returncode != 0:
            return "redis-server is missing and apt-get could not install it"
    return None if redis_available() else "redis-server is missing"


def wait_idle(servers: list[Server], below_pct: float = 5.0, timeout: float = 20.0) -> float:
    """Wait until the servers use less than `below_pct` of a core (over 0.3 s); the seconds
    waited. A workload then starts on a server done with the previous one's disconnects."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = sum(s.cpu_seconds() for s in servers)
        time.sleep(0.3)
        if 100 * (sum(s.cpu_seconds() for s in servers) - before) / 0.3 < below_pct:
            break
    return time.monotonic() - started


# -- the driver -------------------------------------------------------------------------------
def clock_ticks() -> int:
    return int(os.sysconf("SC_CLK_TCK"))


def run_driver(node_modules: Path, config: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run tests/bench/driver.js pinned to the driver's CPU; its JSON result."""
    config = {
        "clk_tck": clock_ticks(),
        "deadline_s": timeout,
        "cpus": sorted({int(SERVER_CPU), int(DRIVER_CPU)}),
        **config,
    }
    command = pinned(DRIVER_CPU, ["node", str(BENCH / "driver.js"), json.dumps(config)])
    environment = {**os.environ, "NODE_PATH": str(node_modules)}
    try:
        done = subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=timeout + 30
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"driver ({config['workload']}) outlived {timeout + 30} s") from None
    lines = done.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise BenchError(
            f"driver ({config['workload']}) printed no result (exit {done.returncode}):\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        ) from None
    if "error" in result:
        raise BenchError(f"driver ({config['workload']}): {result['error']}\n{done.stderr[-2000:]}")
    return result
