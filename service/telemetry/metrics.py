"""Every Prometheus metric of the service, in one place.

Naming rule (Prometheus conventions): prefix `chat_`, base units (`_seconds`, `_bytes`),
counters end in `_total` (prometheus-client adds it), gauges name a current amount.

No label ever takes an unbounded value: never a user, sid or message id. Each bounded label has
an enum of its values, all pre-created so every series exists at 0 from start-up, and a value
from outside (a library's reason, an error code) becomes one through a bounding helper here.
`room` is bounded by `CHAT_METRICS_MAX_ROOMS`: the first rooms to become active get their own
label, later ones share `room="_other"` (as Synapse does with its `other` bucket), and a room's
series are removed when it empties, freeing its place. Gauges are read from the live state at
scrape time, so they cannot drift from it.

Each app owns its registry (tests build many apps in one process); the process and platform
collectors of prometheus-client are registered on it as well.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Final, Protocol, TypeVar

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.telemetry.exposition import ChatRegistry, TextExposition

# `_created` samples double the series count and Prometheus has no use for them in text format.
disable_created_metrics()  # type: ignore[no-untyped-call]

OTHER_ROOM: Final = "_other"
# Every direct conversation is counted under one `room` label, and every private room under
# another: their internal names carry user names (and would be unbounded), so none is a label.
DIRECT_ROOM: Final = "_direct"
PRIVATE_ROOM: Final = "_private"
DIRECT_ROOM_PREFIX: Final = "_dm:"
PRIVATE_ROOM_PREFIX: Final = "_p:"
PRIVATE_ROOM_PREFIXES: Final = (DIRECT_ROOM_PREFIX, PRIVATE_ROOM_PREFIX)
UNMATCHED_ROUTE: Final = "unmatched"  # the `route` of a request no URL rule matched


# Each bounded label has an enum of its values (all pre-created at start-up, so every series
# exists at 0). Members are strings: they are the label values themselves.
class LoginResult(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    RATE_LIMITED = "rate_limited"


class Source(StrEnum):
    """The door a message came through."""

    SOCKET = "socket"
    HTTP = "http"


class LeaveReason(StrEnum):
    LEAVE = "leave"
    DISCONNECT = "disconnect"


class DisconnectReason(StrEnum):
    CLIENT_DISCONNECT = "client_disconnect"
    SERVER_DISCONNECT = "server_disconnect"
    PING_TIMEOUT = "ping_timeout"
    TRANSPORT_CLOSE = "transport_close"
    TRANSPORT_ERROR = "transport_error"
    OTHER = "other"


class ConnectRejection(StrEnum):
    UNAUTHORIZED = "unauthorized"
    TOO_MANY_CONNECTIONS = "too_many_connections"


class Rejection(StrEnum):
    """Why a message or another socket event was refused: the contract's error code."""

    INVALID_PAYLOAD = "invalid_payload"
    INVALID_ROOM = "invalid_room"
    EMPTY_MESSAGE = "empty_message"
    MESSAGE_TOO_LONG = "message_too_long"
    NOT_IN_ROOM = "not_in_room"
    RATE_LIMITED = "rate_limited"
    ROOM_LIMIT_REACHED = "room_limit_reached"
    UNAUTHORIZED = "unauthorized"
    INTERNAL_ERROR = "internal_error"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    INVALID_USERNAME = "invalid_username"  # a direct conversation or invitation for a bad name
    NOT_INVITED = "not_invited"  # a private conversation the user has no access to


class RequestRejection(StrEnum):
    """Why a request or packet was refused before it reached a route or an event handler."""

    CSRF_FAILED = "csrf_failed"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INVALID_PAYLOAD = "invalid_payload"
    INVALID_PACKET = "invalid_packet"
    BINARY_ATTACHMENT = "binary_attachment"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    IDLE_TIMEOUT = "idle_timeout"
    UNAUTHORIZED = "unauthorized"
    OTHER = "other"
    # Refusals of the routes that have no event of their own (a room's history).
    INVALID_ROOM = "invalid_room"
    NOT_IN_ROOM = "not_in_room"
    # Refusals of the private-conversation routes (`POST /dm`, `/private`, `/invite`).
    INVALID_USERNAME = "invalid_username"
    RATE_LIMITED = "rate_limited"
    ROOM_LIMIT_REACHED = "room_limit_reached"


class ConversationKind(StrEnum):
    """A direct conversation (two users) or a private room (by invitation)."""

    DIRECT = "direct"
    PRIVATE = "private"


class RegistrationFailure(StrEnum):
    """Why a registration was refused: the contract's error code."""

    INVALID_PAYLOAD = "invalid_payload"
    INVALID_USERNAME = "invalid_username"
    WEAK_PASSWORD = "weak_password"  # noqa: S105 (an error code, not a password)
    USERNAME_TAKEN = "username_taken"
    RATE_LIMITED = "rate_limited"
    REGISTRATION_CLOSED = "registration_closed"
    PAYLOAD_TOO_LARGE = "payload_too_large"


class ProbeFailure(StrEnum):
    """Why a delivery probe failed (`service.probe`)."""

    TIMEOUT = "timeout"  # sent, but not delivered within the probe's timeout
    ERROR = "error"  # could not be sent: the store, the message queue or the connection failed


class SocketEvent(StrEnum):
    CONNECT = "connect"
    DISCONNECT = "disconnect"
    JOIN = "join"
    LEAVE = "leave"
    MESSAGE = "message"
    TYPING = "typing"
    OPEN_DM = "open_dm"
    CREATE_PRIVATE = "create_private"
    INVITE = "invite"
    CONVERSATIONS = "conversations"


E = TypeVar("E", bound=StrEnum)
HTTP_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


# -- turning a value from outside into a bounded label ---------------------------------------
def bounded(kind: type[E], value: str, fallback: E) -> E:
    """`value` as a member of the label's enum, or `fallback` when it is none of them."""
    try:
        return kind(value)
    except ValueError:
        return fallback


def disconnect_reason(reason: object) -> DisconnectReason:
    """python-socketio's reason ("client disconnect") as a bounded label value."""
    value = str(reason or "other").strip().lower().replace(" ", "_")
    return bounded(DisconnectReason, value, DisconnectReason.OTHER)


def rejection_label(reason: str) -> Rejection:
    return bounded(Rejection, reason, Rejection.INVALID_PAYLOAD)


def request_rejection_label(reason: str) -> RequestRejection:
    return bounded(RequestRejection, reason, RequestRejection.OTHER)


def bounded_method(method: str) -> str:
    return method if method in HTTP_METHODS else "other"


def http_event(method: str, route: str) -> str:
    """The `event` label of an HTTP route: "POST /send"."""
    return f"{method} {route}"


EVENT_DURATION_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# From a loopback delivery (about a millisecond) to the probe's longest timeout (5 s).
PROBE_DELIVERY_BUCKETS: Final = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
MESSAGE_SIZE_BUCKETS: Final = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


class LiveState(Protocol):
    """What the gauges read at scrape time: this process's connections and their rooms."""

    def count(self) -> int: ...
    def users_online(self) -> int: ...
    def active_rooms(self) -> int: ...
    def room_member_counts(self) -> Mapping[str, int]: ...


class RoomLabels:
    """Which rooms have a `room` label of their own, at most `max_rooms` at a time."""

    def __init__(self, max_rooms: int) -> None:
        self.max_rooms = max_rooms
        self._labelled: set[str] = set()

    def claim(self, room: str) -> str:
        """A room became active: give it its own label while places remain (never a private
        conversation: those share `_direct` and `_private`)."""
        if room.startswith(PRIVATE_ROOM_PREFIXES):
            return self.label(room)
        if room not in self._labelled and len(self._labelled) < self.max_rooms:
            self._labelled.add(room)
        return self.label(room)

    def label(self, room: str) -> str:
        if room.startswith(DIRECT_ROOM_PREFIX):
            return DIRECT_ROOM
        if room.startswith(PRIVATE_ROOM_PREFIX):
            return PRIVATE_ROOM
        return room if room in self._labelled else OTHER_ROOM

    def release(self, room: str) -> bool:
        """A room emptied: free its place. True when it had one (its series must go)."""
        if room in self._labelled:
            self._labelled.discard(room)
            return True
        return False


ROOM_MEMBERS: Final = "chat_room_members"
ROOM_MEMBERS_HELP: Final = "Users in each room now."


class RoomMembersCollector(Collector):
    """`chat_room_members{room}`, computed from the live membership at scrape time."""

    def __init__(self, labels: RoomLabels, member_counts: Callable[[], Mapping[str, int]]):
        self.labels = labels
        self.member_counts = member_counts

    def totals(self) -> list[tuple[str, int]]:
        """Members per room label, in label order (rooms past the cap summed under theirs)."""
        totals: dict[str, int] = {}
        for room, members in self.member_counts().items():
            if members > 0:
                label = self.labels.label(room)
                totals[label] = totals.get(label, 0) + members
        return sorted(totals.items())

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(ROOM_MEMBERS, ROOM_MEMBERS_HELP, labels=["room"])
        for label, members in self.totals():
            family.add_metric([label], members)
        yield family

    def text_series(self) -> tuple[str, str, tuple[str, ...], list[tuple[tuple[str, ...], float]]]:
        """What `collect()` gives, as plain pairs for `TextExposition` (no sample objects)."""
        samples: list[tuple[tuple[str, ...], float]] = [
            ((label,), float(members)) for label, members in self.totals()
        ]
        return ROOM_MEMBERS, ROOM_MEMBERS_HELP, ("room",), samples

    def describe(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(ROOM_MEMBERS, ROOM_MEMBERS_HELP, labels=["room"])


class ChatMetrics:
    """The service's metrics on one registry."""

    def __init__(
        self,
        max_rooms: int,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry or ChatRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(GC_COLLECTOR)
        self.rooms = RoomLabels(max_rooms)
        r = self.registry

        self.build_info = Gauge(
            "chat_build_info",
            "Always 1; the labels say what is running.",
            ["version", "async_mode", "store"],
            registry=r,
        )
        self.registrations_total = Counter(
            "chat_registrations_total", "Users registered.", registry=r
        )
        self.logins_total = Counter(
            "chat_logins_total", "Login attempts by result.", ["result"], registry=r
        )
        self.logouts_total = Counter("chat_logouts_total", "Logouts.", registry=r)
        self.connections = Gauge("chat_connections", "Socket.IO connections open now.", registry=r)
        self.connects_total = Counter(
            "chat_connects_total", "Socket.IO connections accepted.", registry=r
        )
        self.disconnects_total = Counter(
            "chat_disconnects_total", "Socket.IO disconnections by reason.", ["reason"], registry=r
        )
        self.connect_rejections_total = Counter(
            "chat_connect_rejections_total",
            "Socket.IO connections refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.users_online = Gauge(
            "chat_users_online", "Users with at least one open connection.", registry=r
        )
        self.rooms_gauge = Gauge("chat_rooms", "Rooms with at least one member.", registry=r)
        self.room_joins_total = Counter(
            "chat_room_joins_total", "Users joining rooms.", ["room"], registry=r
        )
        self.room_leaves_total = Counter(
            "chat_room_leaves_total", "Users leaving rooms, by reason.", ["room", "reason"],
            registry=r,
        )  # fmt: skip
        self.messages_total = Counter(
            "chat_messages_total", "Messages sent, by room and door.", ["room", "source"],
            registry=r,
        )  # fmt: skip
        self.messages_rejected_total = Counter(
            "chat_messages_rejected_total",
            "Messages and room requests refused, by door and reason.",
            ["source", "reason"],
            registry=r,
        )
        self.message_size_bytes = Histogram(
            "chat_message_size_bytes",
            "Size of sent messages in UTF-8 bytes.",
            ["source"],
            buckets=MESSAGE_SIZE_BUCKETS,
            registry=r,
        )
        self.event_duration_seconds = Histogram(
            "chat_event_duration_seconds",
            "Time to handle a socket event or an HTTP route.",
            ["event"],
            buckets=EVENT_DURATION_BUCKETS,
            registry=r,
        )
        self.requests_rejected_total = Counter(
            "chat_requests_rejected_total",
            "HTTP requests and Engine.IO/Socket.IO packets refused before a route or event, "
            "by reason.",
            ["reason"],
            registry=r,
        )
        self.http_requests_total = Counter(
            "chat_http_requests_total",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.registrations_failed_total = Counter(
            "chat_registrations_failed_total",
            "Registrations refused, by reason.",
            ["reason"],
            registry=r,
        )
        for failure in RegistrationFailure:
            self.registrations_failed_total.labels(failure)
        self.conversations_opened_total = Counter(
            "chat_conversations_opened_total",
            "Direct conversations opened and private rooms created, by kind.",
            ["kind"],
            registry=r,
        )
        for kind in ConversationKind:
            self.conversations_opened_total.labels(kind)
        self.invitations_total = Counter(
            "chat_invitations_total", "Invitations to private rooms.", registry=r
        )
        # Counted by the process's one log writer (service.telemetry.logging.LineWriter).
        self.log_lines_dropped_total = Counter(
            "chat_log_lines_dropped_total",
            "Log lines not written: stdout's reader was too slow, or gone.",
            registry=r,
        )
        # The delivery probe's (`service.probe`): registered by `enable_probe`, only when the
        # probe runs, so a process without it does not export an SLI that nothing feeds.
        self.probe_delivery_seconds = Histogram(
            "chat_probe_delivery_seconds",
            "End-to-end time of a delivery probe, from sending it to its arrival at a Socket.IO "
            "connection (through another process and back, for a peer).",
            buckets=PROBE_DELIVERY_BUCKETS,
            registry=None,
        )
        self.probe_failures_total = Counter(
            "chat_probe_failures_total",
            "Delivery probes that did not arrive in time, or could not be sent, by reason.",
            ["reason"],
            registry=None,
        )
        for probe_failure in ProbeFailure:
            self.probe_failures_total.labels(probe_failure)
        self._room_members_collector: RoomMembersCollector | None = None
        self._precreate()
        self.exposition = TextExposition(self.registry)

    def _precreate(self) -> None:
        for result in LoginResult:
            self.logins_total.labels(result)
        for reason in DisconnectReason:
            self.disconnects_total.labels(reason)
        for refusal in ConnectRejection:
            self.connect_rejections_total.labels(refusal)
        for source in Source:
            self.message_size_bytes.labels(source)
            for rejection in Rejection:
                self.messages_rejected_total.labels(source, rejection)
        for request_rejection in RequestRejection:
            self.requests_rejected_total.labels(request_rejection)
        for event in SocketEvent:
            self.event_duration_seconds.labels(event)

    def enable_probe(self) -> None:
        """The delivery probe runs: export its metrics (every series at 0 from now)."""
        self.registry.register(self.probe_delivery_seconds)
        self.registry.register(self.probe_failures_total)

    def precreate_http_routes(self, routes: Iterable[tuple[str, str]]) -> None:
        """An `event` latency series for every (method, route) the app serves."""
        for method, route in routes:
            self.event_duration_seconds.labels(http_event(method, route))

    def observe_state(self, state: LiveState) -> None:
        """Read the gauges from the live state at scrape time."""
        self.connections.set_function(state.count)
        self.users_online.set_function(state.users_online)
        self.rooms_gauge.set_function(state.active_rooms)
        if self._room_members_collector is not None:
            self.registry.unregister(self._room_members_collector)
        self._room_members_collector = RoomMembersCollector(self.rooms, state.room_member_counts)
        self.registry.register(self._room_members_collector)

    def forget_room(self, room: str) -> None:
        """Drop every series labelled with `room` (it emptied and frees its place)."""
        if not self.rooms.release(room):
            return
        for counter, other_labels in (
            (self.room_joins_total, ()),
            (self.room_leaves_total, tuple(LeaveReason)),
            (self.messages_total, tuple(Source)),
        ):
            if not other_labels:
                _remove_quietly(counter, room)
            for value in other_labels:
                _remove_quietly(counter, room, value)


def _remove_quietly(metric: Counter, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
