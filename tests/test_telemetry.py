"""Telemetry on its own: the log catalogue is enforced, and `attach` wires the metrics once."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from service.connections import Connection, ConnectionRegistry
from service.telemetry.events import Telemetry, UncataloguedField
from service.telemetry.metrics import ChatMetrics, Source, disconnect_reason, rejection_label


def test_strict_telemetry_refuses_a_field_the_catalogue_does_not_list() -> None:
    strict = Telemetry(ChatMetrics(10), strict=True)
    with capture_logs() as logs, pytest.raises(UncataloguedField, match="logout: extra"):
        strict._write("logout", user="alice", extra="not in LOG_EVENTS")
    assert logs == []
    with capture_logs() as logs:
        Telemetry(ChatMetrics(10))._write("logout", user="alice", extra="written anyway")
    assert [e["extra"] for e in logs] == ["written anyway"]


def test_every_event_method_writes_only_catalogued_fields() -> None:
    telemetry = Telemetry(ChatMetrics(10), strict=True)
    with capture_logs() as logs:
        telemetry.message_sent("alice", "lobby", 1, Source.SOCKET, "hi")
        telemetry.request_rejected("GET", "/metrics", "127.0.0.1", "unauthorized")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            telemetry.unhandled_error("a test")
    assert [e["event"] for e in logs] == ["message_sent", "request_rejected", "unhandled_error"]
    assert logs[-1]["exc_info"] is True and logs[-1]["where"] == "a test"


def test_attach_wires_the_gauges_to_the_live_state_and_labels_the_build() -> None:
    metrics = ChatMetrics(10)
    connections = ConnectionRegistry()
    Telemetry(metrics).attach(
        connections,
        version="1.2.3",
        async_mode="threading",
        store="memory",
        http_routes=[("GET", "/rooms")],
    )
    connections.add(Connection("sid1", "alice", "token"))
    sample = metrics.registry.get_sample_value
    assert sample("chat_connections") == 1
    assert sample("chat_users_online") == 1
    build = {"version": "1.2.3", "async_mode": "threading", "store": "memory"}
    assert sample("chat_build_info", build) == 1
    assert sample("chat_event_duration_seconds_count", {"event": "GET /rooms"}) == 0


def test_values_from_outside_become_bounded_labels() -> None:
    assert disconnect_reason("client disconnect") == "client_disconnect"
    assert disconnect_reason("something new") == "other"
    assert rejection_label("room_limit_reached") == "room_limit_reached"
    assert rejection_label("csrf_failed") == "invalid_payload"


@pytest.mark.parametrize("own_registry", [True, False], ids=["chat-registry", "plain-registry"])
def test_the_cached_text_exposition_is_what_prometheus_client_writes(own_registry: bool) -> None:
    """With the service's own registry the wrappers are read child by child; with any other
    registry everything goes through `collect()`. Either way: `generate_latest`'s lines."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from service.telemetry.exposition import ChatRegistry
    from service.telemetry.metrics import LeaveReason

    metrics = ChatMetrics(2, registry=None if own_registry else CollectorRegistry())
    registry = metrics.registry
    assert isinstance(registry, ChatRegistry) == own_registry
    metrics.event_duration_seconds.labels("message").observe(1e-7)  # "1e-07": Go's notation
    metrics.message_size_bytes.labels("http").observe(12345678.0)
    connections = ConnectionRegistry()
    telemetry = Telemetry(metrics)
    telemetry.attach(
        connections, version="v", async_mode="threading", store="memory", http_routes=[]
    )
    for n, room in enumerate(['a"quoted\\room', "b", "overflow"]):
        connection = Connection(f"sid{n}", f"user{n}", "token")
        connections.add(connection)
        telemetry.room_joined(
            connection.user, room, connection.sid, 1, connections.enter(connection, room)
        )
        telemetry.message_sent(connection.user, room, 1, Source.HTTP, "héllo\nworld")
        telemetry.socket_event_handled("message", 0.003 * (n + 1))

    def lines(text: bytes) -> list[str]:
        live = ("python_", "process_")  # the collectors of this very process: always moving
        return [
            line for line in text.decode().splitlines() if not any(name in line for name in live)
        ]

    assert lines(metrics.exposition.render()) == lines(generate_latest(registry))
    # children that move between renders are written anew, the others from the cache
    assert lines(metrics.exposition.render()) == lines(generate_latest(registry))
    telemetry.message_sent("user0", "b", 1, Source.SOCKET, "again")
    telemetry.socket_event_handled("message", 0.25)
    build = metrics.build_info.labels("v", "threading", "memory")
    build.set(0.0)
    assert lines(metrics.exposition.render()) == lines(generate_latest(registry))
    build.set(-0.0)  # equal to 0.0, yet written "-0.0"
    assert lines(metrics.exposition.render()) == lines(generate_latest(registry))
    build.set(1.0)
    metrics.message_size_bytes.labels("http").observe(0.0)  # a bucket moves, the sum does not
    assert lines(metrics.exposition.render()) == lines(generate_latest(registry))
    # a room that empties takes its cached series with it; the next render still agrees
    connection = connections.get("sid1")
    assert connection is not None
    telemetry.room_left(
        "user1", "b", "sid1", 0, LeaveReason.LEAVE, connections.exit(connection, "b")
    )
    assert lines(metrics.exposition.render()) == lines(generate_latest(registry))
    assert not [key for key in metrics.exposition._prefixes if "b" in key[1:]]
    assert not [key for key in metrics.exposition._children if "b" in key[1]]


def test_a_render_that_gives_the_loop_turns_writes_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under eventlet and gevent a render pauses between collectors once it has worked for
    `PAUSE_AFTER_S`; here after every collector, with a value moving during one pause."""
    from prometheus_client.exposition import generate_latest

    from service.telemetry import exposition

    metrics = ChatMetrics(2)
    metrics.event_duration_seconds.labels("message").observe(0.5)
    pauses: list[int] = []

    def pause() -> None:
        pauses.append(1)
        if len(pauses) == 3:  # another green thread counts a message meanwhile
            metrics.messages_total.labels("lobby", "socket").inc()

    monkeypatch.setattr(exposition, "PAUSE_AFTER_S", -1.0)
    metrics.exposition.pause = pause
    text = metrics.exposition.render()
    assert len(pauses) == len(metrics.registry.collectors)  # type: ignore[attr-defined]
    assert b'chat_messages_total{room="lobby",source="socket"} 1.0' in text
    live = ("python_", "process_")
    assert [line for line in text.decode().splitlines() if not line.startswith(live)] == [
        line
        for line in generate_latest(metrics.registry).decode().splitlines()
        if not line.startswith(live)
    ]
