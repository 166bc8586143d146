"""The chat's parts, kept on the Flask app as one typed extension (`app.extensions["chat"]`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from flask import Flask, current_app

if TYPE_CHECKING:
    from flask_socketio import SocketIO

    from service.accounts import Accounts
    from service.chat import ChatService
    from service.readiness import Readiness
    from service.settings import Settings
    from service.store import ChatStore
    from service.telemetry.events import Telemetry

EXTENSION_KEY: Final = "chat"


@dataclass(frozen=True, slots=True)
class ChatParts:
    settings: Settings
    telemetry: Telemetry
    chat: ChatService
    accounts: Accounts
    store: ChatStore
    socketio: SocketIO
    readiness: Readiness


def parts_of(app: Flask | None = None) -> ChatParts:
    """The parts of `app`, or of the app handling the current request."""
    target = app if app is not None else current_app
    parts: ChatParts = target.extensions[EXTENSION_KEY]
    return parts
