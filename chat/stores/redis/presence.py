"""Presence for many nodes on one Redis, and node leases (after centrifuge's presence_redis).

Theory of operation
-------------------

- **Usernames**: the hash ``<prefix>sessions`` maps each live session's username to
  ``"<node> <session id>"``. A login runs :data:`~chat.stores.redis.scripts.CLAIM` (one script,
  so two nodes cannot both win): it refuses when another *live* node holds the name.
- **Membership and online**: the sets ``<prefix>members:<channel>`` and ``<prefix>online``; each
  node also records what it added (``<prefix>node-users:<node>``, ``<prefix>node-members:<node>``)
  so that others can undo it if it dies.
- **Mirror**: every change is also published on the store's events channel (``L``/``O``
  login/logout, ``J``/``P`` join/part, ``N``/``F`` online/offline), and every node keeps a copy of
  the whole presence in memory (:class:`~chat.stores.presence.PresenceView`), reloaded at each
  (re)connection; events heard while it reloads are applied again after it, so the reload
  cannot overwrite them with older state. Listings and statistics answer from it at once, for
  the whole cluster.
- **Leases**: every node renews ``<prefix>node:<id>`` (expiring after ``lease`` seconds) every
  ``lease / 3``. Every ``lease / 2`` each node looks for nodes whose key expired; one of them
  (a ``SET NX`` lock) *reaps* the dead node: appends a ``leave`` item for each of its
  memberships, frees its usernames and forgets it. So a node killed with ``kill -9`` has its
  users leave their channels within about ``1.5 * lease``.
- **Reconciliation**: after Redis was away (or lost its data), a node writes its own sessions,
  memberships, online users and the channels of those memberships again, and removes what it
  no longer has (sessions ended, channels left, users gone offline while Redis was away);
  ``local_state`` (given at construction) tells it what it has.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Final

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chat.protocol.items import leave_item
from chat.stores.errors import StoreUnavailable
from chat.stores.interface import IPresence, channel_log
from chat.stores.presence import LocalState, PresenceView
from chat.stores.redis.scripts import CLAIM, LEADER, MEMBER, ONLINE, RELEASE
from chat.stores.redis.store import RedisLogStore

logger = Logger()

DEFAULT_LEASE: Final = 10.0


def _no_state() -> LocalState:
    return LocalState({}, set(), set())


@implementer(IPresence)
class RedisPresence(PresenceView):
    """The presence of every node sharing one Redis."""

    def __init__(
        self,
        store: RedisLogStore,
        lease: float = DEFAULT_LEASE,
        node_id: str | None = None,
        local_state: Callable[[], LocalState] = _no_state,
    ) -> None:
        super().__init__()
        self.store = store
        self.redis = store.redis
        self.lease = lease
        self.local_state = local_state
        self.node = node_id or uuid.uuid4().hex[:12]
        self.sessions_key = store.key("sessions")
        self.online_key = store.key("online")
        self.node_users = store.key("node-users:" + self.node)
        self.node_members = store.key("node-members:" + self.node)
        self.is_leader = False  # holds the bridge leadership (chat.stores.redis.bridge)
        self.reaped = 0  # nodes this node reaped (tests read it)
        self._reloading: list[list[Callable[[], object]]] = []  # events heard, per reload
        self._on_event("L", lambda name: self.sessions.setdefault(name, ""))
        self._on_event("O", self._heard_logout)
        self._on_event("J", lambda entry: self.add_member(*entry.split("\n", 1)))
        self._on_event("P", lambda entry: self.remove_member(*entry.split("\n", 1)))
        self._on_event("N", lambda name: self.online.add(name))  # not bound: replace() swaps
        self._on_event("F", lambda name: self.online.discard(name))
        store.resync_hooks.append(self._resync)
        self._heartbeat = LoopingCall(self.beat)
        self._heartbeat.clock = store.reactor
        self._reaper = LoopingCall(self.reap_dead)
        self._reaper.clock = store.reactor

    def _on_event(self, kind: str, apply: Callable[[str], object]) -> None:
        """Mirror the events of ``kind``; those heard while the view is being reloaded are
        applied again once it is (the reload would otherwise overwrite them: each event sets
        its key's state, so applying it again is harmless)."""

        def heard(data: bytes) -> None:
            text = data.decode()
            apply(text)
            for recorded in self._reloading:
                recorded.append(lambda: apply(text))

        self.store.on_event(kind, heard)

    def _heard_logout(self, username: str) -> None:
        self.sessions.pop(username, None)
        self.online.discard(username)

    def start(self) -> Deferred[None]:
        """Start the lease heartbeat and the reaper (once the store is ready)."""
        if not self._heartbeat.running:
            self._heartbeat.start(self.lease / 3, now=True).addErrback(self._loop_died)
            self._reaper.start(self.lease / 2, now=False).addErrback(self._loop_died)
        d: Deferred[None] = Deferred()
        d.callback(None)
        return d

    @staticmethod
    def _loop_died(failure: Failure) -> None:
        logger.failure("Redis presence: a periodic job died", failure)

    def stop(self) -> Deferred[None]:
        """Give up the lease and leadership (a clean shutdown is not a death)."""
        for loop in (self._heartbeat, self._reaper):
            if loop.running:
                loop.stop()
        self.redis.send("SREM", self.store.key("nodes"), self.node)
        if self.is_leader:
            self.redis.send("DEL", self.store.key("bridge-leader"))
        d = self.redis.execute(
            "DEL", self.store.key("node:" + self.node), self.node_users, self.node_members
        )
        return d.addCallbacks(lambda _: None, lambda _: None)

    # IPresence: writes go to Redis behind; the mirror changes at once

    def claim(self, username: str, session_id: str) -> Deferred[bool]:
        args = (
            username,
            f"{self.node} {session_id}",
            self.store.key("node:"),
            self.store.events_channel,
            self.node,
        )

        def claimed(ok: int) -> bool:
            if ok:
                self.sessions[username] = session_id
            return bool(ok)

        return CLAIM(self.redis, (self.sessions_key, self.node_users), args).addCallback(claimed)

    def release(self, username: str, session_id: str) -> None:
        if self.sessions.get(username) == session_id:  # not another session's name
            del self.sessions[username]
            self.online.discard(username)
        self._release(username, f"{self.node} {session_id}", self.node_users).addErrback(
            self._later, "logout"
        )

    def _release(self, username: str, owner: str, node_users: str) -> Deferred[Any]:
        keys = (self.sessions_key, node_users, self.online_key)
        return RELEASE(self.redis, keys, (username, owner, self.store.events_channel))

    def set_online(self, username: str, online: bool) -> None:
        if online:
            self.online.add(username)
        else:
            self.online.discard(username)
        args = (username, "1" if online else "0", self.store.events_channel)
        ONLINE(self.redis, (self.online_key,), args).addErrback(self._later, "online")

    def joined(self, channel: str, username: str) -> None:
        self.add_member(channel, username)
        self._member("J", channel, username).addErrback(self._later, "join")

    def left(self, channel: str, username: str) -> None:
        self.remove_member(channel, username)
        self._member("P", channel, username).addErrback(self._later, "leave")

    def _member(self, kind: str, channel: str, username: str, node: str = "") -> Deferred[Any]:
        node_members = self.store.key("node-members:" + node) if node else self.node_members
        keys = (self.store.key("members:" + channel), node_members)
        args = (username, f"{channel}\n{username}", self.store.events_channel, kind)
        return MEMBER(self.redis, keys, args)

    @staticmethod
    def _later(failure: Failure, what: str) -> None:
        # Redis is away: the resync after it comes back writes this node's state again.
        if not failure.check(StoreUnavailable):
            logger.failure("Redis presence: recording a {what} failed", failure, what=what)

    # Leases and reaping

    def beat(self) -> Deferred[Any]:
        """Renew this node's lease and try to hold the bridge leadership."""
        ms = int(self.lease * 1000)
        self.redis.send("SET", self.store.key("node:" + self.node), "1", "PX", ms)
        self.redis.send("SADD", self.store.key("nodes"), self.node)
        d = LEADER(self.redis, (self.store.key("bridge-leader"),), (self.node, ms))

        def leading(ok: int) -> None:
            self.is_leader = bool(ok)

        def failed(_: Failure) -> None:
            self.is_leader = False

        return d.addCallbacks(leading, failed)

    def reap_dead(self) -> Deferred[Any]:
        """Reap every node whose lease expired (one reaper per dead node, by a lock)."""
        key = self.store.key

        async def run() -> None:
            for raw in await self.redis.execute("SMEMBERS", key("nodes")):
                node = raw.decode()
                if node == self.node or await self.redis.execute("EXISTS", key("node:" + node)):
                    continue
                lock = await self.redis.execute(
                    "SET", key("reaping:" + node), self.node, "NX", "PX", int(self.lease * 3000)
                )
                if lock is not None:
                    await self.reap(node)

        def failed(failure: Failure) -> None:
            if not failure.check(StoreUnavailable):
                logger.failure("Redis presence: reaping failed", failure)

        return Deferred.fromCoroutine(run()).addErrback(failed)

    async def reap(self, node: str) -> None:
        """The node ``node`` died: its users leave their channels and their sessions end."""
        key = self.store.key
        memberships = await self.redis.execute("SMEMBERS", key("node-members:" + node))
        for entry in memberships:
            channel, username = entry.decode().split("\n", 1)
            if await self._member("P", channel, username, node):
                await self.store.append(channel_log(channel), leave_item(channel, username))
        node_users = key("node-users:" + node)
        for raw in await self.redis.execute("SMEMBERS", node_users):
            await self._release(raw.decode(), node + " ", node_users)
        await self.redis.execute("DEL", node_users, key("node-members:" + node))
        await self.redis.execute("SREM", key("nodes"), node)
        self.reaped += 1
        logger.info(
            "Redis presence: node {node} died; {count} memberships ended",
            node=node,
            count=len(memberships),
        )

    # After (re)connection

    def _resync(self) -> Deferred[Any]:
        async def run() -> None:
            recorded: list[Callable[[], object]] = []
            self._reloading.append(recorded)
            try:
                await load()
                for apply in recorded:
                    apply()
            finally:
                self._reloading.remove(recorded)

        async def load() -> None:
            await self.beat()
            await self._reconcile()
            pairs = await self.redis.execute("HGETALL", self.sessions_key)
            online = await self.redis.execute("SMEMBERS", self.online_key)
            channels = list(self.store.channels_after(None, self.store.channel_count()))
            replies = gatherResults(
                [self.redis.execute("SMEMBERS", self.store.key("members:" + c)) for c in channels],
                consumeErrors=True,
            )
            try:
                found = await replies
            except FirstError as exc:
                exc.subFailure.raiseException()
            sessions = {pairs[i].decode(): "" for i in range(0, len(pairs), 2)}
            sessions.update(self.local_state().sessions)
            members = {
                channel: {name.decode() for name in reply}
                for channel, reply in zip(channels, found, strict=True)
            }
            self.replace(sessions, members, {name.decode() for name in online})

        return Deferred.fromCoroutine(run())

    async def _reconcile(self) -> None:
        """Make Redis hold exactly this node's sessions, memberships and online users."""
        local = self.local_state()
        users = {name.decode() for name in await self.redis.execute("SMEMBERS", self.node_users)}
        entries = await self.redis.execute("SMEMBERS", self.node_members)
        recorded = {tuple(entry.decode().split("\n", 1)) for entry in entries}
        for name in users - set(local.sessions):
            await self._release(name, self.node + " ", self.node_users)
        for name, session_id in local.sessions.items():
            if not await self.claim(name, session_id):
                logger.warn("Redis presence: {user} was taken by another node meanwhile", user=name)
        for channel, name in recorded - local.members:
            await self._member("P", channel, name)
        for channel, name in local.members - recorded:
            await self._member("J", channel, name)
        for channel, _ in local.members:
            self.store.add_channel(channel)  # a Redis that lost its data lost its channels too
        for name in local.sessions:
            online = "1" if name in local.online else "0"  # also: went offline while away
            await ONLINE(self.redis, (self.online_key,), (name, online, self.store.events_channel))
