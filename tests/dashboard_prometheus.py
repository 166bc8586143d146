"""A real Prometheus for tests: the shipped scrape config and rules, pointed at a test server.

`Prometheus(target, workdir).start()` writes a prometheus.yml derived from
dashboards/prometheus/prometheus.yml (same job and rules, the target replaced, everything every
second), runs /usr/bin/prometheus on a free loopback port with its TSDB in `workdir`, and
answers PromQL through the HTTP API the way Grafana asks it. The shipped `alerting:` block is
dropped (a test Prometheus never notifies a real Alertmanager on :9093) unless `alertmanager` names
the test's own; `rules_file` loads a copy of the rules instead of the shipped ones. `target`
may also be a list of targets (several processes), all scraped in the one job.
"""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import yaml
from chatserver import end_process, free_port, wait_until
from dashboard_promql import ALERT_RULES, PROMETHEUS_CONFIG

JOB = "observable-chat"


class PrometheusError(AssertionError):
    """Prometheus refused a query (a parse or evaluation error)."""


class Prometheus:
    """One Prometheus process scraping `target` (or each of several) every second."""

    def __init__(
        self,
        program: str,
        target: str | Sequence[str],
        workdir: Path,
        token_file: Path | None = None,
        rules_file: Path | None = None,
        alertmanager: str | None = None,
    ) -> None:
        """`token_file`: scrape with the bearer token in it, as the shipped config's commented
        `authorization` block shows (the block is taken from the file, uncommented).
        `rules_file`: the rules to load instead of the shipped alerts.yml. `alertmanager`: the
        URL of an Alertmanager to send alerts to, in place of the shipped `alerting:` target
        (without it, the test Prometheus sends alerts nowhere)."""
        self.program = program
        self.target = target
        self.targets = [target] if isinstance(target, str) else list(target)
        self.workdir = workdir
        self.token_file = token_file
        self.rules_file = rules_file or ALERT_RULES
        self.alertmanager = alertmanager
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_file = workdir / "prometheus.yml"
        self.log_file = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self) -> Path:
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
        config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        config["rule_files"] = [str(self.rules_file)]
        alerting = config.pop("alerting", None)
        if self.alertmanager is not None:
            # The shipped block's one Alertmanager entry, its target replaced by the test's.
            (alertmanager,) = alerting["alertmanagers"]
            url = urlsplit(self.alertmanager)
            alertmanager.update(
                scheme=url.scheme,
                path_prefix=url.path or "/",
                static_configs=[{"targets": [url.netloc]}],
            )
            config["alerting"] = alerting
        (job,) = [c for c in config["scrape_configs"] if c["job_name"] == JOB]
        job["static_configs"] = [{"targets": self.targets}]
        if self.token_file is not None:
            job.update(shipped_authorization_block())
            job["authorization"]["credentials_file"] = str(self.token_file)
        self.config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        return self.config_file

    def start(self, timeout: float = 30.0) -> Prometheus:
        self.write_config()
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    self.program,
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_ready("prometheus", self.process, self.url, self.log, self.stop, timeout)
        return self

    def stop(self) -> None:
        if self.process is not None:
            end_process(self.process)

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")[-4000:]

    # -- the HTTP API ----------------------------------------------------------------------
    def _get(self, path: str, params: dict[str, Any]) -> Any:
        reply = requests.get(self.url + path, params=params, timeout=10)
        body = reply.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')} ({params})")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's vector (a scalar comes back as one series without labels)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        assert data["resultType"] == "vector", data
        return data["result"]  # type: ignore[no-any-return]

    def label_values(self, label: str, match: str, start: float, end: float) -> list[str]:
        """What Grafana's `label_values(match, label)` variable query lists."""
        params = {"match[]": match, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        return self._get(f"/api/v1/label/{label}/values", params)  # type: ignore[no-any-return]

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts pending or firing now (`/api/v1/alerts`)."""
        return self._get("/api/v1/alerts", {})["alerts"]  # type: ignore[no-any-return]

    def rules(self) -> list[dict[str, Any]]:
        groups = self._get("/api/v1/rules", {})["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def last_scrape(self) -> float:
        """When the last scrape of the chat target started (its samples' timestamp; of several
        targets, the latest), or 0."""
        up = f'up{{job="{JOB}"}}'
        # timestamp() of the selector itself: of a filtered vector it would be the query time.
        result = self.query(f"max(timestamp({up}) and {up} == 1)")
        return float(result[0]["value"][1]) if result else 0.0

    def wait_for_scrape_after(self, moment: float, timeout: float = 20.0) -> float:
        """Wait until a scrape that started after `moment` is stored; return its timestamp."""
        return float(wait_until(lambda: max(self.last_scrape() - moment, 0), timeout)) + moment


def wait_ready(
    name: str,
    process: subprocess.Popen[bytes],
    url: str,
    log: Callable[[], str],
    stop: Callable[[], None],
    timeout: float,
) -> None:
    """Until `url/-/ready` answers (Prometheus and Alertmanager both have it); the log's tail
    in the error when the program exits or is not ready in time (it is stopped then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{log()}")
        try:
            if requests.get(url + "/-/ready", timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    stop()
    raise RuntimeError(f"{name} did not become ready:\n{log()}")


def shipped_authorization_block() -> dict[str, Any]:
    """The commented-out `authorization:` block of the shipped scrape config, as YAML."""
    lines = PROMETHEUS_CONFIG.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# authorization:")
    indent = lines[start].index("#")
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.strip().startswith("#   "):
            break
        block.append(line)
    text = "\n".join(line[indent:].removeprefix("# ") for line in block)
    parsed: dict[str, Any] = yaml.safe_load(text)
    return parsed


def sample_value(sample: dict[str, Any]) -> float:
    value = float(sample["value"][1])
    assert not math.isinf(value), sample
    return value
