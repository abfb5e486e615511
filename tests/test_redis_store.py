"""The Redis store beyond the contract suite: two nodes, missed notifications, Redis away,
scripts on a fresh Redis, error replies, and large replies (paged, and slow).

The contract (tests/test_store_contract.py) runs against this backend too; the reply parser
alone is tested in tests/test_resp.py.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from chat.stores.errors import StoreUnavailable
from chat.stores.interface import PAGE_BYTES, PAGE_ITEMS, Appended, Dedup, LogItem
from chat.stores.redis import RedisLogStore, parse_url
from chat.stores.redis._resp import RedisError
from tests.helpers import until, within
from tests.redis_fixtures import RedisServer, redis_server, shared_redis_url

ensure = pytest_twisted.ensureDeferred
__all__ = ["redis_server"]  # the fixture, imported so that tests here can use it


def test_store_urls() -> None:
    assert parse_url("redis://10.0.0.5:6380/2") == ("10.0.0.5", 6380, 2)
    assert parse_url("redis://localhost") == ("localhost", 6379, 0)
    with pytest.raises(ValueError):
        parse_url("redis://host:port/x")
    with pytest.raises(ValueError):
        parse_url("http://localhost")


class Nodes:
    """Stores of one test on one key prefix (each one a node); closes them afterwards."""

    def __init__(self) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:8]}:"
        self.opened: list[RedisLogStore] = []

    async def open(self, url: str | None = None, **options: Any) -> RedisLogStore:
        options.setdefault("reply_timeout", 0.5)
        store = RedisLogStore(url or shared_redis_url(), prefix=self.prefix, **options)
        self.opened.append(store)
        await within(store.start())
        return store

    async def close_all(self) -> None:
        for store in self.opened:
            await within(store.close())


@pytest_twisted.async_yield_fixture
async def nodes() -> AsyncIterator[Nodes]:
    running = Nodes()
    yield running
    await running.close_all()


def payloads(items: Any) -> list[bytes]:
    assert items is not None
    return [item.payload for item in items]


# --- two nodes ------------------------------------------------------------------------------


@ensure
async def test_two_nodes_hold_identical_bytes_and_the_same_directory(nodes: Nodes) -> None:
    a, b = await nodes.open(), await nodes.open()
    woken: list[int] = []
    b.listen("#x", lambda: woken.append(b.last_seq("#x")))
    for n in range(3):
        await within(a.append("#x", {"n": n}))
    await until(lambda: b.last_seq("#x") == 3)
    assert woken == [1, 2, 3]
    assert payloads(b.cached("#x", 0, 10)) == payloads(a.cached("#x", 0, 10))
    assert a.epoch == b.epoch
    a.add_channel("general")
    a.remember_user("alice")
    await until(lambda: b.has_channel("general") and b.knows_user("alice"))


@ensure
async def test_a_node_that_missed_notifications_catches_up_by_itself(nodes: Nodes) -> None:
    a, b = await nodes.open(), await nodes.open()
    woken: list[int] = []
    b.listen("#x", lambda: woken.append(b.last_seq("#x")))
    await within(a.append("#x", {"n": 0}))
    await until(lambda: b.last_seq("#x") == 1)
    resyncs = b.resyncs
    protocol = b.subscriber.protocol
    assert protocol is not None and protocol.transport is not None
    protocol.transport.abortConnection()  # type: ignore[attr-defined]  # b stops hearing
    for n in range(1, 6):
        await within(a.append("#x", {"n": n}))
    await until(lambda: b.resyncs > resyncs and b.last_seq("#x") == 6)
    assert woken[-1] == 6  # woken once the resync saw the log move
    held = b.cached("#x", 0, 10)  # a short page: the ring holds 1 only
    assert held is None or [i.seq for i in held] == [1]
    assert b.cached("#x", 1, 10) is None  # not in its ring: read from the stream
    items = await within(b.read("#x", 1, 10))
    assert [i.seq for i in items] == [2, 3, 4, 5, 6]
    assert payloads(items) == payloads(a.cached("#x", 1, 10))
    await within(a.append("#x", {"n": 6}))
    await until(lambda: b.last_seq("#x") == 7)
    assert payloads(b.cached("#x", 6, 10)) == payloads(a.cached("#x", 6, 10))  # ring restarted


# --- Redis away, stalled, new -----------------------------------------------------------------


@ensure
async def test_appends_fail_at_once_while_redis_is_away_and_work_again_after(
    redis_server: RedisServer, nodes: Nodes
) -> None:
    store = await nodes.open(redis_server.url)
    await within(store.append("#x", {"n": 1}))
    redis_server.stop()
    await until(lambda: not store.redis.connected)
    d = store.append("#x", {"n": 2})
    assert d.called  # failed before returning: nobody waits on a Redis that is away
    with pytest.raises(StoreUnavailable):
        await within(d)
    with pytest.raises(StoreUnavailable):
        await within(store.read_positions("alice"))
    redis_server.start()
    await until(lambda: store.redis.connected and store.subscriber.connected)
    appended = await within(store.append("#x", {"n": 3}))
    assert appended.seq == 2  # the append-only file kept seq 1; the failed one took no seq


@ensure
async def test_a_stalled_redis_fails_the_append_after_the_reply_timeout(
    redis_server: RedisServer, nodes: Nodes
) -> None:
    store = await nodes.open(redis_server.url, reply_timeout=0.5)
    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(StoreUnavailable):
            await within(store.append("#x", {"n": 1}), 5)  # the watchdog, not `within`
    finally:
        os.kill(pid, signal.SIGCONT)
    await until(lambda: store.redis.connected)
    assert (await within(store.append("#x", {"n": 2}))).seq >= 1


@ensure
async def test_commands_pipelined_behind_scripts_keep_their_order_on_a_new_redis(
    redis_server: RedisServer, nodes: Nodes
) -> None:
    """A Redis that is new or restarted has no scripts cached: the store loads them when it
    connects, so no EVALSHA is answered NOSCRIPT and retried behind later commands."""
    for restart in (False, True):
        store = await nodes.open(redis_server.url)
        if restart:
            redis_server.stop()
            await until(lambda s=store: not s.redis.connected)  # type: ignore[misc]
            redis_server.start()
            await until(lambda s=store: s.redis.connected)  # type: ignore[misc]
        user = f"alice{int(restart)}"
        saved = store.save_read(user, "#x", 5)
        positions = store.read_positions(user)  # sent before the save was answered
        appended = store.append("#y", {"n": 1})
        raw = store.redis.execute("HGET", store.key("seq"), "#y")
        assert await within(positions) == {"#x": 5}
        assert await within(saved) == 5
        assert int(await within(raw)) == (await within(appended)).seq


# --- replies --------------------------------------------------------------------------------


@ensure
async def test_an_error_reply_fails_only_its_own_command(nodes: Nodes) -> None:
    store = await nodes.open()
    protocol = store.redis.protocol
    key = store.key("k")
    ds = [
        store.redis.execute("SET", key, "v"),
        store.redis.execute("INCR", key),  # not an integer
        store.redis.execute("EVAL", "return redis.error_reply('boom')", 0),
        store.redis.execute("GET", key),
    ]
    results: list[Any] = []
    for d in ds:
        d.addBoth(results.append)
    await within(gatherResults(ds, consumeErrors=True).addErrback(lambda _: None))
    assert results[0] == b"OK" and results[3] == b"v"
    for failed, text in [(results[1], "not an integer"), (results[2], "boom")]:
        assert isinstance(failed, Failure) and failed.check(RedisError)
        assert text in str(failed.value)
    assert store.redis.protocol is protocol  # the connection stays
    assert (await within(store.append("#x", {}))).seq == 1


class _ToRedis(Protocol):
    def __init__(self, front: _Front) -> None:
        self.front = front

    def connectionMade(self) -> None:
        self.front.reached(self)

    def dataReceived(self, data: bytes) -> None:
        self.front.backlog += data

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self.front.transport is not None:
            self.front.transport.loseConnection()


class _Front(Protocol):
    def __init__(self, proxy: SlowProxy) -> None:
        self.proxy = proxy
        self.backlog = bytearray()  # from Redis, not passed on yet
        self.early = bytearray()  # from the client, before Redis was reached
        self.redis: _ToRedis | None = None

    def connectionMade(self) -> None:
        self.proxy.fronts.append(self)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy.redis_port)
        connectProtocol(endpoint, _ToRedis(self))

    def reached(self, redis: _ToRedis) -> None:
        self.redis = redis
        assert redis.transport is not None
        redis.transport.write(bytes(self.early))

    def dataReceived(self, data: bytes) -> None:
        if self.redis is None:
            self.early += data
        else:
            assert self.redis.transport is not None
            self.redis.transport.write(data)

    def pump(self, most: int) -> None:
        if self.backlog and self.transport is not None:
            self.proxy.passed += min(most, len(self.backlog))
            self.transport.write(bytes(self.backlog[:most]))
            del self.backlog[:most]

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.proxy.fronts.remove(self)
        if self.redis is not None and self.redis.transport is not None:
            self.redis.transport.loseConnection()


class SlowProxy:
    """A TCP proxy to Redis that passes its replies on at ``rate`` bytes a second, a little
    every 10 ms: a slow network, on which a large reply takes long but never stalls."""

    TICK = 0.01

    def __init__(self, redis_port: int, rate: int) -> None:
        self.redis_port = redis_port
        self.rate = rate
        self.fronts: list[_Front] = []
        self.passed = 0  # bytes passed on to clients
        self.pumping = LoopingCall(self._pump)
        self.pumping.clock = reactor
        self.port: Any = None

    async def start(self) -> str:
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        self.port = await endpoint.listen(Factory.forProtocol(lambda: _Front(self)))
        self.pumping.start(self.TICK, now=False)
        return f"redis://127.0.0.1:{self.port.getHost().port}/0"

    def _pump(self) -> None:
        for front in list(self.fronts):
            front.pump(int(self.rate * self.TICK))

    async def stop(self) -> None:
        self.pumping.stop()
        for front in list(self.fronts):
            assert front.transport is not None
            front.transport.loseConnection()
        await within(self.port.stopListening())


async def fill(store: RedisLogStore, log: str, count: int, size: int) -> None:
    ds = [store.append(log, {"n": n, "content": "x" * size}) for n in range(count)]
    await within(gatherResults(ds, consumeErrors=True), 60)


async def delete_log(store: RedisLogStore, log: str) -> None:
    await within(store.redis.execute("DEL", store.key("log:" + log)))


async def keep_asking(other: RedisLogStore, done: Deferred[Any]) -> int:
    """Ping through ``other`` until ``done`` fired; how many pings were answered."""
    answered = 0
    while not done.called:
        await within(other.ping())
        answered += 1
    return answered


@ensure
async def test_a_large_reply_arriving_slowly_does_not_trip_the_watchdog(nodes: Nodes) -> None:
    writer = await nodes.open()
    await fill(writer, "#big", 256, 16_000)  # about 4 MB
    redis_port = parse_url(shared_redis_url())[1]
    proxy = SlowProxy(redis_port, rate=4_000_000)  # so the reply takes at least a second
    url = await proxy.start()
    try:
        store = await nodes.open(url, reply_timeout=0.5, cache=8)
        protocol = store.redis.protocol
        started = reactor.seconds()
        before = proxy.passed
        reading = store.read("#big", 0, PAGE_ITEMS, max_bytes=64 * 2**20)  # one XRANGE reply
        pinged = store.ping()  # pipelined behind it: answered after it, not failed
        answered = await within(ensureDeferred(keep_asking(writer, reading)), 30)
        items: Sequence[LogItem] = await within(reading)
        await within(pinged)
        assert reactor.seconds() - started > 0.5  # the reply took longer than the timeout...
        assert proxy.passed - before > 4_000_000
        assert store.redis.protocol is protocol  # ...and the connection was not dropped
        assert [item.seq for item in items] == list(range(1, 257))
        assert answered > 0  # another client's commands were answered meanwhile
    finally:
        await delete_log(writer, "#big")
        await proxy.stop()


@ensure
async def test_reading_16_mb_in_pages_while_other_clients_are_answered(nodes: Nodes) -> None:
    writer = await nodes.open()
    count = 1_024
    await fill(writer, "#big", count, 16_000)  # about 16 MB
    try:
        reader = await nodes.open(reply_timeout=0.5, cache=8)  # beyond its ring: the stream
        other = await nodes.open(reply_timeout=0.5)
        connections = [reader.redis.protocol, other.redis.protocol]
        pages: list[list[int]] = []

        async def page_through() -> list[int]:
            position, got = 0, []
            while position < reader.last_seq("#big"):
                items = await within(reader.read("#big", position, PAGE_ITEMS))
                page = [item.seq for item in items]
                assert page and page[0] == position + 1
                assert sum(len(item.payload) for item in items[:-1]) < PAGE_BYTES
                pages.append(page)
                got.extend(page)
                position = page[-1]
            return got

        readers = gatherResults(
            [ensureDeferred(page_through()) for _ in range(4)], consumeErrors=True
        )
        answered = await within(ensureDeferred(keep_asking(other, readers)), 60)
        for got in await within(readers, 60):
            assert got == list(range(1, count + 1))  # every item once, in order
        assert len(pages) > 4 * 100  # in bounded pages, not one reply per reader
        assert answered > 0
        assert [reader.redis.protocol, other.redis.protocol] == connections  # none dropped
    finally:
        await delete_log(writer, "#big")


@ensure
async def test_dedup_records_are_shared_by_the_nodes_and_expire_by_the_stores_clock(
    nodes: Nodes,
) -> None:
    now = [1_763_780_000_000]
    a = await nodes.open(clock_ms=lambda: now[0], dedup_window=60.0)
    b = await nodes.open(clock_ms=lambda: now[0], dedup_window=60.0)
    key = Dedup("alice", "c1")
    first = await within(a.append("#x", {"n": 1}, None, key))
    now[0] += 59_000
    assert await within(b.append("#x", {"n": 1}, None, key)) == Appended(
        first.seq, first.ts, duplicate=True
    )
    now[0] += 2_000  # the window is over by the store's clock, long before Redis' expiry
    later = await within(b.append("#x", {"n": 1}, None, key))
    assert (later.seq, later.duplicate) == (2, False)
    ttl = await within(a.redis.execute("PTTL", a.key("dedup:alice\n#x\nc1")))
    assert 0 < ttl <= 60_000  # Redis still collects the record after the window
