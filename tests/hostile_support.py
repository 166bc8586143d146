"""What every attack test checks afterwards: the service still serves, and tells the truth.

`assert_service_sound(server)` is called at the end of each test in the `test_hostile*`
modules, once the attacker's own clients are closed:

- a normal user can still register, log in, connect, join a room, send and receive;
- once that user is gone again, the gauges equal the real state (by default: nothing
  connected, nobody online, no room with members, `GET /rooms` empty);
- every line the server wrote to stdout so far is JSON.
"""

from __future__ import annotations

import itertools
import socket

import requests
import websocket
from chatserver import ChatServer, wait_until

_checks = itertools.count(1)


def gauges(server: ChatServer) -> dict[str, float | None]:
    samples = server.metrics()
    return {
        name: samples.get((name, frozenset()))
        for name in ("chat_connections", "chat_users_online", "chat_rooms")
    }


def assert_service_sound(
    server: ChatServer,
    *,
    connections: int = 0,
    users_online: int = 0,
    rooms: int = 0,
    timeout: float = 10.0,
) -> None:
    """A normal user is served; then the gauges read the given state and all lines are JSON."""
    n = next(_checks)
    name, room = f"sound{n}", f"sound-check-{n}"
    http = server.login(name)
    client = server.socket(http)
    try:
        joined = client.request("join", {"room": room})
        assert joined["ok"], joined
        sent = client.request("message", {"room": room, "text": "still here"})
        assert sent["ok"], sent
        got = client.wait_for("message", lambda m: m["id"] == sent["id"])
        assert got["text"] == "still here"
        assert client.request("leave", {"room": room})["ok"]
    finally:
        client.disconnect()
        http.close()
    expected = {
        "chat_connections": float(connections),
        "chat_users_online": float(users_online),
        "chat_rooms": float(rooms),
    }
    try:
        wait_until(lambda: gauges(server) == expected, timeout=timeout, interval=0.1)
    except AssertionError:
        raise AssertionError(f"gauges {gauges(server)} != {expected}") from None
    if rooms == 0:
        listed = server.login(f"{name}-lister").get(server.url + "/rooms", timeout=5).json()
        assert listed == [], listed
    server.assert_every_line_json()


def raw_http(server: ChatServer, request: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes to the server and read until it closes or `timeout` passes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as conn:
        conn.sendall(request)
        chunks = []
        try:
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


def polling_sid(server: ChatServer, http: requests.Session | None = None) -> str:
    """Open an Engine.IO long-polling session (no Socket.IO connect) and return its sid."""
    client = http or requests
    reply = client.get(server.url + "/socket.io/?EIO=4&transport=polling", timeout=5)
    assert reply.status_code == 200, reply.text
    import json

    sid: str = json.loads(reply.text[1:])["sid"]
    return sid


def session_cookie(server: ChatServer, name: str) -> str:
    http = server.login(name)
    return "; ".join(f"{c.name}={c.value}" for c in http.cookies)


def chat_websocket(server: ChatServer, cookie: str) -> websocket.WebSocket:
    """A websocket-client connection with its Socket.IO namespace connected."""
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket",
        header=[f"Cookie: {cookie}"],
        timeout=5,
    )
    assert ws.recv().startswith("0{")
    ws.send("40")
    assert ws.recv().startswith("40{"), "the Socket.IO connect was refused"
    return ws
