"""The chat domain: rooms, presence and messages, whichever door a request came through.

The Socket.IO handlers (`sockets.py`) and the HTTP routes (`http.py`) parse, authorise and
hand over here; validation, storage, broadcast and observation happen once, in this module, so
a message sent over Socket.IO and one sent with `POST /send` produce the same broadcast, log
event and metric changes.
"""

from __future__ import annotations

import re
import time
from typing import Any, Final, Protocol

from service.clock import utc_now_iso
from service.connections import Connection, ConnectionRegistry
from service.errors import ChatError
from service.ratelimit import RateLimiter
from service.store import ChatStore, Message
from service.store.base import RoomLimitReached
from service.telemetry.events import Telemetry

# Names starting with "_" are the service's own (the metrics' `_other` bucket, for one), so a
# room can never be taken for one of them.
ROOM_PATTERN: Final = re.compile(r"[A-Za-z0-9.-][A-Za-z0-9_.-]{0,63}")
ROOM_RULE: Final = "room names are 1-64 letters, digits, '_', '.' or '-', not starting with '_'"
# A lone surrogate is a valid JSON escape ("\ud800") but not Unicode text: it could be stored
# and broadcast, yet not encoded as UTF-8 for the log, the metrics or another client.
LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")
LOGGED_VALUE_LIMIT: Final = 80  # characters of an invalid user-supplied value kept in a log


class Broadcaster(Protocol):
    """What the domain needs from Socket.IO."""

    def emit(self, event: str, data: Any, room: str, skip_sid: str | None = None) -> None: ...
    def enter(self, sid: str, room: str) -> None: ...
    def exit(self, sid: str, room: str) -> None: ...
    def disconnect(self, sid: str) -> None: ...


def clip(value: object) -> str | None:
    """A user-supplied value as it may appear in a log line: a string, and short."""
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= LOGGED_VALUE_LIMIT else text[:LOGGED_VALUE_LIMIT] + "…"


def room_from(payload: object) -> str:
    """The `room` of a `{room, …}` payload, or the contract's refusal."""
    if not isinstance(payload, dict) or not isinstance(payload.get("room"), str):
        raise ChatError("invalid_payload", "expected an object with a string 'room'")
    room: str = payload["room"]
    if not ROOM_PATTERN.fullmatch(room):
        raise ChatError("invalid_room", ROOM_RULE)
    return room


class ChatService:
    def __init__(
        self,
        store: ChatStore,
        telemetry: Telemetry,
        broadcaster: Broadcaster,
        limiter: RateLimiter,
        *,
        max_message_length: int,
        history_limit: int,
        max_rooms_per_connection: int,
        max_rooms_per_user: int,
        message_rate_limit: str,
        typing_rate_limit: str,
    ) -> None:
        self.store = store
        self.telemetry = telemetry
        self.broadcaster = broadcaster
        self.limiter = limiter
        self.max_message_length = max_message_length
        self.history_limit = history_limit
        self.max_rooms_per_connection = max_rooms_per_connection
        self.max_rooms_per_user = max_rooms_per_user
        self.message_rate_limit = message_rate_limit
        self.typing_rate_limit = typing_rate_limit
        self.connections = ConnectionRegistry()
        telemetry.metrics.observe_state(
            connections=self.connections.count,
            users_online=self.connections.users_online,
            active_rooms=self.connections.active_rooms,
            room_member_counts=self.connections.room_member_counts,
        )

    # -- connections -------------------------------------------------------------------------
    def connect(self, sid: str, user: str, session_token: str, transport: str) -> Connection:
        connection = Connection(sid, user, session_token, transport)
        self.connections.add(connection)
        self.telemetry.client_connected(user, sid, transport)
        return connection

    def disconnect(self, sid: str, reason: str) -> None:
        """A connection ended: it leaves every room it was in, then is forgotten."""
        connection = self.connections.get(sid)
        if connection is None:
            return
        for room in sorted(connection.rooms):
            self._leave(connection, room, "disconnect")
        self.connections.remove(sid)
        self.telemetry.client_disconnected(
            connection.user, sid, reason, time.monotonic() - connection.connected_at
        )

    def disconnect_all(self) -> None:
        """Shutdown: close every connection of this process (each leaves its rooms)."""
        for connection in self.connections.all():
            self.broadcaster.disconnect(connection.sid)

    def reap(self) -> None:
        """Connections of a process that died without disconnecting leave their rooms."""
        for gone in self.store.reap_dead_instances():
            self.broadcaster.emit(
                "left", {"room": gone.room, "user": gone.user, "members": gone.members}, gone.room
            )
            self.telemetry.room_left(
                gone.user, gone.room, gone.sid, len(gone.members), "disconnect", emptied=False
            )

    def end_session(self, session_token: str) -> None:
        """Logout: close this process's connections that rode on the session."""
        for connection in self.connections.with_session(session_token):
            self.broadcaster.disconnect(connection.sid)

    # -- rooms -------------------------------------------------------------------------------
    def join(self, connection: Connection, payload: object) -> dict[str, Any]:
        try:
            room = room_from(payload)
            if room not in connection.rooms and (
                len(connection.rooms) >= self.max_rooms_per_connection
            ):
                raise ChatError(
                    "room_limit_reached",
                    f"a connection can be in at most {self.max_rooms_per_connection} rooms",
                )
            user_rooms = self.connections.rooms_of(connection.user)
            if room not in user_rooms and len(user_rooms) >= self.max_rooms_per_user:
                raise ChatError(
                    "room_limit_reached",
                    f"a user can be in at most {self.max_rooms_per_user} rooms",
                )
            try:
                result = self.store.join(room, connection.user, connection.sid)
            except RoomLimitReached:
                raise ChatError(
                    "room_limit_reached", "the server holds as many rooms as it may"
                ) from None
        except ChatError as refusal:
            self._refused(connection, "join", payload, refusal)
            raise
        if result.added:
            activated = self.connections.enter(connection, room)
            self.broadcaster.enter(connection.sid, room)
            self.broadcaster.emit(
                "joined", {"room": room, "user": connection.user, "members": result.members}, room
            )
            self.telemetry.room_joined(
                connection.user, room, connection.sid, len(result.members), activated
            )
        return {
            "ok": True,
            "room": room,
            "members": result.members,
            "history": [m.as_dict() for m in result.history],
            "epoch": self.store.epoch,
        }

    def leave(self, connection: Connection, payload: object) -> dict[str, Any]:
        room = self._joined_room(connection, payload, "leave")
        self._leave(connection, room, "leave")
        return {"ok": True, "room": room}

    def _leave(self, connection: Connection, room: str, reason: str) -> None:
        result = self.store.leave(room, connection.user, connection.sid)
        emptied = self.connections.exit(connection, room)
        self.broadcaster.exit(connection.sid, room)
        if not result.removed:
            return
        self.broadcaster.emit(
            "left", {"room": room, "user": connection.user, "members": result.members}, room
        )
        self.telemetry.room_left(
            connection.user, room, connection.sid, len(result.members), reason, emptied
        )

    def _joined_room(self, connection: Connection, payload: object, event: str) -> str:
        """The payload's room, which the connection must be in; a refusal is logged."""
        try:
            room = room_from(payload)
            if room not in connection.rooms:
                raise ChatError("not_in_room", f"you are not in {room}")
        except ChatError as refusal:
            self._refused(connection, event, payload, refusal)
            raise
        return room

    def _refused(
        self, connection: Connection, event: str, payload: object, refusal: ChatError
    ) -> None:
        room = payload.get("room") if isinstance(payload, dict) else None
        self.telemetry.event_rejected(
            connection.user, connection.sid, event, clip(room), refusal.code
        )

    def rooms(self) -> list[dict[str, Any]]:
        active = self.store.active_rooms()
        ordered = sorted(active.items(), key=lambda item: (-item[1], item[0]))
        return [{"name": name, "members": members} for name, members in ordered]

    def history(self, user: str, room: str, after: int, limit: int | None) -> list[Message]:
        if not ROOM_PATTERN.fullmatch(room):
            raise ChatError("invalid_room", ROOM_RULE)
        if not self.store.is_member(room, user):
            raise ChatError("not_in_room", f"join {room} to read its history")
        limit = self.history_limit if limit is None else min(limit, self.history_limit)
        return self.store.history(room, after=after, limit=limit)

    # -- messages ----------------------------------------------------------------------------
    def post_message(
        self, user: str, payload: object, source: str, connection: Connection | None = None
    ) -> Message:
        """Validate, store, broadcast and observe one message; the one path for both doors."""
        room_value = payload.get("room") if isinstance(payload, dict) else None
        try:
            room = room_from(payload)
            assert isinstance(payload, dict)
            text = payload.get("text")
            if not isinstance(text, str):
                raise ChatError("invalid_payload", "expected an object with a string 'text'")
            if LONE_SURROGATE.search(text):
                raise ChatError("invalid_payload", "'text' is not valid Unicode (lone surrogate)")
            text = text.strip()
            if not text:
                raise ChatError("empty_message", "the message is empty")
            if len(text) > self.max_message_length:
                raise ChatError(
                    "message_too_long",
                    f"messages are at most {self.max_message_length} characters",
                )
            joined = (
                room in connection.rooms
                if connection is not None
                else self.store.is_member(room, user)
            )
            if not joined:
                raise ChatError("not_in_room", f"join {room} before sending to it")
            retry_after = self.limiter.hit(self.message_rate_limit, "message", user)
            if retry_after is not None:
                raise ChatError("rate_limited", "you are sending too fast", retry_after=retry_after)
        except ChatError as refusal:
            self.telemetry.message_rejected(user, clip(room_value), source, refusal.code)
            raise
        message = self.store.append_message(room, user, text, utc_now_iso())
        self.broadcaster.emit("message", message.as_dict(), room)
        self.telemetry.message_sent(user, room, message.id, source, text)
        return message

    def typing(self, connection: Connection, payload: object) -> None:
        """Tell the room's other connections; refusals are silent but logged."""
        try:
            room = self._joined_room(connection, payload, "typing")
        except ChatError:
            return
        if self.limiter.hit(self.typing_rate_limit, "typing", connection.sid) is not None:
            return  # typing is a hint: dropping extra ones loses nothing
        self.broadcaster.emit(
            "typing", {"room": room, "user": connection.user}, room, skip_sid=connection.sid
        )
