"""The contract's and the README's tables agree with each other, the code and a live server.

The contract (`CONTRACT.md`, at the top of the repository) fixes what clients, log pipelines
and dashboards are built against; the README documents it for operators. The README may add
events and metrics (and fields to an event) but never drops, retypes or relabels what the
contract promises. Every README row must then be true of the running service: each metric is
exported with that type and those labels, every exported `chat_` metric is documented, and each
log event is one the code knows (`service.telemetry.events.LOG_EVENTS`), written with exactly
those fields. The contract's own rows are checked against the code and a live server directly
too (each of its log events is in `LOG_EVENTS` with its level and fields, each of its metrics
is exported with its type and labels, each of its error codes is in `service.errors.STATUS`
with its status), so a broken promise is named as such. Nothing here reads outside the
repository: `tests/test_clone.py` runs this file in a bare clone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import socketio
from chatserver import ChatServer, wait_until
from prometheus_client.parser import text_string_to_metric_families

from service.errors import STATUS
from service.telemetry.events import LOG_EVENTS

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
CONTRACT = REPO / "CONTRACT.md"
COMMON_FIELDS = {"timestamp", "level", "event"}
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@dataclass(frozen=True)
class Row:
    """One table row: the name, its kind (log level or metric type) and its fields or labels."""

    name: str
    kind: str
    names: frozenset[str]


def section(text: str, heading: str) -> str:
    match = re.search(rf"^{re.escape(heading)}\s*$(.*?)(?=^#{{1,2}} |\Z)", text, re.M | re.S)
    assert match, f"no '{heading}' section"
    return match.group(1)


def backticked(cell: str) -> frozenset[str]:
    """The names in a cell, leaving out parenthesised notes such as "(`leave` / `disconnect`)"."""
    while re.search(r"\([^()]*\)", cell):
        cell = re.sub(r"\([^()]*\)", "", cell)
    return frozenset(re.findall(r"`([^`]+)`", cell))


def table(text: str, heading: str) -> dict[str, Row]:
    """The first table under `heading`, keyed by its first column's `name`."""
    lines = [line.strip() for line in section(text, heading).splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    assert start is not None, f"no table under '{heading}'"
    rows: dict[str, Row] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 3, f"'{heading}' rows have three columns: {line}"
        name = re.fullmatch(r"`([a-z_][a-z0-9_]*)`", cells[0])
        assert name, f"first column must be the name in backticks: {line}"
        kind = cells[1].split()[0] if cells[1] else ""
        rows[name.group(1)] = Row(name.group(1), kind, backticked(cells[2]))
    assert rows, f"empty table under '{heading}'"
    return rows


@pytest.fixture(scope="module")
def readme() -> str:
    assert README.is_file(), "README.md is missing"
    return README.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def contract() -> str:
    assert CONTRACT.is_file(), f"the contract is missing: {CONTRACT}"
    return CONTRACT.read_text(encoding="utf-8")


# -- README against the contract -----------------------------------------------------------------
def test_readme_documents_every_contract_log_event(readme: str, contract: str) -> None:
    documented = table(readme, "## Log events")
    for name, promised in table(contract, "## Log events").items():
        assert name in documented, f"README's log table lacks {name}"
        row = documented[name]
        assert row.kind == promised.kind, (
            f"{name}: README says {row.kind}, contract {promised.kind}"
        )
        missing = promised.names - row.names
        assert not missing, f"{name}: README drops the contract's fields {sorted(missing)}"


def test_readme_documents_every_contract_metric(readme: str, contract: str) -> None:
    documented = table(readme, "## Metrics")
    for name, promised in table(contract, "## Metrics").items():
        assert name in documented, f"README's metric table lacks {name}"
        row = documented[name]
        assert row.kind == promised.kind, (
            f"{name}: README says {row.kind}, contract {promised.kind}"
        )
        assert row.names == promised.names, f"{name}: labels {row.names} != {promised.names}"


# -- README against the code ---------------------------------------------------------------------
def test_readme_log_table_is_what_the_code_logs(readme: str) -> None:
    documented = table(readme, "## Log events")
    assert set(documented) == set(LOG_EVENTS), (
        f"in README only: {sorted(set(documented) - set(LOG_EVENTS))}; "
        f"in LOG_EVENTS only: {sorted(set(LOG_EVENTS) - set(documented))}"
    )
    for name, (level, fields) in LOG_EVENTS.items():
        assert documented[name].kind == level, (
            f"{name}: README {documented[name].kind}, code {level}"
        )
        assert documented[name].names == set(fields), (
            f"{name}: README fields {sorted(documented[name].names)}, code {sorted(fields)}"
        )


# -- the contract against the code ---------------------------------------------------------------
def test_contract_log_events_are_what_the_code_logs(contract: str) -> None:
    for name, promised in table(contract, "## Log events").items():
        assert name in LOG_EVENTS, f"the contract promises {name}, LOG_EVENTS lacks it"
        level, fields = LOG_EVENTS[name]
        assert promised.kind == level, f"{name}: contract {promised.kind}, code {level}"
        missing = promised.names - set(fields)
        assert not missing, f"{name}: the code drops the contract's fields {sorted(missing)}"


def test_contract_error_codes_are_the_codes_the_service_sends(contract: str) -> None:
    for code, promised in table(contract, "### Error codes").items():
        assert code in STATUS, f"the contract promises {code}, service.errors.STATUS lacks it"
        assert promised.kind == str(STATUS[code]), (
            f"{code}: contract says {promised.kind}, the service answers {STATUS[code]}"
        )


# -- the README and the contract against a live server -------------------------------------------
def exported(server: ChatServer) -> dict[str, tuple[str, frozenset[str]]]:
    """Exported metric name (as Prometheus stores it) -> (type, label names)."""
    text = requests.get(server.url + "/metrics", timeout=5).text
    found = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {label for sample in family.samples for label in sample.labels} - {"le"}
        found[name] = (family.type, frozenset(labels))
    return found


def fill_every_series(server: ChatServer) -> None:
    """Make the lazily created series exist: rooms with members, messages, a leave."""
    ann, bea = server.login("docs_ann"), server.login("docs_bea")
    ann_socket, bea_socket = server.socket(ann), server.socket(bea)
    for client in (ann_socket, bea_socket):
        assert client.request("join", {"room": "docs"})["ok"]
    assert ann_socket.request("message", {"room": "docs", "text": "hello"})["ok"]
    assert bea_socket.request("leave", {"room": "docs"})["ok"]


@pytest.fixture(scope="module")
def live(chat_server: ChatServer) -> dict[str, tuple[str, frozenset[str]]]:
    """What the module's server exports once every lazily created series exists."""
    fill_every_series(chat_server)
    return exported(chat_server)


def test_readme_metrics_are_what_a_live_server_exports(
    readme: str, live: dict[str, tuple[str, frozenset[str]]]
) -> None:
    documented = table(readme, "## Metrics")
    for name, row in documented.items():
        assert name in live, f"README documents {name}, the server does not export it"
        kind, labels = live[name]
        assert row.kind == kind, f"{name}: README says {row.kind}, server exports a {kind}"
        assert labels == row.names, f"{name}: server labels {sorted(labels)}, README {row.names}"
    undocumented = {name for name in live if name.startswith("chat_")} - set(documented)
    assert not undocumented, f"exported but not in the README: {sorted(undocumented)}"


def test_contract_metrics_are_what_a_live_server_exports(
    contract: str, live: dict[str, tuple[str, frozenset[str]]]
) -> None:
    for name, promised in table(contract, "## Metrics").items():
        assert name in live, f"the contract promises {name}, the server does not export it"
        kind, labels = live[name]
        assert promised.kind == kind, f"{name}: contract says {promised.kind}, server a {kind}"
        assert labels == promised.names, (
            f"{name}: server labels {sorted(labels)}, contract {sorted(promised.names)}"
        )


def test_a_live_server_writes_the_documented_fields(
    readme: str, start_server: Callable[..., ChatServer]
) -> None:
    """A real session's log lines carry exactly the README's fields, no more and no fewer."""
    documented = table(readme, "## Log events")
    server = start_server()
    ann = server.login("fields_ann")
    bob = server.login("fields_bob")
    ann_socket, bob_socket = server.socket(ann), server.socket(bob)
    assert ann_socket.request("join", {"room": "fields"})["ok"]
    assert bob_socket.request("join", {"room": "fields"})["ok"]
    assert ann_socket.request("message", {"room": "fields", "text": "hi"})["ok"]
    assert not ann_socket.request("message", {"room": "elsewhere", "text": "hi"})["ok"]
    # The same events through the HTTP door carry the same fields.
    send = server.url + "/send"
    assert ann.post(send, json={"room": "fields", "text": "hi"}, timeout=10).status_code == 201
    assert ann.post(send, json={"room": "elsewhere", "text": "hi"}, timeout=10).status_code == 403
    assert bob_socket.request("leave", {"room": "fields"})["ok"]
    bad = requests.post(
        server.url + "/login", json={"username": "fields_ann", "password": "wrong password"},
        timeout=10,
    )  # fmt: skip
    assert bad.status_code == 401
    anonymous = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        anonymous.connect(server.url, transports=["websocket"], wait_timeout=10)
    ann_socket.disconnect()
    assert bob.post(server.url + "/logout", json={}, timeout=10).status_code == 204
    expected = [
        "service_started",
        "user_registered",
        "login_succeeded",
        "login_failed",
        "client_connected",
        "connect_rejected",
        "room_joined",
        "message_sent",
        "message_rejected",
        "room_left",
        "client_disconnected",
        "logout",
        "http_request",
    ]
    wait_until(lambda: all(server.logged(event) for event in expected), timeout=10)
    server.stop()
    # Every line of a documented event is checked, service_stopping's too when it came.
    lines = [line for line in server.logged() if line.get("event") in documented]
    assert {line["event"] for line in lines} >= set(expected)
    for line in lines:
        row = documented[line["event"]]
        assert set(line) == COMMON_FIELDS | row.names, (
            f"{line['event']}: written with {sorted(set(line) - COMMON_FIELDS)}, "
            f"README says {sorted(row.names)}"
        )
        assert line["level"] == row.kind, line
        assert TIMESTAMP.fullmatch(line["timestamp"]), line
