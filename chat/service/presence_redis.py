"""Presence for many nodes on one Redis, node leases, and the Redis PUBLISH bridge.

Theory of operation
-------------------

- **Usernames**: the hash ``<prefix>sessions`` maps each logged-in username to
  ``"<node> <session id>"``. A login runs :data:`CLAIM` (one Lua script, so two nodes cannot
  both win): it refuses when another *live* node holds the name.
- **Membership**: the set ``<prefix>members:<channel>``; each node also records what it added
  (``<prefix>node-users:<node>``, ``<prefix>node-members:<node>``) so that others can undo it.
- **Mirror**: every change is also published on the store's events channel (``L``/``O``
  login/logout, ``J``/``P`` join/part), and every node keeps a copy of the whole presence in
  memory, loaded at each (re)connection. ``channels``, ``channel.users`` and ``statistics``
  answer from it at once, for the whole cluster.
- **Leases**: every node renews ``<prefix>node:<id>`` (expiring after ``lease`` seconds) every
  ``lease / 3``. Every ``lease / 2`` each node looks for nodes whose key expired; one of them
  (a ``SET NX`` lock) *reaps* the dead node: appends a ``leave`` item for each of its
  memberships, frees its usernames and forgets it. So a node killed with ``kill -9`` has its
  users leave their channels within about ``1.5 * lease``.
- **Reconciliation**: after Redis was away (or lost its data), a node writes its own sessions
  and memberships again and removes what it no longer has (``resync`` hook of the store).
- **Bridge**: ``PUBLISH <publish prefix><channel> text`` appends ``text`` to ``channel`` (created
  if needed) as a message from :data:`BRIDGE_SENDER`. Every node hears the PUBLISH; only the
  node holding the ``<prefix>bridge-leader`` lease appends it, so it is appended once.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Final

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from chat.service import validation as v
from chat.stores._redis_client import RedisUnavailable
from chat.stores.interface import channel_log
from chat.stores.redis import RedisLogStore, Script

if TYPE_CHECKING:
    from chat.service.chat import ChatService

log = Logger()

BRIDGE_SENDER: Final = "redis:bridge"  # no username contains ":"
DEFAULT_LEASE: Final = 10.0
DEFAULT_PUBLISH_PREFIX: Final = "chat:publish:"

CLAIM: Final = Script("""
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if owner then
  local node = string.match(owner, '^(%S+)')
  if node ~= ARGV[5] and redis.call('EXISTS', ARGV[3] .. node) == 1 then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[4], 'L' .. ARGV[1])
return 1
""")

RELEASE: Final = Script("""
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if owner and (owner == ARGV[2] or string.match(owner, '^(%S+)') .. ' ' == ARGV[2]) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('PUBLISH', ARGV[3], 'O' .. ARGV[1])
end
redis.call('SREM', KEYS[2], ARGV[1])
return 1
""")

MEMBER: Final = Script("""
local changed
if ARGV[4] == 'J' then
  changed = redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[2])
else
  changed = redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4] .. ARGV[2])
return changed
""")

LEADER: Final = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
""")


class RedisPresence:
    """The :class:`~chat.service.presence.Presence` of every node sharing one Redis."""

    def __init__(
        self,
        store: RedisLogStore,
        lease: float = DEFAULT_LEASE,
        node_id: str | None = None,
    ) -> None:
        self.store = store
        self.redis = store.redis
        self.lease = lease
        self.node = node_id or uuid.uuid4().hex[:12]
        p = self.prefix = store.prefix
        self.sessions_key = p + "sessions"
        self.node_users = p + "node-users:" + self.node
        self.node_members = p + "node-members:" + self.node
        self.sessions: set[str] = set()  # the mirror: logged-in usernames on every node
        self.members: dict[str, set[str]] = {}
        self.service: ChatService | None = None  # bound by the server; its local sessions
        self.is_leader = False
        self.reaped = 0  # nodes this node reaped (tests read it)
        store.on_event("L", lambda data: self.sessions.add(data.decode()))
        store.on_event("O", lambda data: self.sessions.discard(data.decode()))
        store.on_event("J", self._heard_join)
        store.on_event("P", self._heard_part)
        store.resync_hooks.append(self._resync)
        self._heartbeat = LoopingCall(self.beat)
        self._heartbeat.clock = store.reactor
        self._reaper = LoopingCall(self.reap_dead)
        self._reaper.clock = store.reactor

    def start(self) -> None:
        """Start the lease heartbeat and the reaper (once the store is ready)."""
        if not self._heartbeat.running:
            self._heartbeat.start(self.lease / 3, now=True).addErrback(self._loop_died)
            self._reaper.start(self.lease / 2, now=False).addErrback(self._loop_died)

    @staticmethod
    def _loop_died(failure: Failure) -> None:
        log.failure("Redis presence: a periodic job died", failure)

    def stop(self) -> Deferred[Any]:
        """Give up the lease and leadership (a clean shutdown is not a death)."""
        for loop in (self._heartbeat, self._reaper):
            if loop.running:
                loop.stop()
        p = self.prefix
        self.redis.send("SREM", p + "nodes", self.node)
        if self.is_leader:
            self.redis.send("DEL", p + "bridge-leader")
        d = self.redis.execute("DEL", p + "node:" + self.node, self.node_users, self.node_members)
        return d.addErrback(lambda _: None)

    # The Presence seam

    def claim(self, username: str, session_id: str) -> Deferred[bool]:
        d = CLAIM(
            self.redis,
            (self.sessions_key, self.node_users),
            (
                username,
                f"{self.node} {session_id}",
                self.prefix + "node:",
                self.store.events_channel,
                self.node,
            ),
        )

        def claimed(ok: int) -> bool:
            if ok:
                self.sessions.add(username)
            return bool(ok)

        return d.addCallback(claimed)

    def release(self, username: str, session_id: str) -> None:
        self.sessions.discard(username)
        self._release(username, f"{self.node} {session_id}").addErrback(self._later, "logout")

    def _release(self, username: str, owner: str) -> Deferred[Any]:
        keys = (self.sessions_key, self.node_users)
        return RELEASE(self.redis, keys, (username, owner, self.store.events_channel))

    def joined(self, channel: str, username: str) -> None:
        self.members.setdefault(channel, set()).add(username)
        self._member("J", channel, username).addErrback(self._later, "join")

    def left(self, channel: str, username: str) -> None:
        self.members.get(channel, set()).discard(username)
        self._member("P", channel, username).addErrback(self._later, "leave")

    def _member(self, kind: str, channel: str, username: str, node: str = "") -> Deferred[Any]:
        keys = (self.prefix + "members:" + channel, self.node_members)
        if node:
            keys = (keys[0], self.prefix + "node-members:" + node)
        args = (username, f"{channel}\n{username}", self.store.events_channel, kind)
        return MEMBER(self.redis, keys, args)

    @staticmethod
    def _later(failure: Failure, what: str) -> None:
        # Redis is away: the resync after it comes back writes this node's state again.
        if not failure.check(RedisUnavailable):
            log.failure("Redis presence: recording a {what} failed", failure, what=what)

    def users_in(self, channel: str) -> list[str]:
        return sorted(self.members.get(channel, ()))

    def member_count(self, channel: str) -> int:
        return len(self.members.get(channel, ()))

    def user_count(self) -> int:
        return len(self.sessions)

    # Events from every node

    def _heard_join(self, data: bytes) -> None:
        channel, username = data.decode().split("\n", 1)
        self.members.setdefault(channel, set()).add(username)

    def _heard_part(self, data: bytes) -> None:
        channel, username = data.decode().split("\n", 1)
        self.members.get(channel, set()).discard(username)

    # Leases and reaping

    def beat(self) -> Deferred[Any]:
        """Renew this node's lease and try to hold the bridge leadership."""
        p = self.prefix
        ms = int(self.lease * 1000)
        self.redis.send("SET", p + "node:" + self.node, "1", "PX", ms)
        self.redis.send("SADD", p + "nodes", self.node)
        d = LEADER(self.redis, (p + "bridge-leader",), (self.node, ms))

        def leading(ok: int) -> None:
            self.is_leader = bool(ok)

        def failed(_: Failure) -> None:
            self.is_leader = False

        return d.addCallbacks(leading, failed)

    def reap_dead(self) -> Deferred[Any]:
        """Reap every node whose lease expired (one reaper per dead node, by a lock)."""
        p = self.prefix

        async def run() -> None:
            nodes = await self.redis.execute("SMEMBERS", p + "nodes")
            for raw in nodes:
                node = raw.decode()
                if node == self.node:
                    continue
                if await self.redis.execute("EXISTS", p + "node:" + node):
                    continue
                lock = await self.redis.execute(
                    "SET", p + "reaping:" + node, self.node, "NX", "PX", int(self.lease * 3000)
                )
                if lock is not None:
                    await self.reap(node)

        def failed(failure: Failure) -> None:
            if not failure.check(RedisUnavailable):
                log.failure("Redis presence: reaping failed", failure)

        return Deferred.fromCoroutine(run()).addErrback(failed)

    async def reap(self, node: str) -> None:
        """The node ``node`` died: its users leave their channels and log out."""
        p = self.prefix
        memberships = await self.redis.execute("SMEMBERS", p + "node-members:" + node)
        for entry in memberships:
            channel, username = entry.decode().split("\n", 1)
            if await self._member("P", channel, username, node):
                fields = {"kind": "leave", "channel": channel, "from": username}
                await self.store.append(channel_log(channel), fields)
        for raw in await self.redis.execute("SMEMBERS", p + "node-users:" + node):
            keys = (self.sessions_key, p + "node-users:" + node)
            await RELEASE(self.redis, keys, (raw, node + " ", self.store.events_channel))
        await self.redis.execute("DEL", p + "node-users:" + node, p + "node-members:" + node)
        await self.redis.execute("SREM", p + "nodes", node)
        self.reaped += 1
        log.info(
            "Redis presence: node {node} died; {count} memberships ended",
            node=node,
            count=len(memberships),
        )

    # After (re)connection

    def _resync(self) -> Deferred[Any]:
        p = self.prefix

        async def run() -> None:
            await self.beat()
            await self._reconcile()
            pairs = await self.redis.execute("HGETALL", self.sessions_key)
            channels = sorted(self.store.channels())
            replies = gatherResults(
                [self.redis.execute("SMEMBERS", p + "members:" + c) for c in channels],
                consumeErrors=True,
            )
            try:
                found = await replies
            except FirstError as exc:
                exc.subFailure.raiseException()
            members = {}
            for channel, reply in zip(channels, found, strict=True):
                names = {name.decode() for name in reply}
                if names:
                    members[channel] = names
            self.sessions = {pairs[i].decode() for i in range(0, len(pairs), 2)}
            self.members = members

        return Deferred.fromCoroutine(run())

    async def _reconcile(self) -> None:
        """Make Redis hold exactly this node's sessions and memberships."""
        service = self.service
        if service is None:
            return
        users = {name.decode() for name in await self.redis.execute("SMEMBERS", self.node_users)}
        entries = await self.redis.execute("SMEMBERS", self.node_members)
        recorded = {tuple(entry.decode().split("\n", 1)) for entry in entries}
        local = {name: s.session_id for name, s in service.sessions.items()}
        for name in users - set(local):
            await self._release(name, self.node + " ")
        for name, session_id in local.items():
            if not await self.claim(name, session_id):
                log.warn("Redis presence: {user} was taken by another node meanwhile", user=name)
        have = {
            (channel, name) for channel, sessions in service.members.items() for name in sessions
        }
        for channel, name in recorded - have:
            await self._member("P", channel, name)
        for channel, name in have - recorded:
            await self._member("J", channel, name)


def start_bridge(
    service: ChatService,
    store: RedisLogStore,
    presence: RedisPresence,
    prefix: str,
    max_content_length: int,
) -> None:
    """Append every ``PUBLISH <prefix><channel> text`` to ``channel`` (on the leader only)."""
    raw_prefix = prefix.encode()

    def published(channel_bytes: bytes, message: bytes) -> None:
        if not presence.is_leader:
            return
        channel = channel_bytes[len(raw_prefix) :].decode("utf-8", "replace")
        try:
            content = message.decode("utf-8")
        except UnicodeDecodeError:
            log.warn("Redis bridge: a PUBLISH to {channel} is not UTF-8; dropped", channel=channel)
            return
        if not v.is_name(channel):
            log.warn("Redis bridge: {channel!r} is not a channel name; dropped", channel=channel)
            return
        if not content or len(content) > max_content_length:
            log.warn(
                "Redis bridge: a PUBLISH to {channel} is empty or longer than {most} characters;"
                " dropped",
                channel=channel,
                most=max_content_length,
            )
            return
        store.add_channel(channel)
        service.announce(channel, BRIDGE_SENDER, content).addErrback(
            lambda failure: log.failure(
                "Redis bridge: appending to {channel} failed", failure, channel=channel
            )
        )

    store.psubscribe(prefix + "*", published)
