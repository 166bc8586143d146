"""The application factory: it wires the parts together, and decides nothing else.

`Settings.load` has parsed and checked every setting before anything is built; then logging,
telemetry, the store, the domain and both doors are made and connected, and kept on the app as
one typed extension (`service.extension.ChatParts`).
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from flask import Flask
from flask_socketio import SocketIO

from service import __version__
from service.accounts import Accounts
from service.chat import ChatService
from service.extension import EXTENSION_KEY, ChatParts
from service.http import FrontDoor, ScrapeFastPath, install_http
from service.offload import make_offloader
from service.paths import resource_dir
from service.probe import install_probe
from service.queue import PooledRedisManager
from service.ratelimit import RateLimiter
from service.readiness import Readiness
from service.security import forwarded_headers_rewriter
from service.settings import Settings
from service.sockets import SocketIOBroadcaster, register_socket_handlers
from service.store import ChatStore, open_store, rate_limit_storage
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
    settings = Settings.load(overrides=test_config)
    configure_logging(settings.log_format, settings.log_level)
    telemetry = Telemetry(
        ChatMetrics(settings.metrics_max_rooms),
        log_message_text=settings.log_message_text,
        log_private_message_text=settings.log_private_message_text,
        strict=settings.strict_logs,
    )
    app = Flask(
        __name__,
        template_folder=str(resource_dir("templates")),
        static_folder=str(resource_dir("static")),
    )
    app.config.update(flask_config(settings, telemetry))
    socketio = socketio_for(app, settings, telemetry)
    if settings.async_mode in ("eventlet", "gevent"):  # a render gives the loop turns
        telemetry.metrics.exposition.pause = lambda: socketio.sleep(0)
    # Forwarded headers, then a scrape answered below Flask: see FrontDoor.
    app.wsgi_app = FrontDoor(  # type: ignore[method-assign]
        app.wsgi_app,
        forwarded_headers_rewriter(settings.trusted_proxies),
        ScrapeFastPath(telemetry, settings.metrics_token),
    )
    store = open_store(
        settings.store, history_limit=settings.history_limit, max_rooms=settings.max_rooms
    )
    chat, accounts = domain(settings, store, telemetry, socketio)
    app.extensions[EXTENSION_KEY] = ChatParts(
        settings=settings,
        telemetry=telemetry,
        chat=chat,
        accounts=accounts,
        store=store,
        socketio=socketio,
        readiness=Readiness(store, settings.message_queue),
    )
    install_http(app)
    register_socket_handlers(socketio, chat, accounts, telemetry, settings.max_connections_per_user)
    telemetry.attach(
        chat.connections,
        version=__version__,
        async_mode=settings.async_mode,
        store=store.name,
        http_routes=(
            (method, rule.rule)
            for rule in app.url_map.iter_rules()
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        ),
    )
    # The end-to-end delivery probe (CHAT_PROBE_INTERVAL), under eventlet and gevent.
    install_probe(app, settings, store, socketio, telemetry)
    return app


def flask_config(settings: Settings, telemetry: Telemetry) -> dict[str, Any]:
    """What Flask itself reads: the signing key, the session cookie, the body limit."""
    secret_key = settings.secret_key
    if secret_key is None:
        secret_key = secrets.token_urlsafe(32)
        telemetry.secret_key_generated()
    return {
        "SECRET_KEY": secret_key,
        "PERMANENT_SESSION_LIFETIME": timedelta(seconds=settings.session_lifetime),
        "SESSION_COOKIE_NAME": settings.session_cookie_name,
        "SESSION_COOKIE_SECURE": settings.session_cookie_secure,
        "SESSION_COOKIE_HTTPONLY": settings.session_cookie_httponly,
        "SESSION_COOKIE_SAMESITE": settings.session_cookie_samesite,
        "MAX_CONTENT_LENGTH": settings.max_content_length,
    }


def socketio_for(app: Flask, settings: Settings, telemetry: Telemetry) -> SocketIO:
    queue = settings.message_queue
    socketio = SocketIO(
        app,
        async_mode=settings.async_mode,
        client_manager=PooledRedisManager(queue) if queue is not None else None,
        cors_allowed_origins=(
            list(settings.cors_allowed_origins) if settings.cors_allowed_origins else None
        ),
        max_http_buffer_size=settings.max_content_length,
        # Each event runs in the green thread that read it, not in one spawned for it: a
        # client's events are handled in the order it sent them, and an event costs no thread
        # start (about a tenth of a message's CPU). A handler waiting on Redis holds up only
        # the reading of its own client. (python-socketio's `call()` needs spawned handlers;
        # the chat never calls a client.)
        async_handlers=False,
        manage_session=True,
        logger=False,
        engineio_logger=False,
    )
    # Screen Engine.IO/Socket.IO traffic before python-engineio/-socketio see it (and never
    # hang a polling request); then keep their loggers in the one pipeline.
    harden_socketio(socketio, telemetry)
    adopt_library_loggers()
    return socketio


def domain(
    settings: Settings, store: ChatStore, telemetry: Telemetry, socketio: SocketIO
) -> tuple[ChatService, Accounts]:
    """The chat and the accounts, sharing the store and the rate limiter."""
    limiter = RateLimiter(rate_limit_storage(settings.store))
    # With a message queue, the chat tells its other processes through it (and hears them).
    queue = socketio.server.manager
    peers = queue if isinstance(queue, PooledRedisManager) else None
    chat = ChatService(
        store,
        telemetry,
        SocketIOBroadcaster(socketio),
        limiter,
        max_message_length=settings.max_message_length,
        history_limit=settings.history_limit,
        max_rooms_per_connection=settings.max_rooms_per_connection,
        max_rooms_per_user=settings.max_rooms_per_user,
        message_rate_limit=settings.message_rate_limit,
        typing_rate_limit=settings.typing_rate_limit,
        peers=peers,
    )
    if peers is not None:
        peers.on_revoke = chat.access_revoked
    accounts = Accounts(
        store,
        telemetry,
        limiter,
        make_offloader(settings.async_mode, settings.hash_concurrency or None),
        session_lifetime_s=float(settings.session_lifetime),
        max_users=settings.max_users,
        login_limit_per_address=settings.login_rate_limit_per_address,
        login_limit_per_user=settings.login_rate_limit_per_user,
        register_limit=settings.register_rate_limit,
    )
    return chat, accounts
