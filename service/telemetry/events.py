"""The service's events: each method writes one log line and moves that event's metrics.

`LOG_EVENTS` lists every event with its level and fields (besides `timestamp`, `level`,
`event`); the README's log table and a test keep it in agreement with the contract. Domain
code calls these methods and nothing else for observation, so a message sent over Socket.IO
and one sent over HTTP are observed the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Final

from service.telemetry.logging import LineBudget, get_logger
from service.telemetry.metrics import (
    PRIVATE_ROOM_PREFIXES,
    UNMATCHED_ROUTE,
    ChatMetrics,
    ConnectRejection,
    ConversationKind,
    DisconnectReason,
    LeaveReason,
    LiveState,
    LoginResult,
    ProbeFailure,
    RegistrationFailure,
    Rejection,
    Source,
    bounded,
    bounded_method,
    http_event,
    rejection_label,
    request_rejection_label,
)

INFO: Final = "info"
WARNING: Final = "warning"
ERROR: Final = "error"

LOG_EVENTS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "service_started": (INFO, ("host", "port", "async_mode", "store", "message_queue", "version")),
    "service_stopping": (INFO, ("reason",)),
    "secret_key_generated": (WARNING, ("hint",)),
    "user_registered": (INFO, ("user",)),
    "registration_failed": (WARNING, ("user", "remote_addr", "reason")),
    "login_succeeded": (INFO, ("user", "remote_addr")),
    "login_failed": (WARNING, ("user", "remote_addr", "reason")),
    "logout": (INFO, ("user",)),
    "client_connected": (INFO, ("user", "sid", "transport")),
    "client_disconnected": (INFO, ("user", "sid", "reason", "duration_s")),
    "connect_rejected": (WARNING, ("remote_addr", "reason")),
    "room_joined": (INFO, ("user", "room", "sid", "members")),
    "room_left": (INFO, ("user", "room", "sid", "members", "reason")),
    "message_sent": (INFO, ("user", "room", "message_id", "source", "length", "text")),
    "message_rejected": (WARNING, ("user", "room", "source", "reason")),
    "event_rejected": (WARNING, ("user", "sid", "socket_event", "room", "reason")),
    "request_rejected": (WARNING, ("method", "path", "remote_addr", "reason")),
    "http_request": (INFO, ("method", "path", "status", "duration_ms", "remote_addr")),
    "unhandled_error": (ERROR, ("where",)),
    "service_failed": (ERROR, ("reason", "exception")),
    "log_lines_dropped": (WARNING, ("count",)),
    "probe_failed": (WARNING, ("reason", "path", "peer", "waited_s", "error")),
    "dm_opened": (INFO, ("user", "room", "source")),
    "private_room_created": (INFO, ("user", "room", "source")),
    "user_invited": (INFO, ("user", "room", "invitee", "source")),
    "access_refused": (WARNING, ("user", "room", "source", "action", "reason")),
}

_LEVELS: Final = {INFO: logging.INFO, WARNING: logging.WARNING, ERROR: logging.ERROR}
_FIELDS: Final = {event: frozenset(fields) for event, (_, fields) in LOG_EVENTS.items()}


class UncataloguedField(ValueError):
    """A log line with a field `LOG_EVENTS` does not list (raised with `strict` telemetry)."""


# Refusals that anyone can cause without an account (malformed packets, bad requests) are all
# counted, but at most this many `request_rejected` lines a second are written, so a flood
# cannot drown the log; `chat_requests_rejected_total` still counts every one.
REJECTION_LINES_PER_SECOND: Final = 20
LOGGED_PATH_LIMIT: Final = 200  # characters of a refused request's path kept in its line


class Telemetry:
    """The one place where the service's events are logged and counted."""

    def __init__(
        self,
        metrics: ChatMetrics,
        log_message_text: bool = True,
        strict: bool = False,
        log_private_message_text: bool = False,
    ) -> None:
        """`log_private_message_text`: the text of direct and private-room messages is logged
        too (with `log_message_text`). `strict` (`CHAT_STRICT_LOGS`, on in the tests): a line
        whose fields are not all in `LOG_EVENTS` raises instead of being written, so the
        catalogue stays the one truth."""
        self.metrics = metrics
        self.log_message_text = log_message_text
        self.log_private_message_text = log_private_message_text
        self.strict = strict
        self.log = get_logger("chat")
        self._rejection_lines = LineBudget(REJECTION_LINES_PER_SECOND)

    def attach(
        self,
        state: LiveState,
        *,
        version: str,
        async_mode: str,
        store: str,
        http_routes: Iterable[tuple[str, str]],
    ) -> None:
        """Wire the metrics to the app, once: the gauges read `state` at scrape time, the build
        is labelled, and every HTTP route has its latency series."""
        self.metrics.observe_state(state)
        self.metrics.build_info.labels(version, async_mode, store).set(1)
        self.metrics.precreate_http_routes(http_routes)

    def _write(self, event: str, exc_info: bool = False, **fields: Any) -> None:
        level, _ = LOG_EVENTS[event]
        if self.strict and not fields.keys() <= _FIELDS[event]:
            unknown = sorted(fields.keys() - _FIELDS[event])
            raise UncataloguedField(f"{event}: {', '.join(unknown)} not in LOG_EVENTS")
        self.log.log(_LEVELS[level], event, exc_info=exc_info, **fields)

    # -- process ---------------------------------------------------------------------------
    def service_started(
        self, host: str, port: int, async_mode: str, store: str, message_queue: str, version: str
    ) -> None:
        self._write(
            "service_started",
            host=host,
            port=port,
            async_mode=async_mode,
            store=store,
            message_queue=message_queue,
            version=version,
        )

    def service_stopping(self, reason: str) -> None:
        self._write("service_stopping", reason=reason)

    def secret_key_generated(self) -> None:
        self._write(
            "secret_key_generated",
            hint="CHAT_SECRET_KEY is unset: sessions end when this process stops "
            "and are not shared with other processes",
        )

    def unhandled_error(self, where: str) -> None:
        """Call inside `except`: the traceback rides along in the line's `exception`."""
        self._write("unhandled_error", exc_info=True, where=where)

    # -- accounts --------------------------------------------------------------------------
    def user_registered(self, user: str) -> None:
        self.metrics.registrations_total.inc()
        self._write("user_registered", user=user)

    def registration_failed(self, user: str | None, remote_addr: str, reason: str) -> None:
        label = bounded(RegistrationFailure, reason, RegistrationFailure.INVALID_PAYLOAD)
        self.metrics.registrations_failed_total.labels(label).inc()
        self._write("registration_failed", user=user, remote_addr=remote_addr, reason=reason)

    def login_succeeded(self, user: str, remote_addr: str) -> None:
        self.metrics.logins_total.labels(LoginResult.SUCCESS).inc()
        self._write("login_succeeded", user=user, remote_addr=remote_addr)

    def login_failed(self, user: str | None, remote_addr: str, reason: str) -> None:
        limited = reason == LoginResult.RATE_LIMITED
        result = LoginResult.RATE_LIMITED if limited else LoginResult.FAILURE
        self.metrics.logins_total.labels(result).inc()
        self._write("login_failed", user=user, remote_addr=remote_addr, reason=reason)

    def logout(self, user: str) -> None:
        self.metrics.logouts_total.inc()
        self._write("logout", user=user)

    # -- connections -----------------------------------------------------------------------
    def client_connected(self, user: str, sid: str, transport: str) -> None:
        self.metrics.connects_total.inc()
        self._write("client_connected", user=user, sid=sid, transport=transport)

    def client_disconnected(
        self, user: str, sid: str, reason: DisconnectReason, duration_s: float
    ) -> None:
        self.metrics.disconnects_total.labels(reason).inc()
        self._write(
            "client_disconnected",
            user=user,
            sid=sid,
            reason=reason,
            duration_s=round(duration_s, 3),
        )

    def connect_rejected(self, remote_addr: str, reason: ConnectRejection) -> None:
        self.metrics.connect_rejections_total.labels(reason).inc()
        self._write("connect_rejected", remote_addr=remote_addr, reason=reason)

    # -- rooms and messages ----------------------------------------------------------------
    def room_joined(self, user: str, room: str, sid: str, members: int, activated: bool) -> None:
        """`activated`: the room just became active here (it claims a room label if free)."""
        label = self.metrics.rooms.claim(room) if activated else self.metrics.rooms.label(room)
        self.metrics.room_joins_total.labels(label).inc()
        self._write("room_joined", user=user, room=room, sid=sid, members=members)

    def room_left(
        self, user: str, room: str, sid: str, members: int, reason: LeaveReason, emptied: bool
    ) -> None:
        """`emptied`: nobody is left here, so the room's series go and free its label."""
        self.metrics.room_leaves_total.labels(self.metrics.rooms.label(room), reason).inc()
        if emptied:
            self.metrics.forget_room(room)
        self._write("room_left", user=user, room=room, sid=sid, members=members, reason=reason)

    def message_sent(
        self, user: str, room: str, message_id: int, source: Source, text: str
    ) -> None:
        size = len(text.encode("utf-8"))
        self.metrics.messages_total.labels(self.metrics.rooms.label(room), source).inc()
        self.metrics.message_size_bytes.labels(source).observe(size)
        fields: dict[str, Any] = {
            "user": user,
            "room": room,
            "message_id": message_id,
            "source": source,
            "length": len(text),
        }
        private = room.startswith(PRIVATE_ROOM_PREFIXES)
        if self.log_message_text and (self.log_private_message_text or not private):
            fields["text"] = text
        self._write("message_sent", **fields)

    def message_rejected(
        self, user: str | None, room: str | None, source: Source, reason: str
    ) -> None:
        self.metrics.messages_rejected_total.labels(source, rejection_label(reason)).inc()
        self._write("message_rejected", user=user, room=room, source=source, reason=reason)

    def event_rejected(
        self, user: str, sid: str, event: str, room: str | None, reason: str
    ) -> None:
        """A refused `join`, `leave`, `typing` or reserved event name (refused messages are
        `message_rejected`); counted with them, as the socket door's refusals."""
        self.metrics.messages_rejected_total.labels(Source.SOCKET, rejection_label(reason)).inc()
        self._write(
            "event_rejected", user=user, sid=sid, socket_event=event, room=room, reason=reason
        )

    # -- private conversations ---------------------------------------------------------------
    def dm_opened(self, user: str, room: str, source: Source) -> None:
        self.metrics.conversations_opened_total.labels(ConversationKind.DIRECT).inc()
        self._write("dm_opened", user=user, room=room, source=source)

    def private_room_created(self, user: str, room: str, source: Source) -> None:
        self.metrics.conversations_opened_total.labels(ConversationKind.PRIVATE).inc()
        self._write("private_room_created", user=user, room=room, source=source)

    def user_invited(self, user: str, room: str, invitee: str, source: Source) -> None:
        self.metrics.invitations_total.inc()
        self._write("user_invited", user=user, room=room, invitee=invitee, source=source)

    def access_refused(self, user: str, room: str | None, source: Source, action: str) -> None:
        """A user without access (no invitation, not one of a direct conversation's two) tried
        to join, read, send to, type in or invite to a private conversation: `not_invited`,
        counted with the door's other refusals."""
        self.metrics.messages_rejected_total.labels(source, Rejection.NOT_INVITED).inc()
        self._write(
            "access_refused",
            user=user,
            room=room,
            source=source,
            action=action,
            reason=Rejection.NOT_INVITED.value,
        )

    # -- HTTP ------------------------------------------------------------------------------
    def request_rejected(self, method: str, path: str, remote_addr: str, reason: str) -> None:
        """A request or packet refused before any route or event handler saw it."""
        self.metrics.requests_rejected_total.labels(request_rejection_label(reason)).inc()
        if self._rejection_lines.take() is not None:
            self._write(
                "request_rejected",
                method=method,
                path=path[:LOGGED_PATH_LIMIT],
                remote_addr=remote_addr,
                reason=reason,
            )

    def http_request(
        self,
        method: str,
        path: str,
        route: str,
        status: int,
        duration_s: float,
        remote_addr: str,
    ) -> None:
        method_label = bounded_method(method)
        self.metrics.http_requests_total.labels(method_label, route, str(status)).inc()
        if route != UNMATCHED_ROUTE:
            self.metrics.event_duration_seconds.labels(http_event(method_label, route)).observe(
                duration_s
            )
        self._write(
            "http_request",
            method=method,
            path=path,
            status=status,
            duration_ms=round(duration_s * 1000, 2),
            remote_addr=remote_addr,
        )

    def socket_event_handled(self, event: str, duration_s: float) -> None:
        """Latency of a socket event (no log line: the event's own line says what happened)."""
        self.metrics.event_duration_seconds.labels(event).observe(duration_s)

    # -- failures of the process and its log -------------------------------------------------
    def service_failed(self, reason: str, exception: str | None) -> None:
        """The service cannot start or keep serving: `reason` in one human line, and the
        traceback in `exception` (None leaves it out: a known cause needs none on a console)."""
        if exception is None:
            self._write("service_failed", reason=reason)
        else:
            self._write("service_failed", reason=reason, exception=exception)

    def count_dropped_log_lines(self, count: int) -> None:
        """Log lines the process could not write (no line: the log is what failed)."""
        self.metrics.log_lines_dropped_total.inc(count)

    def log_lines_dropped(self, count: int) -> None:
        """The reader keeps up again: say how many lines before this one it never got."""
        self._write("log_lines_dropped", count=count)

    # -- the delivery probe (service.probe) ---------------------------------------------------
    def probe_delivered(self, seconds: float) -> None:
        """A probe arrived (no line: a probe that works says nothing)."""
        self.metrics.probe_delivery_seconds.observe(seconds)

    def probe_failed(
        self,
        reason: ProbeFailure,
        path: str,
        peer: str,
        waited_s: float,
        error: str | None = None,
    ) -> None:
        """A probe that did not arrive in time (`timeout`) or could not be sent (`error`):
        `path` says which way it took (`local`, `self`, `peer`), `peer` which process was to
        receive it, `error` what failed (never user data: a step and an exception's text)."""
        self.metrics.probe_failures_total.labels(reason).inc()
        fields: dict[str, Any] = {
            "reason": reason,
            "path": path,
            "peer": peer,
            "waited_s": round(waited_s, 3),
        }
        if error is not None:
            fields["error"] = error
        self._write("probe_failed", **fields)
