"""The one contract every IPresence passes (chat.stores.interface), and Redis' node leases.

A test asks :class:`Nodes` for presences — ``await nodes.node()`` — that share one truth: for
:class:`LocalPresence` that is one object (one process is one node), for :class:`RedisPresence`
each call starts another node (a RedisLogStore and its presence) on the test's key prefix of a
real redis-server. What one node records, another sees after the event reaches it, so a test
reading from another node waits for it with :func:`until`.

To run the contract against a new presence, add one :class:`PresenceBackend` to
:data:`PRESENCES`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from zope.interface.verify import verifyObject

from chat.protocol.items import leave_item
from chat.stores.interface import IPresence, channel_log
from chat.stores.presence import LocalPresence, LocalState
from chat.stores.redis import RedisLogStore
from chat.stores.redis.presence import RedisPresence
from tests.helpers import WAIT, until, within
from tests.redis_fixtures import RedisServer, redis_server, shared_redis_url

ensure = pytest_twisted.ensureDeferred
__all__ = ["redis_server"]  # the fixture, imported so that tests here can use it

StateOf = Callable[[], LocalState]


def no_state() -> LocalState:
    return LocalState({}, set(), set())


class Nodes:
    """The presences of one test, on one shared truth; stops them all afterwards."""

    def __init__(self, backend: PresenceBackend, url: str | None = None) -> None:
        self.backend = backend
        self.url = url or ""
        self.prefix = f"test:{uuid.uuid4().hex[:12]}:"
        self.local: LocalPresence | None = None
        self.running: list[tuple[IPresence, RedisLogStore | None]] = []

    async def node(self, lease: float = 10.0, local_state: StateOf = no_state) -> IPresence:
        """A presence on this test's truth, started."""
        return await self.backend.open(self, lease, local_state)

    def store_of(self, presence: IPresence) -> RedisLogStore:
        for running, store in self.running:
            if running is presence and store is not None:
                return store
        raise LookupError("not a Redis node of this test")

    async def stop(self, presence: IPresence) -> None:
        for entry in list(self.running):
            if entry[0] is presence:
                self.running.remove(entry)
                await within(presence.stop())
                if entry[1] is not None:
                    await within(entry[1].close())

    async def stop_all(self) -> None:
        while self.running:
            await self.stop(self.running[-1][0])


async def open_local(nodes: Nodes, lease: float, local_state: StateOf) -> IPresence:
    if nodes.local is None:
        nodes.local = LocalPresence()
        assert await within(nodes.local.start()) is None
        nodes.running.append((nodes.local, None))
    return nodes.local


async def open_redis(nodes: Nodes, lease: float, local_state: StateOf) -> IPresence:
    """One node as chat.stores.backend assembles it: the store, its presence, started."""
    store = RedisLogStore(nodes.url or shared_redis_url(), prefix=nodes.prefix, reply_timeout=2)
    presence = RedisPresence(store, lease=lease, local_state=local_state)
    nodes.running.append((presence, store))
    assert await within(store.start()) is None
    assert await within(presence.start()) is None
    return presence


@attrs.frozen
class PresenceBackend:
    name: str
    open: Callable[[Nodes, float, StateOf], Awaitable[IPresence]]


PRESENCES = [PresenceBackend("local", open_local), PresenceBackend("redis", open_redis)]
REDIS = PRESENCES[1]


@pytest_twisted.async_yield_fixture(params=PRESENCES, ids=lambda backend: backend.name)
async def nodes(request: Any) -> Any:
    running = Nodes(request.param)
    yield running
    await running.stop_all()


@pytest_twisted.async_yield_fixture
async def redis_nodes() -> Any:
    running = Nodes(REDIS)
    yield running
    await running.stop_all()


async def claim(presence: IPresence, username: str, session_id: str) -> bool:
    claimed: bool = await within(presence.claim(username, session_id))
    return claimed


# --- the interface ------------------------------------------------------------------------


@ensure
async def test_provides_ipresence(nodes: Nodes) -> None:
    presence = await nodes.node()  # the opener checks that start() fired with None
    assert verifyObject(IPresence, presence)
    assert presence.user_count() == 0
    assert presence.member_count("general") == 0
    assert list(presence.members_after("general", None, 10)) == []
    assert not presence.is_online("alice")


# --- claims -------------------------------------------------------------------------------


@ensure
async def test_a_held_name_cannot_be_claimed_again(nodes: Nodes) -> None:
    a, b = await nodes.node(), await nodes.node()
    assert await claim(a, "alice", "s1")
    assert not await claim(a, "alice", "s2")  # another session, same node
    assert not await claim(b, "alice", "s3")  # another session, another node
    assert await claim(b, "Alice", "s4")  # names are case-sensitive
    await until(lambda: a.user_count() == 2 and b.user_count() == 2)


@ensure
async def test_release_frees_the_name(nodes: Nodes) -> None:
    a, b = await nodes.node(), await nodes.node()
    assert await claim(a, "alice", "s1")
    a.release("alice", "s1")
    assert a.user_count() == 0  # at once, on the node that released it
    assert await claim(a, "alice", "s2")  # the release went first
    a.release("alice", "s2")
    await until(lambda: b.user_count() == 0, what="the release to reach the other node")
    assert await claim(b, "alice", "s3")


@ensure
async def test_release_by_another_session_frees_nothing(nodes: Nodes) -> None:
    a, b = await nodes.node(), await nodes.node()
    assert await claim(a, "alice", "s1")
    a.set_online("alice", True)
    a.release("alice", "not-s1")
    b.release("alice", "s1-elsewhere")
    assert a.user_count() == 1 and a.is_online("alice")
    assert not await claim(a, "alice", "s2")
    assert not await claim(b, "alice", "s3")
    await until(lambda: b.user_count() == 1 and b.is_online("alice"))
    a.release("alice", "s1")  # the holder still can
    assert await claim(a, "alice", "s4")


@ensure
async def test_a_release_ends_being_online(nodes: Nodes) -> None:
    a, b = await nodes.node(), await nodes.node()
    assert await claim(a, "alice", "s1")
    a.set_online("alice", True)
    await until(lambda: b.is_online("alice"))
    a.release("alice", "s1")
    assert not a.is_online("alice")
    await until(lambda: not b.is_online("alice") and b.user_count() == 0)


# --- online -------------------------------------------------------------------------------


@ensure
async def test_online_follows_set_online(nodes: Nodes) -> None:
    a, b = await nodes.node(), await nodes.node()
    assert await claim(a, "alice", "s1")
    assert not a.is_online("alice")  # a session without a connection (lingering)
    a.set_online("alice", True)
    assert a.is_online("alice")
    await until(lambda: b.is_online("alice"))
    a.set_online("alice", False)
    assert not a.is_online("alice")
    await until(lambda: not b.is_online("alice"))
    assert a.user_count() == 1  # a lingering session still counts as a user
    assert not a.is_online("bob")


# --- membership ---------------------------------------------------------------------------


NAMES = ["bob", "Bob", "alice", "_x", "-y", "9lives", "zoë", "Zed", "a.b", "a-b", "é"]


@ensure
async def test_members_are_listed_in_code_point_order(nodes: Nodes) -> None:
    a, b = await nodes.node(), await nodes.node()
    for index, name in enumerate(NAMES):
        (a if index % 2 else b).joined("general", name)
    expected = sorted(NAMES, key=lambda s: [ord(c) for c in s])
    assert expected[:4] == ["-y", "9lives", "Bob", "Zed"]
    for presence in (a, b):
        await until(lambda p=presence: p.member_count("general") == len(NAMES))  # type: ignore[misc]
        assert list(presence.members_after("general", None, 100)) == expected


@pytest.mark.parametrize("limit", [1, 3, 100])
@ensure
async def test_members_page_after_a_name(nodes: Nodes, limit: int) -> None:
    a = await nodes.node()
    for name in NAMES:
        a.joined("general", name)
    expected = sorted(NAMES)
    pages: list[list[str]] = []
    after: str | None = None
    while page := list(a.members_after("general", after, limit)):
        assert len(page) <= limit and len(pages) <= len(NAMES), "paging never ends"
        pages.append(page)
        after = page[-1]
    assert [name for page in pages for name in page] == expected
    assert all(len(page) == limit for page in pages[:-1])
    between = [name for name in expected if name > "a0"]  # after a name that is no member
    assert list(a.members_after("general", "a0", limit)) == between[:limit]
    assert list(a.members_after("general", None, 0)) == []


@ensure
async def test_join_and_leave_change_membership_and_counts(nodes: Nodes) -> None:
    a, b = await nodes.node(), await nodes.node()
    a.joined("general", "alice")
    a.joined("general", "alice")  # joining again changes nothing
    a.joined("general", "bob")
    a.joined("random", "alice")
    assert a.member_count("general") == 2 and a.member_count("random") == 1
    a.left("general", "bob")
    a.left("general", "carol")  # not a member: ignored
    a.left("empty", "alice")  # no such channel: ignored
    assert list(a.members_after("general", None, 10)) == ["alice"]
    assert list(a.members_after("random", None, 10)) == ["alice"]
    assert a.member_count("empty") == 0 and list(a.members_after("empty", None, 10)) == []
    await until(
        lambda: (
            list(b.members_after("general", None, 10)) == ["alice"]
            and b.member_count("random") == 1
        )
    )
    a.left("random", "alice")
    await until(lambda: b.member_count("random") == 0)
    assert list(b.members_after("random", None, 10)) == []


@ensure
async def test_user_count_counts_live_sessions(nodes: Nodes) -> None:
    a, b = await nodes.node(), await nodes.node()
    assert await claim(a, "alice", "s1")
    assert await claim(b, "bob", "s2")
    assert await claim(b, "carol", "s3")
    await until(lambda: a.user_count() == 3 and b.user_count() == 3)
    b.release("carol", "s3")
    assert b.user_count() == 2
    await until(lambda: a.user_count() == 2)


# --- Redis: node leases and dead nodes ----------------------------------------------------


async def eventually(check: Callable[[], Deferred[bool]], what: str) -> None:
    """Like :func:`until`, for a condition that has to ask Redis."""
    for _ in range(int(WAIT / 0.02)):
        if await within(check()):
            return
        await deferLater(reactor, 0.02, lambda: None)
    raise TimeoutError(f"timed out waiting for {what}")


async def crash(nodes: Nodes, presence: IPresence) -> None:
    """The node dies: its connections drop and it never renews its lease nor cleans up."""
    store = nodes.store_of(presence)
    await within(store.close())


async def items_of(store: RedisLogStore, channel: str) -> list[dict[str, Any]]:
    items = await within(store.read(channel_log(channel), 0, 100))
    return [json.loads(item.payload) for item in items]


@ensure
async def test_a_node_that_stops_renewing_its_lease_is_reaped(redis_nodes: Nodes) -> None:
    dying = await redis_nodes.node(lease=0.5)
    survivor = await redis_nodes.node(lease=0.5)
    assert isinstance(dying, RedisPresence) and isinstance(survivor, RedisPresence)
    store = redis_nodes.store_of(survivor)
    assert await claim(dying, "alice", "s1")
    dying.set_online("alice", True)
    dying.joined("general", "alice")
    dying.joined("random", "alice")
    await until(lambda: survivor.member_count("random") == 1 and survivor.is_online("alice"))
    woken: list[int] = []
    store.listen(channel_log("general"), lambda: woken.append(1))
    await crash(redis_nodes, dying)
    await until(lambda: survivor.reaped == 1, what="the dead node to be reaped")
    # Its users left their channels (a leave item each) and their names are free.
    for channel in ("general", "random"):
        [item] = await items_of(store, channel)
        assert item == {**leave_item(channel, "alice"), "seq": 1, "ts": item["ts"]}
    assert woken
    await until(lambda: survivor.user_count() == 0 and not survivor.is_online("alice"))
    assert survivor.member_count("general") == 0 and survivor.member_count("random") == 0
    assert await claim(survivor, "alice", "s2")


@ensure
async def test_live_nodes_are_never_reaped_and_a_dead_one_once(redis_nodes: Nodes) -> None:
    # Long leases: these nodes' reapers do not run by themselves during the test.
    first = await redis_nodes.node(lease=60)
    second = await redis_nodes.node(lease=60)
    dying = await redis_nodes.node(lease=0.5)
    assert isinstance(first, RedisPresence) and isinstance(second, RedisPresence)
    assert isinstance(dying, RedisPresence)
    assert await claim(first, "alice", "s1")
    first.joined("general", "alice")
    assert await claim(dying, "bob", "s2")
    dying.joined("general", "bob")
    await within(first.reap_dead())  # everyone is alive: nothing happens
    await within(second.reap_dead())
    assert first.reaped == second.reaped == 0
    await until(lambda: second.member_count("general") == 2)

    await crash(redis_nodes, dying)
    store = redis_nodes.store_of(first)
    lease_key = store.key("node:" + dying.node)
    await eventually(
        lambda: store.redis.execute("EXISTS", lease_key).addCallback(lambda n: n == 0),
        "the dead node's lease to expire",
    )
    await within(gatherResults([first.reap_dead(), second.reap_dead()]))  # at the same time
    assert first.reaped + second.reaped == 1
    items = await items_of(store, "general")
    assert [(item["kind"], item["from"]) for item in items] == [("leave", "bob")]
    await until(lambda: first.member_count("general") == 1 and second.user_count() == 1)
    assert list(second.members_after("general", None, 10)) == ["alice"]
    assert not await claim(second, "alice", "s3")  # the live node's user keeps her name
    assert await claim(second, "bob", "s4")


# --- Redis: the mirror ----------------------------------------------------------------------


@ensure
async def test_what_a_node_hears_while_it_reloads_is_not_lost(redis_nodes: Nodes) -> None:
    a, b = await redis_nodes.node(), await redis_nodes.node()
    store = redis_nodes.store_of(b)
    connection = store.redis
    original = connection.execute
    snapshot: Deferred[None] = Deferred()
    go_on: Deferred[None] = Deferred()

    def execute(*args: Any) -> Deferred[Any]:
        d = original(*args)
        if args[:2] == ("HGETALL", store.key("sessions")) and not snapshot.called:

            def hold(reply: Any) -> Deferred[Any]:  # an old snapshot, answered late
                snapshot.callback(None)
                return go_on.addCallback(lambda _: reply)

            d.addCallback(hold)
        return d

    connection.execute = execute  # type: ignore[method-assign]
    reloading = store.resync()  # what a reconnection does
    await within(snapshot)  # b has read the sessions: nobody yet
    assert await claim(a, "alice", "s1")
    await until(lambda: b.user_count() == 1, what="node b to hear the login")
    go_on.callback(None)
    await within(reloading)
    assert b.user_count() == 1  # the reload did not take it back


# --- Redis: reconciliation after an outage ------------------------------------------------


@attrs.define
class Local:
    """What a node's service holds (the ``local_state`` it gives its presence)."""

    sessions: dict[str, str] = attrs.Factory(dict)
    members: set[tuple[str, str]] = attrs.Factory(set)
    online: set[str] = attrs.Factory(set)

    def __call__(self) -> LocalState:
        return LocalState(dict(self.sessions), set(self.members), set(self.online))


class Service:
    """Records on a presence the way the chat service does, and keeps ``local`` in step."""

    def __init__(self, nodes: Nodes, presence: IPresence, local: Local) -> None:
        self.store = nodes.store_of(presence)
        self.presence = presence
        self.local = local

    async def login(self, username: str, session_id: str) -> None:
        assert await claim(self.presence, username, session_id)
        self.local.sessions[username] = session_id
        self.presence.set_online(username, True)
        self.local.online.add(username)

    def offline(self, username: str) -> None:
        self.presence.set_online(username, False)
        self.local.online.discard(username)

    def end(self, username: str) -> None:
        self.presence.release(username, self.local.sessions.pop(username))
        self.local.online.discard(username)
        for channel, name in list(self.local.members):
            if name == username:
                self.leave(channel, username)

    def join(self, channel: str, username: str) -> None:
        self.store.add_channel(channel)
        self.presence.joined(channel, username)
        self.local.members.add((channel, username))

    def leave(self, channel: str, username: str) -> None:
        self.presence.left(channel, username)
        self.local.members.discard((channel, username))


@pytest.mark.parametrize("keeps_data", [True, False], ids=["redis-restarted", "redis-emptied"])
@ensure
async def test_a_node_writes_its_state_back_after_redis_was_away(
    tmp_path: Any, keeps_data: bool
) -> None:
    server = RedisServer(tmp_path, appendonly=keeps_data).start()
    nodes = Nodes(REDIS, server.url)
    try:
        local = Local()
        a = await nodes.node(local_state=local)
        b = await nodes.node()
        service = Service(nodes, a, local)
        await service.login("alice", "s1")
        await service.login("carol", "s3")
        service.join("general", "alice")
        service.join("general", "carol")
        await until(lambda: b.member_count("general") == 2 and b.is_online("carol"))
        stores = [nodes.store_of(a), nodes.store_of(b)]
        resyncs = [store.resyncs for store in stores]

        server.stop()
        await until(lambda: not any(store.redis.connected for store in stores))
        service.end("carol")  # while Redis is away: none of this reaches it
        service.join("random", "alice")
        service.offline("alice")
        server.start()
        await until(
            lambda: all(s.resyncs > r for s, r in zip(stores, resyncs, strict=True)),
            what="both nodes to resync",
        )

        # Redis holds exactly what node a holds, and node b sees it.
        await until(
            lambda: (
                list(b.members_after("general", None, 10)) == ["alice"]
                and list(b.members_after("random", None, 10)) == ["alice"]
                and b.user_count() == 1
                and not b.is_online("alice")
            ),
            what="node b to see node a's state",
        )
        assert list(a.members_after("general", None, 10)) == ["alice"]
        # A node starting now loads the same view from Redis alone.
        c = await nodes.node()
        assert list(c.members_after("general", None, 10)) == ["alice"]
        assert list(c.members_after("random", None, 10)) == ["alice"]
        assert c.user_count() == 1 and not c.is_online("alice")
        assert not await claim(b, "alice", "s4")
        assert await claim(b, "carol", "s5")
        assert sorted(server.cli("SMEMBERS", nodes.prefix + "members:general").split()) == ["alice"]
        assert server.cli("SMEMBERS", nodes.prefix + "online").split() == []
    finally:
        await nodes.stop_all()
        server.stop()
