"""The contract's error codes and the exception that carries one from the domain to a door."""

from __future__ import annotations

from typing import Any, Final

# code -> HTTP status. Socket acks carry the same codes: {ok: false, error, message}. The first
# code of each status is the one an HTTP error of that status gets when no code was chosen
# (a 404 from routing, a 413 from Werkzeug's body limit).
STATUS: Final[dict[str, int]] = {
    "invalid_payload": 400,
    "invalid_username": 400,
    "weak_password": 400,
    "invalid_room": 400,
    "empty_message": 400,
    "message_too_long": 400,
    "csrf_failed": 400,
    "unauthorized": 401,
    "invalid_credentials": 401,
    "not_in_room": 403,
    "not_invited": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "username_taken": 409,
    "room_limit_reached": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "internal_error": 500,
    "not_ready": 503,
    "registration_closed": 503,
}
_CODE_OF_STATUS: Final[dict[int, str]] = {}
for _code, _status in STATUS.items():
    _CODE_OF_STATUS.setdefault(_status, _code)


def code_for_status(status: int) -> str:
    """The contract's code for an HTTP error that carries none of its own."""
    fallback = "invalid_payload" if status < 500 else "internal_error"
    return _CODE_OF_STATUS.get(status, fallback)


class ChatError(Exception):
    """A refusal with a contract code, a human message, and (for 429) when to retry."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def as_reply(self) -> dict[str, Any]:
        """The HTTP error body."""
        return {"error": self.code, "message": self.message}

    def as_ack(self) -> dict[str, Any]:
        """The Socket.IO refusal ack."""
        reply: dict[str, Any] = {"ok": False, "error": self.code, "message": self.message}
        if self.retry_after is not None:
            reply["retry_after"] = self.retry_after
        return reply
