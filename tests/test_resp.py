"""The Redis connection's reply side (chat.stores.redis._resp), without a Redis.

Replies are parsed by hiredis; what is ours is the rest: each reply answers the oldest pending
command, an error reply fails only its command, pushed messages go to the subscriber's
callback, and the watchdog drops a connection that makes no *progress* for ``reply_timeout``,
not one whose reply is merely large. These tests drive :class:`RespProtocol` with a fake
transport and a fake clock, feeding the same bytes cut into every kind of chunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from chat.stores.errors import StoreUnavailable
from chat.stores.redis._resp import RedisConnection, RedisError, RespProtocol

# --- replies, and how Redis writes them -----------------------------------------------------


class Simple(str):
    """A status reply (``+OK``)."""


class Error(str):
    """An error reply (``-ERR ...``)."""


class NilArray:
    """``*-1``."""

    def __repr__(self) -> str:
        return "NilArray()"


def encode(reply: Any) -> bytes:
    """``reply`` in RESP2, as Redis writes it."""
    if isinstance(reply, Error):
        return b"-" + reply.encode() + b"\r\n"
    if isinstance(reply, Simple):
        return b"+" + reply.encode() + b"\r\n"
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, NilArray):
        return b"*-1\r\n"
    if isinstance(reply, bytes):
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    assert isinstance(reply, list)
    return b"*%d\r\n" % len(reply) + b"".join(encode(item) for item in reply)


def expected(reply: Any) -> Any:
    """What a command answered with ``reply`` fires with (errors as ``("error", text)``)."""
    if isinstance(reply, Error):
        return ("error", str(reply))
    if isinstance(reply, Simple):
        return str(reply).encode()
    if isinstance(reply, NilArray):
        return None
    if isinstance(reply, list):
        return [expected(item) for item in reply]
    return reply


def outcome(value: Any) -> Any:
    """A fired command's result in the form of :func:`expected`."""
    if isinstance(value, Failure):
        assert value.check(RedisError), value
        return ("error", str(value.value))
    if isinstance(value, RedisError):  # an error inside an array
        return ("error", str(value))
    if isinstance(value, list):
        return [outcome(item) for item in value]
    return value


line = st.text(st.characters(blacklist_characters="\r\n", codec="utf-8"), max_size=40)
leaves = st.one_of(
    st.binary(max_size=300),  # binary, including CR LF and NUL
    st.just(b""),
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    line.map(Simple),
    line.filter(bool).map(Error),
)
replies = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=5) | st.just(NilArray()),
    max_leaves=25,
)


def chunks(data: bytes, sizes: Sequence[int]) -> Iterator[bytes]:
    """``data`` cut into pieces of ``sizes`` (cycled)."""
    position, index = 0, 0
    while position < len(data):
        size = sizes[index % len(sizes)]
        yield data[position : position + size]
        position += size
        index += 1


class Connection:
    """A RespProtocol on a fake transport, with a fake clock."""

    def __init__(self, reply_timeout: float = 3.0) -> None:
        self.clock = Clock()
        self.owner = RedisConnection(self.clock, "127.0.0.1", 1, reply_timeout=reply_timeout)
        self.protocol = RespProtocol(self.owner)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        assert self.owner.protocol is self.protocol  # set up, usable

    def execute(self, *args: Any) -> list[Any]:
        """Send a command; the returned list gets its result (or Failure) when it fires."""
        fired: list[Any] = []
        d: Deferred[Any] = self.owner.execute(*args)
        d.addBoth(fired.append)
        return fired

    def feed(self, data: bytes, sizes: Sequence[int] = (1 << 30,)) -> None:
        for chunk in chunks(data, sizes):
            self.protocol.dataReceived(chunk)

    @property
    def aborted(self) -> bool:
        return bool(self.transport.disconnecting)


# --- parsing --------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(
    sent=st.lists(replies, min_size=1, max_size=12),
    sizes=st.lists(st.integers(1, 80), min_size=1, max_size=10),
)
def test_every_chunking_answers_each_command_with_its_reply(
    sent: list[Any], sizes: list[int]
) -> None:
    connection = Connection()
    results = [connection.execute("PING") for _ in sent]
    connection.feed(b"".join(encode(reply) for reply in sent), sizes)
    assert [outcome(fired[0]) for fired in results] == [expected(reply) for reply in sent]
    assert all(len(fired) == 1 for fired in results)
    assert not connection.aborted and not connection.protocol.pending


@settings(max_examples=200, deadline=None)
@given(
    pushed=st.lists(st.lists(st.binary(max_size=200), min_size=1, max_size=4), max_size=10),
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=6),
)
def test_pushed_messages_arrive_whole_and_in_order_in_every_chunking(
    pushed: list[list[bytes]], sizes: list[int]
) -> None:
    connection = Connection()
    heard: list[Any] = []
    connection.protocol.push = heard.append  # a subscriber connection
    subscribed = connection.execute("SUBSCRIBE", "events")
    data = encode([b"subscribe", b"events", 1]) + b"".join(encode(list(m)) for m in pushed)
    connection.feed(data, sizes)
    assert subscribed == [[b"subscribe", b"events", 1]]  # the command's own answer
    assert heard == pushed


def test_a_megabyte_reply_cut_into_small_chunks_comes_out_whole() -> None:
    connection = Connection()
    big = bytes(range(256)) * 4_000  # about 1 MB, every byte value
    fired = connection.execute("GET", "big")
    connection.feed(encode(big), [1] * 7 + [4_096])
    assert fired == [big]


def test_an_error_reply_fails_only_its_own_command() -> None:
    connection = Connection()
    first = connection.execute("SET", "k", "v")
    second = connection.execute("INCR", "k")
    third = connection.execute("GET", "k")
    connection.feed(b"+OK\r\n-ERR value is not an integer or out of range\r\n$1\r\nv\r\n", [3])
    assert first == [b"OK"]
    assert outcome(second[0]) == ("error", "ERR value is not an integer or out of range")
    assert third == [b"v"]
    assert not connection.aborted
    assert connection.execute("PING") == [] and not connection.aborted  # still usable


def test_bytes_that_are_not_resp_drop_the_connection() -> None:
    connection = Connection()
    answered = connection.execute("PING")
    waiting = connection.execute("PING")
    connection.feed(b"+PONG\r\n!nonsense\r\n")
    assert answered == [b"PONG"]
    assert connection.aborted
    connection.protocol.connectionLost(Failure(ConnectionError("aborted")))
    assert isinstance(waiting[0], Failure) and waiting[0].check(StoreUnavailable)
    assert connection.owner.protocol is None  # commands now fail at once


# --- the watchdog ---------------------------------------------------------------------------


def test_a_command_without_any_reply_drops_the_connection_after_the_timeout() -> None:
    connection = Connection(reply_timeout=0.5)
    connection.execute("BLPOP", "nothing", 0)
    connection.clock.advance(0.49)
    assert not connection.aborted
    connection.clock.advance(0.02)
    assert connection.aborted


def test_a_large_reply_arriving_slowly_never_trips_the_watchdog() -> None:
    connection = Connection(reply_timeout=0.5)
    reply = b"x" * 200_000
    fired = connection.execute("GET", "big")
    data = encode(reply)
    for chunk in chunks(data, [1_000]):  # 200 chunks, 0.1 s apart: 20 s in all
        connection.clock.advance(0.1)
        connection.protocol.dataReceived(chunk)
        assert not connection.aborted
    assert fired == [reply]
    # And with nothing pending, silence is fine too.
    connection.clock.advance(5)
    assert not connection.aborted


def test_replies_that_keep_coming_keep_a_busy_pipeline_alive() -> None:
    connection = Connection(reply_timeout=0.5)
    results = [connection.execute("PING") for _ in range(50)]
    for _ in range(49):
        connection.clock.advance(0.3)  # each reply well within the timeout of the last one
        connection.protocol.dataReceived(b"+PONG\r\n")
    assert not connection.aborted
    connection.clock.advance(0.5)  # the last command waits for nothing to arrive: stalled
    assert connection.aborted
    assert sum(1 for fired in results if fired) == 49


@pytest.mark.parametrize("reply", [b"+OK\r\n", b":1\r\n", b"$-1\r\n", b"*0\r\n"])
def test_a_reply_with_nothing_pending_is_dropped_not_misrouted(reply: bytes) -> None:
    connection = Connection()
    connection.feed(reply)  # logged and ignored
    fired = connection.execute("PING")
    connection.feed(b"+PONG\r\n")
    assert fired == [b"PONG"]


def test_a_command_sent_while_the_connection_is_lost_fails_instead_of_hanging() -> None:
    connection = Connection()
    retried: list[Any] = []

    def retry(failure: Failure) -> None:  # a caller that tries again at once
        connection.owner.execute("PING").addBoth(retried.append)
        connection.protocol.execute("PING").addBoth(retried.append)

    connection.owner.execute("GET", "k").addErrback(retry)
    connection.protocol.connectionLost(Failure(ConnectionError("gone")))
    assert len(retried) == 2
    assert all(isinstance(r, Failure) and r.check(StoreUnavailable) for r in retried)
    assert not connection.protocol.pending
