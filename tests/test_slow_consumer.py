"""A client that stops reading: the server pauses its producers, buffers a bounded amount,
and on resume delivers every item in order with no holes."""

from __future__ import annotations

import socket

import pytest_twisted

from chat.connection import ChatConnection
from tests.helpers import until, within

ensure = pytest_twisted.ensureDeferred
ITEMS = 3000
CONTENT = "x" * 150
TWISTED_BUFFER = 64 * 1024


def buffered(transport) -> int:  # type: ignore[no-untyped-def]
    """Bytes waiting in a Twisted TCP transport's own buffer (not yet in the kernel)."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def connection_of(server, username: str) -> ChatConnection:  # type: ignore[no-untyped-def]
    return next(c for c in server.node.connections if c.session and c.session.username == username)


@ensure
async def test_stalled_reader_pauses_producers_and_catches_up_without_holes(
    server, client_factory
) -> None:
    slow = await client_factory("slow")
    feed = slow.messages(window=None)  # unlimited credit: only TCP paces it
    await within(slow.join("flood"))
    assert (await within(feed.next()))["seq"] == 1

    server_side = connection_of(server, "slow")
    server_side.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    slow.transport.pauseProducing()  # the client stops reading its socket

    publisher = await client_factory("publisher")
    await within(publisher.join("flood"))  # seq 2
    for _batch in range(ITEMS // 250):
        acks = [publisher.send("flood", CONTENT) for _ in range(250)]
        for ack in acks:
            await within(ack)
        assert buffered(server_side.transport) <= TWISTED_BUFFER + 128 * 1024

    outbound = server_side.outbound
    await until(lambda: outbound.paused, what="the server to pause the slow connection")
    assert outbound.pauses >= 1
    assert all(stream.paused for stream in outbound.streams.values())
    total = ITEMS * (len(CONTENT) + 100)
    assert outbound.bytes_written < total / 2  # the rest waits in the log, not in buffers
    assert buffered(server_side.transport) <= TWISTED_BUFFER + 128 * 1024

    slow.transport.resumeProducing()
    items = [await within(feed.next()) for _ in range(ITEMS + 1)]
    assert [i["seq"] for i in items] == list(range(2, ITEMS + 3))
    assert items[0]["kind"] == "join" and items[0]["from"] == "publisher"
    assert all(i["content"] == CONTENT for i in items[1:])
    assert outbound.pauses >= 1 and not outbound.paused
