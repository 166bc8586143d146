"""The HTTP door in process: accounts, sessions, CSRF, errors, history, health and metrics."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import InProcessChat
from flask import Flask
from flask.testing import FlaskClient
from structlog.testing import capture_logs

from service.extension import parts_of
from service.security import CONTENT_SECURITY_POLICY

PASSWORD = "correct horse battery"


def creds(name: str, password: str = PASSWORD) -> dict[str, str]:
    return {"username": name, "password": password}


def events(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Captured log events but the `http_request` line every request writes."""
    return [e for e in logs if e["event"] != "http_request"]


def error_of(reply: Any) -> str:
    assert reply.mimetype == "application/json", reply.data
    body = reply.get_json()
    assert set(body) == {"error", "message"} and body["message"]
    return str(body["error"])


# -- the factory ------------------------------------------------------------------------------
def test_factory_layers_defaults_environment_and_test_config(
    monkeypatch: pytest.MonkeyPatch, make_app: Any
) -> None:
    monkeypatch.setenv("CHAT_HISTORY_LIMIT", "7")
    monkeypatch.setenv("CHAT_LOG_MESSAGE_TEXT", "false")
    settings = parts_of(make_app(MAX_ROOMS=3)).settings
    assert settings.history_limit == 7
    assert settings.log_message_text is False
    assert settings.max_rooms == 3
    assert settings.max_message_length == 2000  # a default nobody overrode
    assert settings.async_mode == "threading"  # nothing was monkey-patched here


def test_missing_secret_key_is_random_per_app_with_one_warning(make_app: Any) -> None:
    with capture_logs() as logs:
        first, second = make_app(SECRET_KEY=None), make_app(SECRET_KEY=None)
    warnings = [e for e in logs if e["event"] == "secret_key_generated"]
    assert len(warnings) == 2 and all(e["log_level"] == "warning" for e in warnings)
    assert first.config["SECRET_KEY"] != second.config["SECRET_KEY"]
    assert len(first.config["SECRET_KEY"]) >= 32
    with capture_logs() as logs:
        make_app()
    assert not [e for e in logs if e["event"] == "secret_key_generated"]


# -- registration -----------------------------------------------------------------------------
def test_register_then_taken_case_insensitively(client: FlaskClient, chat: InProcessChat) -> None:
    with capture_logs() as logs:
        reply = client.post("/register", json=creds("Alice"))
        assert reply.status_code == 201 and reply.get_json() == {"username": "Alice"}
        again = client.post("/register", json=creds("alice"))
    assert again.status_code == 409 and error_of(again) == "username_taken"
    assert [e["event"] for e in events(logs)] == ["user_registered", "registration_failed"]
    assert events(logs)[1]["reason"] == "username_taken"
    assert chat.metric("chat_registrations_total") == 1.0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (creds("ab"), "invalid_username"),
        (creds("x" * 33), "invalid_username"),
        (creds("bad name"), "invalid_username"),
        (creds("évé"), "invalid_username"),
        (creds("carol", "short"), "weak_password"),
        ({"username": "carol"}, "invalid_payload"),
        ({"username": 5, "password": PASSWORD}, "invalid_payload"),
        (["carol", PASSWORD], "invalid_payload"),
        ("just a string", "invalid_payload"),
    ],
)
def test_register_refusals(client: FlaskClient, chat: InProcessChat, body: Any, code: str) -> None:
    reply = client.post("/register", json=body)
    assert reply.status_code == 400 and error_of(reply) == code
    assert chat.metric("chat_registrations_total") == 0.0


def test_malformed_json_is_invalid_payload(client: FlaskClient) -> None:
    reply = client.post("/register", data="{not json", content_type="application/json")
    assert reply.status_code == 400 and error_of(reply) == "invalid_payload"


def test_registration_is_rate_limited_per_address(make_app: Any) -> None:
    client = make_app(REGISTER_RATE_LIMIT="2 per hour").test_client()
    assert client.post("/register", json=creds("user1")).status_code == 201
    assert client.post("/register", json=creds("user2")).status_code == 201
    reply = client.post("/register", json=creds("user3"))
    assert reply.status_code == 429 and error_of(reply) == "rate_limited"
    assert int(reply.headers["Retry-After"]) > 0


# -- login ------------------------------------------------------------------------------------
def test_login_sets_a_session_and_counts(client: FlaskClient, chat: InProcessChat) -> None:
    client.post("/register", json=creds("alice"))
    with capture_logs() as logs:
        reply = client.post("/login", json=creds("ALICE"))
    assert reply.status_code == 200 and reply.get_json() == {"username": "alice"}
    assert "chat_session=" in reply.headers["Set-Cookie"]
    assert "HttpOnly" in reply.headers["Set-Cookie"]
    assert [(e["event"], e["user"]) for e in events(logs)] == [("login_succeeded", "alice")]
    assert chat.metric("chat_logins_total", result="success") == 1.0
    assert client.get("/rooms").status_code == 200


def test_unknown_user_and_wrong_password_get_the_same_reply(
    client: FlaskClient, chat: InProcessChat
) -> None:
    client.post("/register", json=creds("alice"))
    with capture_logs() as logs:
        wrong = client.post("/login", json=creds("alice", "not the password"))
        unknown = client.post("/login", json=creds("nobody", "not the password"))
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json() == unknown.get_json()
    assert error_of(wrong) == "invalid_credentials"
    assert "Set-Cookie" not in wrong.headers or "chat_session=;" in wrong.headers["Set-Cookie"]
    assert [(e["event"], e["user"], e["reason"]) for e in events(logs)] == [
        ("login_failed", "alice", "invalid_credentials"),
        ("login_failed", "nobody", "invalid_credentials"),
    ]
    assert chat.metric("chat_logins_total", result="failure") == 2.0


def test_login_is_rate_limited_per_user_for_known_and_unknown_names(make_app: Any) -> None:
    app = make_app(LOGIN_RATE_LIMIT_PER_USER="2 per minute")
    client = app.test_client()
    client.post("/register", json=creds("alice"))
    for name in ("alice", "ghost"):
        for _ in range(2):
            assert client.post("/login", json=creds(name, "wrong password")).status_code == 401
        limited = client.post("/login", json=creds(name, PASSWORD))
        assert limited.status_code == 429 and error_of(limited) == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
    # another user from the same address is not affected by alice's limit
    client.post("/register", json=creds("bob"))
    assert client.post("/login", json=creds("bob")).status_code == 200
    metric = InProcessChat(app).metric
    assert metric("chat_logins_total", result="rate_limited") == 2.0


def test_login_is_rate_limited_per_address(make_app: Any) -> None:
    client = make_app(LOGIN_RATE_LIMIT_PER_ADDRESS="3 per minute").test_client()
    codes = [
        client.post("/login", json=creds(f"user{i}", "whatever1")).status_code for i in range(4)
    ]
    assert codes == [401, 401, 401, 429]


# -- sessions ---------------------------------------------------------------------------------
def test_logout_ends_the_session_on_the_server(app: Flask, chat: InProcessChat) -> None:
    alice = chat.user("alice")
    stolen = alice.get_cookie("chat_session")
    assert stolen is not None
    with capture_logs() as logs:
        assert alice.post("/logout", json={}).status_code == 204
    assert [e["event"] for e in events(logs)] == ["logout"]
    assert chat.metric("chat_logouts_total") == 1.0
    replay = app.test_client()
    replay.set_cookie("chat_session", stolen.value)
    reply = replay.get("/rooms")
    assert reply.status_code == 401 and error_of(reply) == "unauthorized"
    assert replay.get("/").status_code == 302


def test_logout_closes_the_sessions_sockets(chat: InProcessChat) -> None:
    alice = chat.user("alice")
    sock = chat.socket(alice)
    assert sock.emit("join", {"room": "lobby"}, callback=True)["ok"]
    alice.post("/logout", json={})
    assert not sock.is_connected()
    assert chat.metric("chat_connections") == 0.0
    assert chat.metric("chat_room_members", room="lobby") is None


def test_index_redirects_to_login_until_logged_in(client: FlaskClient, chat: InProcessChat) -> None:
    reply = client.get("/")
    assert reply.status_code == 302 and reply.headers["Location"].endswith("/login")
    page = chat.user("alice").get("/")
    assert page.status_code == 200 and b"alice" in page.data


# -- CSRF and request shapes ------------------------------------------------------------------
def test_form_posts_need_the_pages_csrf_token(client: FlaskClient) -> None:
    client.post("/register", json=creds("alice"))
    refused = client.post("/login", data=creds("alice"))
    assert refused.status_code == 400 and error_of(refused) == "csrf_failed"
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, "the login page must carry its CSRF token"
    accepted = client.post("/login", data={**creds("alice"), "csrf_token": token.group(1)})
    assert accepted.status_code == 303 and accepted.headers["Location"].endswith("/")
    assert client.get("/rooms").status_code == 200


def test_other_bodies_and_cross_origin_writes_are_refused(chat: InProcessChat) -> None:
    alice = chat.user("alice")
    plain = alice.post("/send", data="room=lobby&text=hi", content_type="text/plain")
    assert plain.status_code == 415 and error_of(plain) == "unsupported_media_type"
    cross = alice.post(
        "/send", json={"room": "lobby", "text": "hi"}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 400 and error_of(cross) == "csrf_failed"


def test_errors_are_json(client: FlaskClient) -> None:
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and error_of(missing) == "not_found"
    wrong_method = client.get("/send")
    assert wrong_method.status_code == 405 and error_of(wrong_method) == "method_not_allowed"
    big = client.post("/register", json={"username": "a", "password": "x" * 100_000})
    assert big.status_code == 413 and error_of(big) == "payload_too_large"


def test_pages_carry_a_strict_content_security_policy(client: FlaskClient) -> None:
    reply = client.get("/login")
    assert reply.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers["X-Frame-Options"] == "DENY"


# -- POST /send and history ---------------------------------------------------------------------
def test_send_requires_login_membership_and_valid_text(chat: InProcessChat) -> None:
    anonymous = chat.app.test_client().post("/send", json={"room": "lobby", "text": "hi"})
    assert anonymous.status_code == 401 and error_of(anonymous) == "unauthorized"
    alice = chat.user("alice")
    not_member = alice.post("/send", json={"room": "lobby", "text": "hi"})
    assert not_member.status_code == 403 and error_of(not_member) == "not_in_room"
    sock = chat.socket(alice)
    sock.emit("join", {"room": "lobby"}, callback=True)
    cases = {
        "invalid_room": {"room": "no spaces", "text": "hi"},
        "empty_message": {"room": "lobby", "text": "   \n "},
        "message_too_long": {"room": "lobby", "text": "x" * 2001},
        "invalid_payload": {"room": "lobby", "text": 42},
    }
    for code, body in cases.items():
        reply = alice.post("/send", json=body)
        assert reply.status_code == 400 and error_of(reply) == code, code
        assert chat.metric("chat_messages_rejected_total", source="http", reason=code) == 1.0
    sent = alice.post("/send", json={"room": "lobby", "text": "  hello  "})
    assert sent.status_code == 201
    body = sent.get_json()
    assert body["id"] == 1 and body["text"] == "hello" and body["user"] == "alice"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["ts"])
    assert chat.metric("chat_messages_total", room="lobby", source="http") == 1.0
    assert chat.received(sock, "message") == [body]


def test_history_after_and_limit(chat: InProcessChat) -> None:
    alice = chat.user("alice")
    sock = chat.socket(alice)
    sock.emit("join", {"room": "lobby"}, callback=True)
    for n in range(5):
        alice.post("/send", json={"room": "lobby", "text": f"m{n}"})
    history = alice.get("/rooms/lobby/messages?after=2&limit=2").get_json()
    assert [m["id"] for m in history] == [3, 4]
    assert [m["text"] for m in alice.get("/rooms/lobby/messages").get_json()] == [
        f"m{n}" for n in range(5)
    ]
    bad = alice.get("/rooms/lobby/messages?after=-1")
    assert bad.status_code == 400 and error_of(bad) == "invalid_payload"
    bob = chat.user("bob")
    refused = bob.get("/rooms/lobby/messages")
    assert refused.status_code == 403 and error_of(refused) == "not_in_room"


def test_history_keeps_only_the_limit(make_app: Any) -> None:
    chat = InProcessChat(make_app(HISTORY_LIMIT=3))
    alice = chat.user("alice")
    chat.socket(alice).emit("join", {"room": "lobby"}, callback=True)
    for n in range(5):
        alice.post("/send", json={"room": "lobby", "text": f"m{n}"})
    assert [m["id"] for m in alice.get("/rooms/lobby/messages").get_json()] == [3, 4, 5]


def test_rooms_lists_rooms_with_members(chat: InProcessChat) -> None:
    alice, bob = chat.user("alice"), chat.user("bob")
    a, b = chat.socket(alice), chat.socket(bob)
    a.emit("join", {"room": "lobby"}, callback=True)
    b.emit("join", {"room": "lobby"}, callback=True)
    b.emit("join", {"room": "quiet"}, callback=True)
    assert alice.get("/rooms").get_json() == [
        {"name": "lobby", "members": 2},
        {"name": "quiet", "members": 1},
    ]
    b.disconnect()
    assert alice.get("/rooms").get_json() == [{"name": "lobby", "members": 1}]
    assert chat.app.test_client().get("/rooms").status_code == 401


# -- operations -------------------------------------------------------------------------------
def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["store"] == "ok"


def test_metrics_speaks_text_and_openmetrics(client: FlaskClient) -> None:
    text = client.get("/metrics")
    assert text.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"chat_logins_total" in text.data
    om = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.data.rstrip().endswith(b"# EOF")


# -- behind a reverse proxy -------------------------------------------------------------------
def test_forwarded_addresses_count_only_when_proxies_are_trusted(make_app: Any) -> None:
    def limited_after_two(app: Flask, forwarded_for: list[str]) -> list[int]:
        client = app.test_client()
        return [
            client.post(
                "/login", json=creds("ghost", "whatever1"), headers={"X-Forwarded-For": address}
            ).status_code
            for address in forwarded_for
        ]

    addresses = ["203.0.113.1", "203.0.113.1", "203.0.113.2", "203.0.113.3"]
    direct = make_app(LOGIN_RATE_LIMIT_PER_ADDRESS="2 per minute")
    # not trusted: a client cannot dodge the per-address limit by inventing X-Forwarded-For
    assert limited_after_two(direct, addresses) == [401, 401, 429, 429]
    proxied = make_app(LOGIN_RATE_LIMIT_PER_ADDRESS="2 per minute", TRUSTED_PROXIES=1)
    with capture_logs() as logs:
        assert limited_after_two(proxied, addresses) == [401, 401, 401, 401]
    failed = [e["remote_addr"] for e in logs if e["event"] == "login_failed"]
    assert failed == addresses


def test_same_site_writes_behind_a_tls_proxy_are_not_taken_for_cross_site(
    make_app: Any,
) -> None:
    chat = InProcessChat(make_app(TRUSTED_PROXIES=1))
    alice = chat.user("alice")
    chat.socket(alice).emit("join", {"room": "lobby"}, callback=True)
    behind_proxy = alice.post(
        "/send",
        json={"room": "lobby", "text": "hi"},
        headers={"Origin": "https://chat.example", "X-Forwarded-Host": "chat.example"},
    )
    assert behind_proxy.status_code == 201
    same_host = alice.post(
        "/send", json={"room": "lobby", "text": "hi"}, headers={"Origin": "http://localhost"}
    )
    assert same_host.status_code == 201


# -- every refusal is one event and one count ----------------------------------------------------
# The counters a refusal moves: exactly one of their series, by exactly one, per refusal.
REFUSAL_COUNTERS = (
    "chat_registrations_failed_total",
    "chat_logins_total",
    "chat_messages_rejected_total",
    "chat_requests_rejected_total",
)


def refusal_counts(app: Flask) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = parts_of(app).telemetry.metrics.registry
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name in REFUSAL_COUNTERS and sample.labels.get("result") != "success"
    }


def moved(
    before: dict[tuple[str, frozenset[tuple[str, str]]], float],
    after: dict[tuple[str, frozenset[tuple[str, str]]], float],
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        key: value - before.get(key, 0.0)
        for key, value in after.items()
        if value != before.get(key, 0.0)
    }


TOO_LARGE = {"username": "alice", "password": "x" * 100_000}
JSON = {"Content-Type": "application/json"}
EVIL = {"Origin": "https://evil.example"}

# Where a refusal is observed: its event, and the counter that counts it.
REGISTER = ("registration_failed", "chat_registrations_failed_total")
LOGIN = ("login_failed", "chat_logins_total")
SEND = ("message_rejected", "chat_messages_rejected_total")
REQUEST = ("request_rejected", "chat_requests_rejected_total")


def counted_as(observed: tuple[str, str], code: str) -> dict[str, str]:
    """The labels of the series a refusal with `code` moves."""
    return {
        REGISTER: {"reason": code},
        LOGIN: {"result": "rate_limited" if code == "rate_limited" else "failure"},
        SEND: {"source": "http", "reason": code},
        REQUEST: {"reason": code},
    }[observed]


TEXT = {"Content-Type": "text/plain"}
# who, method, path, request options; status, code, where it is observed
REFUSALS: list[tuple[str, str, str, dict[str, Any], int, str, tuple[str, str]]] = [
    ("anyone", "POST", "/register", {"data": '{"username":', "headers": JSON},
     400, "invalid_payload", REGISTER),
    ("anyone", "POST", "/register", {"data": "nope", "headers": JSON},
     400, "invalid_payload", REGISTER),
    ("anyone", "POST", "/register", {"json": ["alice", PASSWORD]},
     400, "invalid_payload", REGISTER),
    ("anyone", "POST", "/register", {}, 400, "invalid_payload", REGISTER),
    ("anyone", "POST", "/register", {"json": creds("a b")}, 400, "invalid_username", REGISTER),
    ("anyone", "POST", "/register", {"json": creds("carol", "short")},
     400, "weak_password", REGISTER),
    ("anyone", "POST", "/register", {"json": creds("alice")}, 409, "username_taken", REGISTER),
    ("anyone", "POST", "/register", {"json": TOO_LARGE}, 413, "payload_too_large", REGISTER),
    ("anyone", "POST", "/login", {"data": "nope", "headers": JSON}, 400, "invalid_payload", LOGIN),
    ("anyone", "POST", "/login", {"data": '{"username": "a"', "headers": JSON},
     400, "invalid_payload", LOGIN),
    ("anyone", "POST", "/login", {"json": TOO_LARGE}, 413, "payload_too_large", LOGIN),
    ("anyone", "POST", "/login", {"json": creds("alice", "wrong!!!")},
     401, "invalid_credentials", LOGIN),
    ("alice", "POST", "/send", {"data": '{"room":"lobby",', "headers": JSON},
     400, "invalid_payload", SEND),
    ("alice", "POST", "/send", {"json": {"room": "lobby", "text": "x" * 70_000}},
     413, "payload_too_large", SEND),
    ("alice", "POST", "/send", {}, 400, "invalid_payload", SEND),
    ("alice", "POST", "/send", {"json": {"room": "elsewhere", "text": "hi"}},
     403, "not_in_room", SEND),
    ("anyone", "POST", "/send", {"json": {"room": "lobby", "text": "hi"}},
     401, "unauthorized", SEND),
    # routes with no event of their own, and refusals before any route: request_rejected
    ("anyone", "GET", "/rooms", {}, 401, "unauthorized", REQUEST),
    ("anyone", "GET", "/rooms/lobby/messages", {}, 401, "unauthorized", REQUEST),
    ("alice", "GET", "/rooms/elsewhere/messages", {}, 403, "not_in_room", REQUEST),
    ("alice", "GET", "/rooms/_other/messages", {}, 400, "invalid_room", REQUEST),
    ("alice", "GET", "/rooms/lobby/messages?after=-1", {}, 400, "invalid_payload", REQUEST),
    ("alice", "POST", "/logout", {"data": "bye", "headers": TEXT},
     415, "unsupported_media_type", REQUEST),
    ("alice", "POST", "/logout", {"json": {}, "headers": EVIL}, 400, "csrf_failed", REQUEST),
    ("alice", "POST", "/send", {"json": {"room": "lobby", "text": "hi"}, "headers": EVIL},
     400, "csrf_failed", REQUEST),
    ("anyone", "POST", "/register", {"data": {"username": "x", "password": "y"}},
     400, "csrf_failed", REQUEST),
    ("anyone", "POST", "/login", {"data": "a", "headers": TEXT},
     415, "unsupported_media_type", REQUEST),
    ("anyone", "POST", "/register", {"data": {"username": "a", "password": "x" * 100_000}},
     413, "payload_too_large", REQUEST),
]  # fmt: skip


@pytest.mark.parametrize(
    ("who", "method", "path", "options", "status", "code", "observed"),
    REFUSALS,
    ids=[f"{case[1]} {case[2]} {case[5]}" for case in REFUSALS],
)
def test_every_refusal_is_one_event_and_one_count(
    chat: InProcessChat,
    who: str,
    method: str,
    path: str,
    options: dict[str, Any],
    status: int,
    code: str,
    observed: tuple[str, str],
) -> None:
    event, metric = observed
    alice = chat.user("alice")
    chat.socket(alice).emit("join", {"room": "lobby"}, callback=True)
    client = alice if who == "alice" else chat.app.test_client()
    before = refusal_counts(chat.app)
    with capture_logs() as logs:
        reply = client.open(path, method=method, **options)
    assert reply.status_code == status and error_of(reply) == code
    (line,) = events(logs)
    assert (line["event"], line["reason"]) == (event, code), line
    counted = moved(before, refusal_counts(chat.app))
    assert counted == {(metric, frozenset(counted_as(observed, code).items())): 1.0}, counted
    assert [e["status"] for e in logs if e["event"] == "http_request"] == [status]


def test_rate_limited_refusals_are_one_event_and_one_count(make_app: Any) -> None:
    limits = {"REGISTER_RATE_LIMIT": "1 per hour", "LOGIN_RATE_LIMIT_PER_ADDRESS": "2 per hour"}
    chat = InProcessChat(make_app(MESSAGE_RATE_LIMIT="1 per hour", **limits))
    alice = chat.user("alice")  # one registration and one login: both limits but one spent
    chat.socket(alice).emit("join", {"room": "lobby"}, callback=True)
    assert alice.post("/send", json={"room": "lobby", "text": "hi"}).status_code == 201
    for path, body, observed in (
        ("/register", creds("bob"), REGISTER),
        ("/login", creds("alice", "wrong!!!"), None),  # the last login the limit allows
        ("/login", creds("alice"), LOGIN),
        ("/send", {"room": "lobby", "text": "again"}, SEND),
    ):
        before = refusal_counts(chat.app)
        with capture_logs() as logs:
            reply = alice.post(path, json=body)
        if observed is None:
            continue
        assert reply.status_code == 429 and error_of(reply) == "rate_limited", path
        (line,) = events(logs)
        assert (line["event"], line["reason"]) == (observed[0], "rate_limited")
        labels = frozenset(counted_as(observed, "rate_limited").items())
        assert moved(before, refusal_counts(chat.app)) == {(observed[1], labels): 1.0}


def test_a_route_or_method_that_does_not_exist_is_no_refusal(chat: InProcessChat) -> None:
    client = chat.app.test_client()
    before = refusal_counts(chat.app)
    with capture_logs() as logs:
        assert client.get("/no/such/page").status_code == 404
        assert client.get("/send").status_code == 405
    assert events(logs) == [] and moved(before, refusal_counts(chat.app)) == {}
    assert (
        chat.metric("chat_http_requests_total", method="GET", route="unmatched", status="404")
        == 1.0
    )


# -- POST /logout -------------------------------------------------------------------------------
def test_logout_without_a_body_is_204(app: Flask, chat: InProcessChat) -> None:
    alice = chat.user("alice")
    with capture_logs() as logs:
        reply = alice.post("/logout")
    assert reply.status_code == 204 and reply.data == b""
    assert [e["event"] for e in events(logs)] == ["logout"]
    assert alice.get("/rooms").status_code == 401
    assert app.test_client().post("/logout").status_code == 204  # nobody logged in: still 204
    cross_site = chat.user("bob").post("/logout", headers=EVIL)
    assert cross_site.status_code == 400 and error_of(cross_site) == "csrf_failed"


# -- the registration limit counts what reaches the store -----------------------------------------
def test_registration_limit_counts_taken_names_not_input_refused_on_sight(make_app: Any) -> None:
    app = make_app(REGISTER_RATE_LIMIT="3 per hour")
    client = app.test_client()
    for _ in range(5):
        assert client.post("/register", json=creds("a b")).status_code == 400
        assert client.post("/register", json=creds("carol", "short")).status_code == 400
        assert (
            client.post("/register", data="{", content_type="application/json").status_code == 400
        )
    assert client.post("/register", json=creds("alice")).status_code == 201
    assert client.post("/register", json=creds("ALICE")).status_code == 409  # a probe: counted
    assert client.post("/register", json=creds("bob")).status_code == 201
    limited = client.post("/register", json=creds("carol"))
    assert limited.status_code == 429 and error_of(limited) == "rate_limited"
    assert 3500 <= int(limited.headers["Retry-After"]) <= 3600
    # Logging in is another limit: still open.
    assert client.post("/login", json=creds("alice")).status_code == 200
    metric = InProcessChat(app).metric
    assert metric("chat_registrations_failed_total", reason="rate_limited") == 1.0
    assert metric("chat_registrations_failed_total", reason="username_taken") == 1.0
    assert metric("chat_registrations_failed_total", reason="invalid_username") == 5.0
    assert metric("chat_registrations_total") == 2.0
