"""dashboards/ is code: linted like kubernetes-mixin's, and proven against a real Prometheus.

Three layers:

* static: the dashboard JSON follows grafana/dashboard-linter's rules (stable uid, a datasource
  variable, `job`/`instance` in every selector, `$__rate_interval` in every rate, a unit and a
  description on every panel), Grafana's provisioning finds it, and promtool accepts the
  scrape config and rules and passes the rules' unit tests (every alert firing and quiet,
  every SLO recording rule's value);
* names: every metric a panel or rule names is one a live server exports, and every `chat_`
  metric it exports is on a panel;
* live: a real server and a real Prometheus scraping it every second, a scripted scenario, then
  every panel query evaluated through Prometheus's HTTP API with Grafana's variables filled in,
  each compared with what the scenario did.
"""

from __future__ import annotations

import math
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio
import yaml
from chatserver import ChatServer, RecordingClient, require_program, wait_until
from dashboard_prometheus import JOB, Prometheus, sample_value
from dashboard_promql import (
    ALERT_RULES,
    DASHBOARDS,
    GRAFANA_DASHBOARDS,
    PROMETHEUS_CONFIG,
    PROMETHEUS_SYNTHETIC,
    RULE_TEST_FILES,
    Target,
    alert_rules,
    dashboard_files,
    expand,
    load_dashboard,
    metric_names,
    panel_targets,
    panels,
    recording_rules,
    regex_value,
    rules,
    selectors,
)
from prometheus_client.parser import text_string_to_metric_families

# Grafana's unit ids (packages/grafana-data/src/valueFormats/categories.ts) that fit this service.
GRAFANA_UNITS = frozenset(
    {"none", "short", "percent", "percentunit", "s", "ms", "bytes", "decbytes"}
    | {"ops", "reqps", "eps", "mps", "cps", "cpm", "opm", "reqpm"}
)
PANEL_TYPES_WITH_UNITS = frozenset({"stat", "timeseries", "table", "gauge", "bargauge"})
COUNTER_FUNCTIONS = frozenset({"rate", "irate", "increase"})


def all_dashboards() -> list[dict[str, Any]]:
    return [load_dashboard(path) for path in dashboard_files()]


def variables_of(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


# -- static: the dashboard JSON ------------------------------------------------------------------
def test_dashboards_exist_with_a_stable_identity() -> None:
    dashboards = all_dashboards()
    assert dashboards, f"no dashboard JSON in {GRAFANA_DASHBOARDS}"
    assert "Chat rooms live" in [d["title"] for d in dashboards]
    uids = [d["uid"] for d in dashboards]
    assert len(set(uids)) == len(uids), uids
    for dashboard in dashboards:
        # A fixed uid keeps links and provisioning stable; "id": null lets any Grafana import it.
        assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"]), dashboard["uid"]
        assert dashboard["id"] is None
        assert dashboard["title"] and dashboard["description"]
        assert "observable-chat" in dashboard["tags"]


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_dashboard_variables_follow_the_linter(path: Path) -> None:
    variables = variables_of(load_dashboard(path))
    datasource = variables["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    for name in ("job", "instance"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"]["uid"] == "${datasource}"
        assert variable["label"] == name.title()
        assert variable["multi"] and variable["includeAll"]
        assert variable["allValue"] == ".+"
        assert variable["refresh"] == 2, "reload on time range change"
    for variable in variables.values():
        if variable["type"] == "query":
            assert re.fullmatch(r"label_values\((.+), \w+\)", variable["query"]), variable
            assert variable["definition"] == variable["query"]
    assert 'job=~"$job"' in variables["instance"]["query"]


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_every_panel_has_a_title_description_unit_and_the_datasource_variable(path: Path) -> None:
    dashboard = load_dashboard(path)
    top = dashboard["panels"]
    ids = [p["id"] for p in top] + [n["id"] for p in top for n in p.get("panels", [])]
    assert len(set(ids)) == len(ids), "panel ids must be unique"
    for panel in panels(dashboard):
        name = panel.get("title")
        assert name and panel.get("description"), panel
        assert panel["datasource"]["uid"] == "${datasource}", name
        assert panel["targets"], f"{name} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", name
        if panel["type"] in PANEL_TYPES_WITH_UNITS:
            assert panel["fieldConfig"]["defaults"].get("unit") in GRAFANA_UNITS, name
            for override in panel["fieldConfig"]["overrides"]:
                for prop in override["properties"]:
                    if prop["id"] == "unit":
                        assert prop["value"] in GRAFANA_UNITS, name


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_panels_fit_the_grid_without_overlapping(path: Path) -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in load_dashboard(path)["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


@pytest.mark.parametrize("target", panel_targets(), ids=lambda t: f"{t.panel}/{t.ref_id}")
def test_every_selector_filters_job_and_instance(target: Target) -> None:
    found = [s for s in selectors(target.expr) if s.name]
    assert found, target.expr
    for selector in found:
        assert selector.matchers.get("job") == ("=~", "$job"), (selector.name, target.expr)
        assert selector.matchers.get("instance") == ("=~", "$instance"), target.expr


@pytest.mark.parametrize("target", panel_targets(), ids=lambda t: f"{t.panel}/{t.ref_id}")
def test_every_rate_uses_rate_interval_and_counters_are_rated(target: Target) -> None:
    for selector in selectors(target.expr):
        if selector.function in ("rate", "irate"):
            assert selector.range == "$__rate_interval", target.expr
        if selector.range is not None:
            # increase() may cover the whole dashboard range; everything else is a rate.
            allowed = {"$__rate_interval"} | (
                {"$__range"} if selector.function == "increase" else set()
            )
            assert selector.range in allowed, target.expr
        if selector.name and selector.name.endswith("_total"):
            assert selector.function in COUNTER_FUNCTIONS, f"raw counter in {target.expr}"
            assert selector.range is not None, target.expr


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_every_variable_is_defined_and_used(path: Path) -> None:
    dashboard = load_dashboard(path)
    defined = set(variables_of(dashboard))
    text = path.read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{?(\w+)\}?", text)) - {"__rate_interval", "__range", "__all"}
    assert used <= defined, f"undefined variables: {used - defined}"
    for name in defined:
        uses = len(re.findall(rf"\$\{{?{name}\b", text))
        assert uses > 1 or (name == "datasource" and uses), f"${name} is never used"


# -- static: Grafana provisioning ----------------------------------------------------------------
def test_grafana_provisioning_loads_this_folder() -> None:
    """Grafana started with GF_PATHS_PROVISIONING=dashboards/ finds the data source and JSON."""
    (datasource,) = yaml.safe_load((DASHBOARDS / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus" and datasource["url"].startswith("http")
    providers = yaml.safe_load((DASHBOARDS / "dashboards/observable-chat.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"].replace("$GF_PATHS_PROVISIONING", str(DASHBOARDS))
    assert Path(path).resolve() == GRAFANA_DASHBOARDS.resolve()
    assert dashboard_files() and all(p.is_relative_to(Path(path)) for p in dashboard_files())
    for dashboard in all_dashboards():
        # The dashboard opens on the provisioned data source where it exists.
        current = variables_of(dashboard)["datasource"]["current"]
        assert current["value"] == datasource["uid"]


# -- static: Prometheus configuration and rules --------------------------------------------------
def promtool(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    program = require_program("promtool")
    return subprocess.run(
        [program, *args], cwd=ALERT_RULES.parent, capture_output=True, text=True, timeout=timeout
    )


def test_promtool_accepts_the_scrape_config_and_rules() -> None:
    config = promtool("check", "config", PROMETHEUS_CONFIG.name)
    assert config.returncode == 0, config.stdout + config.stderr
    checked = promtool("check", "rules", ALERT_RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_alert_rule_unit_tests_pass() -> None:
    # The SLO tests replay hours and days of series: seconds of work, more on a busy machine.
    result = promtool("test", "rules", *(path.name for path in RULE_TEST_FILES), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def rule_test_suites() -> list[dict[str, Any]]:
    suites = [yaml.safe_load(path.read_text(encoding="utf-8")) for path in RULE_TEST_FILES]
    for path, suite in zip(RULE_TEST_FILES, suites, strict=True):
        assert suite["rule_files"] == [ALERT_RULES.name], path.name
    return suites


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    cases = [case for suite in rule_test_suites() for case in suite["tests"]]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names <= fires, f"never shown firing: {names - fires}"
    assert names <= quiet, f"never shown quiet: {names - quiet}"
    for case in cases:
        # Each case also has series that must not fire: the firing list names fewer
        # instances/labels than the input has.
        firing = {
            str(sorted(alert["exp_labels"].items()))
            for check in case.get("alert_rule_test", [])
            for alert in check["exp_alerts"]
        }
        assert len(case["input_series"]) > len(firing), case["name"]


def test_every_recording_rule_is_unit_tested_with_its_value() -> None:
    checked: set[str] = set()
    for suite in rule_test_suites():
        for case in suite["tests"]:
            for check in case.get("promql_expr_test", []):
                assert check["exp_samples"], f"{check['expr']}: no value expected"
                checked |= metric_names(check["expr"])
    names = {rule["record"] for rule in recording_rules()}
    assert names <= checked, f"never checked: {names - checked}"


# The SLO windows (README, Service levels), and the burn-rate alerts' pairs of them.
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


def test_slo_recording_rules_differ_only_in_their_window() -> None:
    """Each SLO's error ratio is recorded over every window, from one expression: a rule whose
    range selectors are not its own window (a copy-paste slip promtool's steady-state values
    cannot see) fails here."""
    by_slo: dict[str, dict[str, str]] = {}
    for rule in recording_rules():
        match = re.fullmatch(r"job:(chat_\w+_errors):ratio_rate(\w+)", rule["record"])
        assert match, f"{rule['record']}: not level:metric:operations with a window"
        slo, window = match.groups()
        ranges = {s.range for s in selectors(rule["expr"]) if s.range is not None}
        assert ranges == {window}, (rule["record"], ranges)
        by_slo.setdefault(slo, {})[window] = rule["expr"].replace(f"[{window}]", "[window]")
    assert set(by_slo) == {"chat_probe_errors", "chat_message_errors"}
    for slo, exprs in by_slo.items():
        assert tuple(exprs) == SLO_WINDOWS, slo
        assert len(set(exprs.values())) == 1, f"{slo}: the windows' expressions differ"


def test_every_alert_says_what_broke_and_selects_the_scrape_job() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    assert [c["job_name"] for c in config["scrape_configs"]] == [JOB]
    assert config["rule_files"] == [ALERT_RULES.name]
    for rule in alert_rules():
        # page/ticket: the SLO burn-rate alerts (someone now / within days).
        severities = ("critical", "warning", "info", "page", "ticket")
        assert rule["labels"]["severity"] in severities, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert re.fullmatch(r"Chat[A-Za-z]+", rule["alert"])
    for rule in rules():
        for selector in selectors(rule["expr"]):
            name = rule.get("alert") or rule["record"]
            assert selector.matchers.get("job") == ("=", JOB), (name, selector)


def test_dashboards_readme_lists_every_row_and_alert() -> None:
    """dashboards/README.md's tables: a line per dashboard row, and per alert with its
    severity (its last column)."""
    text = (DASHBOARDS / "README.md").read_text(encoding="utf-8")
    table_rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ")
    ]
    listed = {cells[0] for cells in table_rows}
    for dashboard in all_dashboards():
        for row in dashboard["panels"]:
            if row["type"] == "row":
                assert row["title"] in listed, f"dashboards/README.md has no row {row['title']}"
    severities = {cells[0].strip("`"): cells[-1] for cells in table_rows}
    for rule in alert_rules():
        assert severities.get(rule["alert"]) == rule["labels"]["severity"], rule["alert"]


# -- names: against a live server's /metrics -----------------------------------------------------
def exported_families(server: ChatServer) -> dict[str, tuple[str, set[str]]]:
    """Family name -> (type, the sample names Prometheus stores for it)."""
    text = requests.get(server.url + "/metrics", timeout=5).text
    families = {}
    for family in text_string_to_metric_families(text):
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("", "_sum", "_count"),
            "info": ("_info",),
        }.get(family.type, ("",))
        families[family.name] = (family.type, {family.name + s for s in suffixes})
    return families


def names_on_panels() -> set[str]:
    return {name for target in panel_targets() for name in metric_names(target.expr)}


def names_in_rules() -> set[str]:
    """What the rules read from the service: the recording rules' own series aside."""
    recorded = {rule["record"] for rule in recording_rules()}
    return {name for rule in rules() for name in metric_names(rule["expr"])} - recorded


@pytest.fixture(scope="module")
def probing_server() -> Iterator[ChatServer]:
    """A server with the delivery probe on (its metrics exist only while it runs)."""
    server = ChatServer(env={"CHAT_PROBE_INTERVAL": "10"}).start()
    yield server
    server.stop()
    server.assert_every_line_json()


def test_dashboards_and_rules_name_only_exported_metrics(probing_server: ChatServer) -> None:
    exported = set().union(*(names for _, names in exported_families(probing_server).values()))
    for source, used in (("dashboards", names_on_panels()), ("alerts.yml", names_in_rules())):
        unknown = used - exported - PROMETHEUS_SYNTHETIC
        assert not unknown, f"{source} names metrics the service does not export: {unknown}"
    recorded = {rule["record"] for rule in recording_rules()}
    assert not recorded & exported, "a recording rule must not shadow an exported metric"
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            assert name in exported | recorded | PROMETHEUS_SYNTHETIC, (rule["alert"], name)


def test_every_exported_chat_metric_is_on_a_panel(probing_server: ChatServer) -> None:
    on_panels = names_on_panels()
    families = exported_families(probing_server)
    assert "chat_probe_delivery_seconds" in families, "the probe's metrics are not exported"
    missing = [
        name
        for name, (_, samples) in families.items()
        if name.startswith("chat_") and not samples & on_panels
    ]
    assert not missing, f"exported but on no panel: {missing}"


# -- live: the scenario, scraped by a real Prometheus --------------------------------------------
PASSWORD = "correct horse battery"
SOCKET_TEXT = "héllo wörld"  # 11 characters, 13 UTF-8 bytes
HTTP_TEXT = "ciao 👋 come va, tutto bene?"  # 30 UTF-8 bytes
# Rooms get their own label in the order they become active, so with a cap of 3 the
# first three keep theirs and extra-1, extra-2 are counted under room="_other".
MAX_ROOMS = 3
# The delivery probe runs every second (its timeout: 0.5 s) and is waited for this many
# times before the final scrape.
PROBE_INTERVAL = "1"
MIN_PROBES = 3


@dataclass
class Scraped:
    """A scenario the service went through, and the Prometheus that watched it."""

    server: ChatServer
    prometheus: Prometheus
    at: float = 0.0  # the last scrape, after the final state: every query is evaluated here
    started: float = 0.0  # the first scrape, before the scenario
    disconnect_reasons: set[str] = field(default_factory=set)

    def variables(self, room: str = ".+") -> dict[str, str]:
        scenario = max(2, math.ceil(self.at - self.started) + 2)
        return {
            "datasource": "observable-chat-prometheus",
            "job": regex_value([JOB]),
            "instance": regex_value([f"127.0.0.1:{self.server.port}"]),
            "room": room,
            # Windows covering the whole scenario, its first scrape included.
            "__rate_interval": f"{scenario}s",
            "__range": f"{scenario}s",
            "__interval": "1s",
        }

    def query(self, expr: str, room: str = ".+") -> list[dict[str, Any]]:
        return self.prometheus.query(expand(expr, self.variables(room)), at=self.at)


def play_scenario(scraped: Scraped) -> None:
    """Registrations, good and bad logins, joins, messages through both doors, leaves and
    disconnects, in three phases with a scrape after each so every rate has a before and after."""
    server, prometheus = scraped.server, scraped.prometheus
    url = server.url

    def join(client: RecordingClient, room: str) -> None:
        assert client.request("join", {"room": room})["ok"]

    def say(client: RecordingClient, room: str, text: str = SOCKET_TEXT) -> None:
        assert client.request("message", {"room": room, "text": text})["ok"]

    def post(http: requests.Session, room: str, text: str = HTTP_TEXT, status: int = 201) -> None:
        reply = http.post(url + "/send", json={"room": room, "text": text}, timeout=10)
        assert reply.status_code == status, reply.text

    def bad_login(username: str) -> None:
        reply = requests.post(
            url + "/login", json={"username": username, "password": "not the password"}, timeout=10
        )
        assert reply.status_code == 401, reply.text

    def refused_connect() -> None:
        anonymous = socketio.Client(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            anonymous.connect(url, transports=["websocket"], wait_timeout=10)

    def disconnect(client: RecordingClient, user: str) -> None:
        before = len(server.logged("client_disconnected", user=user))
        client.disconnect()
        wait_until(lambda: len(server.logged("client_disconnected", user=user)) > before, 10)
        scraped.disconnect_reasons.add(
            server.logged("client_disconnected", user=user)[-1]["reason"]
        )

    def rejections(alice1: RecordingClient, erin1: RecordingClient, bob: requests.Session) -> None:
        assert erin1.request("message", {"room": "dev", "text": "hi"})["error"] == "not_in_room"
        assert alice1.request("message", {"room": "lobby", "text": "x" * 2001})["error"] == (
            "message_too_long"
        )
        post(bob, "lobby", "   ", status=400)
        cross_site = bob.post(
            url + "/send",
            json={"room": "lobby", "text": "forged"},
            headers={"Origin": "https://evil.example"},
            timeout=10,
        )
        assert cross_site.status_code == 400 and cross_site.json()["error"] == "csrf_failed"

    def typing_seen_by(sender: RecordingClient, receiver: RecordingClient) -> None:
        before = len(receiver.got("typing"))
        sender.emit("typing", {"room": "lobby"})
        wait_until(lambda: len(receiver.got("typing")) > before, 10)

    def scrape() -> None:
        scraped.at = prometheus.wait_for_scrape_after(time.time())

    # The first scrape comes a few seconds after start-up, later ones every second.
    scraped.started = prometheus.wait_for_scrape_after(time.time(), timeout=60)

    # Phase A: six people arrive; rooms fill, in the order that decides their labels.
    alice, bob, carol, dave, erin, frank = (
        server.login(name) for name in ("alice", "bob", "carol", "dave", "erin", "frank")
    )
    assert server.register("alice").status_code == 409
    bad_login("alice")
    bad_login("alice")
    bad_login("mallory")
    alice1, alice2, bob1, carol1, dave1, erin1 = (
        server.socket(http) for http in (alice, alice, bob, carol, dave, erin)
    )
    refused_connect()
    join(alice1, "lobby")
    join(bob1, "lobby")
    join(dave1, "lobby")
    join(alice2, "dev")
    join(erin1, "quiet")
    join(carol1, "extra-1")
    join(dave1, "extra-2")
    say(alice1, "lobby")
    say(alice1, "lobby")
    post(bob, "lobby")
    say(alice2, "dev")
    say(carol1, "extra-1")
    # A direct conversation and a private room: one aggregate series each, never a name.
    direct = alice1.request("open_dm", {"user": "erin"})["room"]
    join(alice1, direct)
    say(alice1, direct)
    private = alice1.request("create_private", {"name": "plans"})["room"]
    join(alice1, private)
    say(alice1, private)
    rejections(alice1, erin1, bob)
    typing_seen_by(alice1, bob1)
    post(frank, "dev", status=403)
    assert alice.get(url + "/rooms/lobby/messages", timeout=10).status_code == 200
    assert frank.post(url + "/logout", json={}, timeout=10).status_code == 204
    scrape()

    # Phase B: more of everything, the first leave and the first disconnect.
    gina = server.login("gina")
    frank = server.login("frank")
    bad_login("bob")
    assert frank.post(url + "/logout", json={}, timeout=10).status_code == 204
    carol2 = server.socket(carol)
    refused_connect()
    join(carol1, "lobby")
    join(erin1, "lobby")
    join(bob1, "dev")
    join(carol2, "quiet")
    join(erin1, "extra-2")
    say(alice1, "lobby")
    post(bob, "lobby")
    say(bob1, "dev")
    post(carol, "extra-1")
    say(erin1, "extra-2")
    say(alice1, direct)  # their series existed at the last scrape: now they move
    say(alice1, private)
    rejections(alice1, erin1, bob)
    post(gina, "dev", status=403)
    typing_seen_by(alice1, bob1)
    assert alice.get(url + "/rooms/lobby/messages", timeout=10).status_code == 200
    assert carol1.request("leave", {"room": "lobby"})["ok"]
    disconnect(dave1, "dave")
    scrape()

    # Phase C: dev empties (its series go), the lobby loses two more.
    assert erin1.request("leave", {"room": "lobby"})["ok"]
    disconnect(bob1, "bob")
    assert alice2.request("leave", {"room": "dev"})["ok"]
    # The probe has been sending all along, and the chat holds still while it sends a few more.
    wait_until(lambda: (server.metric("chat_probe_delivery_seconds_count") or 0) >= MIN_PROBES, 30)
    scrape()


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    program = require_program("prometheus")
    server = ChatServer(
        env={"CHAT_METRICS_MAX_ROOMS": str(MAX_ROOMS), "CHAT_PROBE_INTERVAL": PROBE_INTERVAL}
    ).start()
    prometheus = Prometheus(program, f"127.0.0.1:{server.port}", tmp_path_factory.mktemp("prom"))
    result = Scraped(server, prometheus)
    try:
        prometheus.start()
        play_scenario(result)
        yield result
    finally:
        server.close_clients()
        prometheus.stop()
        server.stop()
    server.assert_every_line_json()


# What the scenario leaves behind, and what each panel must therefore show.
FINAL_MEMBERS = {"lobby": 1, "quiet": 2, "_other": 2, "_direct": 1, "_private": 1}
# extra-1: carol, extra-2: erin; alice in her direct conversation and her private room
EXERCISED_EVENTS = {
    "connect",
    "disconnect",
    "join",
    "leave",
    "message",
    "typing",
    "open_dm",
    "create_private",
    "POST /register",
    "POST /login",
    "POST /logout",
    "POST /send",
    "GET /rooms/<room>/messages",
    "GET /metrics",
}
EXPECTED_HTTP = {
    ("POST", "/register", "201"),
    ("POST", "/register", "409"),
    ("POST", "/login", "200"),
    ("POST", "/login", "401"),
    ("POST", "/logout", "204"),
    ("POST", "/send", "201"),
    ("POST", "/send", "400"),
    ("POST", "/send", "403"),
    ("GET", "/rooms/<room>/messages", "200"),
    ("GET", "/metrics", "200"),
}
LEAVE_SERIES_SCRAPED = {
    ("lobby", "leave"),
    ("lobby", "disconnect"),
    ("_other", "disconnect"),
    ("dev", "disconnect"),  # when a scrape fell between bob's disconnect and dev emptying
}
EXPECTED_REJECTIONS = {
    ("socket", "not_in_room"),
    ("socket", "message_too_long"),
    ("http", "empty_message"),
    ("http", "not_in_room"),
}

Result = list[dict[str, Any]]


def by(result: Result, *labels: str) -> dict[Any, float]:
    """Series values keyed by their label values (one label: the bare value)."""
    values = {}
    for sample in result:
        key = tuple(sample["metric"].get(label, "") for label in labels)
        values[key[0] if len(key) == 1 else key] = sample_value(sample)
    return values


def only(result: Result) -> float:
    assert len(result) == 1, result
    return sample_value(result[0])


def positive(result: Result, *labels: str) -> set[Any]:
    return {key for key, value in by(result, *labels).items() if value > 0}


def quiet_except(result: Result, expected: set[Any], *labels: str) -> None:
    """Exactly the `expected` series moved; any other series is present at 0."""
    values = by(result, *labels)
    assert {key for key, value in values.items() if value > 0} == expected, values


def bucket_bounds(scraped: Scraped, metric: str, observed: float) -> tuple[float, float]:
    """The histogram bucket an observation falls into, from the server's own buckets."""
    bounds = sorted(
        float(dict(labels)["le"])
        for name, labels in scraped.server.metrics()
        if name == metric + "_bucket"
    )
    upper = min(b for b in bounds if b >= observed)
    lower = max([b for b in bounds if b < observed], default=0.0)
    return lower, upper


def check_latency(result: Result) -> None:
    values = by(result, "event")
    for event in EXERCISED_EVENTS:
        assert event in values, f"no latency for {event}: {sorted(values)}"
        assert 0 < values[event] <= 10, (event, values[event])
    for event in values:
        assert re.fullmatch(r"[a-z_]+|[A-Z]+ /\S*", event), f"unbounded event label {event!r}"


def check_sizes(scraped: Scraped, result: Result, quantile: bool) -> None:
    values = by(result, "source")
    for source, text in (("socket", SOCKET_TEXT), ("http", HTTP_TEXT)):
        size = len(text.encode("utf-8"))
        if quantile:
            lower, upper = bucket_bounds(scraped, "chat_message_size_bytes", size)
            assert lower < values[source] <= upper, (source, values[source], lower, upper)
        else:
            assert values[source] == pytest.approx(size), (source, values)


def probes_failed(scraped: Scraped, until: float) -> int:
    """probe_failed lines the server wrote up to `until` (and a second more: a failure counted
    just before a scrape may be logged just after it)."""
    return sum(
        1
        for line in scraped.server.logged("probe_failed")
        if datetime.fromisoformat(line["timestamp"]).timestamp() <= until + 1
    )


def check_probe_sli(scraped: Scraped, value: float, perfect: float) -> None:
    """A probe SLO panel's value: `perfect` (SLI 1, budget 1, burn 0) when no probe failed
    (none arrives late: the timeout, 0.5 s, comes before the SLO's 1 s); with failures, as
    bad as they make it (a few at most on a busy machine)."""
    if probes_failed(scraped, scraped.at) == 0:
        assert value == perfect, value
    else:
        assert value <= 1 if perfect == 1 else value >= 0, value


def check_probe_latency(scraped: Scraped, result: Result) -> None:
    values = by(result, "instance")
    assert set(values) == {f"127.0.0.1:{scraped.server.port}"}, values
    # A loopback delivery takes milliseconds; none is observed past the 0.5 s timeout.
    assert all(0 < value <= 1 for value in values.values()), values


def check_probe_failures(scraped: Scraped, result: Result) -> None:
    values = by(result, "reason")
    assert set(values) == {"timeout", "error"}, values
    if probes_failed(scraped, scraped.at) == 0:
        assert set(values.values()) == {0}, values


Check = Callable[[Scraped, Result], None]

EXPECTATIONS: dict[tuple[str, str], Check] = {
    ("Users online", "A"): lambda s, r: pytest.approx(3) == only(r),  # alice, carol, erin
    ("Connections", "A"): lambda s, r: pytest.approx(5) == only(r),  # alice x2, carol x2, erin
    # lobby, quiet, extra-1, extra-2, alice's direct conversation and private room
    ("Rooms", "A"): lambda s, r: pytest.approx(6) == only(r),
    ("Messages per second", "A"): lambda s, r: only(r) > 0,
    ("Members beyond the room cap", "A"): lambda s, r: pytest.approx(2) == only(r),
    ("Instances up", "A"): lambda s, r: pytest.approx(1) == only(r),
    # The probe's SLO panels: see check_probe_sli. No message failed with internal_error.
    ("SLI now", "A"): lambda s, r: check_probe_sli(s, only(r), perfect=1) is None,
    ("SLI now", "B"): lambda s, r: only(r) == 1,
    ("Error budget remaining", "A"): lambda s, r: check_probe_sli(s, only(r), perfect=1) is None,
    ("Error budget remaining", "B"): lambda s, r: only(r) == 1,
    ("Burn rate", "A"): lambda s, r: check_probe_sli(s, only(r), perfect=0) is None,
    ("Burn rate", "B"): lambda s, r: only(r) == 0,
    ("Probe delivery p50 / p99 by instance", "A"): lambda s, r: check_probe_latency(s, r) is None,
    ("Probe delivery p50 / p99 by instance", "B"): lambda s, r: check_probe_latency(s, r) is None,
    ("Probes delivered and failed", "A"): lambda s, r: (
        positive(r, "instance") == {f"127.0.0.1:{s.server.port}"}
    ),
    ("Probes delivered and failed", "B"): lambda s, r: check_probe_failures(s, r) is None,
    ("Version", "A"): lambda s, r: (
        by(r, "version", "async_mode", "store")
        == {(s.server.logged("service_started")[0]["version"], "eventlet", "memory"): 1}
    ),
    # dev's series are gone but its messages were scraped twice; quiet never had one.
    ("Messages per second by room (top 10)", "A"): lambda s, r: (
        set(by(r, "room"))
        == positive(r, "room")
        == {"lobby", "dev", "_other", "_direct", "_private"}
    ),
    ("Messages per second by door", "A"): lambda s, r: only(r) > 0,
    ("Messages per second by door", "B"): lambda s, r: positive(r, "source") == {"socket", "http"},
    ("Members per room", "A"): lambda s, r: by(r, "room") == FINAL_MEMBERS,
    ("Direct messages and private rooms: messages per second", "A"): lambda s, r: (
        set(by(r, "room")) == positive(r, "room") == {"_direct", "_private"}
    ),
    ("Direct messages and private rooms: members", "A"): lambda s, r: (
        by(r, "room") == {"_direct": 1, "_private": 1}
    ),
    ("Joins and leaves per room", "A"): lambda s, r: (
        # alice joined her direct conversation and private room once, in phase A
        positive(r, "room") == {"lobby", "dev", "quiet", "_other"}
        and {"_direct", "_private"} <= set(by(r, "room"))
    ),
    # Leaves that moved between scrapes. dave's leave of extra-2 made an _other series at 1
    # that never moved again, and dev's leaves came as it emptied, its series with them.
    ("Joins and leaves per room", "B"): lambda s, r: (
        positive(r, "room", "reason") == {("lobby", "leave"), ("lobby", "disconnect")}
        and set(by(r, "room", "reason")) <= LEAVE_SERIES_SCRAPED
    ),
    ("Logins by result, registrations and logouts", "A"): lambda s, r: (
        quiet_except(r, {"success", "failure"}, "result") is None
    ),
    ("Logins by result, registrations and logouts", "B"): lambda s, r: only(r) > 0,
    ("Logins by result, registrations and logouts", "C"): lambda s, r: only(r) > 0,
    # alice registered twice, frank again in phase B: name probes, nothing else refused.
    ("Logins by result, registrations and logouts", "D"): lambda s, r: (
        quiet_except(r, {"username_taken"}, "reason") is None
    ),
    # One direct conversation opened and one private room created.
    ("Logins by result, registrations and logouts", "E"): lambda s, r: (
        positive(r, "kind") == set(by(r, "kind")) == {"direct", "private"}
    ),
    ("Logins by result, registrations and logouts", "F"): lambda s, r: only(r) == 0,
    # 8 = six in phase A, gina and frank again in B; 4 = three bad in A, one in B.
    ("Logins and registrations in range", "A"): lambda s, r: (
        by(r, "result") == {"success": 8, "failure": 4, "rate_limited": 0}
    ),
    ("Logins and registrations in range", "B"): lambda s, r: only(r) == 7,
    ("Logins and registrations in range", "C"): lambda s, r: only(r) == 2,
    ("Users online and connections", "A"): lambda s, r: pytest.approx(3) == only(r),
    ("Users online and connections", "B"): lambda s, r: pytest.approx(5) == only(r),
    ("Connects and refused connects", "A"): lambda s, r: only(r) > 0,
    ("Connects and refused connects", "B"): lambda s, r: (
        quiet_except(r, {"unauthorized"}, "reason") is None
    ),
    # python-socketio's client may close the transport before its DISCONNECT packet is
    # sent, so the reason is the one the server logged.
    ("Disconnect reasons", "A"): lambda s, r: (
        quiet_except(r, s.disconnect_reasons, "reason") is None and len(r) == 6
    ),
    ("Event latency p99 by event", "A"): lambda s, r: check_latency(r) is None,
    ("Event latency p50 / p95 / p99", "A"): lambda s, r: check_latency(r) is None,
    ("Event latency p50 / p95 / p99", "B"): lambda s, r: check_latency(r) is None,
    ("Event latency p50 / p95 / p99", "C"): lambda s, r: check_latency(r) is None,
    ("Event latency p50 / p95 / p99", "D"): lambda s, r: positive(r, "event") >= EXERCISED_EVENTS,
    ("Rejected messages by reason", "A"): lambda s, r: (
        quiet_except(r, EXPECTED_REJECTIONS, "source", "reason") is None
    ),
    ("Refused requests and packets by reason", "A"): lambda s, r: (
        quiet_except(r, {"csrf_failed"}, "reason") is None
    ),
    ("Log lines dropped", "A"): lambda s, r: pytest.approx(0) == only(r),  # the test reads all
    ("Message sizes", "A"): lambda s, r: check_sizes(s, r, quantile=True) is None,
    ("Message sizes", "B"): lambda s, r: check_sizes(s, r, quantile=True) is None,
    ("Message sizes", "C"): lambda s, r: check_sizes(s, r, quantile=False) is None,
    ("HTTP responses by status", "A"): lambda s, r: (
        positive(r, "status") >= {"200", "201", "204", "400", "401", "403", "409"}
        and not {status for status in positive(r, "status") if status.startswith("5")}
    ),
    ("HTTP requests by route and status", "A"): lambda s, r: (
        positive(r, "method", "route", "status") >= EXPECTED_HTTP
        and not [key for key in by(r, "method", "route", "status") if "lobby" in key[1]]
    ),
    ("CPU", "A"): lambda s, r: 0 < only(r) < 4,
    ("Memory", "A"): lambda s, r: 10e6 < only(r) < 4e9,
    ("Open file descriptors", "A"): lambda s, r: only(r) >= 5,  # five sockets are still open
    ("File descriptors used of the limit", "A"): lambda s, r: 0 < only(r) < 1,
}


def test_every_panel_has_an_expectation() -> None:
    assert {t.key for t in panel_targets()} == set(EXPECTATIONS)


@pytest.mark.prometheus
@pytest.mark.parametrize("target", panel_targets(), ids=lambda t: f"{t.panel}/{t.ref_id}")
def test_panel_query_shows_what_the_scenario_did(scraped: Scraped, target: Target) -> None:
    result = scraped.query(target.expr)
    check = EXPECTATIONS[target.key]
    assert check(scraped, result) is not False, f"{target.expr}\n-> {result}"


@pytest.mark.prometheus
def test_room_variable_narrows_the_room_panels(scraped: Scraped) -> None:
    for target in panel_targets():
        if "$room" not in target.expr:
            continue
        rooms = {sample["metric"].get("room") for sample in scraped.query(target.expr, "lobby")}
        assert rooms == {"lobby"}, (target.key, rooms)
    members = next(t for t in panel_targets() if t.panel == "Members per room")
    both = scraped.query(members.expr, regex_value(["lobby", "_other"]))
    assert by(both, "room") == {"lobby": 1, "_other": 2}


@pytest.mark.prometheus
def test_variables_list_what_was_scraped(scraped: Scraped) -> None:
    """Each query variable, asked the way Grafana asks (the label values API over the range)."""
    (dashboard,) = [d for d in all_dashboards() if d["title"] == "Chat rooms live"]
    values = {}
    for variable in variables_of(dashboard).values():
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
        assert match, variable["query"]
        selector = expand(match.group(1), scraped.variables())
        values[variable["name"]] = set(
            scraped.prometheus.label_values(match.group(2), selector, scraped.started, scraped.at)
        )
    assert values["job"] == {JOB}
    assert values["instance"] == {f"127.0.0.1:{scraped.server.port}"}
    assert values["room"] == {"lobby", "dev", "quiet", "_other", "_direct", "_private"}


@pytest.mark.prometheus
def test_alert_rules_evaluate_on_the_live_metrics(scraped: Scraped) -> None:
    """The shipped rules, loaded by the real Prometheus: no evaluation error, the room-cap
    overflow the scenario caused is noticed, the few bad logins and rejected messages are
    not mistaken for an attack, and no message failed, so the message SLO is not burning."""

    def states() -> dict[str, str]:
        loaded = scraped.prometheus.rules()
        for rule in loaded:
            assert rule["health"] == "ok", rule
        return {rule["name"]: rule["state"] for rule in loaded if rule["type"] == "alerting"}

    wait_until(lambda: states()["ChatRoomMetricsOverflow"] != "inactive", timeout=15)
    now = states()
    assert set(now) == {rule["alert"] for rule in alert_rules()}
    # The latency alerts depend on how busy the test machine is, the probe's SLO alerts too
    # (one probe late in the first minutes is a large share); the others on counts alone.
    for quiet in (
        "ChatServiceDown",
        "ChatLoginFailuresSpiking",
        "ChatMessagesRejectedHigh",
        "ChatMessageErrorBudgetBurnFast",
        "ChatMessageErrorBudgetBurnSlow",
    ):
        assert now[quiet] == "inactive", (quiet, now)


@pytest.mark.prometheus
def test_slo_recording_rules_record_the_live_error_ratios(scraped: Scraped) -> None:
    """Every SLO window's error ratio is recorded for the job: 0 for messages (none failed),
    0 for probes unless one failed, and then what the failures make it."""

    def recorded(name: str) -> dict[Any, float]:
        return by(scraped.prometheus.query(f'{name}{{job="{JOB}"}}'), "job")

    names = [rule["record"] for rule in recording_rules()]
    wait_until(lambda: all(recorded(name) for name in names), timeout=15)
    values = {name: recorded(name) for name in names}
    # Read after the values: a failure they count has been logged by now.
    failed = probes_failed(scraped, time.time())
    for name, value in values.items():
        assert set(value) == {JOB}, (name, value)
        if name.startswith("job:chat_message_errors:") or not failed:
            assert value[JOB] == 0, (name, value)
        else:
            assert 0 <= value[JOB] <= 1, (name, value)


@pytest.mark.prometheus
def test_prometheus_stored_the_final_state(scraped: Scraped) -> None:
    """The scrape the queries are evaluated at saw the scenario's end: same numbers as the
    server reports now, so no check above passed on a half-scraped state."""
    for metric in ("chat_connections", "chat_users_online", "chat_rooms"):
        stored = scraped.query(f'{metric}{{job=~"$job", instance=~"$instance"}}')
        assert only(stored) == scraped.server.metric(metric)


@pytest.mark.prometheus
def test_the_shipped_scrape_config_scrapes_a_token_protected_metrics_endpoint(
    start_server: Callable[..., ChatServer], tmp_path: Path
) -> None:
    """With `CHAT_METRICS_TOKEN` set, the scrape config's commented `authorization` block
    (uncommented, its file holding the token) scrapes; the same config without it does not."""
    program = require_program("prometheus")
    server = start_server({"CHAT_METRICS_TOKEN": "scrape-me-please"})
    token_file = tmp_path / "chat-metrics-token"
    token_file.write_text("scrape-me-please\n", encoding="utf-8")
    target = f"127.0.0.1:{server.port}"
    with_token = Prometheus(program, target, tmp_path / "with", token_file=token_file)
    without = Prometheus(program, target, tmp_path / "without")
    (tmp_path / "with").mkdir()
    (tmp_path / "without").mkdir()
    try:
        with_token.start()
        without.start()

        def up(prometheus: Prometheus) -> list[float]:
            return [sample_value(s) for s in prometheus.query(f'up{{job="{JOB}"}}')]

        wait_until(lambda: up(with_token) == [1.0] and up(without) == [0.0], timeout=30)
        scraped = with_token.query(f'chat_build_info{{job="{JOB}"}}')
        assert [s["metric"]["store"] for s in scraped] == ["memory"]
        refused = server.metric("chat_requests_rejected_total", reason="unauthorized")
        assert refused is not None and refused >= 1
    finally:
        with_token.stop()
        without.stop()
