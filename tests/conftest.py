"""Fixtures: a real chat-service subprocess (`chat_server`), and a factory for custom ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from chatserver import ChatServer


@pytest.fixture(scope="module")
def chat_server() -> Iterator[ChatServer]:
    """A server shared by a module's tests (eventlet, in memory, JSON logs)."""
    server = ChatServer().start()
    yield server
    server.stop()
    assert not server.bad_lines, f"stdout lines that are not JSON: {server.bad_lines[:5]}"


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
        assert not server.bad_lines, f"stdout lines that are not JSON: {server.bad_lines[:5]}"
