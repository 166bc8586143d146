"""The benchmark's baseline: a bare Flask-SocketIO chat on eventlet, as observable-chat runs.

It speaks the same events with the same ack shapes as observable-chat (`join {room}` acks
`{ok, room, members}` and tells the room `joined`; `leave`; `message {room, text}` tells the
room `message {id, room, user, text, ts}` and acks `{ok, id}`), with nothing else: no
accounts or session check, no validation beyond the payload's shape, no logs, no metrics, no
rate limit. What observable-chat costs more than this is what its features cost.

    python tests/bench/bare_server.py --port 5001 [--nagle]

It serves with eventlet's WSGI server as `socketio.run` does, with one difference: Nagle's
algorithm is off on its connections (TCP_NODELAY, as Node's HTTP server sets by default),
or a small write that follows another one on a connection (an ack after the sender's own copy of
its message) waits for the client's delayed ACK, up to 40 ms. `--nagle` serves with
`socketio.run`'s defaults instead, to show what that costs.

For tests/test_bench_driver.py only, `BENCH_FAULT=duplicate` sends every 10th message to the
room twice, and `BENCH_FAULT=drop` every 10th one to everybody but its sender, so the test
can see the driver catch a duplicate and a missing delivery.
"""

from __future__ import annotations

import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import argparse  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

from eventlet import wsgi  # noqa: E402
from flask import Flask, request  # noqa: E402
from flask_socketio import SocketIO, emit, join_room, leave_room  # noqa: E402

app = Flask(__name__)
socketio = SocketIO(app, async_mode="eventlet", logger=False, engineio_logger=False)

FAULT = os.environ.get("BENCH_FAULT", "")
last_id: dict[str, int] = {}
members: dict[str, set[str]] = {}
rooms_of: dict[str, set[str]] = {}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def room_of(data: Any) -> str | None:
    room = data.get("room") if isinstance(data, dict) else None
    return room if isinstance(room, str) and room else None


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@socketio.on("disconnect")
def on_disconnect(*_: Any) -> None:
    sid = request.sid  # type: ignore[attr-defined]
    for room in rooms_of.pop(sid, set()):
        people = members.get(room, set())
        people.discard(sid)
        emit("left", {"room": room, "user": sid, "members": len(people)}, to=room)


@socketio.on("join")
def on_join(data: Any) -> dict[str, Any]:
    room = room_of(data)
    if room is None:
        return {"ok": False, "error": "invalid_payload", "message": "expected {room}"}
    sid = request.sid  # type: ignore[attr-defined]
    join_room(room)
    people = members.setdefault(room, set())
    people.add(sid)
    rooms_of.setdefault(sid, set()).add(room)
    emit("joined", {"room": room, "user": sid, "members": len(people)}, to=room)
    return {"ok": True, "room": room, "members": len(people)}


@socketio.on("leave")
def on_leave(data: Any) -> dict[str, Any]:
    room = room_of(data)
    if room is None:
        return {"ok": False, "error": "invalid_payload", "message": "expected {room}"}
    sid = request.sid  # type: ignore[attr-defined]
    leave_room(room)
    people = members.get(room, set())
    people.discard(sid)
    rooms_of.get(sid, set()).discard(room)
    emit("left", {"room": room, "user": sid, "members": len(people)}, to=room)
    return {"ok": True, "room": room}


@socketio.on("message")
def on_message(data: Any) -> dict[str, Any]:
    room = room_of(data)
    text = data.get("text") if isinstance(data, dict) else None
    if room is None or not isinstance(text, str):
        return {"ok": False, "error": "invalid_payload", "message": "expected {room, text}"}
    message_id = last_id[room] = last_id.get(room, 0) + 1
    message = {"id": message_id, "room": room, "user": "anon", "text": text, "ts": now_iso()}
    if FAULT and message_id % 10 == 0:
        emit("message", message, to=room, skip_sid=request.sid if FAULT == "drop" else None)
        if FAULT == "duplicate":
            emit("message", message, to=room)
    else:
        emit("message", message, to=room)
    return {"ok": True, "id": message_id}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-connections", type=int, default=20000)
    parser.add_argument("--nagle", action="store_true", help="keep socketio.run's defaults")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.nagle:
        socketio.run(
            app, host=args.host, port=args.port, log_output=False, max_size=args.max_connections
        )
        return
    listener = eventlet.listen((args.host, args.port))
    # Linux gives every accepted connection the listening socket's TCP_NODELAY.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    wsgi.server(listener, app, log_output=False, max_size=args.max_connections)


if __name__ == "__main__":
    main()
