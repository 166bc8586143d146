"""The production server loop for each async mode, start-up and clean shutdown.

eventlet (the default) and gevent each run their own WSGI server, with the Socket.IO
middleware inside the app; the connection limit is raised from eventlet's default of 1024 to
`CHAT_MAX_CONNECTIONS`, and the open-file limit with it. SIGINT and SIGTERM end the loop after a
`service_stopping` event.
"""

from __future__ import annotations

import logging
import resource
import signal
from types import FrameType
from typing import Any

from flask import Flask

from service import __version__, create_app
from service.telemetry.events import Telemetry


class Stop(Exception):
    """Raised in the main loop by a signal handler."""


def raise_open_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def serve(mode: str) -> None:
    app = create_app()
    config = app.config
    telemetry: Telemetry = app.extensions["chat.telemetry"]
    host, port = str(config["HOST"]), int(config["PORT"])
    max_connections = int(config["MAX_CONNECTIONS"])
    raise_open_file_limit(max_connections + 256)

    stopping: dict[str, str] = {}

    def on_signal(signum: int, _: FrameType | None = None) -> None:
        stopping.setdefault("reason", signal.Signals(signum).name)
        raise Stop

    started: dict[str, Any] = {
        "host": host,
        "port": port,
        "async_mode": str(config["ASYNC_MODE"]),
        "store": app.extensions["chat.store"].name,
        "message_queue": str(config["MESSAGE_QUEUE"] or "none"),
        "version": __version__,
    }
    try:
        if mode == "eventlet":
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            run_eventlet(app, host, port, max_connections, telemetry, started)
        elif mode == "gevent":
            run_gevent(app, host, port, max_connections, telemetry, started, stopping)
        else:
            signal.signal(signal.SIGTERM, on_signal)
            telemetry.service_started(**started)
            app.extensions["chat.socketio"].run(
                app, host=host, port=port, allow_unsafe_werkzeug=True
            )
    except (Stop, KeyboardInterrupt):
        pass
    telemetry.service_stopping(stopping.get("reason", "SIGINT"))


def run_eventlet(
    app: Flask,
    host: str,
    port: int,
    max_connections: int,
    telemetry: Telemetry,
    started: dict[str, Any],
) -> None:
    import eventlet
    import eventlet.wsgi

    listener = eventlet.listen((host, port), backlog=2048)
    telemetry.service_started(**started)
    eventlet.wsgi.server(
        listener,
        app,
        log=logging.getLogger("eventlet.wsgi"),
        log_output=False,
        max_size=max_connections,
    )


def run_gevent(
    app: Flask,
    host: str,
    port: int,
    max_connections: int,
    telemetry: Telemetry,
    started: dict[str, Any],
    stopping: dict[str, str],
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
        error_log=logging.getLogger("gevent.pywsgi"),
        backlog=2048,
    )

    def stop(signum: int) -> None:
        # gevent runs this in a greenlet of its own: raising here would only print a traceback.
        stopping.setdefault("reason", signal.Signals(signum).name)
        server.stop(timeout=2)

    gevent.signal_handler(signal.SIGTERM, stop, signal.SIGTERM)
    gevent.signal_handler(signal.SIGINT, stop, signal.SIGINT)
    server.start()
    telemetry.service_started(**started)
    server.serve_forever()
