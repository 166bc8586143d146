"""The embedded default: everything in this process's memory, bounded.

Memory stays bounded: each room keeps its last `history_limit` messages, at most `max_rooms`
rooms exist (an idle room with no members is evicted, oldest activity first, to make place),
each user keeps at most `MAX_SESSIONS_PER_USER` sessions, and expired sessions are swept.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from service.store.base import (
    Conversation,
    JoinResult,
    LeaveResult,
    Message,
    ReapedConnection,
    RoomLimitReached,
)

MAX_SESSIONS_PER_USER = 20


@dataclass
class _Room:
    history: deque[Message]
    last_id: int = 0
    connections: dict[str, set[str]] = field(default_factory=dict)  # user -> sids

    def members(self) -> list[str]:
        return sorted(self.connections)


class MemoryStore:
    name = "memory"

    def __init__(self, history_limit: int = 100, max_rooms: int = 1000) -> None:
        self.history_limit = history_limit
        self.max_rooms = max_rooms
        self._epoch = uuid.uuid4().hex[:12]
        self._lock = threading.RLock()
        self._users: dict[str, tuple[str, str]] = {}  # folded -> (username, hash)
        self._sessions: dict[str, tuple[str, float]] = {}  # token -> (username, expiry)
        self._sessions_of: dict[str, list[str]] = {}  # username -> tokens, oldest first
        self._rooms: OrderedDict[str, _Room] = OrderedDict()  # least recently active first
        # Private conversations, by case-folded user key: apart from the rooms, so evicting an
        # idle room's history never opens it to anyone.
        self._private_names: dict[str, str] = {}  # private room -> its chosen name
        self._access: dict[str, set[str]] = {}  # private room -> users who may enter it
        self._lists: dict[str, dict[str, Conversation]] = {}  # user -> room -> conversation
        self._invitations: dict[str, dict[str, Conversation]] = {}  # user -> room -> invitation

    # -- users ---------------------------------------------------------------------------------
    def add_user(self, username: str, password_hash: str) -> bool:
        with self._lock:
            key = username.casefold()
            if key in self._users:
                return False
            self._users[key] = (username, password_hash)
            return True

    def find_user(self, username: str) -> tuple[str, str] | None:
        with self._lock:
            return self._users.get(username.casefold())

    def user_count(self) -> int:
        return len(self._users)

    # -- sessions ------------------------------------------------------------------------------
    def create_session(self, token: str, username: str, lifetime_s: float) -> None:
        now = time.monotonic()
        with self._lock:
            tokens = self._sessions_of.setdefault(username, [])
            tokens[:] = [t for t in tokens if self._live(t, now)]
            while len(tokens) >= MAX_SESSIONS_PER_USER:
                self._sessions.pop(tokens.pop(0), None)
            tokens.append(token)
            self._sessions[token] = (username, now + lifetime_s)

    def _live(self, token: str, now: float) -> bool:
        entry = self._sessions.get(token)
        if entry is None:
            return False
        if entry[1] <= now:
            del self._sessions[token]
            return False
        return True

    def session_user(self, token: str) -> str | None:
        with self._lock:
            if not self._live(token, time.monotonic()):
                return None
            return self._sessions[token][0]

    def delete_session(self, token: str) -> None:
        with self._lock:
            entry = self._sessions.pop(token, None)
            if entry is not None:
                tokens = self._sessions_of.get(entry[0], [])
                if token in tokens:
                    tokens.remove(token)
                if not tokens:
                    self._sessions_of.pop(entry[0], None)

    # -- private conversations -----------------------------------------------------------------
    def add_conversation(self, user: str, conversation: Conversation, cap: int) -> bool:
        with self._lock:
            listed = self._lists.setdefault(user, {})
            if conversation.room not in listed and len(listed) >= cap:
                return False
            listed.setdefault(conversation.room, conversation)
            return True

    def create_private(self, room: str, name: str, creator: str) -> None:
        with self._lock:
            self._private_names[room] = name
            self._access[room] = {creator}
            self._lists.setdefault(creator, {})[room] = Conversation(room, "private", name)

    def private_name(self, room: str) -> str | None:
        with self._lock:
            return self._private_names.get(room)

    def has_access(self, room: str, user: str) -> bool:
        with self._lock:
            return user in self._access.get(room, ())

    def have_access(self, room: str, users: list[str]) -> list[bool]:
        with self._lock:
            allowed = self._access.get(room, set())
            return [user in allowed for user in users]

    def invite(self, room: str, user: str, invitation: Conversation) -> bool:
        with self._lock:
            if user in self._access.get(room, ()):
                return False
            self._invitations.setdefault(user, {})[room] = invitation
            return True

    def admit(self, room: str, user: str) -> bool:
        with self._lock:
            allowed = self._access.get(room)
            if allowed is None:
                return False
            if user in allowed:
                return True
            invitation = self._invitations.get(user, {}).pop(room, None)
            if invitation is None:
                return False
            allowed.add(user)
            self._lists.setdefault(user, {})[room] = Conversation(room, "private", invitation.title)
            return True

    def revoke(self, room: str, user: str) -> None:
        with self._lock:
            self._access.get(room, set()).discard(user)
            self._lists.get(user, {}).pop(room, None)

    def conversations(self, user: str) -> tuple[list[Conversation], list[Conversation]]:
        with self._lock:
            return (
                list(self._lists.get(user, {}).values()),
                list(self._invitations.get(user, {}).values()),
            )

    def forget_conversations(self, user: str) -> None:
        with self._lock:
            self._invitations.pop(user, None)
            for room, conversation in self._lists.pop(user, {}).items():
                state = self._rooms.get(room)
                if conversation.kind == "direct" and state is not None:
                    state.history.clear()

    # -- rooms ---------------------------------------------------------------------------------
    def _room_for_join(self, name: str) -> _Room:
        room = self._rooms.get(name)
        if room is not None:
            self._rooms.move_to_end(name)
            return room
        if len(self._rooms) >= self.max_rooms:
            idle = next((n for n, r in self._rooms.items() if not r.connections), None)
            if idle is None:
                raise RoomLimitReached
            del self._rooms[idle]
        room = self._rooms[name] = _Room(history=deque(maxlen=self.history_limit))
        return room

    def join(self, room: str, user: str, sid: str, attempt: str = "") -> JoinResult:
        # `attempt` matters to a store whose calls can fail after they ran; these never do.
        with self._lock:
            state = self._room_for_join(room)
            sids = state.connections.setdefault(user, set())
            added = sid not in sids
            sids.add(sid)
            return JoinResult(state.members(), list(state.history), added, self._epoch)

    def leave(self, room: str, user: str, sid: str) -> LeaveResult:
        with self._lock:
            state = self._rooms.get(room)
            sids = state.connections.get(user) if state else None
            if state is None or sids is None or sid not in sids:
                return LeaveResult(state.members() if state else [], False)
            sids.discard(sid)
            if not sids:
                del state.connections[user]
            return LeaveResult(state.members(), True)

    def cancel_join(self, room: str, user: str, sid: str, attempt: str, *, remove: bool) -> None:
        if remove:
            self.leave(room, user, sid)

    def is_member(self, room: str, user: str) -> bool:
        with self._lock:
            state = self._rooms.get(room)
            return state is not None and user in state.connections

    def append_message(self, room: str, user: str, text: str, ts: str) -> Message:
        with self._lock:
            state = self._rooms[room]  # the sender is a member, so the room exists
            self._rooms.move_to_end(room)
            state.last_id += 1
            message = Message(state.last_id, room, user, text, ts)
            state.history.append(message)
            return message

    def history(self, room: str, after: int = 0, limit: int | None = None) -> list[Message]:
        with self._lock:
            state = self._rooms.get(room)
            if state is None:
                return []
            found = [m for m in state.history if m.id > after]
        return found[:limit] if limit is not None else found

    def active_rooms(self) -> dict[str, int]:
        with self._lock:
            return {n: len(r.connections) for n, r in self._rooms.items() if r.connections}

    def ping(self) -> None:
        return None

    def heartbeat(self) -> None:
        return None

    def reap_dead_instances(self) -> list[ReapedConnection]:
        return []  # one process holds every connection: none can be orphaned
