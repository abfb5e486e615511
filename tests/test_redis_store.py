"""The Redis store beyond the contract suite: two nodes, missed notifications, Redis away."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import pytest_twisted

from chat.stores.redis import RedisLogStore, parse_url
from chat.stores.redis._resp import StoreUnavailable, encode_command, parse
from tests.helpers import until, within
from tests.redis_fixtures import RedisServer, redis_server, shared_redis_url

ensure = pytest_twisted.ensureDeferred
__all__ = ["redis_server"]


def test_resp_encoding_and_parsing() -> None:
    assert encode_command(("SET", b"k", 12)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n"
    reply = b"*3\r\n:1\r\n$-1\r\n*2\r\n+OK\r\n$2\r\nhi\r\n"
    assert parse(reply, 0) == ([1, None, [b"OK", b"hi"]], len(reply))
    error, _ = parse(b"-NOSCRIPT no\r\n", 0)
    assert str(error) == "NOSCRIPT no"


def test_store_urls() -> None:
    assert parse_url("redis://10.0.0.5:6380/2") == ("10.0.0.5", 6380, 2)
    assert parse_url("redis://localhost") == ("localhost", 6379, 0)
    with pytest.raises(ValueError):
        parse_url("redis://host:port/x")


async def open_pair(url: str) -> tuple[RedisLogStore, RedisLogStore]:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    first = await within(RedisLogStore(url, prefix=prefix, reply_timeout=0.5).start())
    second = await within(RedisLogStore(url, prefix=prefix, reply_timeout=0.5).start())
    return first, second


@ensure
async def test_two_nodes_hold_identical_bytes_and_the_same_directory() -> None:
    a, b = await open_pair(shared_redis_url())
    try:
        woken: list[int] = []
        b.listen("#x", lambda: woken.append(b.last_seq("#x")))
        items = [await within(a.append("#x", {"n": n})) for n in range(3)]
        await until(lambda: b.last_seq("#x") == 3)
        assert woken == [1, 2, 3]
        held = b.cached("#x", 0, 10)
        assert held is not None
        assert [i.payload for i in held] == [i.payload for i in items]
        assert a.epoch == b.epoch
        a.add_channel("general")
        a.remember_user("alice")
        await until(lambda: b.has_channel("general") and b.knows_user("alice"))
    finally:
        await within(a.close())
        await within(b.close())


@ensure
async def test_a_node_that_missed_notifications_catches_up_by_itself() -> None:
    a, b = await open_pair(shared_redis_url())
    try:
        woken: list[int] = []
        b.listen("#x", lambda: woken.append(b.last_seq("#x")))
        await within(a.append("#x", {"n": 0}))
        await until(lambda: b.last_seq("#x") == 1)
        resyncs = b.resyncs
        protocol = b.subscriber.protocol
        assert protocol is not None and protocol.transport is not None
        protocol.transport.abortConnection()  # b stops hearing events for a moment
        for n in range(1, 6):
            await within(a.append("#x", {"n": n}))
        await until(lambda: b.resyncs > resyncs and b.last_seq("#x") == 6)
        assert woken[-1] == 6  # woken once the resync saw the log move
        assert b.cached("#x", 0, 10) is None  # not in its ring: read from the stream
        items = await within(b.read("#x", 0, 10))
        assert [i.seq for i in items] == [1, 2, 3, 4, 5, 6]
        nxt = await within(a.append("#x", {"n": 6}))
        await until(lambda: b.last_seq("#x") == 7)
        held = b.cached("#x", 6, 10)  # the ring restarted at the next item heard
        assert held is not None and [i.payload for i in held] == [nxt.payload]
    finally:
        await within(a.close())
        await within(b.close())


@ensure
async def test_appends_fail_at_once_while_redis_is_away_and_work_again_after(
    redis_server: RedisServer,
) -> None:
    store = await within(RedisLogStore(redis_server.url, reply_timeout=0.5).start())
    try:
        await within(store.append("#x", {"n": 1}))
        redis_server.stop()
        await until(lambda: not store.redis.connected)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await within(store.append("#x", {"n": 2}))
        assert time.monotonic() - started < 0.5
        redis_server.start()
        back = time.monotonic()
        await until(lambda: store.redis.connected and store.subscriber.connected, seconds=5)
        assert time.monotonic() - back < 5
        item = await within(store.append("#x", {"n": 3}))
        assert item.seq == 2  # the append-only file kept seq 1; the failed one took no seq
    finally:
        await within(store.close())


@ensure
async def test_a_stalled_redis_fails_the_append_within_the_reply_timeout(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    store = await within(RedisLogStore(redis_server.url, reply_timeout=0.5).start())
    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    try:
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await within(store.append("#x", {"n": 1}), 5)
        assert time.monotonic() - started < 2
    finally:
        os.kill(pid, signal.SIGCONT)
        await within(store.close())
