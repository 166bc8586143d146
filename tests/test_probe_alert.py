"""From a deaf listener to its page: the time it takes, measured on real processes.

Two `chat-service` processes share one real `redis-server` (`CHAT_STORE`, `CHAT_MESSAGE_QUEUE`)
and probe every `INTERVAL` (1 s; the timeout is half of it). One reaches Redis
through tests/test_probe.py's `DeafeningProxy`, which can drop what Redis sends to that
process's pub/sub listener and nothing else (python-socketio issue #1581 as the rest of the
system sees it). A real Prometheus (tests/dashboard_prometheus.py) scrapes both processes in
the one `observable-chat` job and evaluates the SHIPPED dashboards/prometheus/alerts.yml as
is; only the global scrape and evaluation intervals are the test's (1 s, as
dashboard_prometheus sets them for every test). Once both probes succeed and Prometheus has
seen both deliver, the test makes the one process deaf and measures:

(a) deaf -> that process's first `probe_failed` line (its log's own timestamp), asserted
    within two probe intervals: its next probe is sent within one interval and times out
    0.5 interval later (service/probe.py);
(b) deaf -> Prometheus reporting `ChatProbeErrorBudgetBurnFast` firing (GET /api/v1/alerts,
    polled every 50 ms), asserted within `alert_bound()`: the two intervals of (a), one more
    probe round (each round adds three failures: the deaf process misses its own probe and
    its peer's answer, the peer misses the deaf one's answer; a scrape may have caught only
    the first of them), one scrape interval for the counters to reach Prometheus, one
    evaluation interval for the rule group (its recording rules and then the alert, which
    reads them in the same evaluation), and `SLACK_S` for two shared, busy cores. The alert
    has no `for:`, so it fires at the first evaluation whose windows are over the threshold:
    Prometheus holds only the few seconds of history the test gave it (printed), inside both
    the 5m and the 1h window, at about 4 expected arrivals a second, so a few scraped failures
    put both error ratios over 14.4 x 0.1 % = 1.44 %.

Both times are printed (run with `-s`) and are in the assertion messages. Then the listener
hears again: the probes of both processes succeed again. The alert does not resolve within the
test, and need not: it is `1h AND 5m` over the ratio, and here both windows hold Prometheus's
whole history, failures included, so new successes dilute them below 1.44 % only after
minutes. The test checks that it is still firing. In production the 5m window ends it about
five minutes after the fault clears (the SRE workbook's short window); the 1h window alone
would hold it for most of an hour.

What (b) means at the shipped settings (scrape and evaluation every 15 s, probe every 10 s,
timeout 5 s): detection within 15 s, plus up to 15 s to be scraped and 15 s to be evaluated.
But the test's fresh Prometheus hides the ratio's build-up: with an hour of history, n
processes expect n^2 arrivals a round, of which a deaf one fails 2n - 1, so the 1h ratio
crosses 1.44 % after 0.0144 x 3600 s x n^2 / (2n - 1) of deafness: about 70 s for two
processes, 145 s for five (the 5m window crosses within a round or two). The page comes
roughly that long, plus up to 30 s of scrape and evaluation, after the listener goes deaf.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from chatserver import ChatServer, require_program, wait_until
from dashboard_prometheus import JOB, Prometheus, sample_value
from redis_support import RedisServer
from test_probe import (
    DeafeningProxy,
    assert_stops_cleanly_after_failures,
    delivered,
    failures,
    on_redis,
    since,
    stamp,
)

StartServer = Callable[..., ChatServer]
ALERT = "ChatProbeErrorBudgetBurnFast"
INTERVAL = 1.0  # CHAT_PROBE_INTERVAL, seconds
SLACK_S = 4.0  # for two shared cores that other test runs keep busy
POLL_S = 0.05


def duration_s(text: str) -> float:
    """A Prometheus duration of the config's global section (`1s`, `500ms`, `15s`)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", text)
    assert match, text
    return float(match[1]) / (1000 if match[2] == "ms" else 1)


def intervals(prometheus: Prometheus) -> tuple[float, float]:
    """The scrape and evaluation intervals the test's Prometheus runs with."""
    config = yaml.safe_load(prometheus.config_file.read_text(encoding="utf-8"))["global"]
    return duration_s(config["scrape_interval"]), duration_s(config["evaluation_interval"])


def alert_bound(scrape_s: float, evaluation_s: float) -> float:
    """Deaf -> firing, at most (the module docstring says why)."""
    return 2 * INTERVAL + INTERVAL + scrape_s + evaluation_s + SLACK_S


def active_alerts(prometheus: Prometheus) -> list[dict[str, Any]]:
    return [a for a in prometheus.alerts() if a["labels"].get("alertname") == ALERT]


def firing(prometheus: Prometheus) -> list[dict[str, Any]]:
    return [a for a in active_alerts(prometheus) if a["state"] == "firing"]


def rfc3339(text: str) -> float:
    """Prometheus' `activeAt` (nanoseconds, `Z`) as a Unix time."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def both_feed_the_sli(prometheus: Prometheus) -> bool:
    """Both targets up, both seen delivering, and the 5m and 1h error ratios recorded at 0."""
    selector = f'{{job="{JOB}"}}'
    up = prometheus.query(f"count(up{selector} == 1)")
    feeding = prometheus.query(f"count(rate(chat_probe_delivery_seconds_count{selector}[5m]) > 0)")
    if not up or sample_value(up[0]) != 2 or not feeding or sample_value(feeding[0]) != 2:
        return False
    for window in ("5m", "1h"):
        ratio = prometheus.query(f"job:chat_probe_errors:ratio_rate{window}{selector}")
        if not ratio or sample_value(ratio[0]) != 0:
            return False
    return True


def test_a_deaf_listener_pages_within_seconds(tmp_path: Path, start_server: StartServer) -> None:
    prometheus_program = require_program("prometheus")
    require_program("redis-server")
    redis_server = RedisServer(tmp_path / "redis").start()
    proxy = DeafeningProxy(redis_server.port)
    servers: list[ChatServer] = []
    prometheus: Prometheus | None = None
    try:
        servers.append(start_server(on_redis(redis_server.url(), str(INTERVAL))))
        servers.append(start_server(on_redis(proxy.url(), str(INTERVAL))))
        healthy, deaf = servers
        (tmp_path / "prometheus").mkdir()
        targets = [f"127.0.0.1:{server.port}" for server in servers]
        prometheus = Prometheus(prometheus_program, targets, tmp_path / "prometheus").start()
        prometheus_started = time.time()
        scrape_s, evaluation_s = intervals(prometheus)
        bound = alert_bound(scrape_s, evaluation_s)

        # Healthy first: both probes succeed, and Prometheus records both at a 0 error ratio.
        wait_until(lambda: delivered(healthy) >= 6 and delivered(deaf) >= 6, timeout=30)
        wait_until(lambda: both_feed_the_sli(prometheus), timeout=30, interval=0.2)
        assert failures(healthy) == failures(deaf) == []
        assert active_alerts(prometheus) == []

        proxy.deafen()
        deafened_at = time.time()
        first_failed: dict[str, Any] | None = None
        fired: dict[str, Any] | None = None
        fired_seen_at = 0.0
        deadline = deafened_at + bound + 10  # past the bound, to report the number anyway
        while (first_failed is None or fired is None) and time.time() < deadline:
            if first_failed is None and (lines := since(deaf, deafened_at, "probe_failed")):
                first_failed = lines[0]
            if fired is None and (alerts := firing(prometheus)):
                fired, fired_seen_at = alerts[0], time.time()
            time.sleep(POLL_S)

        to_failed = stamp(first_failed) - deafened_at if first_failed else float("nan")
        to_firing = fired_seen_at - deafened_at if fired else float("nan")
        active_at = rfc3339(fired["activeAt"]) - deafened_at if fired else float("nan")
        report = (
            f"deaf listener (probe every {INTERVAL:g} s, scrape every {scrape_s:g} s, "
            f"evaluation every {evaluation_s:g} s, {deafened_at - prometheus_started:.1f} s "
            f"of history): first probe_failed after {to_failed:.2f} s "
            f"(bound {2 * INTERVAL:g} s), {ALERT} firing after {to_firing:.2f} s "
            f"(active from {active_at:.2f} s; bound {bound:g} s)"
        )
        print(f"\n[probe alert] {report}")
        assert first_failed is not None, f"{report}: no probe_failed\n{deaf.output()}"
        assert first_failed["reason"] == "timeout", first_failed
        assert to_failed <= 2 * INTERVAL, report
        assert fired is not None, f"{report}: not firing; {prometheus.alerts()}"
        assert to_firing <= bound, report
        assert fired["labels"]["severity"] == "page", fired
        assert fired["labels"]["job"] == JOB, fired
        assert float(fired["value"]) > 14.4 * 0.001, fired

        # Heard again: every probe succeeds (those already waiting when it healed aside).
        proxy.hear()
        heard_at = time.time()
        before = delivered(deaf)
        wait_until(lambda: delivered(deaf) >= before + 4, timeout=10)
        time.sleep(2 * INTERVAL)
        for server in servers:
            assert since(server, heard_at + INTERVAL, "probe_failed") == [], server.output()
        # ... and the page stays: both windows still hold the failures (see the docstring).
        assert firing(prometheus), prometheus.alerts()
        for server in servers:
            assert_stops_cleanly_after_failures(server)
    finally:
        if prometheus is not None:
            prometheus.stop()
        for server in servers:
            server.stop()  # before Redis: a process losing its store on the way out says so
        proxy.close()
        redis_server.stop()
