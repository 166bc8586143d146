"""The README's gunicorn command, run as a real process: WebSockets, JSON lines, start and stop.

`gunicorn -c python:service.gunicorn_conf 'service:create_app()'` must serve the chat on one
gevent worker, put gunicorn's own lines through the service's JSON pipeline, log
`service_started` and `service_stopping`, and stop on SIGTERM with exit status 0 after every
Socket.IO client was disconnected (each room hears `left`).
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from chatserver import ChatServer

pytest.importorskip("gunicorn")

GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")
COMMAND = [GUNICORN, "-c", "python:service.gunicorn_conf", "service:create_app()"]


def test_gunicorn_serves_websockets_logs_json_and_stops_cleanly() -> None:
    server = ChatServer(async_mode="gevent", command=COMMAND)
    server.start()
    try:
        started = server.wait_for_event("service_started")
        assert started["async_mode"] == "gevent" and started["port"] == server.port
        # Their HTTP sessions stay open: idle keep-alive connections must not hold the stop.
        a = server.socket(server.login("alice"), ["websocket"])
        b = server.socket(server.login("bob"), ["polling", "websocket"])
        assert a.request("join", {"room": "lobby"})["ok"]
        assert b.request("join", {"room": "lobby"})["ok"]
        assert a.request("message", {"room": "lobby", "text": "over gunicorn"})["ok"]
        assert b.wait_for("message")["text"] == "over gunicorn"
        assert a.wait_for("message")["text"] == "over gunicorn"
        assert server.logged("client_connected", user="alice", transport="websocket")
        gunicorn_lines = [
            e["event"] for e in server.logged() if e.get("logger") == "gunicorn.error"
        ]
        assert any(line.startswith("Starting gunicorn") for line in gunicorn_lines)
        assert any(line.startswith("Listening at") for line in gunicorn_lines)
        assert any(line.startswith("Booting worker") for line in gunicorn_lines)
    finally:
        begun = time.monotonic()
        status = server.stop(signal.SIGTERM, timeout=20)
    assert status == 0, server.output()
    assert time.monotonic() - begun < 5, server.output()
    service_lines = [
        (e["event"], e.get("reason"))
        for e in server.logged()
        if "logger" not in e and e["event"] != "http_request"
    ]
    assert service_lines[-5:] == [
        ("room_left", "disconnect"),
        ("client_disconnected", "server_disconnect"),
        ("room_left", "disconnect"),
        ("client_disconnected", "server_disconnect"),
        ("service_stopping", "SIGTERM"),
    ], server.output()
    assert [e["event"] for e in server.logged()][-1] == "Shutting down: Master"
    server.assert_every_line_json()
