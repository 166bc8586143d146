"""The Socket.IO door: authenticate connections and hand each event to the chat domain.

Every handler is wrapped by `socket_event`, which finds the connection, checks its session is
still alive (a logout elsewhere ends it), times the event, and turns a refusal into the
contract's ack `{ok: false, error, message}`. Each log event names its `user` and `sid`
itself, so every line has exactly the fields the README documents. Nothing a
client sends reaches the domain unparsed, and no exception escapes to python-socketio.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final, NoReturn

from flask import request, session
from flask_socketio import ConnectionRefusedError, Namespace, SocketIO
from socketio import packet

from service.accounts import SESSION_TOKEN_KEY, Accounts
from service.chat import ChatService
from service.connections import Connection
from service.errors import ChatError
from service.telemetry.events import Telemetry
from service.telemetry.metrics import ConnectRejection, SocketEvent, Source, disconnect_reason

# Socket.IO rooms also hold each sid's own room: prefixing ours keeps a chat room named like
# somebody's sid from reaching that connection.
ROOM_PREFIX: Final = "room:"
# Each connection is also in its user's own Socket.IO room (the case-folded name), which carries
# `invited` and `dm_opened` to every connection of that user, on any process.
USER_PREFIX: Final = "user:"

ACK_FLUSH_S: Final = 0.1  # time for an ack to leave before its connection is closed
TRANSPORTS: Final = ("polling", "websocket")

# Names python-socketio gives its own lifecycle handlers. A client packet `42["connect"]` is an
# ordinary event as far as the protocol goes, and python-socketio would hand it to those very
# handlers (re-registering or unregistering a live connection), so it never gets that far.
RESERVED_EVENTS: Final = frozenset({"connect", "connect_error", "disconnect", "__disconnect_final"})


class SocketIOBroadcaster:
    """The chat domain's view of Socket.IO rooms (through the message queue when there is one)."""

    def __init__(self, socketio: SocketIO) -> None:
        self.socketio = socketio

    def emit(self, event: str, data: Any, room: str, skip_sid: str | None = None) -> None:
        self.socketio.emit(event, data, to=ROOM_PREFIX + room, skip_sid=skip_sid, namespace="/")

    def enter(self, sid: str, room: str) -> None:
        self.socketio.server.enter_room(sid, ROOM_PREFIX + room, namespace="/")

    def exit(self, sid: str, room: str) -> None:
        self.socketio.server.leave_room(sid, ROOM_PREFIX + room, namespace="/")

    def disconnect(self, sid: str) -> None:
        self.socketio.server.disconnect(sid, namespace="/")

    def emit_to_user(self, event: str, data: Any, user: str) -> None:
        self.socketio.emit(event, data, to=USER_PREFIX + user, namespace="/")

    def enter_user(self, sid: str, user: str) -> None:
        self.socketio.server.enter_room(sid, USER_PREFIX + user, namespace="/")

    def emit_to_connection(self, event: str, data: Any, sid: str) -> None:
        # The connection is this process's: nothing to publish to the others.
        self.socketio.server.emit(event, data, to=sid, namespace="/", ignore_queue=True)

    def spawn(self, task: Callable[[], None]) -> None:
        self.socketio.start_background_task(task)


def refuse_reserved_events(socketio: SocketIO, chat: ChatService, telemetry: Telemetry) -> None:
    """Only the transport's own connect and disconnect reach the lifecycle handlers.

    python-socketio dispatches a client event by name through the same table that holds the
    connect/disconnect handlers; this wraps its dispatch (`Server._handle_event`) so that a
    client event with a reserved name is refused there: an `event_rejected` line, and a
    refusal ack when the client asked for one.
    """
    server = socketio.server
    dispatch = server._handle_event

    def handle_event(eio_sid: str, namespace: str | None, ack_id: int | None, data: Any) -> Any:
        name = data[0] if isinstance(data, list) and data else None
        if not isinstance(name, str) or name not in RESERVED_EVENTS:
            return dispatch(eio_sid, namespace, ack_id, data)
        sid = server.manager.sid_from_eio_sid(eio_sid, namespace or "/")
        connection = chat.connections.get(sid) if sid is not None else None
        if connection is None:  # not connected to the chat: python-socketio drops it
            return dispatch(eio_sid, namespace, ack_id, data)
        refusal = ChatError("invalid_payload", f"'{name}' is reserved; clients cannot send it")
        telemetry.event_rejected(connection.user, connection.sid, name, None, refusal.code)
        if ack_id is not None:
            server._send_packet(
                eio_sid,
                server.packet_class(
                    packet.ACK, namespace=namespace or "/", id=ack_id, data=[refusal.as_ack()]
                ),
            )
        return None

    server._handle_event = handle_event


class ChatNamespace(Namespace):  # type: ignore[misc]
    """The default namespace: who may connect, and each client event handed to the chat domain.

    `trigger_event` is the one dispatch for every event. `connect` runs in Flask's request
    context, for the session cookie; every other event does not need it and does not pay for
    it. A chat event (`join`, `leave`, `message`, `typing`) finds its connection, checks the
    session is still alive (a logout elsewhere ends it), is timed, and a refusal becomes the
    contract's ack `{ok: false, error, message}`; no exception escapes to python-socketio.
    """

    def __init__(
        self, chat: ChatService, accounts: Accounts, telemetry: Telemetry, max_per_user: int
    ) -> None:
        super().__init__("/")
        self.chat = chat
        self.accounts = accounts
        self.telemetry = telemetry
        self.max_per_user = max_per_user
        self.events: dict[str, Callable[[Connection, object], Any]] = {
            "join": self.on_join,
            "leave": self.on_leave,
            "message": self.on_message,
            "typing": self.on_typing,
            "open_dm": self.on_open_dm,
            "create_private": self.on_create_private,
            "invite": self.on_invite,
            "conversations": self.on_conversations,
        }

    def trigger_event(self, event: str, sid: str, *args: Any) -> Any:
        if event == "connect":
            return super().trigger_event(event, sid, *args)
        if event == "disconnect":
            return self.on_disconnect(sid, args[0] if args else None)
        handle = self.events.get(event)
        if handle is None:  # an event the chat does not have: dropped, with no ack
            return self.socketio.server.not_handled
        return self.dispatch(event, handle, sid, args[0] if args else None)

    def dispatch(
        self, event: str, handle: Callable[[Connection, object], Any], sid: str, payload: object
    ) -> Any:
        started = time.perf_counter()
        connection = self.chat.connections.get(sid)
        try:
            if connection is None or (
                self.accounts.session_user(connection.session_token) != connection.user
            ):
                if connection is not None:
                    self.close_after_the_ack(connection)
                raise ChatError("unauthorized", "your session has ended; log in again")
            return handle(connection, payload)
        except ChatError as refusal:
            return refusal.as_ack()
        except Exception:
            self.telemetry.unhandled_error(f"socket:{event}")
            return ChatError("internal_error", "the server failed; try again").as_ack()
        finally:
            self.telemetry.socket_event_handled(event, time.perf_counter() - started)

    def close_after_the_ack(self, connection: Connection) -> None:
        """A session that ended elsewhere (logout on another process, expiry): the connection
        hears nothing more from its rooms now, and is closed once its refusal ack is out."""
        for room in connection.rooms:
            self.chat.broadcaster.exit(connection.sid, room)
        self.close_soon(lambda: self.chat.broadcaster.disconnect(connection.sid))

    def close_soon(self, close: Callable[[], None]) -> None:
        def later() -> None:
            self.socketio.sleep(ACK_FLUSH_S)
            close()

        self.socketio.start_background_task(later)

    # -- the transport's own events ----------------------------------------------------------
    def on_connect(self, auth: object = None) -> None:
        """A browser connects with its session cookie; anyone else is refused (and closed)."""
        started = time.perf_counter()
        sid: str = request.sid  # type: ignore[attr-defined]
        try:
            token = session.get(SESSION_TOKEN_KEY)
            user = self.accounts.session_user(token)
            if user is None or not isinstance(token, str):
                self.refuse_connect(sid, ConnectRejection.UNAUTHORIZED)
            elif self.chat.connections.count_of(user) >= self.max_per_user:
                self.refuse_connect(sid, ConnectRejection.TOO_MANY_CONNECTIONS)
            else:
                transport = request.args.get("transport", "")  # the one the client opened with
                self.chat.connect(
                    sid, user, token, transport if transport in TRANSPORTS else "unknown"
                )
        finally:
            self.telemetry.socket_event_handled(SocketEvent.CONNECT, time.perf_counter() - started)

    def refuse_connect(self, sid: str, reason: ConnectRejection) -> NoReturn:
        """python-socketio sends the refusal but keeps the Engine.IO connection open for
        another namespace, which this chat does not have: close it once the refusal is out,
        so a refused client holds no socket."""
        self.telemetry.connect_rejected(request.remote_addr or "", reason)
        server = self.socketio.server
        eio_sid = server.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is not None:
            self.close_soon(lambda: server.eio.disconnect(eio_sid))
        raise ConnectionRefusedError(reason)

    def on_disconnect(self, sid: str, reason: object) -> None:
        """The connection ended: it leaves every room it was in, each with a `left` event."""
        started = time.perf_counter()
        try:
            self.chat.disconnect(sid, disconnect_reason(reason))
        except Exception:
            self.telemetry.unhandled_error("socket:disconnect")
        finally:
            self.telemetry.socket_event_handled(
                SocketEvent.DISCONNECT, time.perf_counter() - started
            )

    # -- client events -----------------------------------------------------------------------
    def on_join(self, connection: Connection, payload: object) -> dict[str, Any]:
        """`join {room}`: enters the room; acks members and history; room gets `joined`."""
        return self.chat.join(connection, payload)

    def on_leave(self, connection: Connection, payload: object) -> dict[str, Any]:
        """`leave {room}`: leaves the room; the room gets `left`."""
        return self.chat.leave(connection, payload)

    def on_message(self, connection: Connection, payload: object) -> dict[str, Any]:
        """`message {room, text}`: the room, sender included, gets the message object."""
        message = self.chat.post_message(connection.user, payload, Source.SOCKET, connection)
        return {"ok": True, "id": message.id}

    def on_typing(self, connection: Connection, payload: object) -> None:
        """`typing {room}`: the room's other connections get `typing {room, user}`; no ack."""
        self.chat.typing(connection, payload)

    def on_open_dm(self, connection: Connection, payload: object) -> dict[str, Any]:
        """`open_dm {user}`: acks `{ok, room, user}`; the other user hears `dm_opened`."""
        return self.chat.open_direct(connection.user, payload, Source.SOCKET, connection.sid)

    def on_create_private(self, connection: Connection, payload: object) -> dict[str, Any]:
        """`create_private {name}`: acks `{ok, room, name}`; join it with `join {room}`."""
        return self.chat.create_private(connection.user, payload, Source.SOCKET, connection.sid)

    def on_invite(self, connection: Connection, payload: object) -> dict[str, Any]:
        """`invite {room, user}`: acks `{ok, room, user}`; the invited user hears `invited`."""
        return self.chat.invite(connection.user, payload, Source.SOCKET, connection.sid)

    def on_conversations(self, connection: Connection, payload: object) -> dict[str, Any]:
        """`conversations`: acks `{ok, direct, private, invitations}`."""
        return self.chat.conversation_list(connection.user)


def register_socket_handlers(
    socketio: SocketIO,
    chat: ChatService,
    accounts: Accounts,
    telemetry: Telemetry,
    max_per_user: int,
) -> None:
    refuse_reserved_events(socketio, chat, telemetry)
    socketio.on_namespace(ChatNamespace(chat, accounts, telemetry, max_per_user))
