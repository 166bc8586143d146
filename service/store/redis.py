"""The shared store for scale-out: every process of one chat keeps its state in one Redis.

It has `MemoryStore`'s semantics exactly (same limits, same eviction order, same results), so
one behavioural test suite runs against both. What lives where, under the prefix `P`
(`chat:` by default; `<room>`, `<user>`, `<token>` and `<id>` are the raw names):

| key | type | holds |
| --- | --- | --- |
| `P epoch` | string | the store's lifetime id, set once (`SET NX`) by whoever comes first |
| `P users` | hash | `casefold(username)` → JSON `[username, password_hash]` |
| `P session:<token>` | string | the username; the session's lifetime is the key's TTL |
| `P sessions:<user>` | list | the user's tokens, oldest first (the cap evicts from the left) |
| `P activity` | string | a counter: each join and each message takes the next value |
| `P rooms` | sorted set | every room that exists, scored by its last activity |
| `P room:<room>:seq` | string | the room's last message id (`INCR`: never reused) |
| `P room:<room>:history` | list | JSON messages, oldest first, trimmed to `history_limit` |
| `P room:<room>:members` | hash | user → how many of their connections are in the room |
| `P room:<room>:conns` | hash | JSON `[user, sid]` → id of the instance holding the connection |
| `P active` | set | rooms that have members (what `active_rooms` reads) |
| `P instance:<id>` | string | a live instance's heartbeat (JSON pid, host, start), with a TTL |
| `P instance:<id>:conns` | set | its memberships: JSON `[room, user, sid, conns field]` |
| `P instances` | set | ids of the instances that hold memberships (what reaping scans) |
| `P instance:<id>:reaped` | set | memberships others reaped from it (same JSON), with a TTL |
| `P cancelled:<attempt>` | string | a failed join attempt that must never take effect; with a TTL |
| `P private:<room>` | string | a private room's chosen name (it exists while this does) |
| `P access:<room>` | set | case-folded users who may enter the private room |
| `P list:<user>` | hash | direct conversations and private rooms: room → JSON `[kind, title]` |
| `P invites:<user>` | hash | the user's pending invitations: room → JSON `[name, by]` |

Everything is bounded as in memory: at most `max_rooms` rooms (each with `history_limit`
messages), `MAX_SESSIONS_PER_USER` sessions per user, sessions and heartbeats expire (the
token list lives as long as its longest session), memberships go with their connections.

Why Lua: a join touches the room index, maybe evicts another room (its history and sequence),
adds the connection to three structures and reads members and history; a message takes the
next id, appends and trims; a reap removes a dead instance's connections and reports each one.
Each must happen as one step for every process at once, or two processes could take the same
room place, interleave ids out of order in the history, or both report one reaped connection.
A Lua script runs atomically on the server in one round trip, with no WATCH/retry loops.

Scripts compute the room and instance keys from the prefix themselves (a room evicted to make
place is only known inside the script), so this store wants a single Redis (or a primary with
replicas / Sentinel), not Redis Cluster.

Values from users (message text) are JSON-encoded here in Python with `ensure_ascii`, so any
Python string the in-memory store accepts round-trips unchanged.

Processes that die without disconnecting: each instance has a random id; every membership
records it, and `heartbeat()` refreshes `P instance:<id>` with a TTL. `reap_dead_instances()`
(any instance, any number at once) removes the memberships of instances whose heartbeat key has
expired; popping them from the instance's set inside the script makes each removal reported once.

Calls that fail without an answer: a call that timed out may still run in Redis later (a Redis
frozen for a while runs the commands waiting in its sockets when it resumes), so its caller
cannot tell whether it happened. The chat retries leaves until one is answered, and cancels
failed joins; two records keep those retries exact:

- a leave of a connection that is gone says `removed=False`; `reaped=True` then tells one that
  another instance reaped (and reported) from one whose earlier leave ran unanswered (which
  nobody reported yet). Reaping records each membership it removes in
  `P instance:<id>:reaped`; the leave of that instance reads the record once.
- `join` takes an `attempt` id; `cancel_join` sets `P cancelled:<attempt>`, and a join finding
  it does nothing, so a join that runs after its cancellation cannot leave a half member.

Both expire (`LATE_COMMAND_TTL_S`): they only have to outlive commands still on the way, and
the reaped record of an instance that is gone for good.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
from typing import Any, Final, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from service.clock import utc_now_iso
from service.redispool import blocking_pool
from service.store.base import (
    Conversation,
    JoinCancelled,
    JoinResult,
    LeaveResult,
    Message,
    ReapedConnection,
    RoomLimitReached,
)
from service.store.memory import MAX_SESSIONS_PER_USER

HEARTBEAT_TTL_S: Final = 15.0  # the app refreshes every 5 s: three missed beats mean dead
REAP_BATCH: Final = 200  # memberships removed per script call (keeps each call short)
# How long a cancelled join attempt and a reaped membership are remembered: far longer than a
# command can wait in a socket or a retry can take, short enough to bound the keys.
LATE_COMMAND_TTL_S: Final = 3600

# Shared Lua helpers, prepended to the scripts that need them. ARGV[1] is always the prefix.
_LUA_COMMON = """
local P = ARGV[1]
local function room_key(room, part) return P .. 'room:' .. room .. ':' .. part end
local function members_of(room) return redis.call('HKEYS', room_key(room, 'members')) end
local function touch(room)
  redis.call('ZADD', P .. 'rooms', redis.call('INCR', P .. 'activity'), room)
end
-- Remove one connection (whose conns field is `field`) of `user` from `room`.
local function drop_connection(room, user, field, entry, instance)
  redis.call('HDEL', room_key(room, 'conns'), field)
  local iset = P .. 'instance:' .. instance .. ':conns'
  redis.call('SREM', iset, entry)
  if redis.call('SCARD', iset) == 0 then redis.call('SREM', P .. 'instances', instance) end
  if redis.call('HINCRBY', room_key(room, 'members'), user, -1) <= 0 then
    redis.call('HDEL', room_key(room, 'members'), user)
    if redis.call('EXISTS', room_key(room, 'members')) == 0 then
      redis.call('SREM', P .. 'active', room)
    end
  end
end
"""

# ARGV: prefix, room, user, sid, conns field, instance entry, instance id, max_rooms,
#       epoch candidate, heartbeat value, heartbeat ttl ms, attempt ('' for none)
# -> {epoch, added, members, history}, {epoch, -1} when every room place has members, or
#    {epoch, -2} when the attempt was cancelled.
_JOIN = (
    _LUA_COMMON
    + """
local room, user, sid, field, entry, instance = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local max_rooms, attempt = tonumber(ARGV[8]), ARGV[12]
redis.call('SET', P .. 'epoch', ARGV[9], 'NX')
local epoch = redis.call('GET', P .. 'epoch')
if attempt ~= '' and redis.call('EXISTS', P .. 'cancelled:' .. attempt) == 1 then
  return {epoch, -2}
end
if not redis.call('ZSCORE', P .. 'rooms', room) then
  if redis.call('ZCARD', P .. 'rooms') >= max_rooms then
    local idle = nil
    for _, name in ipairs(redis.call('ZRANGE', P .. 'rooms', 0, -1)) do
      if redis.call('EXISTS', room_key(name, 'members')) == 0 then idle = name; break end
    end
    if not idle then return {epoch, -1} end
    redis.call('DEL', room_key(idle, 'history'), room_key(idle, 'seq'),
               room_key(idle, 'members'), room_key(idle, 'conns'))
    redis.call('ZREM', P .. 'rooms', idle)
  end
end
touch(room)
local added = redis.call('HSETNX', room_key(room, 'conns'), field, instance)
if added == 1 then
  redis.call('HINCRBY', room_key(room, 'members'), user, 1)
  redis.call('SADD', P .. 'active', room)
  redis.call('SADD', P .. 'instance:' .. instance .. ':conns', entry)
  redis.call('SADD', P .. 'instances', instance)
  redis.call('SET', P .. 'instance:' .. instance, ARGV[10], 'PX', ARGV[11], 'NX')
  redis.call('SREM', P .. 'instance:' .. instance .. ':reaped', entry)  -- its own again
end
return {epoch, added, members_of(room), redis.call('LRANGE', room_key(room, 'history'), 0, -1)}
"""
)

# ARGV: prefix, room, user, conns field, instance entry, calling instance id
# -> {removed, members, reaped}
_LEAVE = (
    _LUA_COMMON
    + """
local room, user, field, entry, me = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local instance = false
if redis.call('ZSCORE', P .. 'rooms', room) then
  instance = redis.call('HGET', room_key(room, 'conns'), field)
end
if not instance then
  return {0, members_of(room), redis.call('SREM', P .. 'instance:' .. me .. ':reaped', entry)}
end
drop_connection(room, user, field, entry, instance)
return {1, members_of(room), 0}
"""
)

# ARGV: prefix, room, user, conns field, instance entry, attempt, fence ttl ms, remove (1/0)
_CANCEL_JOIN = (
    _LUA_COMMON
    + """
local room, user, field, entry = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
redis.call('SET', P .. 'cancelled:' .. ARGV[6], '1', 'PX', ARGV[7])
if ARGV[8] ~= '1' or not redis.call('ZSCORE', P .. 'rooms', room) then return 0 end
local instance = redis.call('HGET', room_key(room, 'conns'), field)
if not instance then return 0 end
drop_connection(room, user, field, entry, instance)
return 1
"""
)

# ARGV: prefix, room, the message's JSON after its id (`"room": …}`), history limit
# -> the stored message's JSON, or false when the room does not exist.
_APPEND = (
    _LUA_COMMON
    + """
local room, rest, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
if not redis.call('ZSCORE', P .. 'rooms', room) then return false end
touch(room)
local id = redis.call('INCR', room_key(room, 'seq'))
local message = '{"id": ' .. id .. ', ' .. rest
local history = room_key(room, 'history')
if limit <= 0 then
  redis.call('DEL', history)
else
  redis.call('RPUSH', history, message)
  redis.call('LTRIM', history, -limit, -1)
end
return message
"""
)

# ARGV: prefix, room, after, limit (-1: all) -> JSON messages with id > after, oldest first.
# Ids in a history list are consecutive, so the first one gives the index of any other.
_HISTORY = (
    _LUA_COMMON
    + """
local history = room_key(ARGV[2], 'history')
local after, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local first = redis.call('LINDEX', history, 0)
if not first then return {} end
local start = after - tonumber(string.match(first, '^{"id": (%d+),')) + 1
if start < 0 then start = 0 end
if limit == 0 then return {} end
local stop = -1
if limit > 0 then stop = start + limit - 1 end
return redis.call('LRANGE', history, start, stop)
"""
)

# ARGV: prefix -> {room, member count, room, member count, …} for rooms with members
_ACTIVE_ROOMS = (
    _LUA_COMMON
    + """
local found = {}
for _, room in ipairs(redis.call('SMEMBERS', P .. 'active')) do
  local n = redis.call('HLEN', room_key(room, 'members'))
  if n > 0 then found[#found + 1] = room; found[#found + 1] = n end
end
return found
"""
)

# ARGV: prefix, dead instance id, batch size, reaped record ttl ms
# -> {done, {{room, user, sid, members}, …}}: nothing when the instance is alive (again).
# Each removal is also recorded for the instance, in case it was only stalled: its own late
# leave of the connection must not report the `left` the reaper reports.
_REAP = (
    _LUA_COMMON
    + """
local instance, batch = ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', P .. 'instance:' .. instance) == 1 then return {1, {}} end
local iset = P .. 'instance:' .. instance .. ':conns'
local record = P .. 'instance:' .. instance .. ':reaped'
local reaped = {}
for _, entry in ipairs(redis.call('SPOP', iset, batch)) do
  local m = cjson.decode(entry)
  local room, user, sid, field = m[1], m[2], m[3], m[4]
  if redis.call('HGET', room_key(room, 'conns'), field) == instance then
    drop_connection(room, user, field, entry, instance)
    redis.call('SADD', record, entry)
    redis.call('PEXPIRE', record, ARGV[4])
    reaped[#reaped + 1] = {room, user, sid, members_of(room)}
  end
end
if redis.call('SCARD', iset) == 0 then
  redis.call('SREM', P .. 'instances', instance)
  return {1, reaped}
end
return {0, reaped}
"""
)

# ARGV: prefix, token, username, lifetime ms, per-user cap
_CREATE_SESSION = """
local P, token, user, ms, cap = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local tokens = P .. 'sessions:' .. user
for _, t in ipairs(redis.call('LRANGE', tokens, 0, -1)) do
  if redis.call('EXISTS', P .. 'session:' .. t) == 0 then redis.call('LREM', tokens, 0, t) end
end
while redis.call('LLEN', tokens) >= cap do
  redis.call('DEL', P .. 'session:' .. redis.call('LPOP', tokens))
end
if ms > 0 then
  redis.call('SET', P .. 'session:' .. token, user, 'PX', ms)
  redis.call('RPUSH', tokens, token)
  if redis.call('PTTL', tokens) < ms then redis.call('PEXPIRE', tokens, ms) end
end
"""

# ARGV: prefix, token
_DELETE_SESSION = """
local P, token = ARGV[1], ARGV[2]
local user = redis.call('GET', P .. 'session:' .. token)
if not user then return 0 end
redis.call('DEL', P .. 'session:' .. token)
redis.call('LREM', P .. 'sessions:' .. user, 0, token)
return 1
"""


# ARGV: prefix, user, room, JSON [kind, title], cap -> 1 listed (or already), 0 list full
_ADD_CONVERSATION = """
local key = ARGV[1] .. 'list:' .. ARGV[2]
if redis.call('HEXISTS', key, ARGV[3]) == 1 then return 1 end
if redis.call('HLEN', key) >= tonumber(ARGV[5]) then return 0 end
redis.call('HSET', key, ARGV[3], ARGV[4])
return 1
"""

# ARGV: prefix, room, user, JSON [name, by] -> 1 invited, 0 has access already
_INVITE = """
local P, room, user = ARGV[1], ARGV[2], ARGV[3]
if redis.call('SISMEMBER', P .. 'access:' .. room, user) == 1 then return 0 end
redis.call('HSET', P .. 'invites:' .. user, room, ARGV[4])
return 1
"""

# ARGV: prefix, room, user -> 1 may enter (access, or an invitation now turned into it), 0 not
_ADMIT = """
local P, room, user = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', P .. 'private:' .. room) == 0 then return 0 end
if redis.call('SISMEMBER', P .. 'access:' .. room, user) == 1 then return 1 end
local invitation = redis.call('HGET', P .. 'invites:' .. user, room)
if not invitation then return 0 end
redis.call('HDEL', P .. 'invites:' .. user, room)
redis.call('SADD', P .. 'access:' .. room, user)
local name = cjson.decode(invitation)[1]
redis.call('HSET', P .. 'list:' .. user, room, cjson.encode({'private', name}))
return 1
"""

# ARGV: prefix, user: drop the user's list and invitations, and the history of their direct
# conversations (opened while the name was nobody's).
_FORGET_CONVERSATIONS = """
local P, user = ARGV[1], ARGV[2]
local listed = redis.call('HGETALL', P .. 'list:' .. user)
for i = 1, #listed, 2 do
  if cjson.decode(listed[i + 1])[1] == 'direct' then
    redis.call('DEL', P .. 'room:' .. listed[i] .. ':history')
  end
end
redis.call('DEL', P .. 'list:' .. user, P .. 'invites:' .. user)
"""


def _message(raw: str) -> Message:
    value = json.loads(raw)
    return Message(value["id"], value["room"], value["user"], value["text"], value["ts"])


def _conns_field(user: str, sid: str) -> str:
    return json.dumps([user, sid])


def _instance_entry(room: str, user: str, sid: str) -> str:
    return json.dumps([room, user, sid, _conns_field(user, sid)])


class RedisStore:
    name = "redis"

    def __init__(
        self,
        uri: str,
        history_limit: int = 100,
        max_rooms: int = 1000,
        *,
        prefix: str = "chat:",
        heartbeat_ttl_s: float = HEARTBEAT_TTL_S,
    ) -> None:
        self.history_limit = history_limit
        self.max_rooms = max_rooms
        self.prefix = prefix
        self.instance_id = secrets.token_hex(8)
        self.heartbeat_ttl_ms = max(1, math.ceil(heartbeat_ttl_s * 1000))
        self._heartbeat_value = json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "started": utc_now_iso()}
        )
        # Timeouts so a vanished Redis fails a request (and /readyz) instead of hanging it;
        # one quick retry on a broken connection (a restarted Redis), none on a timeout, where
        # the command may have run and a message would be stored twice. URL options win.
        self._redis: redis.Redis = redis.Redis(
            connection_pool=blocking_pool(
                uri,
                decode_responses=True,
                socket_connect_timeout=2,
                socket_timeout=5,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1, (redis.ConnectionError,)),
            )
        )
        register = self._redis.register_script
        self._join = register(_JOIN)
        self._leave = register(_LEAVE)
        self._append = register(_APPEND)
        self._history = register(_HISTORY)
        self._active_rooms = register(_ACTIVE_ROOMS)
        self._reap = register(_REAP)
        self._cancel_join = register(_CANCEL_JOIN)
        self._create_session = register(_CREATE_SESSION)
        self._delete_session = register(_DELETE_SESSION)
        self._add_conversation = register(_ADD_CONVERSATION)
        self._invite = register(_INVITE)
        self._admit = register(_ADMIT)
        self._forget_conversations = register(_FORGET_CONVERSATIONS)

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # -- users ---------------------------------------------------------------------------------
    def add_user(self, username: str, password_hash: str) -> bool:
        value = json.dumps([username, password_hash])
        return bool(self._redis.hsetnx(self._key("users"), username.casefold(), value))

    def find_user(self, username: str) -> tuple[str, str] | None:
        raw = cast("str | None", self._redis.hget(self._key("users"), username.casefold()))
        if raw is None:
            return None
        name, password_hash = json.loads(raw)
        return str(name), str(password_hash)

    def user_count(self) -> int:
        return int(self._redis.hlen(self._key("users")))

    # -- sessions ------------------------------------------------------------------------------
    def create_session(self, token: str, username: str, lifetime_s: float) -> None:
        lifetime_ms = max(0, math.ceil(lifetime_s * 1000))
        self._create_session(
            args=[self.prefix, token, username, lifetime_ms, MAX_SESSIONS_PER_USER]
        )

    def session_user(self, token: str) -> str | None:
        return cast("str | None", self._redis.get(self._key("session", token)))

    def delete_session(self, token: str) -> None:
        self._delete_session(args=[self.prefix, token])

    # -- private conversations -----------------------------------------------------------------
    def add_conversation(self, user: str, conversation: Conversation, cap: int) -> bool:
        entry = json.dumps([conversation.kind, conversation.title])
        return bool(self._add_conversation(args=[self.prefix, user, conversation.room, entry, cap]))

    def create_private(self, room: str, name: str, creator: str) -> None:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key("private", room), name)
            pipe.sadd(self._key("access", room), creator)
            pipe.hset(self._key("list", creator), room, json.dumps(["private", name]))
            pipe.execute()

    def private_name(self, room: str) -> str | None:
        return cast("str | None", self._redis.get(self._key("private", room)))

    def has_access(self, room: str, user: str) -> bool:
        return bool(self._redis.sismember(self._key("access", room), user))

    def have_access(self, room: str, users: list[str]) -> list[bool]:
        key = self._key("access", room)
        with self._redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.sismember(key, user)
            return [bool(found) for found in pipe.execute()]

    def invite(self, room: str, user: str, invitation: Conversation) -> bool:
        entry = json.dumps([invitation.title, invitation.by])
        return bool(self._invite(args=[self.prefix, room, user, entry]))

    def admit(self, room: str, user: str) -> bool:
        return bool(self._admit(args=[self.prefix, room, user]))

    def revoke(self, room: str, user: str) -> None:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.srem(self._key("access", room), user)
            pipe.hdel(self._key("list", user), room)
            pipe.execute()

    def conversations(self, user: str) -> tuple[list[Conversation], list[Conversation]]:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._key("list", user))
            pipe.hgetall(self._key("invites", user))
            listed, invites = pipe.execute()
        conversations = []
        for room, raw in listed.items():
            kind, title = json.loads(raw)
            conversations.append(Conversation(room, str(kind), str(title)))
        invitations = []
        for room, raw in invites.items():
            name, by = json.loads(raw)
            invitations.append(Conversation(room, "private", str(name), str(by)))
        return conversations, invitations

    def forget_conversations(self, user: str) -> None:
        self._forget_conversations(args=[self.prefix, user])

    # -- rooms ---------------------------------------------------------------------------------
    def join(self, room: str, user: str, sid: str, attempt: str = "") -> JoinResult:
        reply: list[Any] = self._join(
            args=[
                self.prefix,
                room,
                user,
                sid,
                _conns_field(user, sid),
                _instance_entry(room, user, sid),
                self.instance_id,
                self.max_rooms,
                secrets.token_hex(6),
                self._heartbeat_value,
                self.heartbeat_ttl_ms,
                attempt,
            ]
        )
        if reply[1] == -1:
            raise RoomLimitReached
        if reply[1] == -2:
            raise JoinCancelled(attempt)
        return JoinResult(
            sorted(reply[2]), [_message(m) for m in reply[3]], reply[1] == 1, str(reply[0])
        )

    def leave(self, room: str, user: str, sid: str) -> LeaveResult:
        removed, members, reaped = self._leave(
            args=[
                self.prefix,
                room,
                user,
                _conns_field(user, sid),
                _instance_entry(room, user, sid),
                self.instance_id,
            ]
        )
        return LeaveResult(sorted(members), removed == 1, reaped == 1)

    def cancel_join(self, room: str, user: str, sid: str, attempt: str, *, remove: bool) -> None:
        self._cancel_join(
            args=[
                self.prefix,
                room,
                user,
                _conns_field(user, sid),
                _instance_entry(room, user, sid),
                attempt,
                LATE_COMMAND_TTL_S * 1000,
                1 if remove else 0,
            ]
        )

    def is_member(self, room: str, user: str) -> bool:
        return bool(self._redis.hexists(self._key("room", room, "members"), user))

    def append_message(self, room: str, user: str, text: str, ts: str) -> Message:
        rest = json.dumps({"room": room, "user": user, "text": text, "ts": ts})[1:]
        raw = self._append(args=[self.prefix, room, rest, self.history_limit])
        if raw is None:
            raise KeyError(room)  # as in memory: the sender is a member, so the room exists
        return _message(raw)

    def history(self, room: str, after: int = 0, limit: int | None = None) -> list[Message]:
        wanted = -1 if limit is None or limit < 0 else limit
        found = [_message(m) for m in self._history(args=[self.prefix, room, after, wanted])]
        found = [m for m in found if m.id > after]
        return found[:limit] if limit is not None else found

    def active_rooms(self) -> dict[str, int]:
        flat: list[Any] = self._active_rooms(args=[self.prefix])
        return {str(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    def ping(self) -> None:
        self._redis.ping()

    # -- liveness ------------------------------------------------------------------------------
    def heartbeat(self) -> None:
        self._redis.set(
            self._key("instance", self.instance_id), self._heartbeat_value, px=self.heartbeat_ttl_ms
        )

    def reap_dead_instances(self) -> list[ReapedConnection]:
        reaped: list[ReapedConnection] = []
        instances = cast("set[str]", self._redis.smembers(self._key("instances")))
        for instance in sorted(instances - {self.instance_id}):
            done = False
            while not done:
                finished, batch = self._reap(
                    args=[self.prefix, instance, REAP_BATCH, LATE_COMMAND_TTL_S * 1000]
                )
                done = finished == 1
                reaped.extend(
                    ReapedConnection(room, user, sid, sorted(members))
                    for room, user, sid, members in batch
                )
        return reaped
