"""Settings: these defaults, then `CHAT_*` environment variables, then a test mapping.

Every key below can be set as an environment variable with the `CHAT_` prefix
(`CHAT_HISTORY_LIMIT=500`); `create_app` reads them with Flask's `from_prefixed_env`, which
parses values as JSON when they parse (numbers, true/false) and keeps them as strings
otherwise. The README's configuration table is this dictionary.
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    # Serving
    "HOST": "127.0.0.1",
    "PORT": 5000,
    "ASYNC_MODE": "eventlet",  # eventlet | gevent | threading (threading: flask run, tests)
    "MAX_CONNECTIONS": 10_000,  # concurrent sockets the server accepts (eventlet's default: 1024)
    "TRUSTED_PROXIES": 0,  # proxies in front whose X-Forwarded-For/-Proto/-Host to believe
    "MAX_CONNECTIONS_PER_USER": 20,  # sockets one user may hold open (tabs, devices)
    "CORS_ALLOWED_ORIGINS": None,  # None: same origin only; a comma-separated list to widen
    # Where state lives
    "STORE": "memory",
    "MESSAGE_QUEUE": None,
    # Chat limits (bounded memory)
    "HISTORY_LIMIT": 100,  # messages kept per room
    "MAX_MESSAGE_LENGTH": 2000,  # characters after trimming
    "MAX_ROOMS": 1000,  # rooms with members or history; idle empty rooms are evicted first
    "MAX_ROOMS_PER_CONNECTION": 50,
    "MAX_ROOMS_PER_USER": 100,  # rooms one user may be in across their connections here
    "MAX_USERS": 100_000,
    "MAX_CONTENT_LENGTH": 64 * 1024,  # request bodies and Socket.IO packets, in bytes
    # Security
    "SECRET_KEY": None,  # None: a random key per process, and a warning at start-up
    "HASH_CONCURRENCY": 0,  # password hashes computed at once; 0: one per CPU
    "SESSION_LIFETIME": 24 * 3600,  # seconds a login lasts
    "SESSION_COOKIE_SECURE": False,  # set true behind HTTPS
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_NAME": "chat_session",
    "LOGIN_RATE_LIMIT_PER_ADDRESS": "20 per minute",
    "LOGIN_RATE_LIMIT_PER_USER": "10 per minute",
    "REGISTER_RATE_LIMIT": "10 per hour",
    "MESSAGE_RATE_LIMIT": "20 per 10 seconds",
    "TYPING_RATE_LIMIT": "2 per second",
    # Observability
    "LOG_FORMAT": "auto",  # auto (json off a terminal, console on one) | json | console
    "LOG_LEVEL": "info",
    "LOG_MESSAGE_TEXT": True,
    "METRICS_MAX_ROOMS": 100,
    "METRICS_TOKEN": None,  # None: /metrics is public; set: it needs Authorization: Bearer TOKEN
}
