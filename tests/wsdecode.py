"""A small decoder of server-to-client WebSocket frames (RFC 6455 section 5.2), for tests.

It is written from the RFC, independently of :mod:`chat.protocol.wsframe`, so that tests can
check what a fake transport received without trusting the code under test. It accepts only
what a server may send: unmasked frames, no reserved bits. Feed it bytes in any chunking with
:meth:`FrameDecoder.feed`; it keeps an incomplete tail for the next call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8


@dataclass(frozen=True)
class WsFrame:
    fin: bool
    opcode: int
    payload: bytes

    def json(self) -> Any:
        """The payload of a text frame, decoded as UTF-8 JSON."""
        assert self.opcode == OP_TEXT, f"not a text frame: opcode {self.opcode}"
        return json.loads(self.payload.decode("utf-8"))


class FrameDecoder:
    """Splits a byte stream from a server into frames."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[WsFrame]:
        self.buffer += data
        frames: list[WsFrame] = []
        while True:
            frame = self._take_one()
            if frame is None:
                return frames
            frames.append(frame)

    def _take_one(self) -> WsFrame | None:
        buf = self.buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        if first & 0x70:
            raise ValueError(f"reserved bits set in first byte {first:#04x}")
        if second & 0x80:
            raise ValueError("a server frame must not be masked")
        length = second & 0x7F
        offset = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length = int.from_bytes(buf[2:4], "big")
            if length < 126:
                raise ValueError(f"length {length} used the 16-bit form needlessly")
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = int.from_bytes(buf[2:10], "big")
            if length >> 63:
                raise ValueError("the most significant bit of a 64-bit length must be 0")
            if length < 65536:
                raise ValueError(f"length {length} used the 64-bit form needlessly")
            offset = 10
        if len(buf) < offset + length:
            return None
        payload = bytes(buf[offset : offset + length])
        del buf[: offset + length]
        return WsFrame(bool(first & 0x80), first & 0x0F, payload)

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still waiting for the rest."""
        return len(self.buffer)


def decode_all(data: bytes) -> list[WsFrame]:
    """Every frame in ``data``, which must hold only complete frames."""
    decoder = FrameDecoder()
    frames = decoder.feed(data)
    if decoder.pending:
        raise ValueError(f"{decoder.pending} bytes of an incomplete frame at the end")
    return frames


def decode_json(data: bytes) -> list[Any]:
    """The JSON of every frame in ``data``; each must be a final text frame."""
    out = []
    for frame in decode_all(data):
        assert frame.fin, "the server sends every message in one frame"
        out.append(frame.json())
    return out
