"""Browser-facing protections: CSRF tokens for form posts and strict response headers.

JSON requests need no CSRF token: a cross-site page cannot send `Content-Type:
application/json` without a CORS preflight, which this service never grants. Form posts (the
pages' no-JavaScript path) must carry the session's `csrf_token`. Anything else that writes is
refused as `unsupported_media_type`, and so is a write whose `Origin` is another site.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from flask import Response, request, session
from werkzeug.middleware.proxy_fix import ProxyFix

from service.errors import ChatError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

CSRF_SESSION_KEY: Final = "csrf"
FORM_TYPES: Final = ("application/x-www-form-urlencoded", "multipart/form-data")
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORWARDED_PREFIXES: Final = ("HTTP_X_FORWARDED_", "HTTP_FORWARDED")

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def csrf_token() -> str:
    """The session's CSRF token, made on first use."""
    token = session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_SESSION_KEY] = token
    return token


def check_request_origin() -> None:
    """Refuse a writing request that is neither JSON nor a form with the right token."""
    if request.method not in UNSAFE_METHODS:
        return
    # Only the host is compared, not the scheme: behind a proxy that ends TLS the page is https
    # while the request that reaches us is http. Behind `CHAT_TRUSTED_PROXIES`, Werkzeug's
    # ProxyFix has already put the forwarded host in `request.host`; without trusted proxies an
    # `X-Forwarded-Host` is anybody's word, and is not looked at.
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise ChatError("csrf_failed", "cross-origin requests are refused")
    if request.is_json:
        return
    if request.mimetype in FORM_TYPES:
        sent = request.form.get("csrf_token", "")
        expected = session.get(CSRF_SESSION_KEY)
        # As bytes: compare_digest refuses str with non-ASCII characters, which anyone can send.
        if isinstance(expected, str) and hmac.compare_digest(
            sent.encode("utf-8", "surrogatepass"), expected.encode()
        ):
            return
        raise ChatError("csrf_failed", "the form's CSRF token is missing or stale; reload")
    raise ChatError("unsupported_media_type", "send JSON (Content-Type: application/json)")


def forwarded_headers_rewriter(proxies: int) -> Callable[[WSGIEnvironment], None]:
    """What the service makes of `X-Forwarded-*` and `Forwarded`, applied to a request's
    environ before Flask and Engine.IO see it (both doors see the same client address and
    host):

    - with `proxies` trusted proxies in front, Werkzeug's `ProxyFix` reading of them (client
      address, scheme, host), run on the environ alone;
    - with none, they are anybody's word: dropped, so neither Flask nor Engine.IO (whose
      origin check reads `X-Forwarded-Host`) gets to see them.
    """
    if not proxies:
        return drop_forwarded_headers
    fix = ProxyFix(_environ_only, x_for=proxies, x_proto=proxies, x_host=proxies)

    def read_forwarded_headers(environ: WSGIEnvironment) -> None:
        fix(environ, _no_reply)  # it rewrites `environ` in place, then calls `_environ_only`

    return read_forwarded_headers


def drop_forwarded_headers(environ: WSGIEnvironment) -> None:
    for key in [k for k in environ if k.startswith(FORWARDED_PREFIXES)]:
        del environ[key]


def _environ_only(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    return []


def _no_reply(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], object]:
    raise AssertionError("ProxyFix does not reply")  # pragma: no cover


SECURITY_HEADERS: Final = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)


def add_security_headers(response: Response) -> Response:
    # `name not in headers`, not `headers.setdefault`: Werkzeug's setdefault finds a missing
    # header by raising and catching a BadRequestKeyError, a twentieth of a small request.
    headers = response.headers
    for name, value in SECURITY_HEADERS:
        if name not in headers:
            headers[name] = value
    if response.mimetype == "text/html" and "Cache-Control" not in headers:
        headers["Cache-Control"] = "no-store"
    return response
