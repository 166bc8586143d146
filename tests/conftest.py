"""Fixtures: a real chat-service subprocess (`chat_server`), and a factory for custom ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chatserver import TEST_SETTINGS, ChatServer
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service.extension import parts_of
from service.telemetry.logging import configure_logging

# Configure logging before any app exists, as chat-service does, so structlog's capture_logs
# in a test is not undone by an app that configures logging again.
configure_logging("json", "info")


@pytest.fixture(scope="module")
def chat_server() -> Iterator[ChatServer]:
    """A server shared by a module's tests (eventlet, in memory, JSON logs)."""
    server = ChatServer().start()
    yield server
    server.stop()
    server.assert_every_line_json()


@pytest.fixture
def start_server() -> Iterator[Callable[..., ChatServer]]:
    """Start servers with custom settings; every one is stopped after the test."""
    started: list[ChatServer] = []

    def start(env: dict[str, str] | None = None, async_mode: str = "eventlet") -> ChatServer:
        server = ChatServer(env, async_mode).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    for server in started:
        server.assert_every_line_json()


# -- in-process: the Flask app with Flask-SocketIO's test client (threading mode) ------------
TEST_CONFIG = {"SECRET_KEY": "in-process-test-key", **TEST_SETTINGS}


@pytest.fixture
def make_app() -> Callable[..., Flask]:
    """Build an app with the test settings plus overrides."""

    def make(**overrides: object) -> Flask:
        return create_app({**TEST_CONFIG, **overrides})

    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class InProcessChat:
    """Users of one in-process app: each `user()` is a logged-in Flask client."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.socketio = parts_of(app).socketio

    def user(self, name: str, password: str = "correct horse battery") -> FlaskClient:
        http = self.app.test_client()
        http.post("/register", json={"username": name, "password": password})
        reply = http.post("/login", json={"username": name, "password": password})
        assert reply.status_code == 200, reply.json
        return http

    def socket(self, http: FlaskClient) -> Any:
        sock = self.socketio.test_client(self.app, flask_test_client=http)
        assert sock.is_connected()
        return sock

    @staticmethod
    def received(sock: Any, event: str) -> list[Any]:
        """Payloads of `event` the test client got (it wraps some in a list, some not)."""
        payloads = []
        for packet in sock.get_received():
            if packet["name"] == event:
                args = packet["args"]
                payloads.append(args[0] if isinstance(args, list) else args)
        return payloads

    def metric(self, name: str, **labels: str) -> float | None:
        registry = parts_of(self.app).telemetry.metrics.registry
        return registry.get_sample_value(name, labels)  # type: ignore[no-any-return]


@pytest.fixture
def chat(app: Flask) -> InProcessChat:
    return InProcessChat(app)
