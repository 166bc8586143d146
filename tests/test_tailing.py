"""Logs made for tailing: the README's jq recipes and the shipped lnav format, on a real log.

A real chat-service plays a scenario with real Socket.IO and HTTP clients (registrations,
logins, a failed login, a refused connection, joins, messages, refusals, a leave, disconnects,
a logout); its stdout lines, exactly as written, become `chat.log`. The real jq runs each recipe
of the README's "Tailing the logs" as written there, and the real lnav reads the log headless
(`lnav -n`) with `dashboards/lnav/`'s format installed by `lnav -i` into a temporary home, never
the user's. What they find must be what Python finds in the same file, and what the scenario
did. Event and field names come from the log itself, so an event added later is counted and
checked here without a change.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio
from chatserver import BASE_ENV, REPO, ChatServer, RecordingClient, require_program, wait_until

from service.telemetry.events import LOG_EVENTS

README = REPO / "README.md"
FORMAT = REPO / "dashboards" / "lnav" / "observable-chat.json"
DEFINITION: dict[str, Any] = json.loads(FORMAT.read_text(encoding="utf-8"))
(TABLE,) = DEFINITION.keys() - {"$schema"}  # lnav names the SQL table after the format
FORMAT_SPEC: dict[str, Any] = DEFINITION[TABLE]
DECLARED: dict[str, dict[str, Any]] = FORMAT_SPEC["value"]
# Fields lnav 0.11 cannot declare: a value named after an SQL keyword makes it drop the whole
# table without a word. They stay readable as json_extract(log_raw_text, '$.where').
UNDECLARABLE = {"where"}
SQL_TYPE = {"string": "text", "integer": "integer", "float": "real"}
PYTHON_TYPE: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "float": (float,)}
REFUSALS = {  # the refusals the scenario causes, each with its error code
    "registration_failed": "username_taken",
    "login_failed": "invalid_credentials",
    "connect_rejected": "unauthorized",
    "event_rejected": "invalid_room",
    "message_rejected": "not_in_room",
}
EXPECTED_COUNTS = {  # the scenario's events (HTTP lines depend on health checks: not counted)
    "service_started": 1,
    "user_registered": 3,
    "registration_failed": 1,
    "login_succeeded": 3,
    "login_failed": 1,
    "connect_rejected": 1,
    "client_connected": 3,
    "room_joined": 3,
    "event_rejected": 1,
    "message_sent": 2,
    "message_rejected": 1,
    "room_left": 3,
    "client_disconnected": 3,
    "logout": 1,
    "service_stopping": 1,
}


# -- the README's recipes --------------------------------------------------------------------------
def tailing_section() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Tailing the logs\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "README has no '## Tailing the logs' section"
    return match.group(1)


def recipes(language: str, comment: str) -> dict[str, str]:
    """The named commands of the section's `language` code blocks: a comment (one line or
    several) names the command on the lines after it, up to a blank line or the next comment.
    Commands with no comment before them (such as the lnav install lines) are not recipes."""
    found: dict[str, str] = {}
    for block in re.findall(rf"^```{language}\n(.*?)^```", tailing_section(), re.M | re.S):
        name: list[str] = []
        command: list[str] = []
        for line in [*block.splitlines(), ""]:
            if command and (line.startswith(comment) or not line.strip()):
                if name:
                    found[" ".join(name)] = "\n".join(command)
                name, command = [], []
            if line.startswith(comment):
                name.append(line[len(comment) :].strip())
            elif line.strip():
                command.append(line)
            else:
                name = []
    return found


JQ_RECIPES = recipes("sh", "# ")
LNAV_QUERIES = recipes("sql", "-- ")


def recipe(found: dict[str, str], start: str) -> str:
    named = [command for name, command in found.items() if name.startswith(start)]
    assert len(named) == 1, f"README's Tailing the logs: one recipe named '{start}…' expected"
    return named[0]


# -- the scenario --------------------------------------------------------------------------------
@dataclass
class Tailed:
    """The scenario's log (`directory/chat.log`) and what Python reads in it."""

    directory: Path
    log: Path
    lines: list[dict[str, Any]]
    sids: dict[str, str]  # each user's one connection
    failed_log: Path  # another process's lines: a start on a port in use (level error)
    failed_lines: list[dict[str, Any]]

    def events(self, **fields: Any) -> list[dict[str, Any]]:
        return [line for line in self.lines if all(line.get(k) == v for k, v in fields.items())]


def start_on_a_taken_port() -> str:
    """What `chat-service` writes when its port is taken: one `service_failed` line."""
    with socket.socket() as squatter:  # a plain listener (eventlet's own would share the port)
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        env.update(BASE_ENV, CHAT_PORT=str(squatter.getsockname()[1]), PYTHONUNBUFFERED="1")
        done = subprocess.run(
            [sys.executable, "-m", "service"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1 and done.stderr == "", done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def tailed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tailed]:
    server = ChatServer()
    server.start()
    try:
        alice, bob, carol = server.login("alice"), server.login("bob"), server.login("carol")
        assert server.register("bob").status_code == 409
        wrong = requests.post(
            server.url + "/login",
            json={"username": "bob", "password": "not bob's password"},
            timeout=10,
        )
        assert wrong.status_code == 401
        stranger = RecordingClient()
        with pytest.raises(socketio.exceptions.ConnectionError):
            stranger.connect(server.url, transports=["websocket"], wait_timeout=5)

        a, b, c = server.socket(alice), server.socket(bob), server.socket(carol)
        assert a.request("join", {"room": "lobby"})["ok"]
        assert b.request("join", {"room": "lobby"})["ok"]
        assert c.request("join", {"room": "side"})["ok"]
        assert c.request("join", {"room": "_reserved"})["error"] == "invalid_room"
        assert a.request("message", {"room": "lobby", "text": "hi bob"})["ok"]
        sent = bob.post(server.url + "/send", json={"room": "lobby", "text": "hi alice"})
        assert sent.status_code == 201
        refused = carol.post(server.url + "/send", json={"room": "lobby", "text": "let me in"})
        assert refused.status_code == 403
        assert b.request("leave", {"room": "lobby"}) == {"ok": True, "room": "lobby"}
        for client in (a, b, c):
            client.disconnect()
        wait_until(lambda: len(server.logged("client_disconnected")) == 3)
        assert alice.post(server.url + "/logout", json={}).status_code == 204
        server.wait_for_event("logout")
    finally:
        server.stop()
    server.assert_every_line_json()
    failed_output = start_on_a_taken_port()

    directory = tmp_path_factory.mktemp("tailing")
    log = directory / "chat.log"
    log.write_text("".join(line + "\n" for line in server.raw_lines), encoding="utf-8")
    failed_log = directory / "failed.log"
    failed_log.write_text(failed_output, encoding="utf-8")
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    failed_lines = [json.loads(line) for line in failed_output.splitlines()]
    assert [line["event"] for line in failed_lines if line["level"] == "error"] == [
        "service_failed"
    ]
    sids = {line["user"]: line["sid"] for line in lines if line["event"] == "client_connected"}
    assert set(sids) == {"alice", "bob", "carol"}
    yield Tailed(directory, log, lines, sids, failed_log, failed_lines)


def test_the_log_holds_what_the_scenario_did(tailed: Tailed) -> None:
    counts = Counter(line["event"] for line in tailed.lines)
    assert {event: counts[event] for event in EXPECTED_COUNTS} == EXPECTED_COUNTS
    for event, reason in REFUSALS.items():
        (refusal,) = tailed.events(event=event)
        assert (refusal["level"], refusal["reason"]) == ("warning", reason)


# -- jq ------------------------------------------------------------------------------------------
def run_jq(tailed: Tailed, command: str, **env: str) -> list[str]:
    """`command` as written in the README, run by a shell in the folder that holds chat.log."""
    require_program("jq")
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=tailed.directory,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == "", f"{command}\n{done.stderr}"
    return done.stdout.splitlines()


def assert_projections(output: list[str], expected: list[dict[str, Any]]) -> list[str]:
    """Each output object is the next expected line cut to the recipe's keys; the events."""
    objects = [json.loads(line) for line in output]
    assert len(objects) == len(expected), (objects, expected)
    for got, line in zip(objects, expected, strict=True):
        assert "event" in got and got == {key: line.get(key) for key in got}, (got, line)
    return [line["event"] for line in expected]


def test_jq_one_users_session(tailed: Tailed) -> None:
    output = run_jq(tailed, recipe(JQ_RECIPES, "one user's session"))
    events = assert_projections(output, tailed.events(user="alice"))
    assert events[:2] == ["user_registered", "login_succeeded"] and events[-1] == "logout"
    for event in ("client_connected", "room_joined", "message_sent", "client_disconnected"):
        assert event in events


def test_jq_one_room(tailed: Tailed) -> None:
    output = run_jq(tailed, recipe(JQ_RECIPES, "one room"))
    events = Counter(assert_projections(output, tailed.events(room="lobby")))
    assert events == {"room_joined": 2, "message_sent": 2, "message_rejected": 1, "room_left": 2}


def test_jq_every_refusal(tailed: Tailed) -> None:
    output = run_jq(tailed, recipe(JQ_RECIPES, "every refusal"))
    expected = [
        line
        for line in tailed.lines
        if line["level"] == "warning" and line["event"].endswith(("_rejected", "_failed"))
    ]
    assert_projections(output, expected)
    reasons = {json.loads(line)["event"]: json.loads(line)["reason"] for line in output}
    assert reasons.items() >= REFUSALS.items()


def test_jq_the_sids_of_one_user(tailed: Tailed) -> None:
    assert run_jq(tailed, recipe(JQ_RECIPES, "the sids of one user")) == [tailed.sids["alice"]]


def one_connection(tailed: Tailed, sid: str) -> list[dict[str, Any]]:
    """A connection's lines and the messages its user sent over Socket.IO to its rooms while
    it was open, in the log's order (what the README's recipes promise)."""
    own = tailed.events(sid=sid)
    user, rooms = own[0]["user"], {line["room"] for line in own if "room" in line}
    opened, closed = own[0]["timestamp"], own[-1]["timestamp"]
    return [
        line
        for line in tailed.lines
        if line.get("sid") == sid
        or (
            line["event"] == "message_sent"
            and line["source"] == "socket"
            and line["user"] == user
            and line["room"] in rooms
            and opened <= line["timestamp"] <= closed
        )
    ]


CONNECTIONS = {  # alice sent over Socket.IO; bob over HTTP, which is no connection's
    "alice": [
        "client_connected",
        "room_joined",
        "message_sent",
        "room_left",
        "client_disconnected",
    ],
    "bob": ["client_connected", "room_joined", "room_left", "client_disconnected"],
}


@pytest.mark.parametrize("user", sorted(CONNECTIONS))
def test_jq_one_connection(tailed: Tailed, user: str) -> None:
    sid = tailed.sids[user]
    output = run_jq(tailed, recipe(JQ_RECIPES, "one connection"), SID=sid)
    assert assert_projections(output, one_connection(tailed, sid)) == CONNECTIONS[user]


def test_every_jq_recipe_of_the_readme_is_tested() -> None:
    tested = ["one user's session", "one room", "every refusal", "the sids of one user"]
    tested.append("one connection")
    assert len(JQ_RECIPES) == len(tested), sorted(JQ_RECIPES)
    for start in tested:
        assert recipe(JQ_RECIPES, start).startswith("jq ")


# -- lnav ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lnav(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., list[dict[str, Any]]]:
    """Run SQL in the real lnav, headless, with the shipped format installed by `lnav -i` into
    a temporary home; returns the result's rows."""
    program = require_program("lnav")
    home = tmp_path_factory.mktemp("lnav-home")
    env = {
        k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME")
    }
    # A time zone other than UTC, so a time read as local (or shown converted) would differ.
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), TZ="XST+5")
    installed = subprocess.run(
        [program, "-i", str(FORMAT)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "installed" in installed.stdout + installed.stderr
    (copy,) = home.rglob(f"{TABLE}.json")
    assert json.loads(copy.read_text(encoding="utf-8")) == DEFINITION
    results = tmp_path_factory.mktemp("lnav-results")

    def run(
        query: str, *files: Path, stdin: Path | None = None, **extra_env: str
    ) -> list[dict[str, Any]]:
        result = results / f"{len(list(results.iterdir()))}.json"
        with open(stdin or os.devnull, "rb") as source:
            done = subprocess.run(
                [program, "-W", "-n", "-q", "-c", query, "-c", f":write-json-to {result}"]
                + [str(file) for file in files],
                env={**env, **extra_env},
                stdin=source,
                capture_output=True,
                text=True,
                timeout=120,
            )
        assert done.returncode == 0, done.stderr
        if not result.exists() and done.stderr.count("error:") == 1:
            assert "no query result to write" in done.stderr, f"{query}\n{done.stderr}"
            return []
        assert done.stderr == "", f"{query}\n{done.stderr}"  # -W: no warning about formats
        rows: list[dict[str, Any]] = json.loads(result.read_text(encoding="utf-8"))
        return rows

    return run


Lnav = Callable[..., list[dict[str, Any]]]


def test_the_format_declares_every_catalogued_field_with_a_kind() -> None:
    assert TABLE == "observable_chat_log", "the README's queries and these name the table so"
    catalogued = {field for _, fields in LOG_EVENTS.values() for field in fields}
    missing = sorted(catalogued - UNDECLARABLE - DECLARED.keys())
    assert not missing, f"{FORMAT.name} declares no value for {missing} (see LOG_EVENTS)"
    assert not UNDECLARABLE & DECLARED.keys(), "lnav 0.11 drops the table for these names"
    for name, value in DECLARED.items():
        assert value.get("kind") in SQL_TYPE, f"{name}: kind {value.get('kind')}"
    assert {"user", "room", "sid", "event"} <= {
        n for n, v in DECLARED.items() if v.get("identifier")
    }
    levels = {level for level, _ in LOG_EVENTS.values()} | {"debug", "critical"}
    assert levels <= FORMAT_SPEC["level"].keys()
    assert FORMAT_SPEC["timestamp-field"] == "timestamp" and FORMAT_SPEC["level-field"] == "level"
    assert {"__timestamp__", "__level__", "event"} <= {
        part["field"] for part in FORMAT_SPEC["line-format"] if isinstance(part, dict)
    }


def lnav_time(timestamp: str) -> str:
    """How lnav's `log_time` shows the service's `2026-11-24T07:15:28.123Z`."""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", timestamp), timestamp
    return timestamp.replace("T", " ").removesuffix("Z")


def test_lnav_recognises_every_line_its_time_and_its_level(tailed: Tailed, lnav: Lnav) -> None:
    files = (tailed.log, tailed.failed_log)
    written = tailed.log.read_text(encoding="utf-8").splitlines()
    written += tailed.failed_log.read_text(encoding="utf-8").splitlines()
    formats = lnav(";SELECT log_format, count(*) AS n FROM all_logs GROUP BY log_format", *files)
    assert formats == [{"log_format": TABLE, "n": len(written)}], "a line fell to another format"
    rows = lnav(";SELECT log_raw_text, log_time, log_level FROM observable_chat_log", *files)
    assert sorted(row["log_raw_text"] for row in rows) == sorted(written)
    for row in rows:
        line = json.loads(row["log_raw_text"])
        assert (row["log_time"], row["log_level"]) == (lnav_time(line["timestamp"]), line["level"])
    assert {row["log_level"] for row in rows} >= {"info", "warning", "error"}


def test_lnav_counts_each_event_as_python_and_the_scenario(tailed: Tailed, lnav: Lnav) -> None:
    rows = lnav(";SELECT event, count(*) AS n FROM observable_chat_log GROUP BY event", tailed.log)
    counted = {row["event"]: int(row["n"]) for row in rows}
    assert counted == Counter(line["event"] for line in tailed.lines)
    assert {event: counted.get(event) for event in EXPECTED_COUNTS} == EXPECTED_COUNTS


def test_lnav_reads_lines_piped_into_it(tailed: Tailed, lnav: Lnav) -> None:
    """`make run | lnav`: the same format recognises the lines on standard input."""
    rows = lnav(
        ";SELECT event, count(*) AS n FROM observable_chat_log GROUP BY event", stdin=tailed.log
    )
    assert {row["event"]: int(row["n"]) for row in rows} == Counter(
        line["event"] for line in tailed.lines
    )


def same_value(got: Any, value: Any) -> bool:
    """lnav's JSON output writes numbers as text: compare them as numbers."""
    if isinstance(value, int | float) and not isinstance(value, bool) and got is not None:
        return float(got) == float(value)
    return bool(got == value)


def test_every_field_of_every_line_is_searchable_in_lnav(tailed: Tailed, lnav: Lnav) -> None:
    """A declared field is a column of its kind's SQL type; any other field (`where`, one newer
    than the format) is read from the raw line. Field names come from the log itself."""
    fields = sorted({field for line in tailed.lines for field in line} - {"timestamp", "level"})
    columns = []
    for field in fields:
        if field in DECLARED:
            columns += [f'"{field}"', f'typeof("{field}") AS "{field}:type"']
        else:
            columns.append(f"json_extract(log_raw_text, '$.{field}') AS \"{field}\"")
    query = f";SELECT log_raw_text, {', '.join(columns)} FROM observable_chat_log"  # noqa: S608
    rows = lnav(query, tailed.log)
    assert len(rows) == len(tailed.lines)
    for row in rows:
        line = json.loads(row["log_raw_text"])
        for field in fields:
            kind = DECLARED.get(field, {}).get("kind")
            value = line.get(field)
            assert same_value(row[field], value), (field, row[field], line)
            if kind is not None:
                sql_type = "null" if value is None else SQL_TYPE[kind]
                assert row[f"{field}:type"] == sql_type, (field, line)
                assert value is None or isinstance(value, PYTHON_TYPE[kind]), (field, line)


def by_time(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((row["log_time"], row["event"]) for row in rows)


def test_lnav_answers_each_readme_query(tailed: Tailed, lnav: Lnav) -> None:
    """Each query of the README, as written there, against what Python reads in the log."""
    lines = tailed.lines
    rows = lnav(recipe(LNAV_QUERIES, "how many of each event"), tailed.log)
    assert {(r["event"], r["log_level"]): int(r["n"]) for r in rows} == Counter(
        (line["event"], line["level"]) for line in lines
    )

    rows = lnav(recipe(LNAV_QUERIES, "everything that was not info"), tailed.log)
    assert by_time(rows) == sorted(
        (lnav_time(line["timestamp"]), line["event"]) for line in lines if line["level"] != "info"
    )
    assert {row["event"] for row in rows} >= REFUSALS.keys()

    rows = lnav(recipe(LNAV_QUERIES, "one user's session"), tailed.log)
    assert by_time(rows) == sorted(
        (lnav_time(line["timestamp"]), line["event"]) for line in tailed.events(user="alice")
    )

    for user, chain in CONNECTIONS.items():
        rows = lnav(recipe(LNAV_QUERIES, "one connection"), tailed.log, SID=tailed.sids[user])
        expected = one_connection(tailed, tailed.sids[user])
        assert by_time(rows) == sorted((lnav_time(e["timestamp"]), e["event"]) for e in expected)
        assert sorted(row["event"] for row in rows) == sorted(chain)

    rows = lnav(recipe(LNAV_QUERIES, "messages per room"), tailed.log)
    sent = tailed.events(event="message_sent")
    assert {row["room"]: (int(row["messages"]), int(row["senders"])) for row in rows} == {
        room: (
            sum(line["room"] == room for line in sent),
            len({line["user"] for line in sent if line["room"] == room}),
        )
        for room in {line["room"] for line in sent}
    }

    rows = lnav(recipe(LNAV_QUERIES, "HTTP requests"), tailed.log)
    requests_seen = tailed.events(event="http_request")
    assert {(r["method"], r["path"], int(r["status"])): int(r["n"]) for r in rows} == Counter(
        (line["method"], line["path"], line["status"]) for line in requests_seen
    )
    assert len(LNAV_QUERIES) == 6, f"a README query without a check here: {sorted(LNAV_QUERIES)}"
