"""Settings: one frozen, typed `Settings`, built once from defaults, `CHAT_*` and a test mapping.

Every field is a setting: `CHAT_` + its name in capitals is its environment variable
(`history_limit` is `CHAT_HISTORY_LIMIT`), and a test mapping names it the same way without the
prefix (`{"HISTORY_LIMIT": 7}`). Values are parsed strictly: a boolean is one of the usual
spellings (`true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`) and nothing else, an integer is an
integer, a rate limit is one the `limits` library parses. A value that does not parse, and
settings that do not go together, stop the start with a `SettingsError` naming the variable,
before anything is built. The README's configuration table lists exactly these fields (a test
keeps the two in agreement).

Nothing here imports Flask, sockets or threads: `chat-service` reads the async mode from here
before it monkey-patches.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

PREFIX: Final = "CHAT_"
ASYNC_MODES: Final = ("eventlet", "gevent", "threading")
LOG_FORMATS: Final = ("auto", "json", "console")
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
SAMESITE_VALUES: Final = ("Lax", "Strict", "None")
_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})


class SettingsError(ValueError):
    """A setting that does not parse, or settings that do not go together."""


Parser = Callable[[object], Any]


def boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected true or false (also yes/no, on/off, 1/0)")


def integer(minimum: int) -> Parser:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("expected an integer")
        try:
            number = int(value)
        except ValueError:
            raise ValueError("expected an integer") from None
        if number < minimum:
            raise ValueError(f"expected an integer of at least {minimum}")
        return number

    return parse


PROBE_INTERVAL_MIN_S: Final = 0.1


def probe_seconds(value: object) -> float:
    """Seconds between delivery probes: 0 (off), or a number of at least 0.1 (fractions too)."""
    problem = f"expected 0 (off) or a number of seconds of at least {PROBE_INTERVAL_MIN_S}"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(problem)
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(problem) from None
    if not math.isfinite(seconds) or (seconds != 0 and seconds < PROBE_INTERVAL_MIN_S):
        raise ValueError(problem)
    return seconds


def text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value.strip()


def optional_text(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return text(value)


def one_of(choices: tuple[str, ...]) -> Parser:
    def parse(value: object) -> str:
        if isinstance(value, str):
            for choice in choices:
                if value.strip().lower() == choice.lower():
                    return choice
        raise ValueError(f"expected one of {', '.join(choices)}")

    return parse


def rate_limit(value: object) -> str:
    from limits import parse  # after monkey-patching: limits is no concern of chat-service's

    limit = text(value)
    try:
        parse(limit)
    except ValueError:
        raise ValueError("expected a rate limit such as '5 per minute' or '100/hour'") from None
    return limit


def origins(value: object) -> tuple[str, ...] | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("expected a comma-separated list of origins")
    return tuple(item.strip() for item in items if item.strip())


def setting(default: Any, parse: Parser) -> Any:
    return field(default=default, metadata={"parse": parse})


@dataclass(frozen=True, slots=True)
class Settings:
    # Serving
    host: str = setting("127.0.0.1", text)  # address to listen on
    port: int = setting(5000, integer(0))  # port to listen on
    # What chat-service monkey-patches for; an app runs under the mode its process was patched for.
    async_mode: str = setting("eventlet", one_of(ASYNC_MODES))
    max_connections: int = setting(10_000, integer(1))  # concurrent connections accepted
    max_connections_per_user: int = setting(20, integer(1))  # Socket.IO connections per user
    trusted_proxies: int = setting(0, integer(0))  # reverse proxies whose X-Forwarded-* to believe
    # Origins allowed to open Socket.IO connections; unset: the same origin only.
    cors_allowed_origins: tuple[str, ...] | None = setting(None, origins)
    # Where state lives
    store: str = setting("memory", text)  # memory, or a redis:// URL
    message_queue: str | None = setting(None, optional_text)  # Socket.IO message queue URL
    # Chat limits (bounded memory)
    history_limit: int = setting(100, integer(0))  # messages kept per room
    max_message_length: int = setting(2000, integer(1))  # characters per message
    max_rooms: int = setting(1000, integer(1))  # rooms kept at once
    max_rooms_per_connection: int = setting(50, integer(1))  # rooms one connection may be in
    max_rooms_per_user: int = setting(100, integer(1))  # rooms one user may be in
    max_users: int = setting(100_000, integer(0))  # registered users
    max_content_length: int = setting(64 * 1024, integer(1024))  # bytes of a body or packet
    # Security
    secret_key: str | None = setting(None, optional_text)  # signs session cookies
    hash_concurrency: int = setting(0, integer(0))  # password hashes at once; 0: one per CPU
    session_lifetime: int = setting(24 * 3600, integer(1))  # seconds a login lasts
    session_cookie_secure: bool = setting(False, boolean)  # Secure session cookie (HTTPS)
    session_cookie_httponly: bool = setting(True, boolean)  # HttpOnly session cookie
    session_cookie_samesite: str = setting("Lax", one_of(SAMESITE_VALUES))  # SameSite attribute
    session_cookie_name: str = setting("chat_session", text)  # the session cookie's name
    login_rate_limit_per_address: str = setting("20 per minute", rate_limit)  # logins per address
    login_rate_limit_per_user: str = setting("10 per minute", rate_limit)  # logins per username
    register_rate_limit: str = setting("10 per hour", rate_limit)  # registrations per address
    message_rate_limit: str = setting("20 per 10 seconds", rate_limit)  # messages per user
    typing_rate_limit: str = setting("2 per second", rate_limit)  # typing events per connection
    # Observability
    log_format: str = setting("auto", one_of(LOG_FORMATS))  # auto, json or console
    log_level: str = setting("info", one_of(LOG_LEVELS))  # the lowest level written
    log_message_text: bool = setting(True, boolean)  # message text in message_sent lines
    # ... for direct conversations and private rooms too (with log_message_text)
    log_private_message_text: bool = setting(False, boolean)
    metrics_max_rooms: int = setting(100, integer(0))  # rooms with a room label of their own
    metrics_token: str | None = setting(None, optional_text)  # bearer token /metrics requires
    # Seconds between end-to-end delivery probes (service.probe); 0 turns them off.
    probe_interval: float = setting(10, probe_seconds)
    # A log line with a field LOG_EVENTS does not list raises instead of being written (tests).
    strict_logs: bool = setting(False, boolean)

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Defaults, then `CHAT_*` variables from `environ`, then `overrides` (a test mapping).

        The async mode is the one this process runs under (`running_async_mode`), unless the
        overrides name one: `CHAT_ASYNC_MODE` chose what `chat-service` patched for.
        """
        environ = os.environ if environ is None else environ
        raw: dict[str, tuple[str, object]] = {}  # field -> (where it came from, its value)
        for name in setting_names():
            variable = PREFIX + name.upper()
            if variable in environ and name != "async_mode":
                raw[name] = (variable, environ[variable])
        unknown = sorted(set(overrides or {}) - {n.upper() for n in setting_names()})
        if unknown:
            raise SettingsError(f"unknown settings: {', '.join(unknown)}")
        for key, value in (overrides or {}).items():
            raw[key.lower()] = (key, value)
        raw.setdefault("async_mode", ("the running process", running_async_mode()))
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            if spec.name not in raw:
                continue
            where, value = raw[spec.name]
            try:
                values[spec.name] = spec.metadata["parse"](value)
            except ValueError as error:
                raise SettingsError(f"{where}={value!r}: {error}") from None
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Settings that each parse but do not go together."""
        if not (self.store == "memory" or self.store.startswith(REDIS_SCHEMES)):
            raise SettingsError(
                f"CHAT_STORE={self.store!r}: use 'memory' (the default) or a redis:// URL"
            )
        if self.message_queue is not None:
            if not self.message_queue.startswith(REDIS_SCHEMES):
                raise SettingsError(
                    f"CHAT_MESSAGE_QUEUE={self.message_queue!r}: use a redis:// URL"
                )
            if self.store == "memory":
                raise SettingsError(
                    "CHAT_MESSAGE_QUEUE needs a shared CHAT_STORE (redis://…): with the in-memory "
                    "store each process would hold a different chat"
                )
        if self.session_cookie_samesite == "None" and not self.session_cookie_secure:
            raise SettingsError(
                "CHAT_SESSION_COOKIE_SAMESITE=None needs CHAT_SESSION_COOKIE_SECURE=true "
                "(browsers refuse the cookie otherwise)"
            )


REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")


def setting_names() -> list[str]:
    return [spec.name for spec in dataclasses.fields(Settings)]


def requested_async_mode(environ: Mapping[str, str] | None = None) -> str:
    """`CHAT_ASYNC_MODE`, strictly: what `chat-service` monkey-patches for."""
    environ = os.environ if environ is None else environ
    value = environ.get(PREFIX + "ASYNC_MODE", "eventlet")
    try:
        parsed: str = one_of(ASYNC_MODES)(value)
    except ValueError as error:
        raise SettingsError(f"CHAT_ASYNC_MODE={value!r}: {error}") from None
    return parsed


def running_async_mode() -> str:
    """The async library this process was monkey-patched for, else `threading`."""
    if "eventlet" in sys.modules:
        from eventlet import patcher

        if patcher.is_monkey_patched("socket"):
            return "eventlet"
    if "gevent" in sys.modules:
        from gevent import monkey

        if monkey.is_module_patched("socket"):
            return "gevent"
    return "threading"
