"""The production server loop for each async mode, start-up and clean shutdown.

eventlet (the default) and gevent each run their own WSGI server, with the Socket.IO
middleware inside the app; the connection limit is raised from eventlet's default of 1024 to
`CHAT_MAX_CONNECTIONS`, and the open-file limit with it. Both servers run the app inside
`WSGIGuard` (no traceback is ever sent to a client) and close connections that do not send
their request headers in time (`service.transport`).

SIGINT and SIGTERM stop the service the same way in every mode: every Socket.IO client is
disconnected (so each room hears `left` and the gauges return to zero), the server stops
accepting and finishes its requests for at most `SHUTDOWN_GRACE_S`, then a `service_stopping`
event is the last line. A signal handler never raises into whichever green thread it
interrupted; it schedules the shutdown on the event loop instead.

Whatever else ends the serving (the port is taken, a crash at start-up or in the server loop)
is one `service_failed` line and exit status `EXIT_FAILED`. Stdout is a `LineWriter`: a log
reader that is slow or gone costs log lines (counted), never the chat.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import signal
import socket
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

from flask import Flask

from service import __version__, create_app
from service.extension import parts_of
from service.inline import inline
from service.settings import SettingsError
from service.telemetry.events import Telemetry
from service.telemetry.logging import (
    LineWriter,
    LoggingStream,
    ensure_logging,
    renders_json,
    route_stderr_through_logging,
    write_stdout_in_background,
)
from service.telemetry.metrics import ChatMetrics
from service.transport import SOCKET_TIMEOUT_S, WSGIGuard, eventlet_protocol, gevent_handler

SHUTDOWN_GRACE_S = 5.0
HEARTBEAT_INTERVAL_S = 5.0  # a shared store forgets a process silent for 3 heartbeats
LOG_UPKEEP_INTERVAL_S = 0.5  # how long a library's last traceback may wait to be written
LOG_DRAIN_S = 2.0  # how long the last lines may wait for a slow reader before the process ends
EXIT_FAILED = 1  # `service_failed`: the service could not start or keep serving
T = TypeVar("T")


class Stop(Exception):
    """Thrown into the main loop to end it."""


# What an operator reads when the listening socket cannot be opened: the fix, not the errno.
_LISTEN_HINTS = {
    errno.EADDRINUSE: "another process listens there: stop it, or choose another CHAT_PORT",
    errno.EACCES: "ports below 1024 need privileges: choose another CHAT_PORT",
    errno.EADDRNOTAVAIL: "CHAT_HOST is not an address of this machine",
}


class CannotListen(Exception):
    """The server's socket could not be opened: a cause for the operator, not a bug."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        if isinstance(error, socket.gaierror):
            cause = f"CHAT_HOST does not resolve ({error.strerror})"
        else:
            # gevent appends the address to strerror; the errno's own words are enough.
            cause = os.strerror(error.errno) if error.errno else str(error)
            hint = _LISTEN_HINTS.get(error.errno or 0)
            if hint:
                cause = f"{cause} ({hint})"
        super().__init__(f"cannot listen on {host}:{port}: {cause}")


def check_listening(host: str, port: int, open_socket: Callable[[], T]) -> T:
    """`open_socket()`, with an `OSError` turned into `CannotListen`."""
    try:
        return open_socket()
    except OSError as error:
        raise CannotListen(host, port, error) from error


def raise_open_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Service:
    """One app being served: what every async mode's loop needs to start and stop it."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        parts = parts_of(app)
        self.settings = parts.settings
        self.telemetry = parts.telemetry
        self.chat = parts.chat
        self.socketio: Any = parts.socketio
        self.host, self.port = self.settings.host, self.settings.port
        self.max_connections = self.settings.max_connections
        self.stop_reason: str | None = None
        self.serving = False  # announced: from now on a failure is the server loop's
        self.log_writer: LineWriter | None = None
        self.wsgi = inline(WSGIGuard(app, self.telemetry))  # see service.inline

    def stopping(self, signum: int) -> bool:
        """Record the first signal; False for a repeated one."""
        if self.stop_reason is not None:
            return False
        self.stop_reason = signal.Signals(signum).name
        return True

    def announce(self) -> None:
        self.serving = True
        self.telemetry.service_started(
            host=self.host,
            port=self.port,
            async_mode=self.settings.async_mode,
            store=self.chat.store.name,
            message_queue=self.settings.message_queue or "none",
            version=__version__,
        )

    def disconnect_everyone(self) -> None:
        """Every chat client leaves (each room hears it and closes its own transport), and an
        Engine.IO session that never connected to the chat is closed, so that its pending
        long-poll GET ends now instead of holding the shutdown for the whole grace period."""
        server = self.socketio.server
        strangers = [
            eio_sid
            for eio_sid in list(server.eio.sockets)
            if server.manager.sid_from_eio_sid(eio_sid, "/") is None
        ]
        self.chat.disconnect_all()
        for eio_sid in strangers:
            server.eio.disconnect(eio_sid)

    def force_exit(self) -> None:
        """The grace period is over and requests are still running: leave anyway."""
        self.telemetry.service_stopping(f"{self.stop_reason} (grace period over)")
        if self.log_writer is not None:
            self.log_writer.drain(LOG_DRAIN_S)
        os._exit(0)

    def start_store_upkeep(self) -> None:
        """With a shared store: say this process is alive, clear up after dead ones, and retry
        the membership changes the store missed while it did not answer.

        The retries run in their own task, not in the heartbeat's: a store that stalls makes
        each attempt wait for its timeout, and neither should delay the other. They back off
        from a quarter second to a heartbeat interval while the store keeps failing, so cleanup
        follows the store back within seconds. (The in-memory store never fails: no retries.)
        """
        first_retry_s, longest_retry_s = 0.25, HEARTBEAT_INTERVAL_S
        store = self.chat.store
        store.heartbeat()

        def upkeep() -> None:
            ticks = 0
            while True:
                self.socketio.sleep(HEARTBEAT_INTERVAL_S)
                ticks += 1
                try:
                    store.heartbeat()
                    if ticks % 2 == 0:
                        self.chat.reap()
                except Exception:
                    self.telemetry.unhandled_error("store upkeep")

        def retry_owed_store_work() -> None:
            wait = first_retry_s
            while True:
                self.socketio.sleep(wait)
                if not self.chat.owes_store_work():
                    wait = first_retry_s
                    continue
                try:
                    settled = self.chat.settle_store_work()
                except Exception:  # whatever went wrong, the retries must go on
                    self.telemetry.unhandled_error("store cleanup")
                    settled = False
                wait = first_retry_s if settled else min(2 * wait, longest_retry_s)

        self.socketio.start_background_task(upkeep)
        self.socketio.start_background_task(retry_owed_store_work)

    def keep_the_log_flowing(self, stderr: LoggingStream, writer: LineWriter) -> None:
        """On the event loop, twice a second: write what a library left half-written on
        stderr (its last traceback), count the lines the log writer dropped, and once its
        reader keeps up again, tell it how many it missed (`log_lines_dropped`)."""
        self.log_writer = writer
        unreported = 0

        def upkeep() -> None:
            nonlocal unreported
            while True:
                self.socketio.sleep(LOG_UPKEEP_INTERVAL_S)
                try:
                    stderr.flush_stale()
                    dropped = writer.take_dropped()
                    if dropped:
                        self.telemetry.count_dropped_log_lines(dropped)
                        unreported += dropped
                    if unreported and writer.keeping_up():
                        self.telemetry.log_lines_dropped(unreported)
                        unreported = 0
                except Exception:
                    self.telemetry.unhandled_error("log upkeep")

        self.socketio.start_background_task(upkeep)


def run(mode: str) -> int:
    """Serve in `mode` until a signal or a failure; the process's exit status.

    A `SettingsError` is left to the caller (it is reported before logging exists).
    """
    writer = write_stdout_in_background()
    try:
        return serve(mode, writer)
    finally:
        writer.drain(LOG_DRAIN_S)


def serve(mode: str, writer: LineWriter) -> int:
    service: Service | None = None
    try:
        service = Service(create_app())
        service.keep_the_log_flowing(route_stderr_through_logging(), writer)
        raise_open_file_limit(service.max_connections + 256)
        if service.chat.store.name != "memory":
            service.start_store_upkeep()
        runners = {"eventlet": run_eventlet, "gevent": run_gevent, "threading": run_threading}
        runners[mode](service)
    except (Stop, KeyboardInterrupt):
        pass
    except SettingsError:
        raise
    except BaseException as error:  # whatever ends the serving is reported, SystemExit too
        report_failure(error, service)
        return EXIT_FAILED
    reason = service.stop_reason if service is not None else None
    telemetry_of(service).service_stopping(reason or "SIGINT")
    return 0


def telemetry_of(service: Service | None) -> Telemetry:
    """The service's telemetry; one of its own when the app could not even be built."""
    if service is not None:
        return service.telemetry
    ensure_logging()
    return Telemetry(ChatMetrics(max_rooms=1))


def report_failure(error: BaseException, service: Service | None) -> None:
    """One `service_failed` line: a human reason, and the whole traceback in `exception`.

    A cause the operator fixes (the port is taken) needs no traceback on a console, where the
    line is read by a person; JSON lines always carry it.
    """
    telemetry = telemetry_of(service)
    if isinstance(error, CannotListen):
        reason, known = str(error), True
    else:
        stage = "the server loop" if service is not None and service.serving else "start-up"
        summary = "".join(traceback.format_exception_only(error)).strip().replace("\n", " ")
        reason, known = f"{stage} failed: {summary}", False
    text = "".join(traceback.format_exception(error)).rstrip()
    telemetry.service_failed(reason, None if known and not renders_json() else text)


def run_eventlet(service: Service) -> None:
    import eventlet
    import eventlet.wsgi
    import greenlet
    from eventlet import hubs

    main = greenlet.getcurrent()

    def shutdown() -> None:
        service.disconnect_everyone()
        eventlet.spawn_after(SHUTDOWN_GRACE_S, service.force_exit)
        hubs.get_hub().schedule_call_global(0, main.throw, Stop())

    def on_signal(signum: int, _: FrameType | None) -> None:
        if service.stopping(signum):
            eventlet.spawn(shutdown)

    def keep_the_hub_waking() -> None:
        # Python resumes an interrupted epoll wait with its old timeout (PEP 475), which for an
        # idle hub is a minute: the shutdown spawned by a signal would wait that long. A short
        # timer bounds the wait.
        while True:
            eventlet.sleep(0.2)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    eventlet.spawn(keep_the_hub_waking)
    listener = check_listening(
        service.host,
        service.port,
        # Not SO_REUSEPORT (eventlet's default): a second chat-service on the same port would
        # silently share it and take half the connections, instead of failing.
        lambda: eventlet.listen((service.host, service.port), backlog=2048, reuse_port=False),
    )
    # Every accepted connection inherits this (Linux): with Nagle's algorithm on, an ack or a
    # delivery written after an earlier small write waits for the client's delayed ACK, up to
    # 40 ms, and one connection's throughput drops to a few hundred messages a second.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    service.announce()
    eventlet.wsgi.server(
        listener,
        service.wsgi,
        log_output=False,
        max_size=service.max_connections,
        debug=False,  # eventlet's default sends the traceback of a 500 to the client
        socket_timeout=SOCKET_TIMEOUT_S,
        protocol=eventlet_protocol(service.telemetry),
    )


def run_gevent(service: Service) -> None:
    import gevent
    from gevent.pool import Pool
    from gevent.pywsgi import LoggingLogAdapter, WSGIServer

    server = WSGIServer(
        (service.host, service.port),
        service.wsgi,
        handler_class=gevent_handler(service.telemetry),
        spawn=Pool(service.max_connections),
        log=None,
        # Its complaints about clients (a bad request line) as records, not raw stderr text.
        error_log=LoggingLogAdapter(logging.getLogger("gevent.pywsgi"), logging.WARNING),
        backlog=2048,
    )

    def on_signal(signum: int) -> None:
        # gevent runs this in a greenlet of its own, on the loop.
        if service.stopping(signum):
            service.disconnect_everyone()
            server.stop(timeout=SHUTDOWN_GRACE_S)

    gevent.signal_handler(signal.SIGTERM, on_signal, signal.SIGTERM)
    gevent.signal_handler(signal.SIGINT, on_signal, signal.SIGINT)
    check_listening(service.host, service.port, server.start)
    service.announce()
    server.serve_forever()


def run_threading(service: Service) -> None:
    """Werkzeug's development server: for debugging, not for production."""

    def on_signal(signum: int, _: FrameType | None) -> None:
        if service.stopping(signum):
            service.disconnect_everyone()
            raise Stop

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Werkzeug reports a taken port as text and exits; try the address first instead.
    check_listening(service.host, service.port, lambda: try_binding(service.host, service.port))
    service.announce()
    service.socketio.run(
        service.app, host=service.host, port=service.port, allow_unsafe_werkzeug=True
    )


def try_binding(host: str, port: int) -> None:
    """Bind and release `host:port` as Werkzeug's server will (it reuses addresses)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
