"""WebSocket framing for server-to-client text messages (RFC 6455 section 5.2).

Server frames are unmasked, so a frame is a 2-, 4- or 10-byte header followed by the payload.
Building it here lets the delivery path frame pre-encoded items by joining bytes and hand
many frames to one ``transport.write``, instead of one Autobahn ``sendMessage`` per frame.
"""

from __future__ import annotations

import struct

_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")
_FIN_TEXT = 0x81


def text_frame_header(length: int) -> bytes:
    """The header of a final, unmasked text frame carrying ``length`` payload bytes."""
    if length < 126:
        return _SHORT.pack(_FIN_TEXT, length)
    if length < 65536:
        return _MEDIUM.pack(_FIN_TEXT, 126, length)
    return _LONG.pack(_FIN_TEXT, 127, length)


def text_frame(payload: bytes) -> bytes:
    """One complete WebSocket text frame carrying ``payload`` (UTF-8 JSON)."""
    return text_frame_header(len(payload)) + payload


def _unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the repeating 4-byte ``mask`` (RFC 6455 section 5.3)."""
    length = len(payload)
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        length, "little"
    )


def split_text_frames(buffer: bytes, max_payload: int) -> tuple[list[bytes], int]:
    """The payloads of the complete, simple client text frames at the start of ``buffer``.

    A *simple* frame is final (FIN), unfragmented, masked, has no RSV bits, is a text frame
    (opcode 1) no longer than ``max_payload``, and carries valid UTF-8: by far the most common
    client frame. Scanning stops at the first frame that is incomplete or not simple, so the
    caller can hand the rest (control frames, fragments, errors) to a full WebSocket parser.
    Returns the unmasked payloads and how many bytes of ``buffer`` they took.
    """
    payloads: list[bytes] = []
    offset = 0
    end = len(buffer)
    while end - offset >= 6:
        first, second = buffer[offset], buffer[offset + 1]
        if first != _FIN_TEXT or not second & 0x80:
            break
        length = second & 0x7F
        head = offset + 2
        if length == 126:
            if end - head < 2:
                break
            length = int.from_bytes(buffer[head : head + 2], "big")
            if length < 126:
                break  # not the minimal length encoding: RFC 6455 forbids it (Autobahn: 1002)
            head += 2
        elif length == 127:
            break  # over 64 KiB: leave it to the full parser and its size limit
        if length > max_payload or end - head < 4 + length:
            break
        payload = _unmask(buffer[head + 4 : head + 4 + length], buffer[head : head + 4])
        try:
            payload.decode()
        except UnicodeDecodeError:
            break  # the full parser closes with 1007
        payloads.append(payload)
        offset = head + 4 + length
    return payloads, offset
