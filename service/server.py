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
from collections.abc import Callable
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


def serve(mode: str) -> None:
    app = create_app()
    route_stderr_through_logging()
    config = app.config
    telemetry: Telemetry = app.extensions["chat.telemetry"]
    chat: ChatService = app.extensions["chat.service"]
    host, port = str(config["HOST"]), int(config["PORT"])
    max_connections = int(config["MAX_CONNECTIONS"])
    raise_open_file_limit(max_connections + 256)
    stopping: dict[str, str] = {}

    def stop_reason(signum: int) -> bool:
        """Record the first signal; False for a repeated one."""
        if "reason" in stopping:
            return False
        stopping["reason"] = signal.Signals(signum).name
        return True

    def announce() -> None:
        telemetry.service_started(
            host=host,
            port=port,
            async_mode=str(config["ASYNC_MODE"]),
            store=app.extensions["chat.store"].name,
            message_queue=str(config["MESSAGE_QUEUE"] or "none"),
            version=__version__,
        )

    def force_exit() -> None:
        telemetry.service_stopping(stopping.get("reason", "unknown") + " (grace period over)")
        os._exit(0)

    if app.extensions["chat.store"].name != "memory":
        start_store_upkeep(app, chat, telemetry)

    runners = {"eventlet": run_eventlet, "gevent": run_gevent, "threading": run_threading}
    with contextlib.suppress(Stop, KeyboardInterrupt):
        runners[mode](app, host, port, max_connections, chat, announce, stop_reason, force_exit)
    telemetry.service_stopping(stopping.get("reason", "SIGINT"))


def start_store_upkeep(app: Flask, chat: ChatService, telemetry: Telemetry) -> None:
    """With a shared store: say this process is alive, and clear up after dead ones."""
    socketio: Any = app.extensions["chat.socketio"]
    store = chat.store
    store.heartbeat()

    def upkeep() -> None:
        ticks = 0
        while True:
            socketio.sleep(HEARTBEAT_INTERVAL_S)
            ticks += 1
            try:
                store.heartbeat()
                if ticks % 2 == 0:
                    chat.reap()
            except Exception:
                telemetry.unhandled_error("store upkeep")

    socketio.start_background_task(upkeep)


def run_eventlet(
    app: Flask,
    host: str,
    port: int,
    max_connections: int,
    chat: ChatService,
    announce: Callable[[], None],
    stop_reason: Callable[[int], bool],
    force_exit: Callable[[], None],
) -> None:
    import eventlet
    import eventlet.wsgi
    import greenlet
    from eventlet import hubs

    main = greenlet.getcurrent()

    def shutdown() -> None:
        chat.disconnect_all()
        eventlet.spawn_after(SHUTDOWN_GRACE_S, force_exit)
        hubs.get_hub().schedule_call_global(0, main.throw, Stop())

    def on_signal(signum: int, _: FrameType | None) -> None:
        if stop_reason(signum):
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
    listener = eventlet.listen((host, port), backlog=2048)
    announce()
    eventlet.wsgi.server(listener, app, log_output=False, max_size=max_connections)


def run_gevent(
    app: Flask,
    host: str,
    port: int,
    max_connections: int,
    chat: ChatService,
    announce: Callable[[], None],
    stop_reason: Callable[[int], bool],
    force_exit: Callable[[], None],
) -> None:
    import gevent
    from gevent.pool import Pool
    from gevent.pywsgi import WSGIServer
    from geventwebsocket.handler import WebSocketHandler

    server = WSGIServer(
        (host, port),
        app,
        handler_class=WebSocketHandler,
        spawn=Pool(max_connections),
        log=None,
        backlog=2048,
    )

    def on_signal(signum: int) -> None:
        # gevent runs this in a greenlet of its own, on the loop.
        if stop_reason(signum):
            chat.disconnect_all()
            server.stop(timeout=SHUTDOWN_GRACE_S)

    gevent.signal_handler(signal.SIGTERM, on_signal, signal.SIGTERM)
    gevent.signal_handler(signal.SIGINT, on_signal, signal.SIGINT)
    server.start()
    announce()
    server.serve_forever()


def run_threading(
    app: Flask,
    host: str,
    port: int,
    max_connections: int,
    chat: ChatService,
    announce: Callable[[], None],
    stop_reason: Callable[[int], bool],
    force_exit: Callable[[], None],
) -> None:
    """Werkzeug's development server: for debugging, not for production."""

    def on_signal(signum: int, _: FrameType | None) -> None:
        if stop_reason(signum):
            chat.disconnect_all()
            raise Stop

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    announce()
    socketio: Any = app.extensions["chat.socketio"]
    socketio.run(app, host=host, port=port, allow_unsafe_werkzeug=True)
