"""Browser-facing protections: CSRF tokens for form posts and strict response headers.

JSON requests need no CSRF token: a cross-site page cannot send `Content-Type:
application/json` without a CORS preflight, which this service never grants. Form posts (the
pages' no-JavaScript path) must carry the session's `csrf_token`. Anything else that writes is
refused as `unsupported_media_type`, and so is a write whose `Origin` is another site.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Final
from urllib.parse import urlsplit

from flask import Response, request, session

from service.errors import ChatError

CSRF_SESSION_KEY: Final = "csrf"
FORM_TYPES: Final = ("application/x-www-form-urlencoded", "multipart/form-data")
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})

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
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc not in own_hosts():
        raise ChatError("csrf_failed", "cross-origin requests are refused")
    if request.is_json:
        return
    if request.mimetype in FORM_TYPES:
        sent = request.form.get("csrf_token", "")
        expected = session.get(CSRF_SESSION_KEY)
        if isinstance(expected, str) and hmac.compare_digest(sent, expected):
            return
        raise ChatError("csrf_failed", "the form's CSRF token is missing or stale; reload")
    raise ChatError("unsupported_media_type", "send JSON (Content-Type: application/json)")


def own_hosts() -> set[str]:
    """The host names this request may come from: its Host, or what a proxy says it forwarded.

    Only the host is compared, not the scheme: behind a proxy that ends TLS the page is https
    while the request that reaches us is http.
    """
    hosts = {request.host}
    forwarded = request.headers.get("X-Forwarded-Host")
    if forwarded:
        hosts.add(forwarded.split(",")[0].strip())
    return hosts


def add_security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    if response.mimetype == "text/html":
        headers.setdefault("Cache-Control", "no-store")
    return response
