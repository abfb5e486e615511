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
