"""Client-side WebSocket (RFC 6455) pieces for the load process: no Autobahn, no reactor.

(Formerly ``bench/wsproto.py``: renamed because that name shadows the PyPI package
``wsproto`` whenever ``bench/`` is on ``sys.path``, as it is for ``python bench/x.py``.)

The load clients must be cheaper than the servers they measure, so they do the opening
handshake with a hand-written HTTP request, send masked frames built with one big-integer
XOR, and read server frames either by parsing headers (:class:`FrameReader`, used during
setup and by probe subscribers) or not at all (bulk subscribers count a marker that occurs
exactly once per delivered item, see :mod:`bench.load.marks`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUBPROTOCOL = "chat.v1.json"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class HandshakeError(Exception):
    """The server did not answer the opening handshake with a valid 101."""


def new_key() -> bytes:
    """A fresh ``Sec-WebSocket-Key`` (16 random bytes, base64)."""
    return base64.b64encode(os.urandom(16))


def handshake_request(host: str, port: int, path: str, key: bytes) -> bytes:
    """The opening handshake, offering the protocol's subprotocol as a browser client does."""
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"
        "\r\n"
    ).encode()


def check_handshake(head: bytes, key: bytes) -> None:
    """Raise :class:`HandshakeError` unless ``head`` (up to the blank line) is a valid 101."""
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 101"):
        raise HandshakeError(f"expected 101, got {lines[0][:80]!r}")
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"sec-websocket-accept") != accept:
        raise HandshakeError("wrong Sec-WebSocket-Accept")
    # Every target must negotiate the same subprotocol, or the idle-memory comparison would
    # compare a connection that did the negotiation with one that did not.
    if headers.get(b"sec-websocket-protocol") != SUBPROTOCOL.encode():
        raise HandshakeError(
            f"server did not select {SUBPROTOCOL}: {headers.get(b'sec-websocket-protocol')!r}"
        )


_rand32 = random.Random(os.urandom(8)).getrandbits


def masked_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final client frame, masked with a random key as RFC 6455 requires."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = _rand32(32).to_bytes(4, "little")
    mask = (key * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")).to_bytes(
        n, "little"
    )
    return header + key + body


class FrameReader:
    """Incremental parser of server frames (unmasked), for setup and probe connections."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
        """Append ``data``; return the complete frames as ``(opcode, payload)``."""
        buf = self.buf
        buf += data
        n = len(buf)
        i = 0
        out = []
        while n - i >= 2:
            b0 = buf[i]
            b1 = buf[i + 1]
            if b1 & 0x80:
                raise ValueError("server frames must not be masked")
            length = b1 & 0x7F
            if length < 126:
                h = 2
            elif length == 126:
                if n - i < 4:
                    break
                length = (buf[i + 2] << 8) | buf[i + 3]
                h = 4
            else:
                if n - i < 10:
                    break
                length = int.from_bytes(buf[i + 2 : i + 10], "big")
                h = 10
            end = i + h + length
            if end > n:
                break
            if not b0 & 0x80:
                raise ValueError("fragmented server message (the harness does not expect any)")
            out.append((b0 & 0x0F, bytes(buf[i + h : end])))
            i = end
        if i:
            del buf[:i]
        return out
