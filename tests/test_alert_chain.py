"""Alerts that reach a person: chat-service → Prometheus → Alertmanager → a webhook, all real.

Each test starts a real `chat-service` process, a real Prometheus (/usr/bin/prometheus) scraping
it and evaluating the shipped rules, and a real Alertmanager (/usr/bin/prometheus-alertmanager)
started with the shipped dashboards/alertmanager/alertmanager.yml. The one stand-in is the
person's end: every webhook URL of that configuration is pointed at `WebhookReceiver`, a small
HTTP server in this process recording the JSON Alertmanager posts. Then something a person must
hear about happens, and the test waits for it at the webhook, firing, then resolved:

* a login brute force (one client guessing a password up to ten times a second against the
  production login limits, so the first guesses fail and the rest are refused as
  rate_limited: `ChatLoginFailuresSpiking` counts both) fires `ChatLoginFailuresSpiking`, and
  once the guessing stops and the rate falls it arrives resolved;
* SIGKILL of the chat process fires `ChatServiceDown` (routed to the paging receiver), and a
  restart on the same port resolves it.

What the test shortens, and why. The shipped timings make each alert take minutes on purpose
(`for: 5m` over `rate(...[5m])` for the login alert, `for: 1m` for the outage), and a test that
waited for them would take over ten minutes. The timings are promtool's job
(dashboards/prometheus/alerts_test.yml unit-tests them); this test proves the wiring. So:

* the rules: `shortened_rules()` loads dashboards/prometheus/alerts.yml with yaml and writes a
  copy to tmp_path in which every `for:` is `FOR` (1s: Prometheus still takes each alert from
  pending to firing, one evaluation later) and every range selector of every expression
  (`[5m]`, `[15m]`, `[1h]`, ...) is `RANGE` (5s: five scrapes at one a second, enough for
  `rate()`, and a rate that falls to zero within seconds of the guessing stopping). Nothing
  else changes: names, expressions around the ranges, thresholds, labels and annotations are
  the shipped ones, and `test_the_shortened_rules_differ_only_in_durations` checks that;
* Prometheus scrapes and evaluates every second (tests/dashboard_prometheus.py sets the global
  intervals; a group's own `interval`, if one appears, is removed from the copy) and sends to
  the test's Alertmanager in place of the shipped `alerting:` target;
* the Alertmanager configuration: `alertmanager_config_for_test()` loads the shipped file and
  sets `group_wait` and `group_interval` to 1s on the root route and every route that sets
  them, `resolve_timeout` to 10s, and every webhook URL to the receiver's. Routes, grouping,
  inhibition, receiver names and `send_resolved` are the shipped ones; the test checks that
  each alert reaches the receiver the shipped routing names. Alertmanager runs without
  clustering (`--cluster.listen-address=`), its storage in tmp_path, on a free port.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from chatserver import ChatServer, end_process, free_port, require_program, wait_until
from dashboard_prometheus import JOB, Prometheus, wait_ready
from dashboard_promql import ALERT_RULES, DASHBOARDS, PROMETHEUS_CONFIG, alert_rules

ALERTMANAGER_CONFIG = DASHBOARDS / "alertmanager" / "alertmanager.yml"
FOR = "1s"
RANGE = "5s"
# A PromQL range selector, `[5m]` or `[1h30m]`: not a subquery (`[30m:1m]`), which has a colon.
RANGE_SELECTOR = re.compile(r"\[(?:\d+(?:ms|[smhdwy]))+\]")
# The shipped routing: severity critical or page pages, everything else notifies.
PAGE, NOTIFY = "chat-page", "chat-notify"
# The production login limits (README's Configuration table), not TEST_SETTINGS' generous ones.
PRODUCTION_LOGIN_LIMITS = {
    "CHAT_LOGIN_RATE_LIMIT_PER_ADDRESS": "20 per minute",
    "CHAT_LOGIN_RATE_LIMIT_PER_USER": "10 per minute",
}
GUESS_PAUSE_S = 0.1  # ten guesses a second, twenty times the alert's 0.5/s threshold
ARRIVAL_TIMEOUT_S = 30.0


def report(what: str, seconds: float) -> None:
    """A measured delay, printed for `pytest -s` and the CI log."""
    print(f"\nalert chain: {what}: {seconds:.1f}s")


# -- the test's copies of the shipped configuration ----------------------------------------------
def shortened_rules(workdir: Path) -> Path:
    """alerts.yml with every `for:` set to FOR and every range selector to RANGE."""
    rules = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        group.pop("interval", None)
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FOR
            rule["expr"] = RANGE_SELECTOR.sub(f"[{RANGE}]", rule["expr"])
    path = workdir / "alerts.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return path


def routes(route: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield route
    for child in route.get("routes", []):
        yield from routes(child)


def shipped_alertmanager_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    return config


def alertmanager_config_for_test(webhook_url: str) -> dict[str, Any]:
    """The shipped configuration, one second to group, every webhook to `webhook_url`."""
    config = shipped_alertmanager_config()
    config.setdefault("global", {})["resolve_timeout"] = "10s"
    for route in routes(config["route"]):
        for key in ("group_wait", "group_interval"):
            if route is config["route"] or key in route:
                route[key] = "1s"
    for receiver in config["receivers"]:
        webhooks = receiver.get("webhook_configs", [])
        assert webhooks, f"receiver {receiver['name']} has no webhook for the test to replace"
        for webhook in webhooks:
            webhook["url"] = webhook_url
    return config


def moment(rfc3339: str) -> datetime:
    """A time in Alertmanager's JSON (Go's RFC 3339, up to nanoseconds)."""
    return datetime.fromisoformat(rfc3339)


def expected_receiver(severity: str) -> str:
    return PAGE if severity in ("critical", "page") else NOTIFY


# -- the person's end: a webhook receiver --------------------------------------------------------
@dataclass
class Notification:
    at: float  # time.monotonic() on arrival
    path: str
    payload: dict[str, Any]

    def summary(self, since: float) -> str:
        alerts = ", ".join(
            f"{a['labels'].get('alertname')}[{a['labels'].get('instance')}]={a['status']}"
            for a in self.payload.get("alerts", [])
        )
        receiver = self.payload.get("receiver")
        return f"+{self.at - since:5.1f}s {self.path} {receiver} {self.payload.get('status')}: " + (
            alerts or json.dumps(self.payload)[:300]
        )


class WebhookReceiver:
    """An HTTP server on a free loopback port recording every JSON body posted to it."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self._lock = threading.Lock()
        record = self._record

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"unparsed": body.decode("utf-8", "replace")}
                record(self.path, payload)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _record(self, path: str, payload: Any) -> None:
        with self._lock:
            self.notifications.append(Notification(time.monotonic(), path, payload))

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def received(self) -> list[Notification]:
        with self._lock:
            return list(self.notifications)


# -- a real Alertmanager -------------------------------------------------------------------------
class Alertmanager:
    """One Alertmanager process, no clustering, storage in `workdir`, on a free port."""

    def __init__(self, program: str, config: dict[str, Any], workdir: Path) -> None:
        self.program = program
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_file = workdir / "alertmanager.yml"
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self.storage = workdir / "alertmanager-data"
        self.log_file = workdir / "alertmanager.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Alertmanager:
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    self.program,
                    f"--config.file={self.config_file}",
                    f"--storage.path={self.storage}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",
                    "--log.level=debug",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_ready("alertmanager", self.process, self.url, self.log, self.stop, timeout)
        return self

    def stop(self) -> None:
        if self.process is not None:
            end_process(self.process)

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")[-4000:]

    def alerts(self) -> Any:
        return requests.get(self.url + "/api/v2/alerts", timeout=5).json()


# -- the chain -----------------------------------------------------------------------------------
@dataclass
class Chain:
    server: ChatServer
    prometheus: Prometheus
    alertmanager: Alertmanager
    webhook: WebhookReceiver
    started: float

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def matching(self, alertname: str, status: str, after: float) -> list[Notification]:
        return [
            n
            for n in self.webhook.received()
            if n.at >= after
            and any(
                a["status"] == status
                and a["labels"].get("alertname") == alertname
                and a["labels"].get("instance") == self.instance
                for a in n.payload.get("alerts", [])
            )
        ]

    def wait_for(
        self, alertname: str, status: str, after: float, timeout: float = ARRIVAL_TIMEOUT_S
    ) -> tuple[Notification, dict[str, Any]]:
        """The first notification after `after` carrying `alertname` on this chain's instance
        with `status`, and that alert; or a failure saying what did arrive and why not."""
        deadline = time.monotonic() + timeout
        while not (found := self.matching(alertname, status, after)):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{alertname} {status} for {self.instance} did not reach the webhook within "
                    f"{timeout:.0f}s\n{self.explain()}",
                    pytrace=False,
                )
            time.sleep(0.1)
        notification = found[0]
        (alert,) = [
            a
            for a in notification.payload["alerts"]
            if a["labels"].get("alertname") == alertname
            and a["labels"].get("instance") == self.instance
        ]
        return notification, alert

    def explain(self) -> str:
        """What reached the webhook, what Prometheus and Alertmanager hold, and their logs."""
        arrived = [n.summary(self.started) for n in self.webhook.received()]
        parts = [
            "arrived at the webhook (seconds since the chain started):",
            *(arrived or ["  nothing"]),
        ]
        for name, fetch in (
            ("Prometheus /api/v1/alerts", self.prometheus.alerts),
            ("Alertmanager /api/v2/alerts", self.alertmanager.alerts),
        ):
            try:
                state = json.dumps(fetch(), indent=1)[-3000:]
            except (requests.RequestException, AssertionError, ValueError) as error:
                state = f"unavailable: {error!r}"
            parts += [f"{name}:", state]
        parts += [
            "chat-service's last lines:",
            "\n".join(self.server.output().splitlines()[-15:]),
            "Prometheus log:",
            self.prometheus.log(),
            "Alertmanager log:",
            self.alertmanager.log(),
        ]
        return "\n".join(parts)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    prometheus_program = require_program("prometheus")
    alertmanager_program = require_program("prometheus-alertmanager")
    started = time.monotonic()
    webhook = WebhookReceiver().start()
    server = ChatServer(PRODUCTION_LOGIN_LIMITS)
    alertmanager = prometheus = None
    try:
        server.start()
        alertmanager = Alertmanager(
            alertmanager_program, alertmanager_config_for_test(webhook.url), tmp_path
        ).start()
        prometheus = Prometheus(
            prometheus_program,
            f"127.0.0.1:{server.port}",
            tmp_path,
            rules_file=shortened_rules(tmp_path),
            alertmanager=alertmanager.url,
        ).start()
        chain = Chain(server, prometheus, alertmanager, webhook, started)
        prometheus.wait_for_scrape_after(time.time())
        yield chain
    finally:
        if prometheus is not None:
            prometheus.stop()
        if alertmanager is not None:
            alertmanager.stop()
        webhook.stop()
        server.stop()
    server.assert_every_line_json()


class BruteForce:
    """One client guessing one user's password as fast as GUESS_PAUSE_S lets it."""

    def __init__(self, url: str, username: str) -> None:
        self.url = url
        self.username = username
        self.statuses: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._guess, daemon=True)

    def start(self) -> BruteForce:
        self._thread.start()
        return self

    def stop(self) -> Counter[int]:
        self._stop.set()
        self._thread.join(timeout=15)
        assert not self._thread.is_alive(), "the brute force did not stop"
        return self.counts()

    def counts(self) -> Counter[int]:
        with self._lock:
            return Counter(self.statuses)

    def _guess(self) -> None:
        guess = 0
        with requests.Session() as http:
            while not self._stop.is_set():
                guess += 1
                credentials = {"username": self.username, "password": f"guess-{guess:06d}"}
                try:
                    status = http.post(
                        self.url + "/login", json=credentials, timeout=10
                    ).status_code
                except requests.RequestException:
                    status = 0
                with self._lock:
                    self.statuses[status] += 1
                self._stop.wait(GUESS_PAUSE_S)


# -- static: the shipped files ------------------------------------------------------------------
def test_amtool_accepts_the_shipped_config_and_routes_each_alert_by_severity() -> None:
    amtool = require_program("amtool")
    check = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    for rule in alert_rules():
        labels = {"alertname": rule["alert"], "job": JOB, **rule.get("labels", {})}
        routed = subprocess.run(
            [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}"]
            + [f"{name}={value}" for name, value in labels.items()],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert routed.returncode == 0, routed.stdout + routed.stderr
        assert routed.stdout.split() == [expected_receiver(labels.get("severity", ""))], (
            rule["alert"],
            routed.stdout,
        )


def test_the_shipped_configs_point_at_each_other() -> None:
    """Prometheus sends to Alertmanager's default port; every receiver also sends resolves."""
    prometheus = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    (alertmanager,) = prometheus["alerting"]["alertmanagers"]
    assert alertmanager["static_configs"] == [{"targets": ["127.0.0.1:9093"]}]
    config = shipped_alertmanager_config()
    assert config["route"]["group_by"] == ["alertname", "instance"]
    names = {receiver["name"] for receiver in config["receivers"]}
    assert names == {PAGE, NOTIFY}
    for receiver in config["receivers"]:
        for webhook in receiver["webhook_configs"]:
            assert webhook["send_resolved"] is True, receiver["name"]
            assert webhook["url"] == "http://127.0.0.1:9099/alerts", "the documented placeholder"


def test_the_shortened_rules_differ_only_in_durations(tmp_path: Path) -> None:
    shipped = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    short = yaml.safe_load(shortened_rules(tmp_path).read_text(encoding="utf-8"))
    shipped_rules = [rule for group in shipped["groups"] for rule in group["rules"]]
    short_rules = [rule for group in short["groups"] for rule in group["rules"]]
    assert len(short_rules) == len(shipped_rules)
    for before, after in zip(shipped_rules, short_rules, strict=True):
        name = before.get("alert") or before.get("record")
        assert {k: v for k, v in after.items() if k not in ("for", "expr")} == {
            k: v for k, v in before.items() if k not in ("for", "expr")
        }, name
        assert RANGE_SELECTOR.sub("[]", after["expr"]) == RANGE_SELECTOR.sub(
            "[]", before["expr"]
        ), name
        assert set(RANGE_SELECTOR.findall(after["expr"])) <= {f"[{RANGE}]"}, name
        assert ("for" in after) == ("for" in before), name
        if "for" in after:
            assert after["for"] == FOR, name
    # The two alerts this module drives have something to shorten: had the shipped rules
    # lost their `for:` or windows, the timings below would prove less than they claim.
    by_name = {rule.get("alert"): rule for rule in shipped_rules}
    assert RANGE_SELECTOR.search(by_name["ChatLoginFailuresSpiking"]["expr"])
    assert "for" in by_name["ChatLoginFailuresSpiking"]
    assert "for" in by_name["ChatServiceDown"]


# -- live: the whole chain ----------------------------------------------------------------------
def test_a_login_brute_force_reaches_the_webhook_firing_then_resolved(chain: Chain) -> None:
    server = chain.server
    assert server.register("alice").status_code == 201
    quiet_since = time.monotonic()
    assert not chain.matching("ChatLoginFailuresSpiking", "firing", 0), chain.explain()

    brute_force = BruteForce(server.url, "alice").start()
    try:
        begun = time.monotonic()
        notification, alert = chain.wait_for("ChatLoginFailuresSpiking", "firing", quiet_since)
        report(
            "brute force start -> ChatLoginFailuresSpiking firing at the webhook",
            notification.at - begun,
        )
        # The alert may fire on the first failures alone; go on until the per-user limit
        # refuses guesses too, so the run shows both kinds the rule counts.
        wait_until(lambda: brute_force.counts()[429], timeout=20)
    finally:
        statuses = brute_force.stop()
    stopped = time.monotonic()

    assert notification.path == "/alerts"
    assert notification.payload["receiver"] == NOTIFY
    assert notification.payload["groupLabels"] == {
        "alertname": "ChatLoginFailuresSpiking",
        "instance": chain.instance,
    }
    assert alert["labels"] == {
        "alertname": "ChatLoginFailuresSpiking",
        "instance": chain.instance,
        "job": JOB,
        "severity": "warning",
    }
    assert chain.instance in alert["annotations"]["summary"]
    # The production limits turned the guessing into a few failures and then refusals; the
    # alert counts both, and the server counted every one the client saw.
    assert set(statuses) == {401, 429}, statuses
    assert server.metric("chat_logins_total", result="failure") == statuses[401]
    assert server.metric("chat_logins_total", result="rate_limited") == statuses[429]

    notification, alert = chain.wait_for("ChatLoginFailuresSpiking", "resolved", notification.at)
    report(
        "brute force stop -> ChatLoginFailuresSpiking resolved at the webhook",
        notification.at - stopped,
    )
    assert notification.payload["receiver"] == NOTIFY
    assert moment(alert["endsAt"]) > moment(alert["startsAt"])


def test_a_killed_process_pages_and_its_restart_resolves(chain: Chain) -> None:
    server = chain.server
    assert not chain.matching("ChatServiceDown", "firing", 0), chain.explain()
    port = server.port

    killed = time.monotonic()
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    notification, alert = chain.wait_for("ChatServiceDown", "firing", killed)
    report("SIGKILL -> ChatServiceDown firing at the webhook", notification.at - killed)
    assert notification.payload["receiver"] == PAGE
    assert alert["labels"] == {
        "alertname": "ChatServiceDown",
        "instance": chain.instance,
        "job": JOB,
        "severity": "critical",
    }
    assert chain.instance in alert["annotations"]["summary"]

    server.restart()
    assert server.port == port
    restarted = time.monotonic()
    notification, alert = chain.wait_for("ChatServiceDown", "resolved", notification.at)
    report(
        "restart (healthy) -> ChatServiceDown resolved at the webhook", notification.at - restarted
    )
    assert notification.payload["receiver"] == PAGE
    assert moment(alert["endsAt"]) > moment(alert["startsAt"])
