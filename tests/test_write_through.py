"""The frame writer sends at once when Twisted holds nothing unsent, and otherwise leaves the
bytes to ``transport.write``: order, Twisted's buffer and its producer pause are kept."""

from __future__ import annotations

import socket
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from chat.websocket._twisted import write_through
from tests.helpers import until, within

ensure = pytest_twisted.ensureDeferred


class Sender(Protocol):
    def connectionMade(self) -> None:
        self.factory.connected.callback(self)  # type: ignore[attr-defined]


class Reader(Protocol):
    def __init__(self) -> None:
        self.received = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.received += data


@implementer(IPushProducer)
class Producer:
    def __init__(self) -> None:
        self.pauses = 0
        self.resumes = 0

    def pauseProducing(self) -> None:
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.resumes += 1

    def stopProducing(self) -> None:
        pass


def unsent(transport: Any) -> int:
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


async def connected_pair() -> tuple[Any, Reader, Any]:
    factory = Factory.forProtocol(Sender)
    factory.connected = Deferred()  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    reader = Reader()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    await within(connectProtocol(endpoint, reader))
    sender = await within(factory.connected)
    return sender.transport, reader, port


@ensure
async def test_a_write_with_nothing_unsent_goes_to_the_socket_at_once() -> None:
    transport, reader, port = await connected_pair()
    try:
        write_through(transport, b"hello")
        assert unsent(transport) == 0  # not left for the reactor's next poll
        await until(lambda: bytes(reader.received) == b"hello", what="the bytes to arrive")
    finally:
        transport.loseConnection()
        await port.stopListening()


@ensure
async def test_what_the_socket_refuses_is_buffered_in_order_and_pauses_the_producer() -> None:
    transport, reader, port = await connected_pair()
    try:
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        reader.transport.pauseProducing()  # type: ignore[union-attr]  # the reader stalls
        producer = Producer()
        transport.registerProducer(producer, True)
        chunks = [bytes([65 + i % 26]) * 10_000 for i in range(200)]  # 2 MB, each distinct
        for index, chunk in enumerate(chunks):
            if index % 7 == 3:
                transport.write(chunk)  # another writer (Autobahn's pings) in between
            else:
                write_through(transport, chunk)
        assert unsent(transport) > 0  # the kernel's buffers filled up
        assert producer.pauses >= 1  # Twisted's pause above its buffer size still applies
        reader.transport.resumeProducing()  # type: ignore[union-attr]
        expected = b"".join(chunks)
        await until(lambda: len(reader.received) >= len(expected), what="every byte")
        assert bytes(reader.received) == expected
        await until(lambda: producer.resumes >= 1, what="Twisted to resume the producer")
    finally:
        transport.unregisterProducer()
        transport.loseConnection()
        await port.stopListening()


@ensure
async def test_after_lose_connection_bytes_are_left_to_twisted() -> None:
    transport, reader, port = await connected_pair()
    try:
        transport.loseConnection()
        write_through(transport, b"late")
        assert unsent(transport) == 4  # Twisted writes what it holds, then closes
        await until(lambda: bytes(reader.received) == b"late", what="the bytes to arrive")
    finally:
        await port.stopListening()


def test_other_transports_get_a_plain_write() -> None:
    transport = StringTransport()
    write_through(transport, b"abc")
    write_through(transport, b"def")
    assert transport.value() == b"abcdef"
