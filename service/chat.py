"""The chat domain: rooms, presence and messages, whichever door a request came through.

The Socket.IO handlers (`sockets.py`) and the HTTP routes (`http.py`) parse, authorise and
hand over here; validation, storage, broadcast and observation happen once, in this module, so
a message sent over Socket.IO and one sent with `POST /send` produce the same broadcast, log
event and metric changes.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from service.clock import utc_now_iso
from service.connections import (
    CancelledJoin,
    Connection,
    ConnectionRegistry,
    Departure,
    StoreWork,
)
from service.errors import ChatError
from service.ratelimit import RateLimiter
from service.store import ChatStore, Message
from service.store.base import Conversation, JoinResult, LeaveResult, RoomLimitReached
from service.telemetry.events import Telemetry
from service.telemetry.metrics import DisconnectReason, LeaveReason, Source

# Names starting with "_" are the service's own (the metrics' `_other` bucket, for one), so a
# room can never be taken for one of them.
ROOM_PATTERN: Final = re.compile(r"[A-Za-z0-9.-][A-Za-z0-9_.-]{0,63}")
ROOM_RULE: Final = "room names are 1-64 letters, digits, '_', '.' or '-', not starting with '_'"
USERNAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_.-]{3,32}")
# Private conversations have names starting with "_", which no public room can take:
# a direct conversation is `_dm:` + the two users' case-folded names, sorted, joined by ':'
# (which no username contains); a private room is `_p:` + 16 random hex digits (its chosen
# name is only a title, so two private rooms may share one and no name reveals another).
DIRECT_PREFIX: Final = "_dm:"
PRIVATE_PREFIX: Final = "_p:"
DIRECT_PATTERN: Final = re.compile(r"_dm:([a-z0-9_.-]{3,32}):([a-z0-9_.-]{3,32})")
PRIVATE_PATTERN: Final = re.compile(r"_p:[0-9a-f]{16}")
MAX_CONVERSATIONS_PER_USER: Final = 1000  # direct conversations and private rooms in a list
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
    def emit_to_user(self, event: str, data: Any, user: str) -> None: ...
    def enter_user(self, sid: str, user: str) -> None: ...
    def emit_to_connection(self, event: str, data: Any, sid: str) -> None:
        """To one connection of this process."""
        ...

    def spawn(self, task: Callable[[], None]) -> None:
        """Run `task` in a (green) thread of its own."""
        ...


class Peers(Protocol):
    """The chat's other processes, through the message queue (none without one)."""

    def revoke_access(self, room: str, user: str) -> None:
        """Tell them `user` (case-folded) gave up the private `room`: each process then calls
        its own `ChatService.access_revoked`. Raises when the queue did not take it."""
        ...


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
    if not valid_room(room):
        raise ChatError("invalid_room", ROOM_RULE)
    return room


def valid_room(room: str) -> bool:
    """A public room's name, or the id of a direct conversation or a private room."""
    if ROOM_PATTERN.fullmatch(room) or PRIVATE_PATTERN.fullmatch(room):
        return True
    direct = DIRECT_PATTERN.fullmatch(room)
    return direct is not None and direct.group(1) < direct.group(2)


def user_key(name: str) -> str:
    """The case-folded name that identifies a user ("Alice" and "alice" are one account)."""
    return name.casefold()


def direct_room(one: str, other: str) -> str:
    return DIRECT_PREFIX + ":".join(sorted((user_key(one), user_key(other))))


def is_private(room: str) -> bool:
    """A direct conversation or a private room: only some users may enter it."""
    return room.startswith((DIRECT_PREFIX, PRIVATE_PREFIX))


def username_from(payload: object, field: str = "user") -> str:
    if not isinstance(payload, dict) or not isinstance(payload.get(field), str):
        raise ChatError("invalid_payload", f"expected an object with a string '{field}'")
    name: str = payload[field].strip()
    if not USERNAME_PATTERN.fullmatch(name):
        raise ChatError("invalid_username", "usernames are 3-32 letters, digits, '_', '.' or '-'")
    return name


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
        peers: Peers | None = None,
    ) -> None:
        self.store = store
        self.peers = peers
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

    # -- connections -------------------------------------------------------------------------
    def connect(self, sid: str, user: str, session_token: str, transport: str) -> Connection:
        connection = Connection(sid, user, session_token)
        self.connections.add(connection)
        self.broadcaster.enter_user(sid, user_key(user))  # for `invited` and `dm_opened`
        self.telemetry.client_connected(user, sid, transport)
        return connection

    def disconnect(self, sid: str, reason: DisconnectReason) -> None:
        """A connection ended: it leaves every room it was in, and is forgotten.

        This process forgets it at once, store or not: the gauges and the user's connection
        slots follow the socket. The store is told next; for each room, once the store confirms,
        the room hears `left` and `room_left` is logged. With a store that answers that happens
        here, before `client_disconnected`; when it fails, `client_disconnected` is logged now
        anyway and the `room_left` lines follow from the retries once the store answers again.
        """
        departed = self.connections.depart(sid)
        if departed is None:
            return
        connection, rooms = departed
        # No `broadcaster.exit`: python-socketio drops a disconnecting sid from its rooms itself
        # after this handler, and with a message queue `leave_room` of a disconnecting sid is
        # published to Redis, with no timeout: it would hang here while Redis stalls.
        if rooms:
            last = self.connections.owed.add(
                *(Departure(room, connection.user, sid, LeaveReason.DISCONNECT) for room in rooms)
            )
            self.settle_store_work(last, inline=True)
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
                gone.user, gone.room, gone.sid, len(gone.members), LeaveReason.DISCONNECT, False
            )

    def end_session(self, session_token: str) -> None:
        """Logout: close this process's connections that rode on the session."""
        for connection in self.connections.with_session(session_token):
            self.broadcaster.disconnect(connection.sid)

    # -- rooms -------------------------------------------------------------------------------
    def join(self, connection: Connection, payload: object) -> dict[str, Any]:
        try:
            room = room_from(payload)
            if room not in connection.rooms:
                self._check_access(connection.user, room, admit=True)
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
            result = self._join_room(connection, room)
            if self.peers is not None and room.startswith(PRIVATE_PREFIX):
                self._still_admitted(connection, room)
        except ChatError as refusal:
            self._refused(connection, "join", payload, refusal)
            raise
        return {
            "ok": True,
            "room": room,
            "members": result.members,
            "history": [m.as_dict() for m in result.history],
            "epoch": result.epoch,
        }

    def _still_admitted(self, connection: Connection, room: str) -> None:
        """With several processes, a join of a private room that ran while its user gave the
        room up on another process: the revocation may have reached this process before the
        connection was in the room, and passed it by. Whatever the store said after the join
        holds: a revocation later than this finds the connection in the room."""
        if not self.store.has_access(room, user_key(connection.user)):
            self._leave(connection, room, LeaveReason.LEAVE)
            raise ChatError("not_invited", "this conversation is private: you need an invitation")

    def leave(self, connection: Connection, payload: object) -> dict[str, Any]:
        room = self._joined_room(connection, payload, "leave")
        if not room.startswith(PRIVATE_PREFIX):
            self._leave(connection, room, LeaveReason.LEAVE)
            return {"ok": True, "room": room}
        # Leaving a private room gives up its access, for every connection of the user on every
        # process, and coming back takes a new invitation. The store first (nothing the user
        # does from now on gets in), then the other processes (each takes the user's
        # connections out of the room's broadcast as the queue delivers this, before anything
        # sent to the room after it), then here. A store or queue that fails it leaves the
        # connection in the room, refused with `internal_error`: leaving again retries it.
        user = user_key(connection.user)
        self.store.revoke(room, user)
        if self.peers is not None:
            self.peers.revoke_access(room, user)
        self._leave(connection, room, LeaveReason.LEAVE)
        for other in self._connections_of(user, room):
            self._leave(other, room, LeaveReason.LEAVE, removed=True)
        return {"ok": True, "room": room}

    def access_revoked(self, room: str, user: str) -> None:
        """`user` (case-folded) gave up the private `room` on another process.

        Called by the message queue's listener, in the order the queue delivers (or by a send
        here that found it out first, `_may_send`), so it does
        only what cannot wait: each of the user's connections here is out of the room's
        broadcast now, before the queue's next message (which may be a message to the room).
        Leaving the room here and in the store, the connection's `removed` and the room's
        `left` follow in a task of their own: they may wait for the store. Never raises.
        """
        try:
            gone = self._connections_of(user, room)
            for connection in gone:
                self.broadcaster.exit(connection.sid, room)
            if gone:
                self.broadcaster.spawn(lambda: self._remove(gone, room))
        except Exception:
            self.telemetry.unhandled_error("access revoked")

    def _remove(self, connections: list[Connection], room: str) -> None:
        try:
            for connection in connections:
                self._leave(connection, room, LeaveReason.LEAVE, removed=True)
        except Exception:
            self.telemetry.unhandled_error("access revoked")

    def _connections_of(self, user: str, room: str) -> list[Connection]:
        """This process's connections of `user` (case-folded) that are in `room`."""
        return [c for c in self.connections.all() if user_key(c.user) == user and room in c.rooms]

    def _leave(
        self, connection: Connection, room: str, reason: LeaveReason, *, removed: bool = False
    ) -> None:
        """The connection is out of `room` here at once; the store follows, then the room hears
        `left` (now, or from the retries while the store does not answer). With `removed` the
        connection did not ask to leave (its user gave the room up on another one): it hears
        `removed {room}` itself, once."""
        with connection.membership_lock:
            if room not in connection.rooms:  # a second leave of the same room, or departed
                return
            self.connections.exit(connection, room)
            self.broadcaster.exit(connection.sid, room)
            if removed:
                self.broadcaster.emit_to_connection("removed", {"room": room}, connection.sid)
            last = self.connections.owed.add(
                Departure(room, connection.user, connection.sid, reason)
            )
        self.settle_store_work(last, inline=True)

    def _join_room(self, connection: Connection, room: str) -> JoinResult:
        """Join in the store, then here; the room hears `joined` when the connection is new in it.

        A join reaches the store only when nothing is owed to it: so a leave of this room is
        done there before the join, and no new membership piles up behind a failing store. A
        join whose store call fails may still run there later: its attempt is fenced off and,
        unless the connection holds the room here anyway, undone, so neither side keeps half a
        member; the client is refused with `internal_error`.
        """
        owed = self.connections.owed
        with connection.membership_lock:
            if self.owes_store_work() and not self.settle_store_work():
                raise ChatError("internal_error", "the chat's store is not answering; try again")
            attempt = secrets.token_hex(8)
            try:
                result = self.store.join(room, connection.user, connection.sid, attempt)
            except RoomLimitReached:
                raise ChatError(
                    "room_limit_reached", "the server holds as many rooms as it may"
                ) from None
            except Exception:
                held = room in connection.rooms and not connection.departed
                owed.add(CancelledJoin(room, connection.user, connection.sid, attempt, not held))
                owed.failing = True  # disconnects meanwhile leave the store to the retries
                raise
            new_here = room not in connection.rooms
            activated = self.connections.enter(connection, room)
            if activated is None:  # closed while the store answered: nothing here holds it
                last = owed.add(CancelledJoin(room, connection.user, connection.sid, attempt, True))
                self.settle_store_work(last, inline=True)
            elif new_here:
                self.broadcaster.enter(connection.sid, room)
                self.broadcaster.emit(
                    "joined",
                    {"room": room, "user": connection.user, "members": result.members},
                    room,
                )
                self.telemetry.room_joined(
                    connection.user, room, connection.sid, len(result.members), activated
                )
            return result

    # -- what the store still has to be told ----------------------------------------------------
    def owes_store_work(self) -> bool:
        return len(self.connections.owed) > 0

    def settle_store_work(self, until: int | None = None, *, inline: bool = False) -> bool:
        """Tell the store the membership changes it has not confirmed, oldest first, each once.

        Stops at the first failure (the next call starts again there) and, with `until`, once
        the entries up to that number are done. `inline` callers (a disconnect, a leave) do not
        wait on a store that failed last time: the retries (`Service.start_store_upkeep`) own
        that. The first failure after a success is logged (`unhandled_error`, where
        `store cleanup`), not every retry. True when everything asked for is done.
        """
        owed = self.connections.owed
        if inline and owed.failing:
            return False
        with owed.settling:
            while (head := owed.head()) is not None:
                number, entry = head
                if until is not None and number > until:
                    break
                if inline and owed.failing:
                    return False
                try:
                    result = self._tell_store(entry)
                except Exception:
                    if not owed.failing:
                        owed.failing = True
                        self.telemetry.unhandled_error("store cleanup")
                    return False
                owed.failing = False
                owed.pop(number)  # before reporting: a report that fails is not a second `left`
                try:
                    self._report(entry, result)
                except Exception:
                    self.telemetry.unhandled_error("store cleanup report")
        return True

    def _tell_store(self, entry: StoreWork) -> LeaveResult | None:
        if isinstance(entry, Departure):
            return self.store.leave(entry.room, entry.user, entry.sid)
        self.store.cancel_join(
            entry.room, entry.user, entry.sid, entry.attempt, remove=entry.remove
        )
        return None

    def _report(self, entry: StoreWork, result: LeaveResult | None) -> None:
        """A departure the store confirmed: the room hears `left` and `room_left` is logged.

        Not when another process reaped the connection meanwhile (this one's heartbeat lapsed
        while the store stalled): that process reported it. When the store says the connection
        was gone without a reap, an earlier attempt ran there unanswered, and nobody reported it
        yet. A cancelled join is silent: nobody heard it join.
        """
        if not isinstance(entry, Departure) or result is None or result.reaped:
            return
        # A disconnecting socket is still in its Socket.IO rooms until python-socketio drops it
        # after the handler: it must not be sent its own `left`.
        self.broadcaster.emit(
            "left",
            {"room": entry.room, "user": entry.user, "members": result.members},
            entry.room,
            skip_sid=entry.sid,
        )
        emptied = not self.connections.room_is_active(entry.room)
        self.telemetry.room_left(
            entry.user, entry.room, entry.sid, len(result.members), entry.reason, emptied
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
        if refusal.code == "not_invited":
            self.telemetry.access_refused(connection.user, clip(room), Source.SOCKET, event)
            return
        self.telemetry.event_rejected(
            connection.user, connection.sid, event, clip(room), refusal.code
        )

    def rooms(self) -> list[dict[str, Any]]:
        # Rooms named `_…` are the service's own (the delivery probe's `_probe`), never users'.
        active = {n: m for n, m in self.store.active_rooms().items() if not n.startswith("_")}
        ordered = sorted(active.items(), key=lambda item: (-item[1], item[0]))
        return [{"name": name, "members": members} for name, members in ordered]

    def history(self, user: str, room: str, after: int, limit: int | None) -> list[Message]:
        if not valid_room(room):
            raise ChatError("invalid_room", ROOM_RULE)
        try:
            self._check_access(user, room)
        except ChatError:
            self.telemetry.access_refused(user, room, Source.HTTP, "history")
            raise
        if not self.store.is_member(room, user):
            raise ChatError("not_in_room", f"join {room} to read its history")
        limit = self.history_limit if limit is None else min(limit, self.history_limit)
        return self.store.history(room, after=after, limit=limit)

    # -- messages ----------------------------------------------------------------------------
    def post_message(
        self, user: str, payload: object, source: Source, connection: Connection | None = None
    ) -> Message:
        """Validate, store, broadcast and observe one message; the one path for both doors.

        `payload` is the parsed message, or the refusal of a body the door could not read: it
        is refused and observed here like any other payload that is not the documented shape.
        """
        room_value = payload.get("room") if isinstance(payload, dict) else None
        try:
            if isinstance(payload, ChatError):
                raise payload
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
            self._check_access(user, room, sending=True)
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
            message = self.store.append_message(room, user, text, utc_now_iso())
            self.broadcaster.emit("message", message.as_dict(), room)
        except ChatError as refusal:
            if refusal.code == "not_invited":
                self.telemetry.access_refused(user, clip(room_value), source, "message")
            else:
                self.telemetry.message_rejected(user, clip(room_value), source, refusal.code)
            raise
        except Exception:
            # The server failed it (the store or the queue, for a limiter on Redis as well): an
            # `internal_error` for the sender, counted as one, which the message SLO counts as
            # bad. The door still reports the failure itself (`unhandled_error`).
            self.telemetry.message_rejected(user, clip(room_value), source, "internal_error")
            raise
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

    # -- private conversations ---------------------------------------------------------------
    def _check_access(
        self, user: str, room: str, *, admit: bool = False, sending: bool = False
    ) -> None:
        """`user` may enter `room`; a private room's invitation is accepted with `admit`.

        Refused with `not_invited`, the same for a room that does not exist, so no answer tells
        which private rooms exist or who talks to whom. `sending`: a message is about to be
        broadcast to the room (`_may_send`)."""
        if room.startswith(DIRECT_PREFIX):
            match = DIRECT_PATTERN.fullmatch(room)
            if match is not None and user_key(user) in match.groups():
                return
        elif room.startswith(PRIVATE_PREFIX):
            key = user_key(user)
            if admit:
                allowed = self.store.admit(room, key)
            elif sending and self.peers is not None:
                allowed = self._may_send(room, key)
            else:
                allowed = self.store.has_access(room, key)
            if allowed:
                return
        else:
            return
        raise ChatError("not_invited", "this conversation is private: you need an invitation")

    def _may_send(self, room: str, sender: str) -> bool:
        """The sender's access to a private room, with several processes; and, in the same store
        call, that of everyone in the room here. A user who gave the room up on another process
        moments ago, whose revocation the queue has not brought here yet, is taken out now
        (`access_revoked`): this process broadcasts its own senders' messages to its
        connections directly, so nothing sent after a leave reaches the user here either."""
        here = sorted({user_key(name) for name in self.connections.users_in(room)} - {sender})
        sender_allowed, *allowed = self.store.have_access(room, [sender, *here])
        for user, still in zip(here, allowed, strict=True):
            if not still:
                self.access_revoked(room, user)
        return sender_allowed

    def _conversation_refused(
        self, user: str, sid: str | None, event: str, refusal: ChatError
    ) -> None:
        """Over Socket.IO an `event_rejected` line; the HTTP door writes `request_rejected`."""
        if sid is not None:
            self.telemetry.event_rejected(user, sid, event, None, refusal.code)

    def _conversation_rate_limit(self, user: str) -> None:
        retry_after = self.limiter.hit(self.message_rate_limit, "conversation", user)
        if retry_after is not None:
            raise ChatError("rate_limited", "you are going too fast", retry_after=retry_after)

    def open_direct(
        self, user: str, payload: object, source: Source, sid: str | None = None
    ) -> dict[str, Any]:
        """`{user}`: the direct conversation of `user` and that user, in both their lists.

        Any valid username is accepted alike, registered or not, so the reply tells nothing
        about who exists (registration tells the rest, rate-limited); a name registered later
        does not inherit what was sent to it before (`forget_conversations`)."""
        try:
            other = username_from(payload)
            if user_key(other) == user_key(user):
                raise ChatError("invalid_username", "a direct conversation takes another user")
            self._conversation_rate_limit(user)
            room = direct_room(user, other)
            mine = Conversation(room, "direct", other)
            if not self.store.add_conversation(user_key(user), mine, MAX_CONVERSATIONS_PER_USER):
                raise ChatError(
                    "room_limit_reached",
                    f"a user can have at most {MAX_CONVERSATIONS_PER_USER} conversations",
                )
            theirs = Conversation(room, "direct", user)
            self.store.add_conversation(user_key(other), theirs, MAX_CONVERSATIONS_PER_USER)
        except ChatError as refusal:
            self._conversation_refused(user, sid, "open_dm", refusal)
            raise
        self.broadcaster.emit_to_user("dm_opened", theirs.as_dict(), user_key(other))
        self.telemetry.dm_opened(user, room, source)
        return {"ok": True, **mine.as_dict()}

    def create_private(
        self, user: str, payload: object, source: Source, sid: str | None = None
    ) -> dict[str, Any]:
        """`{name}`: a new private room, its creator its only member; others come by invitation."""
        try:
            if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
                raise ChatError("invalid_payload", "expected an object with a string 'name'")
            name: str = payload["name"]
            if not ROOM_PATTERN.fullmatch(name):
                raise ChatError("invalid_room", ROOM_RULE)
            self._conversation_rate_limit(user)
            room = PRIVATE_PREFIX + secrets.token_hex(8)
            created = Conversation(room, "private", name)
            if not self.store.add_conversation(user_key(user), created, MAX_CONVERSATIONS_PER_USER):
                raise ChatError(
                    "room_limit_reached",
                    f"a user can have at most {MAX_CONVERSATIONS_PER_USER} conversations",
                )
            self.store.create_private(room, name, user_key(user))
        except ChatError as refusal:
            self._conversation_refused(user, sid, "create_private", refusal)
            raise
        self.telemetry.private_room_created(user, room, source)
        return {"ok": True, **created.as_dict()}

    def invite(
        self, user: str, payload: object, source: Source, sid: str | None = None
    ) -> dict[str, Any]:
        """`{room, user}`: a member of a private room invites another user to it.

        The invited user hears `invited` now on each connection (on any process) and finds the
        invitation in their list until they join. Any valid username is accepted alike."""
        room_value = payload.get("room") if isinstance(payload, dict) else None
        try:
            room = room_from(payload)
            if not room.startswith(PRIVATE_PREFIX):
                raise ChatError("invalid_room", "only private rooms take invitations")
            invitee = username_from(payload)
            self._check_access(user, room)
            if user_key(invitee) == user_key(user):
                raise ChatError("invalid_username", "you are a member of this room already")
            self._conversation_rate_limit(user)
            invitation = Conversation(room, "private", self.store.private_name(room) or "", user)
            fresh = self.store.invite(room, user_key(invitee), invitation)
        except ChatError as refusal:
            if refusal.code == "not_invited":
                self.telemetry.access_refused(user, clip(room_value), source, "invite")
            else:
                self._conversation_refused(user, sid, "invite", refusal)
            raise
        if fresh:
            self.broadcaster.emit_to_user("invited", invitation.as_dict(), user_key(invitee))
        self.telemetry.user_invited(user, room, invitee, source)
        return {"ok": True, "room": room, "user": invitee}

    def conversation_list(self, user: str) -> dict[str, Any]:
        """`user`'s direct conversations, private rooms and pending invitations."""
        listed, invitations = self.store.conversations(user_key(user))
        return {
            "ok": True,
            "direct": sorted(
                (c.as_dict() for c in listed if c.kind == "direct"), key=lambda c: c["room"]
            ),
            "private": sorted(
                (c.as_dict() for c in listed if c.kind == "private"), key=lambda c: c["room"]
            ),
            "invitations": sorted((c.as_dict() for c in invitations), key=lambda c: c["room"]),
        }
