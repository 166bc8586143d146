"""The store's interface and the values it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    room: str
    user: str
    text: str
    ts: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "room": self.room, "user": self.user, "text": self.text,
                "ts": self.ts}  # fmt: skip


@dataclass(frozen=True, slots=True)
class JoinResult:
    members: list[str]
    history: list[Message]
    added: bool  # the connection was not in the room before
    # The store's lifetime id, read with this join: when it changes, message ids started again
    # from 1 (the store started afresh), so a client resets instead of deduplicating.
    epoch: str


@dataclass(frozen=True, slots=True)
class LeaveResult:
    members: list[str]
    removed: bool  # the connection was in the room
    # Not in the room because another process reaped it (this one's heartbeat had expired) and
    # reported its `left` already. Reported once: a second leave finds no record.
    reaped: bool = False


@dataclass(frozen=True, slots=True)
class ReapedConnection:
    """A connection of a process that died without disconnecting, removed from a room."""

    room: str
    user: str
    sid: str
    members: list[str]  # the room's members after the removal


class RoomLimitReached(Exception):
    """Every room place is taken by a room with members."""


class JoinCancelled(RuntimeError):
    """A join ran after `cancel_join` fenced its attempt off, so it did nothing. Only a call its
    caller had already given up on can meet this."""


@dataclass(frozen=True, slots=True)
class Conversation:
    """A direct conversation or a private room in a user's list (`kind` `direct` / `private`).

    `title` is the other user's name for a direct one, the room's chosen name for a private
    one; `by` is who invited the user (invitations only)."""

    room: str
    kind: str
    title: str
    by: str = ""

    def as_dict(self) -> dict[str, Any]:
        if self.kind == "direct":
            return {"room": self.room, "user": self.title}
        if self.by:
            return {"room": self.room, "name": self.title, "by": self.by}
        return {"room": self.room, "name": self.title}


class ConversationStore(Protocol):
    """Who may reach the private conversations, and each user's list of them. Users are named
    by their case-folded key here ("alice"), so an invitation finds its user in any case."""

    def add_conversation(self, user: str, conversation: Conversation, cap: int) -> bool:
        """Put `conversation` in `user`'s list (again: no change). False when the list holds
        `cap` others already."""
        ...

    def create_private(self, room: str, name: str, creator: str) -> None: ...
    def private_name(self, room: str) -> str | None: ...
    def has_access(self, room: str, user: str) -> bool: ...
    def have_access(self, room: str, users: list[str]) -> list[bool]:
        """`has_access` for each of `users`, in one step."""
        ...

    def invite(self, room: str, user: str, invitation: Conversation) -> bool:
        """A pending invitation; False when `user` has access already (nothing changes)."""
        ...

    def admit(self, room: str, user: str) -> bool:
        """`user` may enter the private `room`: they have access, or an invitation, which this
        turns into access (the invitation goes, the room joins their list). False otherwise."""
        ...

    def revoke(self, room: str, user: str) -> None:
        """`user` left the private `room`: no more access, out of their list."""
        ...

    def conversations(self, user: str) -> tuple[list[Conversation], list[Conversation]]:
        """`user`'s direct conversations and private rooms, and their pending invitations."""
        ...

    def forget_conversations(self, user: str) -> None:
        """A name was just registered: what was opened with it or sent to it before it existed
        (direct conversations, invitations) is not the new account's to read."""
        ...


class ChatStore(ConversationStore, Protocol):
    name: str

    # users (keys are case-folded: "Alice" and "alice" are one account)
    def add_user(self, username: str, password_hash: str) -> bool: ...
    def find_user(self, username: str) -> tuple[str, str] | None: ...
    def user_count(self) -> int: ...

    # server-side sessions
    def create_session(self, token: str, username: str, lifetime_s: float) -> None: ...
    def session_user(self, token: str) -> str | None: ...
    def delete_session(self, token: str) -> None: ...

    # rooms, members and messages
    def join(self, room: str, user: str, sid: str, attempt: str = "") -> JoinResult: ...
    def cancel_join(self, room: str, user: str, sid: str, attempt: str, *, remove: bool) -> None:
        """A `join` called with `attempt` failed, so its outcome is unknown (a store that timed
        out may still run it later). After this returns the attempt never takes effect, and with
        `remove` the connection is out of the room, whichever call put it there."""
        ...

    def leave(self, room: str, user: str, sid: str) -> LeaveResult: ...
    def is_member(self, room: str, user: str) -> bool: ...
    def append_message(self, room: str, user: str, text: str, ts: str) -> Message: ...
    def history(self, room: str, after: int = 0, limit: int | None = None) -> list[Message]: ...
    def active_rooms(self) -> dict[str, int]: ...
    def ping(self) -> None: ...

    # liveness of the processes sharing the store (no-ops for a store only one process uses)
    def heartbeat(self) -> None: ...
    def reap_dead_instances(self) -> list[ReapedConnection]: ...
