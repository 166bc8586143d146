"""gunicorn's configuration for the chat (the README's Deployment section has the command):

    gunicorn -c python:service.gunicorn_conf 'service:create_app()'

One gevent worker (`GeventWebSocketWorker`: WebSockets work) serves the app the way
`CHAT_ASYNC_MODE=gevent chat-service` does, with the same `service.server.Service`:

- where: `bind` is `CHAT_HOST:CHAT_PORT`, `worker_connections` is `CHAT_MAX_CONNECTIONS`;
- one worker per process: Socket.IO's long-polling requests of one client must reach the
  process that holds its session (several processes: see the README's Scale-out);
- the log: gunicorn's own lines (its error log: "Starting gunicorn", "Listening at", "Booting
  worker"; its access log when one is asked for) are records in the service's one structlog
  pipeline (`JsonLogger`), on stdout; stderr is routed into it too, so every line is JSON (or
  the console format, as `CHAT_LOG_FORMAT` says);
- the worker: once the app is loaded it runs inside `WSGIGuard` with the service's gevent
  handler (header and socket timeouts), stdout becomes a `LineWriter`, and `service_started`
  is logged; SIGTERM disconnects every Socket.IO client (each room hears `left`), requests get
  `SHUTDOWN_GRACE_S` to finish, and `service_stopping` is the worker's last line.

The master imports this module before any monkey-patching (gevent patches in the worker), so
nothing here imports Flask, sockets or the app at the top: the hooks import what they need.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from gunicorn import glogging

from service.settings import Settings, SettingsError, requested_async_mode

# What the master needs of the settings. The app parses all of them in the worker; parsing
# the rest here would import libraries (`limits`) into the master before gevent patches.
_MASTER_SETTINGS = ("host", "port", "max_connections", "log_format", "log_level")


def _serving_settings() -> Settings:
    os.environ.setdefault("CHAT_ASYNC_MODE", "gevent")
    wanted = {"CHAT_" + name.upper() for name in _MASTER_SETTINGS}
    try:
        if requested_async_mode() != "gevent":
            raise SettingsError(
                f"CHAT_ASYNC_MODE={os.environ['CHAT_ASYNC_MODE']!r}: gunicorn serves the chat "
                "with gevent; unset it or set it to gevent"
            )
        return Settings.load(environ={k: v for k, v in os.environ.items() if k in wanted})
    except SettingsError as error:
        sys.exit(f"chat-service: {error}")


_settings = _serving_settings()
_grace_s = 5.0  # service.server.SHUTDOWN_GRACE_S (not imported here: it imports the app)

# -- gunicorn settings -------------------------------------------------------------------------
worker_class = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"
workers = 1  # Socket.IO: one process per client session (see the module's docstring)
_host = f"[{_settings.host}]" if ":" in _settings.host else _settings.host
bind = [f"{_host}:{_settings.port}"]
worker_connections = _settings.max_connections
backlog = 2048
# The worker gives requests `_grace_s` after SIGTERM and then leaves on its own; the master
# waits a little longer before it kills the worker.
graceful_timeout = int(_grace_s) + 3
keepalive = 30
errorlog = "-"
loglevel = _settings.log_level
control_socket_disable = True  # gunicornc's socket: one fixed path for every instance


class JsonLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's error and access logs as records of the service's logging pipeline."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        from service.telemetry.logging import configure_logging, route_stderr_through_logging

        configure_logging(_settings.log_format, _settings.log_level)
        route_stderr_through_logging()
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
            log.propagate = True
        self.access_log.setLevel(logging.INFO)


logger_class = JsonLogger


# -- hooks -------------------------------------------------------------------------------------
def post_worker_init(worker: Any) -> None:
    """In the worker, gevent patched and the app loaded: serve it as `chat-service` does."""
    from service.server import Service, raise_open_file_limit
    from service.telemetry.logging import (
        configure_logging,
        route_stderr_through_logging,
        write_stdout_in_background,
    )
    from service.transport import gevent_handler

    writer = write_stdout_in_background()
    service = Service(worker.wsgi)
    configure_logging(service.settings.log_format, service.settings.log_level)
    service.keep_the_log_flowing(route_stderr_through_logging(), writer)
    raise_open_file_limit(service.max_connections + 256)
    worker.wsgi = service.wsgi
    worker.wsgi_handler, worker.chat_close_idle = closing_idle_connections(
        gevent_handler(service.telemetry)
    )
    worker.chat_service = service
    if service.chat.store.name != "memory":
        service.start_store_upkeep()
    signal.signal(signal.SIGTERM, lambda signum, frame: _on_sigterm(worker, signum, frame))
    service.announce()


def _on_sigterm(worker: Any, signum: int, _: FrameType | None) -> None:
    """gunicorn's worker only stops accepting; first every Socket.IO client leaves (their
    connections would hold the worker for the whole grace period), then after the grace period
    the worker leaves anyway."""
    import gevent

    service = worker.chat_service
    worker.alive = False
    if service.stopping(signum):
        gevent.spawn(service.disconnect_everyone)
        worker.chat_close_idle()
        gevent.spawn_later(_grace_s, service.force_exit)


def closing_idle_connections(handler: type) -> tuple[type, Callable[[], None]]:
    """`handler`, and what closes its keep-alive connections that wait for a next request.

    gunicorn's worker waits, after SIGTERM, until every connection has closed: an idle
    keep-alive one (every browser keeps some) would hold it for the whole grace period.
    Once closing, a connection is closed instead of waiting for its next request.
    """
    waiting: set[Any] = set()
    closing = False

    class ClosingIdleHandler(handler):  # type: ignore[misc]
        def read_requestline(self) -> Any:
            if closing:
                return ""
            waiting.add(self)
            try:
                return super().read_requestline()
            finally:
                waiting.discard(self)

    def close_idle() -> None:
        nonlocal closing
        closing = True
        for idle in list(waiting):
            with contextlib.suppress(OSError, AttributeError):
                idle.socket.shutdown(socket.SHUT_RDWR)

    return ClosingIdleHandler, close_idle


def worker_int(worker: Any) -> None:
    """SIGINT or SIGQUIT (Ctrl-C, or the master's quick stop): the clients leave first."""
    service = getattr(worker, "chat_service", None)
    if service is not None and service.stopping(signal.SIGINT):
        service.disconnect_everyone()
        worker.chat_close_idle()


def worker_exit(server: Any, worker: Any) -> None:
    """In the worker (the master calls it too, for workers it reaps): the last line."""
    service = getattr(worker, "chat_service", None)
    if service is None:
        return
    service.telemetry.service_stopping(service.stop_reason or "worker exit")
    if service.log_writer is not None:
        service.log_writer.drain(2.0)
