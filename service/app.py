"""The application factory: settings, logging, telemetry, the store, both doors."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from flask import Flask
from flask_socketio import SocketIO
from werkzeug.middleware.proxy_fix import ProxyFix

from service import __version__
from service.accounts import Accounts
from service.chat import ChatService
from service.config import DEFAULTS
from service.http import install_http
from service.offload import make_offloader
from service.paths import resource_dir
from service.ratelimit import RateLimiter, validate
from service.security import IgnoreForwardedHeaders
from service.sockets import SocketIOBroadcaster, register_socket_handlers
from service.store import open_store, rate_limit_storage
from service.telemetry.events import Telemetry
from service.telemetry.logging import adopt_library_loggers, configure_logging
from service.telemetry.metrics import ChatMetrics
from service.transport import harden_socketio


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then `CHAT_*` environment variables, then `test_config`.

    The async mode is the one the process runs under: `chat-service` monkey-patches for
    `CHAT_ASYNC_MODE` (eventlet by default) before calling this; `flask run` and the tests run
    it with `threading`.
    """
    app = Flask(
        __name__,
        template_folder=str(resource_dir("templates")),
        static_folder=str(resource_dir("static")),
    )
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("CHAT")
    # CHAT_ASYNC_MODE chose what `chat-service` patched; the app follows what really runs.
    app.config["ASYNC_MODE"] = detect_async_mode()
    if test_config:
        app.config.from_mapping(test_config)
    config = app.config

    configure_logging(str(config["LOG_FORMAT"]), str(config["LOG_LEVEL"]))
    metrics = ChatMetrics(int(config["METRICS_MAX_ROOMS"]))
    telemetry = Telemetry(metrics, log_message_text=bool(config["LOG_MESSAGE_TEXT"]))

    if not config["SECRET_KEY"]:
        config["SECRET_KEY"] = secrets.token_urlsafe(32)
        telemetry.secret_key_generated()
    config["SECRET_KEY"] = str(config["SECRET_KEY"])
    config["PERMANENT_SESSION_LIFETIME"] = timedelta(seconds=int(config["SESSION_LIFETIME"]))

    async_mode = str(config["ASYNC_MODE"])
    cors = config["CORS_ALLOWED_ORIGINS"]
    socketio = SocketIO(
        app,
        async_mode=async_mode,
        message_queue=config["MESSAGE_QUEUE"] or None,
        cors_allowed_origins=cors.split(",") if isinstance(cors, str) else cors,
        max_http_buffer_size=int(config["MAX_CONTENT_LENGTH"]),
        manage_session=True,
        logger=False,
        engineio_logger=False,
    )
    # Screen Engine.IO/Socket.IO traffic before python-engineio/-socketio see it (and never
    # hang a polling request); then keep their loggers in the one pipeline.
    harden_socketio(socketio, telemetry)
    adopt_library_loggers()
    if config["MESSAGE_QUEUE"] and config["STORE"] == "memory":
        raise ValueError(
            "CHAT_MESSAGE_QUEUE needs a shared CHAT_STORE (redis://…): with the in-memory "
            "store each process would hold a different chat"
        )
    trusted_proxies = int(config["TRUSTED_PROXIES"])
    # Outside the Socket.IO middleware, so both doors see the same client address and host.
    if trusted_proxies:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=trusted_proxies, x_proto=trusted_proxies, x_host=trusted_proxies
        )
    else:
        app.wsgi_app = IgnoreForwardedHeaders(app.wsgi_app)  # type: ignore[method-assign]
    store = open_store(
        str(config["STORE"]),
        history_limit=int(config["HISTORY_LIMIT"]),
        max_rooms=int(config["MAX_ROOMS"]),
    )
    limiter = RateLimiter(rate_limit_storage(str(config["STORE"])))
    chat = ChatService(
        store,
        telemetry,
        SocketIOBroadcaster(socketio),
        limiter,
        max_message_length=int(config["MAX_MESSAGE_LENGTH"]),
        history_limit=int(config["HISTORY_LIMIT"]),
        max_rooms_per_connection=int(config["MAX_ROOMS_PER_CONNECTION"]),
        max_rooms_per_user=int(config["MAX_ROOMS_PER_USER"]),
        message_rate_limit=validate(str(config["MESSAGE_RATE_LIMIT"])),
        typing_rate_limit=validate(str(config["TYPING_RATE_LIMIT"])),
    )
    accounts = Accounts(
        store,
        telemetry,
        limiter,
        make_offloader(async_mode, int(config["HASH_CONCURRENCY"]) or None),
        session_lifetime_s=float(config["SESSION_LIFETIME"]),
        max_users=int(config["MAX_USERS"]),
        login_limit_per_address=validate(str(config["LOGIN_RATE_LIMIT_PER_ADDRESS"])),
        login_limit_per_user=validate(str(config["LOGIN_RATE_LIMIT_PER_USER"])),
        register_limit=validate(str(config["REGISTER_RATE_LIMIT"])),
    )

    queue = queue_client(config["MESSAGE_QUEUE"]) if config["MESSAGE_QUEUE"] else None

    def readiness() -> dict[str, str]:
        checks = {"store": "ok", "message_queue": "disabled"}
        try:
            store.ping()
        except Exception:
            checks["store"] = "unreachable"
        if queue is not None:
            checks["message_queue"] = "ok" if reachable(queue) else "unreachable"
        return checks

    app.extensions.update(
        {
            "chat.telemetry": telemetry,
            "chat.service": chat,
            "chat.accounts": accounts,
            "chat.store": store,
            "chat.socketio": socketio,
            "chat.readiness": readiness,
        }
    )
    install_http(app)
    register_socket_handlers(
        socketio, chat, accounts, telemetry, int(config["MAX_CONNECTIONS_PER_USER"])
    )
    metrics.precreate_http_routes(
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
    )
    metrics.build_info.labels(__version__, async_mode, store.name).set(1)
    return app


def queue_client(url: str) -> Any:
    """A Redis client for readiness checks of the message queue (one per app, pooled)."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


def reachable(client: Any) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def detect_async_mode() -> str:
    """The async library this process was monkey-patched for, else `threading`."""
    import sys

    if "eventlet" in sys.modules:
        from eventlet import patcher

        if patcher.is_monkey_patched("socket"):
            return "eventlet"
    if "gevent" in sys.modules:
        from gevent import monkey

        if monkey.is_module_patched("socket"):
            return "gevent"
    return "threading"
