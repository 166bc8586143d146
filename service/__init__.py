"""observable-chat: a real-time chat whose every login, join and message is observed.

`create_app` is imported lazily so that `python -m service` / `chat-service` can monkey-patch
for eventlet or gevent before Flask, structlog or the standard library's sockets are imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from flask import Flask


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app (see `service.app.create_app`)."""
    from service.app import create_app as _create_app

    return _create_app(test_config)
