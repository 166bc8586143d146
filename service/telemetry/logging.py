"""One logging pipeline for everything the process writes.

structlog events and standard-library records (eventlet, gevent, werkzeug, engineio, Flask)
share one processor chain and one handler on stdout, so every line has the same shape: JSON
when stdout is not a terminal (or `CHAT_LOG_FORMAT=json`), a coloured readable line on one
(`CHAT_LOG_FORMAT=console`). Each line carries `timestamp` (ISO 8601, UTC, milliseconds),
`level` and `event`; context bound with `structlog.contextvars` rides along.

Libraries do not write on their own: engineio's and socketio's loggers get no handler of their
own and propagate here, and what a library writes to stderr (`LoggingStream`) becomes records,
a whole traceback as one `unhandled_error`. A client can make libraries log, so each library
gets at most `LIBRARY_LINES_PER_SECOND` lines a second; the next line says how many were dropped.

The log never stops the chat: in the server, lines go to stdout through `LineWriter`, which
hands them to a thread of their own. A reader that falls behind is given up to
`LOG_BUFFER_BYTES` of lines to catch up on; beyond that, and for good once the reader is gone
(a closed pipe), lines are dropped and counted (`chat_log_lines_dropped_total`, and a
`log_lines_dropped` line once the reader keeps up again) instead of stalling the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import io
import logging
import os
import re
import sys
import threading
import time
from collections import deque
from typing import Any, Final, TextIO

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from service.clock import utc_now_iso

# C0 controls but tab, DEL and the C1 controls: what a terminal would interpret.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

# Loggers of the libraries under the service, at the level they write from. python-engineio and
# python-socketio add a stderr handler of their own to a logger whose level is unset (which
# bypassed this pipeline: raw text lines); with a level set first, they do not.
LIBRARY_LOGGERS: Final = {
    "engineio": logging.WARNING,
    "engineio.server": logging.WARNING,
    "engineio.client": logging.WARNING,
    "socketio": logging.WARNING,
    "socketio.server": logging.WARNING,  # also the Redis message queue's reconnect messages
    "socketio.client": logging.WARNING,
    "werkzeug": logging.WARNING,  # chatters at INFO about every request
    "geventwebsocket": logging.WARNING,
}
LIBRARY_LINES_PER_SECOND: Final = 20  # per library (the first part of the logger's name)
SERVICE_LOGGER: Final = "chat"  # the service's own events: never dropped here


def add_timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """`timestamp` in UTC with milliseconds: 2026-11-24T07:15:28.123Z."""
    event_dict["timestamp"] = utc_now_iso()
    return event_dict


def escape_control_characters(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Keep user-supplied escape sequences from reaching a terminal raw (JSON escapes its own).

    A traceback (`exception`) keeps its line breaks: the console shows it as lines.
    """
    for key, value in event_dict.items():
        if isinstance(value, str) and _CONTROL_CHARACTERS.search(value):
            pattern = _CONTROL_BUT_NEWLINE if key == "exception" else _CONTROL_CHARACTERS
            event_dict[key] = pattern.sub(lambda m: repr(m.group())[1:-1], value)
    return event_dict


_configured: tuple[bool, str, TextIO] | None = None


def put_common_keys_first(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """`timestamp`, `level`, `event` lead every line, so a reader's eye finds them."""
    ordered = {
        key: event_dict.pop(key) for key in ("timestamp", "level", "event") if key in event_dict
    }
    ordered.update(event_dict)
    return ordered


def add_dropped_lines(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """`dropped_lines`: how many lines of this library `LibraryLineBudget` dropped before."""
    record = event_dict.get("_record")
    dropped = getattr(record, "chat_dropped_lines", 0)
    if dropped:
        event_dict["dropped_lines"] = dropped
    return event_dict


class LineBudget:
    """At most `per_second` lines in any one-second window (a fixed window, cheap to check)."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._window = 0
        self._used = 0
        self._dropped = 0

    def take(self) -> int | None:
        """None when this line is over the budget; else how many were refused before it."""
        window = int(time.monotonic())
        if window != self._window:
            self._window, self._used = window, 0
        if self._used >= self.per_second:
            self._dropped += 1
            return None
        self._used += 1
        dropped, self._dropped = self._dropped, 0
        return dropped


class LibraryLineBudget(logging.Filter):
    """At most `per_second` records a second from each library; the service's own pass.

    Libraries log what clients make them log (a bad packet, a bad request line), so a flood of
    those cannot drown the log. The first record let through after a drop carries the count.
    """

    def __init__(self, per_second: int = LIBRARY_LINES_PER_SECOND) -> None:
        super().__init__()
        self.per_second = per_second
        self._budgets: dict[str, LineBudget] = {}  # by library
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        library = record.name.split(".", 1)[0]
        if library == SERVICE_LOGGER:
            return True
        with self._lock:
            budget = self._budgets.get(library)
            if budget is None:
                budget = self._budgets[library] = LineBudget(self.per_second)
            dropped = budget.take()
        if dropped is None:
            return False
        if dropped:
            record.chat_dropped_lines = dropped
        return True


def adopt_library_loggers() -> None:
    """Library loggers: their level, no handler of their own, records to the root handler.

    Run before the libraries build their servers (they then add no handler) and again after
    (in case one was added anyway).
    """
    for name, level in LIBRARY_LOGGERS.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers.clear()
        logger.propagate = True


def _uses_json(log_format: str, stream: TextIO) -> bool:
    if log_format == "json":
        return True
    if log_format == "console":
        return False
    return not stream.isatty()


def renders_json() -> bool:
    """True when lines are written as JSON (False for the console format, or not configured)."""
    return _configured is not None and _configured[0]


def ensure_logging() -> None:
    """Logging as configured; when nothing configured it yet, as `CHAT_LOG_FORMAT` asks, so
    that a failure before the app was built is still one line of the expected shape."""
    if _configured is None:
        wanted = os.environ.get("CHAT_LOG_FORMAT", "auto").strip().lower()
        configure_logging(wanted if wanted in ("json", "console") else "auto")


def configure_logging(
    log_format: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library; again only when the settings change."""
    global _configured
    adopt_library_loggers()
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

    # The service's own events take structlog's native path: its processors render the line
    # and one writer puts it on the stream, with no standard-library record, handler or
    # formatter on the way (a quarter of the cost per line). Library records reach the same
    # processors and stream through the handler below, so every line has one shape.
    writer = structlog.WriteLogger(stream)
    structlog.configure(
        processors=[*shared, put_common_keys_first, renderer],
        logger_factory=lambda *_: writer,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # Not cached: structlog.testing.capture_logs must see every event in tests, and the
        # cost is a few microseconds per line.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, add_dropped_lines, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            put_common_keys_first,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(LibraryLineBudget())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)


# How a Python traceback is laid out, as `traceback.print_exception` writes it.
_TRACEBACK_START: Final = "Traceback (most recent call last):"
_CHAIN_MARKERS: Final = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)
# gevent's hub ends its report with a time stamp and, when it has one, the failed greenlet.
_GEVENT_TRAILER: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ( |$)")
_MAX_BLOCK_LINES: Final = 400  # a traceback longer than this is written in parts
_MAX_PARTIAL_LINE: Final = 16 * 1024  # characters of an unterminated line kept back
STALE_AFTER_S: Final = 1.0  # an unfinished line or traceback older than this is written


class LoggingStream(io.TextIOBase):
    """A file for libraries that write to stderr directly (http.server's error lines, eventlet's
    and gevent's hubs): each line written becomes a log record in the one pipeline, and a whole
    traceback (chained exceptions and gevent's trailer included) one `unhandled_error` record.

    Writes are joined into lines first (gevent writes a line in pieces). A traceback's end is
    only known from the line after it, so the last one waits for the next write, a `flush()`
    (eventlet's hub flushes after each), or `flush_stale()`, which the server calls regularly.
    """

    def __init__(self, logger_name: str, level: int = logging.WARNING) -> None:
        self.logger = logging.getLogger(logger_name)
        self.reports = structlog.get_logger(logger_name)
        self.level = level
        self._partial = ""
        self._block: list[str] = []
        self._state = ""  # in a traceback: "frames", "raised" (its last line seen) or "chain"
        self._last_write = time.monotonic()
        self._lock = threading.RLock()
        self._busy = False  # a write from inside a write (logging reporting its own error)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            if self._busy:
                return len(text)
            self._busy = True
            try:
                self._last_write = time.monotonic()
                *lines, self._partial = (self._partial + text).split("\n")
                for line in lines:
                    self._take(line.rstrip("\r"))
                if len(self._partial) > _MAX_PARTIAL_LINE:
                    self._take(self._partial)
                    self._partial = ""
            finally:
                self._busy = False
        return len(text)

    def flush(self) -> None:
        """Write a traceback that has ended (nothing can still belong to it)."""
        with self._lock:
            if self._state == "raised" and not self._busy:
                self._emit_block()

    def flush_stale(self) -> None:
        """Write whatever has waited longer than `STALE_AFTER_S`, finished or not."""
        with self._lock:
            if self._busy or time.monotonic() - self._last_write < STALE_AFTER_S:
                return
            self._busy = True
            try:
                if self._partial:
                    self._take(self._partial)
                    self._partial = ""
                if self._block:
                    self._emit_block()
            finally:
                self._busy = False

    def _take(self, line: str) -> None:
        if self._block and self._continues_block(line):
            if len(self._block) >= _MAX_BLOCK_LINES:
                self._emit_block()
            return
        if line.startswith(_TRACEBACK_START):
            self._block, self._state = [line], "frames"
        elif line.strip():
            self.logger.log(self.level, line.rstrip())

    def _continues_block(self, line: str) -> bool:
        """Add `line` to the traceback being collected; False (block written) if it is not."""
        if self._state == "frames":
            # Frames are indented; the first line that is not names the exception.
            if not line.startswith((" ", "\t")) and not line.startswith(_TRACEBACK_START):
                self._state = "raised"
            self._block.append(line)
            return True
        if not line.strip() or line.startswith(_CHAIN_MARKERS):
            self._block.append(line)
            if line.strip():
                self._state = "chain"
            return True
        if line.startswith(_TRACEBACK_START) and self._state == "chain":
            self._block.append(line)
            self._state = "frames"
            return True
        if self._state == "raised" and _GEVENT_TRAILER.match(line):
            self._block.append(line)
            self._emit_block()
            return True
        self._emit_block()
        return False

    def _emit_block(self) -> None:
        text = "\n".join(self._block).strip()
        self._block, self._state = [], ""
        if text:
            self.reports.error("unhandled_error", where="stderr", exception=text)


def route_stderr_through_logging() -> LoggingStream:
    """The serving process writes nothing raw: stderr joins the pipeline (which writes stdout).

    The caller should call the stream's `flush_stale()` every second or so.
    """
    stream = LoggingStream("stderr")
    sys.stderr = stream
    return stream


def get_logger(name: str = "chat") -> Any:
    return structlog.get_logger(name)


# -- stdout that never waits on its reader -----------------------------------------------------
LOG_BUFFER_BYTES: Final = 1024 * 1024  # a few thousand lines: a reader's hiccup, not a stall
WRITE_CHUNK_BYTES: Final = 64 * 1024  # at most this much per write (a pipe's usual capacity)


def _unpatched(module: str, name: str) -> Any:
    """`module.name` as the standard library defines it, also after eventlet or gevent
    monkey-patched it: the log writer is a real thread, and green primitives would make it
    wait on the event loop (eventlet's green `os.write` even waits forever on a closed pipe)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched(module):
        return monkey.get_original(module, name)
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None:
        return getattr(patcher.original(module), name)
    return getattr(importlib.import_module(module), name)


class LineWriter(io.TextIOBase):
    """stdout for the serving process: `write` never waits for the reader.

    A line is written at once when that cannot block (nothing is waiting before it, it fits in
    one atomic pipe write, and the descriptor has room), so a reader that keeps up sees it
    before the reply it belongs to leaves. Otherwise it is queued, and a real OS thread writes
    the queue: a reader that does not keep up stalls that thread, never the event loop. While
    more than `capacity` bytes wait, new lines are dropped; once a write fails (the reader
    closed the pipe: `EPIPE`) every line is, for good. Each dropped line is counted
    (`take_dropped`).
    """

    def __init__(self, fd: int = 1, capacity: int = LOG_BUFFER_BYTES) -> None:
        self.fd = fd
        self.capacity = capacity
        self._tty = os.isatty(fd)
        self._os_write = _unpatched("os", "write")
        self._select = _unpatched("select", "select")
        self._atomic = int(_unpatched("select", "PIPE_BUF"))  # a pipe write this big is whole
        self._sleep = _unpatched("time", "sleep")
        allocate_lock = _unpatched("_thread", "allocate_lock")
        self._lock = allocate_lock()  # guards the fields below; never held while writing
        self._wakeup = allocate_lock()  # held while the writer has nothing to do
        self._wakeup.acquire()
        self._queue: deque[tuple[bytes, int]] = deque()  # (text, lines in it)
        self._queued_bytes = 0  # in the queue and in the write under way
        self._writing = False
        self._gone: OSError | None = None  # why a write failed: nobody reads any more
        self._dropped = 0  # since `take_dropped` last asked
        _unpatched("_thread", "start_new_thread")(self._run, ())

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._tty

    def fileno(self) -> int:
        return self.fd

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "backslashreplace")
        lines = text.count("\n")
        with self._lock:
            if self._gone is not None or self._queued_bytes + len(data) > self.capacity:
                self._dropped += lines or 1
                return len(text)
            # A terminal is left to the thread: it may stop output (Ctrl-S) with room reported.
            now = not (self._tty or self._queue or self._writing) and len(data) <= self._atomic
            if now:
                self._writing = True
            else:
                self._queue.append((data, lines))
                self._queued_bytes += len(data)
        if now:
            self._write_now(data, lines)
        else:
            self._wake()
        return len(text)

    def _write_now(self, data: bytes, lines: int) -> None:
        """Write `data` here if the descriptor has room for it; queue what is left."""
        written, error = 0, None
        try:
            if self._select([], [self.fd], [], 0)[1]:
                written = self._os_write(self.fd, data)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as failure:
            error = failure
        with self._lock:
            self._writing = False
            if error is not None:
                self._gone = error
                self._dropped += lines + sum(n for _, n in self._queue)
                self._queue.clear()
                self._queued_bytes = 0
            elif written < len(data):
                self._queue.appendleft((data[written:], lines))
                self._queued_bytes += len(data) - written
            waiting = bool(self._queue)
        if waiting:
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # already woken: the line is found with the rest
            self._wakeup.release()

    def flush(self) -> None:
        """Nothing to do: the writer thread writes as soon as it can (see `drain`)."""

    def take_dropped(self) -> int:
        """Lines dropped since the last call."""
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        return dropped

    def keeping_up(self) -> bool:
        """The reader is there and at most half the buffer waits for it."""
        with self._lock:
            return self._gone is None and self._queued_bytes <= self.capacity // 2

    def drain(self, timeout: float) -> bool:
        """Block until everything queued is written (or cannot be), at most `timeout` seconds:
        before the process exits, so that its last lines reach a reader that keeps up."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._gone is not None or not (self._queue or self._writing):
                    return True
            if time.monotonic() >= deadline:
                return False
            self._sleep(0.01)

    def _run(self) -> None:
        while True:
            self._wakeup.acquire()
            while (chunk := self._next_chunk()) is not None:
                data, lines = chunk
                error = self._write_all(data)
                with self._lock:
                    self._writing = False
                    self._queued_bytes -= len(data)
                    if error is not None:
                        self._gone = error
                        self._dropped += lines + sum(n for _, n in self._queue)
                        self._queue.clear()
                        self._queued_bytes = 0

    def _next_chunk(self) -> tuple[bytes, int] | None:
        with self._lock:
            if self._writing or not self._queue:  # a `write` is writing its line itself
                return None
            parts: list[bytes] = []
            lines = size = 0
            while self._queue and (not parts or size + len(self._queue[0][0]) <= WRITE_CHUNK_BYTES):
                data, count = self._queue.popleft()
                parts.append(data)
                lines += count
                size += len(data)
            self._writing = True  # its bytes still count as queued until they are written
        return b"".join(parts), lines

    def _write_all(self, data: bytes) -> OSError | None:
        view = memoryview(data)
        while view:
            try:
                view = view[self._os_write(self.fd, view) :]
            except BlockingIOError:  # whoever shares the descriptor made it non-blocking
                self._select([], [self.fd], [], 1.0)
            except OSError as error:
                if error.errno == errno.EINTR:
                    continue
                return error
        return None


def write_stdout_in_background() -> LineWriter:
    """Make stdout a `LineWriter` (for the serving process; call before logging is set up)."""
    sys.stdout.flush()
    writer = LineWriter(sys.stdout.fileno())
    sys.stdout = writer
    return writer
