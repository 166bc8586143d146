"""Registration, login and logout, with server-side sessions.

Passwords are hashed with Werkzeug (scrypt) in a real OS thread, never on the event loop.
A login for an unknown user verifies against a dummy hash of the same method, so it costs the
same time and gets the same reply as a wrong password: no user enumeration. Login attempts are
rate-limited per address and per username (known or not). A session is a random token in the
signed cookie that points at a server-side record; logout deletes the record, so a copied
cookie is worthless afterwards.

Registrations are rate-limited per address, and only the attempts that reach the store count:
a name or password refused on its form alone costs the server nothing and tells nothing, so it
spends none of the limit, while `username_taken` does (it answers whether a name exists: an
enumeration probe). Every refusal is one `registration_failed` or `login_failed` line, and
counted, a body that could not be read included.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, Final

from werkzeug.security import check_password_hash, generate_password_hash

from service.chat import LONE_SURROGATE, USERNAME_PATTERN
from service.errors import ChatError
from service.ratelimit import RateLimiter
from service.store import ChatStore
from service.telemetry.events import Telemetry

MIN_PASSWORD_LENGTH: Final = 8
MAX_PASSWORD_LENGTH: Final = 1024  # hashing a megabyte-long "password" is a cheap DoS
SESSION_TOKEN_KEY: Final = "token"  # noqa: S105 (where the Flask session keeps the token's name)


def credentials_from(payload: object) -> tuple[str, str]:
    """`payload` is the parsed body, or the refusal of a body that could not be read."""
    if isinstance(payload, ChatError):
        raise payload
    if not isinstance(payload, dict):
        raise ChatError("invalid_payload", "expected an object with 'username' and 'password'")
    username, password = payload.get("username"), payload.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise ChatError("invalid_payload", "'username' and 'password' must be strings")
    if LONE_SURROGATE.search(password):  # cannot be hashed: not Unicode text
        raise ChatError("invalid_payload", "'password' is not valid Unicode text")
    return username.strip(), password


class Accounts:
    def __init__(
        self,
        store: ChatStore,
        telemetry: Telemetry,
        limiter: RateLimiter,
        offload: Callable[..., Any],
        *,
        session_lifetime_s: float,
        max_users: int,
        login_limit_per_address: str,
        login_limit_per_user: str,
        register_limit: str,
    ) -> None:
        self.store = store
        self.telemetry = telemetry
        self.limiter = limiter
        self.offload = offload
        self.session_lifetime_s = session_lifetime_s
        self.max_users = max_users
        self.login_limit_per_address = login_limit_per_address
        self.login_limit_per_user = login_limit_per_user
        self.register_limit = register_limit
        self._dummy_hash: str | None = None

    def _hash(self, password: str) -> str:
        return self.offload(generate_password_hash, password)  # type: ignore[no-any-return]

    def _verify(self, password_hash: str, password: str) -> bool:
        return bool(self.offload(check_password_hash, password_hash, password))

    def dummy_hash(self) -> str:
        """A hash to verify against when the user does not exist (same cost, same reply)."""
        if self._dummy_hash is None:
            self._dummy_hash = self._hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    def register(self, payload: object, remote_addr: str) -> str:
        name: str | None = None
        try:
            name, password = credentials_from(payload)
            if not USERNAME_PATTERN.fullmatch(name):
                raise ChatError(
                    "invalid_username", "usernames are 3-32 letters, digits, '_', '.' or '-'"
                )
            if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
                raise ChatError(
                    "weak_password",
                    f"passwords are {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
                )
            # Counted from here: what follows asks the store (see the module's docstring).
            retry_after = self.limiter.hit(self.register_limit, "register", remote_addr)
            if retry_after is not None:
                raise ChatError("rate_limited", "too many registrations", retry_after)
            if self.store.user_count() >= self.max_users:
                raise ChatError("registration_closed", "this server takes no more users")
            if self.store.find_user(name) is not None:
                raise ChatError("username_taken", f"{name} is taken")
            password_hash = self._hash(password)
            if not self.store.add_user(name, password_hash):  # lost a race while hashing
                raise ChatError("username_taken", f"{name} is taken")
            # Conversations opened with the name, or invitations sent to it, before it was
            # anyone's are not the new account's (opening one tells nothing of who exists).
            self.store.forget_conversations(name.casefold())
        except ChatError as refusal:
            self.telemetry.registration_failed(_loggable(name), remote_addr, refusal.code)
            raise
        self.telemetry.user_registered(name)
        return name

    def login(self, payload: object, remote_addr: str) -> tuple[str, str]:
        """(username as registered, new session token), or a refusal."""
        name: str | None = None
        try:
            name, password = credentials_from(payload)
            retry_after = self.limiter.hit(
                self.login_limit_per_address, "login-address", remote_addr
            ) or self.limiter.hit(self.login_limit_per_user, "login-user", name.casefold())
            if retry_after is not None:
                raise ChatError("rate_limited", "too many login attempts", retry_after)
            found = self.store.find_user(name)
            password_hash = found[1] if found else self.dummy_hash()
            valid = self._verify(password_hash, password[:MAX_PASSWORD_LENGTH])
            if found is None or not valid or len(password) > MAX_PASSWORD_LENGTH:
                raise ChatError("invalid_credentials", "wrong username or password")
        except ChatError as refusal:
            self.telemetry.login_failed(_loggable(name), remote_addr, refusal.code)
            raise
        username = found[0]
        token = secrets.token_urlsafe(32)
        self.store.create_session(token, username, self.session_lifetime_s)
        self.telemetry.login_succeeded(username, remote_addr)
        return username, token

    def session_user(self, token: object) -> str | None:
        if not isinstance(token, str):
            return None
        return self.store.session_user(token)

    def logout(self, token: str, user: str) -> None:
        self.store.delete_session(token)
        self.telemetry.logout(user)


def _loggable(name: str | None) -> str | None:
    if name is None:
        return None
    return name if len(name) <= 64 else name[:64] + "…"
