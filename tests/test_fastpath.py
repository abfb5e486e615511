"""The receive fast path against Autobahn's own parser, on the same bytes in every chunking.

Random sequences of client frames — simple text frames, fragmented messages, pings and pongs
interleaved, binary messages, invalid UTF-8, 16-bit lengths below 126 (not the minimal form
RFC 6455 requires), frames over the size limit, unmasked frames, reserved bits, a close — are
cut into random TCP chunks and fed through two real :class:`ServerProtocol` instances, one
with the fast path and one that leaves every byte to Autobahn. Both must hand the connection
the same payloads in the same order, and send the same close frames: the fast path is an
optimisation, never a different parser.
"""

from __future__ import annotations

import os
import struct
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from chat.protocol.closes import Disconnect
from chat.protocol.frames import MAX_ID  # noqa: F401  (the protocol package is importable)
from chat.settings import Settings
from chat.websocket.server import ServerFactory, ServerProtocol
from tests.producer_harness import Harness
from tests.wsdecode import OP_CLOSE, FrameDecoder

MAX = 1024  # the frame size limit of both servers
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Recorder:
    """Stands in for the ChatConnection: records what the adapter hands it."""

    def __init__(self, protocol: ServerProtocol) -> None:
        self.protocol = protocol
        self.received: list[bytes] = []
        self.closing = False
        self.outbound = SimpleNamespace(bytes_written=0)  # read by the keepalive's bookkeeping

    def text_received(self, payload: bytes | str) -> None:
        assert not self.closing, "a payload was handed in after the close decision"
        self.received.append(payload if isinstance(payload, bytes) else payload.encode())

    def close(self, disconnect: Disconnect) -> None:
        if not self.closing:
            self.closing = True
            self.protocol.send_close(disconnect)


class Recording(ServerProtocol):
    fast = True

    def onOpen(self) -> None:
        self.connection = Recorder(self)  # type: ignore[assignment]

    def processData(self) -> bool:
        if self.fast:
            return super().processData()
        return bool(super(ServerProtocol, self).processData())  # Autobahn's parser only

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        pass


@implementer(IPushProducer)
class Idle:
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def stopProducing(self) -> None: ...


class Slow(Recording):
    fast = False


def open_protocol(kind: type[Recording]) -> tuple[Recording, StringTransport]:
    harness = Harness(max_frame_size=MAX)
    factory = ServerFactory(harness.node)
    factory.protocol = kind  # type: ignore[assignment]
    factory.setProtocolOptions(autoPingInterval=0, closeHandshakeTimeout=0, openHandshakeTimeout=0)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    transport.registerProducer(Idle(), True)  # Autobahn unregisters it when it drops
    protocol.dataReceived(HANDSHAKE)
    assert b"101 Switching Protocols" in transport.value()
    transport.clear()
    return protocol, transport


def client_frame(
    opcode: int, payload: bytes, fin: bool = True, masked: bool = True, long16: bool = False,
    rsv: int = 0,
) -> bytes:  # fmt: skip
    """One client frame; ``long16`` uses the 16-bit length form whatever the length."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if long16 or 126 <= length < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    elif length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


texts = st.text(max_size=40).map(lambda s: s.encode())
frames = st.one_of(
    texts.map(lambda p: client_frame(0x1, p)),  # simple text
    texts.map(lambda p: client_frame(0x1, p)),
    texts.map(lambda p: client_frame(0x1, p * 8)),  # 16-bit lengths now and then
    texts.map(lambda p: client_frame(0x1, p, long16=True)),  # a non-minimal length
    st.tuples(texts, texts).map(
        lambda pq: client_frame(0x1, pq[0], fin=False) + client_frame(0x0, pq[1])
    ),  # a fragmented message
    st.tuples(texts, st.binary(max_size=20), texts).map(
        lambda t: (
            client_frame(0x1, t[0], fin=False) + client_frame(0x9, t[1]) + client_frame(0x0, t[2])
        )
    ),  # a ping in the middle of a fragmented message
    st.binary(max_size=20).map(lambda p: client_frame(0x9, p)),  # ping
    st.binary(max_size=20).map(lambda p: client_frame(0xA, p)),  # pong
    st.binary(max_size=20).map(lambda p: client_frame(0x2, p)),  # binary: close 1003
    st.sampled_from([b"\xff", b"\xc3", b"a\xed\xa0\x80"]).map(lambda p: client_frame(0x1, p)),
    st.just(client_frame(0x1, b"x" * (MAX + 1))),  # over the limit: close 1009
    texts.map(lambda p: client_frame(0x1, p, masked=False)),  # unmasked: close 1002
    texts.map(lambda p: client_frame(0x1, p, rsv=1)),  # a reserved bit: close 1002
    st.just(client_frame(0x8, struct.pack("!H", 1000))),  # the client closes
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        if point > start:
            pieces.append(data[start:point])
            start = point
    return pieces


def run(kind: type[Recording], chunks: list[bytes]) -> tuple[list[bytes], list[tuple[int, Any]]]:
    protocol, transport = open_protocol(kind)
    for chunk in chunks:
        if protocol.state == protocol.STATE_CLOSED:
            break
        protocol.dataReceived(chunk)
    sent = FrameDecoder().feed(transport.value())
    closes = [
        (f.opcode, struct.unpack("!H", f.payload[:2])[0] if len(f.payload) >= 2 else None)
        for f in sent
        if f.opcode == OP_CLOSE
    ]
    recorder = protocol.connection
    assert isinstance(recorder, Recorder)
    return recorder.received, closes


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # fmt: skip
@given(st.lists(frames, min_size=1, max_size=12), st.lists(st.integers(0, 10_000), max_size=8))
def test_the_fast_path_and_autobahn_agree_on_every_input(
    sequence: list[bytes], cuts: list[int]
) -> None:
    wire = b"".join(sequence)
    chunks = chunked(wire, cuts)
    assert run(Recording, chunks) == run(Slow, chunks)


def test_a_non_minimal_length_is_a_protocol_error_however_tcp_splits_it() -> None:
    frame = client_frame(0x1, b'{"type":"fire","route":"x"}', long16=True)
    for chunks in ([frame], [frame[:3], frame[3:]], [bytes([b]) for b in frame]):
        received, closes = run(Recording, chunks)
        assert received == [] and closes == [(OP_CLOSE, 1002)], chunks


def test_settings_of_the_harness_are_the_servers() -> None:
    assert Settings(store="memory", max_frame_size=MAX).max_frame_size == MAX
