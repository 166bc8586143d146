"""The production server loop for each async mode, start-up and clean shutdown.

eventlet (the default) and gevent each run their own WSGI server, with the Socket.IO
middleware inside the app; the connection limit is raised from eventlet's default of 1024 to
`CHAT_MAX_CONNECTIONS`, and the open-file limit with it.

SIGINT and SIGTERM stop the service the same way in every mode: every Socket.IO client is
disconnected (so each room hears `left` and the gauges return to zero), the server stops
accepting and finishes its requests for at most `SHUTDOWN_GRACE_S`, then a `service_stopping`
event is the last line. A signal handler never raises into whichever green thread it
interrupted; it schedules the shutdown on the event loop instead.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
from types import FrameType
from typing import Any

from flask import Flask

from service import __version__, create_app
from service.chat import ChatService
from service.telemetry.events import Telemetry
from service.telemetry.logging import route_stderr_through_logging

SHUTDOWN_GRACE_S = 5.0
HEARTBEAT_INTERVAL_S = 5.0  # a shared store forgets a process silent for 3 heartbeats


class Stop(Exception):
    """Thrown into the main loop to end it."""


def raise_open_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Service:
    """One app being served: what every async mode's loop needs to start and stop it."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.telemetry: Telemetry = app.extensions["chat.telemetry"]
        self.chat: ChatService = app.extensions["chat.service"]
        self.socketio: Any = app.extensions["chat.socketio"]
        self.host, self.port = str(app.config["HOST"]), int(app.config["PORT"])
        self.max_connections = int(app.config["MAX_CONNECTIONS"])
        self.stop_reason: str | None = None

    def stopping(self, signum: int) -> bool:
        """Record the first signal; False for a repeated one."""
        if self.stop_reason is not None:
            return False
        self.stop_reason = signal.Signals(signum).name
        return True

    def announce(self) -> None:
        config = self.app.config
        self.telemetry.service_started(
            host=self.host,
            port=self.port,
            async_mode=str(config["ASYNC_MODE"]),
            store=self.chat.store.name,
            message_queue=str(config["MESSAGE_QUEUE"] or "none"),
            version=__version__,
        )

    def force_exit(self) -> None:
        """The grace period is over and requests are still running: leave anyway."""
        self.telemetry.service_stopping(f"{self.stop_reason} (grace period over)")
        os._exit(0)

    def start_store_upkeep(self) -> None:
        """With a shared store: say this process is alive, and clear up after dead ones."""
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

        self.socketio.start_background_task(upkeep)


def serve(mode: str) -> None:
    service = Service(create_app())
    route_stderr_through_logging()
    raise_open_file_limit(service.max_connections + 256)
    if service.chat.store.name != "memory":
        service.start_store_upkeep()
    runners = {"eventlet": run_eventlet, "gevent": run_gevent, "threading": run_threading}
    with contextlib.suppress(Stop, KeyboardInterrupt):
        runners[mode](service)
    service.telemetry.service_stopping(service.stop_reason or "SIGINT")


def run_eventlet(service: Service) -> None:
    import eventlet
    import eventlet.wsgi
    import greenlet
    from eventlet import hubs

    main = greenlet.getcurrent()

    def shutdown() -> None:
        service.chat.disconnect_all()
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
    listener = eventlet.listen((service.host, service.port), backlog=2048)
    service.announce()
    eventlet.wsgi.server(listener, service.app, log_output=False, max_size=service.max_connections)


def run_gevent(service: Service) -> None:
    import gevent
    from gevent.pool import Pool
    from gevent.pywsgi import WSGIServer
    from geventwebsocket.handler import WebSocketHandler

    server = WSGIServer(
        (service.host, service.port),
        service.app,
        handler_class=WebSocketHandler,
        spawn=Pool(service.max_connections),
        log=None,
        backlog=2048,
    )

    def on_signal(signum: int) -> None:
        # gevent runs this in a greenlet of its own, on the loop.
        if service.stopping(signum):
            service.chat.disconnect_all()
            server.stop(timeout=SHUTDOWN_GRACE_S)

    gevent.signal_handler(signal.SIGTERM, on_signal, signal.SIGTERM)
    gevent.signal_handler(signal.SIGINT, on_signal, signal.SIGINT)
    server.start()
    service.announce()
    server.serve_forever()


def run_threading(service: Service) -> None:
    """Werkzeug's development server: for debugging, not for production."""

    def on_signal(signum: int, _: FrameType | None) -> None:
        if service.stopping(signum):
            service.chat.disconnect_all()
            raise Stop

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.announce()
    service.socketio.run(
        service.app, host=service.host, port=service.port, allow_unsafe_werkzeug=True
    )
