"""One logging pipeline for everything the process writes.

structlog events and standard-library records (eventlet, gevent, werkzeug, engineio, Flask)
share one processor chain and one handler on stdout, so every line has the same shape: JSON
when stdout is not a terminal (or `CHAT_LOG_FORMAT=json`), a coloured readable line on one
(`CHAT_LOG_FORMAT=console`). Each line carries `timestamp` (ISO 8601, UTC, milliseconds),
`level` and `event`; context bound with `structlog.contextvars` rides along.
"""

from __future__ import annotations

import io
import logging
import re
import sys
from typing import Any, TextIO

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from service.clock import utc_now_iso

# C0 controls but tab, DEL and the C1 controls: what a terminal would interpret.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def add_timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """`timestamp` in UTC with milliseconds: 2026-11-24T07:15:28.123Z."""
    event_dict["timestamp"] = utc_now_iso()
    return event_dict


def escape_control_characters(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Keep user-supplied escape sequences from reaching a terminal raw (JSON escapes its own)."""
    for key, value in event_dict.items():
        if isinstance(value, str) and _CONTROL_CHARACTERS.search(value):
            event_dict[key] = _CONTROL_CHARACTERS.sub(lambda m: repr(m.group())[1:-1], value)
    return event_dict


_configured: tuple[bool, str, TextIO] | None = None


def put_common_keys_first(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """`timestamp`, `level`, `event` lead every line, so a reader's eye finds them."""
    ordered = {
        key: event_dict.pop(key) for key in ("timestamp", "level", "event") if key in event_dict
    }
    ordered.update(event_dict)
    return ordered


def _uses_json(log_format: str, stream: TextIO) -> bool:
    if log_format == "json":
        return True
    if log_format == "console":
        return False
    return not stream.isatty()


def configure_logging(
    log_format: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library; again only when the settings change."""
    global _configured
    stream = stream or sys.stdout
    as_json = _uses_json(log_format, stream)
    wanted = (as_json, level.upper(), stream)
    if _configured == wanted:
        return
    _configured = wanted
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        add_timestamp,
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if as_json:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        shared.append(escape_control_characters)
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: structlog.testing.capture_logs must see every event in tests, and the
        # cost is one dictionary lookup per line.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            put_common_keys_first,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that chatter at INFO about every packet: their warnings still come through.
    for noisy in ("engineio", "socketio", "werkzeug", "geventwebsocket"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)


class LoggingStream(io.TextIOBase):
    """A file for libraries that write to stderr directly (http.server's error lines, eventlet's
    websocket, gevent's hub): each line written becomes a log record in the one pipeline."""

    def __init__(self, logger_name: str, level: int = logging.WARNING) -> None:
        self.logger = logging.getLogger(logger_name)
        self.level = level

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self.logger.log(self.level, line.rstrip())
        return len(text)


def route_stderr_through_logging() -> None:
    """The serving process writes nothing raw: stderr joins the pipeline (which writes stdout)."""
    sys.stderr = LoggingStream("stderr")


def get_logger(name: str = "chat") -> Any:
    return structlog.get_logger(name)
