"""`Settings`: defaults, then `CHAT_*`, then a test mapping; strict parsing; the README's table."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from chatserver import ChatServer

from service.settings import Settings, SettingsError, requested_async_mode, setting_names

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults_then_environment_then_overrides() -> None:
    settings = Settings.load({}, None)
    assert settings == Settings(async_mode="threading")  # nothing is monkey-patched here
    env = {"CHAT_HISTORY_LIMIT": "7", "CHAT_PORT": "5081", "CHAT_STORE": "memory"}
    settings = Settings.load(env, {"PORT": 6000})
    assert (settings.history_limit, settings.port) == (7, 6000)
    assert Settings.load({"CHAT_UNRELATED": "x", "OTHER": "y"}).port == 5000


@pytest.mark.parametrize("spelling", ["False", "false", "no", "OFF", "0", " off "])
def test_every_usual_false_turns_a_boolean_off(spelling: str) -> None:
    assert Settings.load({"CHAT_LOG_MESSAGE_TEXT": spelling}).log_message_text is False


@pytest.mark.parametrize("spelling", ["True", "yes", "on", "1"])
def test_every_usual_true_turns_a_boolean_on(spelling: str) -> None:
    assert Settings.load({"CHAT_SESSION_COOKIE_SECURE": spelling}).session_cookie_secure is True


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CHAT_LOG_MESSAGE_TEXT": "nope"}, "CHAT_LOG_MESSAGE_TEXT='nope'"),
        ({"CHAT_LOG_MESSAGE_TEXT": ""}, "CHAT_LOG_MESSAGE_TEXT=''"),
        ({"CHAT_HISTORY_LIMIT": "lots"}, "CHAT_HISTORY_LIMIT='lots'"),
        ({"CHAT_HISTORY_LIMIT": "1.5"}, "CHAT_HISTORY_LIMIT='1.5'"),
        ({"CHAT_MAX_ROOMS": "0"}, "CHAT_MAX_ROOMS='0'"),
        ({"CHAT_MESSAGE_RATE_LIMIT": "fast"}, "CHAT_MESSAGE_RATE_LIMIT='fast'"),
        ({"CHAT_LOG_FORMAT": "xml"}, "CHAT_LOG_FORMAT='xml'"),
        ({"CHAT_STORE": "postgres://db"}, "CHAT_STORE='postgres://db'"),
        ({"CHAT_MESSAGE_QUEUE": "redis://q"}, "CHAT_MESSAGE_QUEUE needs a shared CHAT_STORE"),
        ({"CHAT_SESSION_COOKIE_SAMESITE": "None"}, "CHAT_SESSION_COOKIE_SECURE=true"),
    ],
)
def test_a_bad_value_stops_the_start_naming_its_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.load(env)
    assert named in str(refused.value)


def test_overrides_are_checked_as_strictly() -> None:
    with pytest.raises(SettingsError, match="HISTORY_LIMIT=True"):
        Settings.load({}, {"HISTORY_LIMIT": True})  # a bool is no integer
    with pytest.raises(SettingsError, match="unknown settings: HISTROY_LIMIT"):
        Settings.load({}, {"HISTROY_LIMIT": 7})


def test_the_async_mode_chat_service_patches_for_is_read_strictly() -> None:
    assert requested_async_mode({}) == "eventlet"
    assert requested_async_mode({"CHAT_ASYNC_MODE": " GEVENT "}) == "gevent"
    with pytest.raises(SettingsError, match="CHAT_ASYNC_MODE='twisted'"):
        requested_async_mode({"CHAT_ASYNC_MODE": "twisted"})


def readme_settings() -> dict[str, str]:
    """`CHAT_*` names in the README's configuration table, each with its default cell."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    found: dict[str, str] = {}
    for line in section.splitlines():
        if not line.startswith("| `CHAT_"):
            continue
        names_cell, default_cell = (cell.strip() for cell in line.strip("|").split("|")[:2])
        names = re.findall(r"`CHAT_([A-Z_]+)`", names_cell)
        defaults = re.findall(r"`([^`]*)`", default_cell)
        for i, name in enumerate(names):
            found[name] = defaults[i] if len(defaults) == len(names) else default_cell
    return found


def test_the_readme_configuration_table_is_the_settings() -> None:
    documented = readme_settings()
    assert sorted(documented) == sorted(name.upper() for name in setting_names())
    for spec in dataclasses.fields(Settings):
        shown = documented[spec.name.upper()]
        if spec.default is None:
            assert "`" not in shown, f"{spec.name} has no default, the README shows {shown!r}"
        elif isinstance(spec.default, bool):
            assert shown == str(spec.default).lower(), spec.name
        else:
            assert shown == str(spec.default), (spec.name, shown, spec.default)


def test_log_message_text_false_keeps_text_out_of_a_real_servers_log(
    start_server: Callable[..., ChatServer],
) -> None:
    server = start_server({"CHAT_LOG_MESSAGE_TEXT": "False"})
    alice = server.login("alice")
    sock = server.socket(alice)
    assert sock.request("join", {"room": "lobby"})["ok"]
    assert sock.request("message", {"room": "lobby", "text": "private words"})["ok"]
    (line,) = server.logged("message_sent")
    assert "text" not in line and line["length"] == len("private words")
    sock.disconnect()


def test_a_bad_setting_stops_chat_service_with_one_line_naming_it() -> None:
    server = ChatServer({"CHAT_MAX_ROOMS": "many"})
    with pytest.raises(RuntimeError, match="exited early") as stopped:
        server.start(timeout=20)
    assert "CHAT_MAX_ROOMS='many'" in str(stopped.value)
