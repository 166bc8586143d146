"""The HTTP door: pages, the JSON API, health and metrics.

Routes parse the body (JSON, or a form carrying its CSRF token), find the logged-in user from
the server-side session and hand over to `accounts` or `chat`. Every reply to a request is
observed once, in `after_request`: an `http_request` log line and its metrics.

Every refusal is also one event with its count, whatever refused it: on `/register`,
`/login` and `/send` the route's own (`registration_failed`, `login_failed`,
`message_rejected`), a body that cannot be read included; anywhere else, and before any route
(CSRF, body type, size), `request_rejected`. A path or method that does not exist is no
refusal: its `http_request` line (route `unmatched`) says it.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as TEXT_FORMAT
from prometheus_client.exposition import choose_encoder
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from service.accounts import MIN_PASSWORD_LENGTH, SESSION_TOKEN_KEY, Accounts
from service.chat import ChatService
from service.errors import ChatError, code_for_status
from service.extension import parts_of
from service.inline import inline
from service.security import (
    FORM_TYPES,
    SECURITY_HEADERS,
    add_security_headers,
    check_request_origin,
    csrf_token,
)
from service.telemetry.events import Telemetry
from service.telemetry.metrics import UNMATCHED_ROUTE, RequestRejection, Source

bp = Blueprint("chat", __name__)

# Routes whose refusals the domain observes as their own events (the rest: `request_rejected`).
ROUTES_WITH_REFUSAL_EVENTS = frozenset({"chat.register", "chat.login", "chat.send"})


def accounts() -> Accounts:
    return parts_of().accounts


def chat() -> ChatService:
    return parts_of().chat


def telemetry() -> Telemetry:
    return parts_of().telemetry


def payload() -> object:
    """The request body as data: parsed JSON, or the form's fields."""
    if request.is_json:
        try:
            body = request.get_json(silent=True)
        except RecursionError:  # nested deeper than the parser recurses: not a chat payload
            body = None
        except RequestEntityTooLarge:
            raise ChatError("payload_too_large", "the body is too large") from None
        except HTTPException:
            body = None
        if body is None:
            raise ChatError("invalid_payload", "the body is not valid JSON")
        return body
    return request.form.to_dict()


def payload_or_refusal() -> object:
    """The body, or the refusal of a body that cannot be read, for the domain to refuse (and
    observe) like any other payload that is not the documented shape."""
    try:
        return payload()
    except ChatError as refusal:
        return refusal


def is_form() -> bool:
    """A form post (the pages without JavaScript): answered with a redirect, not JSON."""
    return request.mimetype in FORM_TYPES


def has_body() -> bool:
    """The request carries a body (a length above 0, or one sent in chunks)."""
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    return chunked or bool(request.content_length)


def remote_addr() -> str:
    return request.remote_addr or ""


def current_user() -> str | None:
    user: str | None = g.get("user")
    return user


def require_user() -> str:
    user = current_user()
    if user is None:
        raise ChatError("unauthorized", "log in first")
    return user


# -- pages ------------------------------------------------------------------------------------
@bp.get("/")
def index() -> Any:
    user = current_user()
    if user is None:
        return redirect(url_for("chat.login_page"))
    return render_template(
        "chat.html",
        username=user,
        max_message_length=parts_of().settings.max_message_length,
        history_limit=parts_of().settings.history_limit,
        max_rooms=parts_of().settings.max_rooms_per_connection,
    )


@bp.get("/login")
def login_page() -> Any:
    return render_template(
        "login.html", csrf_token=csrf_token(), min_password_length=MIN_PASSWORD_LENGTH
    )


# -- accounts ---------------------------------------------------------------------------------
@bp.post("/register")
def register() -> Any:
    username = accounts().register(payload_or_refusal(), remote_addr())
    if is_form():
        return redirect(url_for("chat.login_page"), 303)
    return jsonify(username=username), 201


@bp.post("/login")
def login() -> Any:
    username, token = accounts().login(payload_or_refusal(), remote_addr())
    session.clear()  # a fresh session: no fixation, a new CSRF token
    session[SESSION_TOKEN_KEY] = token
    session.permanent = True
    if is_form():
        return redirect(url_for("chat.index"), 303)
    return jsonify(username=username)


@bp.post("/logout")
def logout() -> Any:
    token = session.get(SESSION_TOKEN_KEY)
    user = current_user()
    if user is not None and isinstance(token, str):
        accounts().logout(token, user)
        chat().end_session(token)
    session.clear()
    if is_form():
        return redirect(url_for("chat.login_page"), 303)
    return Response(status=204)


# -- chat -------------------------------------------------------------------------------------
@bp.post("/send")
def send() -> Any:
    user = current_user()
    if user is None:
        telemetry().message_rejected(None, None, Source.HTTP, "unauthorized")
        raise ChatError("unauthorized", "log in first")
    message = chat().post_message(user, payload_or_refusal(), Source.HTTP)
    if is_form():
        return redirect(url_for("chat.index"), 303)
    return jsonify(message.as_dict()), 201


@bp.get("/rooms")
def rooms() -> Any:
    require_user()
    return jsonify(chat().rooms())


@bp.get("/rooms/<room>/messages")
def room_messages(room: str) -> Any:
    user = require_user()
    after = _int_arg("after", 0)
    limit = _int_arg("limit", None)
    messages = chat().history(user, room, after=after, limit=limit)
    return jsonify([m.as_dict() for m in messages])


@bp.get("/conversations")
def conversations() -> Any:
    """The user's direct conversations, private rooms and pending invitations."""
    listed = chat().conversation_list(require_user())
    del listed["ok"]
    return jsonify(listed)


@bp.post("/dm")
def open_dm() -> Any:
    reply = chat().open_direct(require_user(), payload(), Source.HTTP)
    del reply["ok"]
    return jsonify(reply), 201


@bp.post("/private")
def create_private() -> Any:
    reply = chat().create_private(require_user(), payload(), Source.HTTP)
    del reply["ok"]
    return jsonify(reply), 201


@bp.post("/invite")
def invite() -> Any:
    reply = chat().invite(require_user(), payload(), Source.HTTP)
    del reply["ok"]
    return jsonify(reply), 201


def _int_arg(name: str, default: int | None) -> Any:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 18:
        raise ChatError("invalid_payload", f"'{name}' must be a non-negative integer")
    return int(raw)


# -- operations -------------------------------------------------------------------------------
@bp.get("/healthz")
def healthz() -> Any:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Any:
    checks = parts_of().readiness.checks()
    down = [name for name, state in checks.items() if state not in ("ok", "disabled")]
    if down:
        body = {"error": "not_ready", "message": f"unreachable: {', '.join(down)}", **checks}
        return jsonify(body), 503
    return jsonify(status="ok", **checks)


@bp.get("/metrics")
def metrics() -> Any:
    """Prometheus exposition; with `CHAT_METRICS_TOKEN` set, only for `Authorization: Bearer`."""
    token = parts_of().settings.metrics_token
    if token is not None and not bearer_matches(token):
        telemetry().request_rejected(
            request.method, request.path, remote_addr(), RequestRejection.UNAUTHORIZED
        )
        response = jsonify(error="unauthorized", message="/metrics needs its bearer token")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    metrics = telemetry().metrics
    accept = request.headers.get("Accept", "")
    if wants_text_format(accept):
        return Response(metrics.exposition.render(), headers={"Content-Type": TEXT_FORMAT})
    encoder, content_type = choose_encoder(accept)
    return Response(encoder(metrics.registry), headers={"Content-Type": content_type})


def bearer_matches(token: str, authorization: str | None = None) -> bool:
    header = request.headers.get("Authorization", "") if authorization is None else authorization
    scheme, _, sent = header.partition(" ")
    # As bytes: compare_digest refuses str with non-ASCII characters, which anyone can send.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        sent.strip().encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
    )


class FrontDoor:
    """The service's one WSGI layer in front of Flask and Socket.IO.

    It reads or drops the forwarded headers (`security.forwarded_headers_rewriter`), then
    answers a scrape of `/metrics` itself (`ScrapeFastPath`); anything else goes on to
    Flask-SocketIO's middleware and Flask. One layer, not one per job: every idle WebSocket
    connection keeps a green thread parked under all of them (see `service.inline`).
    """

    def __init__(
        self, app: Any, rewrite: Callable[[dict[str, Any]], None], scrape: ScrapeFastPath
    ) -> None:
        self.app = inline(app)
        self.rewrite = rewrite
        self.scrape = scrape

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.rewrite(environ)
        if environ.get("PATH_INFO") == "/metrics":
            reply = self.scrape.answer(environ, start_response)
            if reply is not None:
                return reply
        return self.app(environ, start_response)


class ScrapeFastPath:
    """A scrape of `/metrics` in the text format, answered below Flask.

    Through Flask a request costs more CPU than the render itself (the request context, the
    session cookie, URL matching, the hooks): about 1 ms more on the event loop, while every
    delivery waits. A plain `GET /metrics` as Prometheus sends it (the text format acceptable,
    the bearer token right when one is set) is answered here with what the route answers: the
    same body, `Content-Type` and security headers, and the same `http_request` line and
    metrics. Anything else (a wrong or missing token, OpenMetrics only, `HEAD`, another
    method) is left to the route, which refuses or negotiates as before. `FrontDoor` asks it
    after the forwarded headers are read, so `REMOTE_ADDR` is the client's address exactly as
    the route sees it.
    """

    def __init__(self, telemetry: Telemetry, token: str | None) -> None:
        self.telemetry = telemetry
        self.token = token

    def answer(self, environ: dict[str, Any], start_response: Any) -> list[bytes] | None:
        if environ.get("REQUEST_METHOD") != "GET":
            return None
        started = time.perf_counter()
        if self.token is not None and not bearer_matches(
            self.token, environ.get("HTTP_AUTHORIZATION", "")
        ):
            return None
        if not wants_text_format(environ.get("HTTP_ACCEPT", "")):
            return None
        body = self.telemetry.metrics.exposition.render()
        start_response(
            "200 OK",
            [("Content-Type", TEXT_FORMAT), ("Content-Length", str(len(body))), *SECURITY_HEADERS],
        )
        self.telemetry.http_request(
            method="GET",
            path="/metrics",
            route="/metrics",
            status=200,
            duration_s=time.perf_counter() - started,
            remote_addr=environ.get("REMOTE_ADDR") or "",
        )
        return [body]


def wants_text_format(accept: str) -> bool:
    """The text format whenever the scraper takes it (Prometheus lists it after OpenMetrics):
    it is rendered by the cached renderer, a third of the time on the event loop. OpenMetrics
    only for a client that accepts nothing else."""
    return "text/plain" in accept or "*/*" in accept or "openmetrics" not in accept


# -- hooks ------------------------------------------------------------------------------------
def install_http(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.before_request
    def start_request() -> None:
        g.started = time.perf_counter()
        g.user = accounts().session_user(session.get(SESSION_TOKEN_KEY))
        try:
            check_request_origin()
        except ChatError as refusal:
            # A write without a body has no type to check (`POST /logout` with nothing in it);
            # the Origin check, which comes first, has passed when the type is what failed.
            if refusal.code != "unsupported_media_type" or has_body():
                raise
        g.screened = True  # from here on, a refusal is the route's

    @app.after_request
    def finish_request(response: Response) -> Response:
        add_security_headers(response)
        rule = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
        telemetry().http_request(
            method=request.method,
            path=request.path,
            route=rule,
            status=response.status_code,
            duration_s=time.perf_counter() - g.get("started", time.perf_counter()),
            remote_addr=remote_addr(),
        )
        return response

    @app.errorhandler(ChatError)
    def chat_error(error: ChatError) -> Any:
        observed = error.code == "not_invited" and g.get("screened")  # `access_refused`
        if not observed and (
            not g.get("screened") or request.endpoint not in ROUTES_WITH_REFUSAL_EVENTS
        ):
            telemetry().request_rejected(request.method, request.path, remote_addr(), error.code)
        response = jsonify(error.as_reply())
        response.status_code = error.status
        if error.retry_after is not None:
            response.headers["Retry-After"] = str(int(error.retry_after))
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        status = error.code or 500
        code = code_for_status(status)
        # A body refused before a route (too large, a form that does not parse) is a refusal;
        # a path or method that does not exist is not (its `http_request` line says it).
        if status < 500 and not isinstance(error, NotFound | MethodNotAllowed):
            telemetry().request_rejected(request.method, request.path, remote_addr(), code)
        response = jsonify(error=code, message=error.description or error.name)
        response.status_code = status
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Any:
        telemetry().unhandled_error(f"http:{request.method} {request.path}")
        response = jsonify(error="internal_error", message="the server failed; try again")
        response.status_code = 500
        return response
