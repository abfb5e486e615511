"""The chat server's receive fast path, copied: simple client text frames split in one pass.

The chat server does not let Autobahn parse the common client frame (``processData`` in
``chat/websocket.py`` over ``split_text_frames`` in ``chat/protocol/wsframe.py``: about 20 µs
per message less). The baselines do the same, so ingest and many-rooms figures compare
delivery, not frame parsing.

Why a copy and not an import: the harness benchmarks any commit of the server
(``--chat-commit REV`` puts that commit's ``chat`` first on the server's path), while the
baselines run from this tree; an import would tie the baselines to whatever ``chat/`` is
installed here, and a change to the server's function would silently move the reference the
server is measured against. This copy changes only when the harness changes. (Copied from
``chat/protocol/wsframe.py`` at commit 84b5a6d; it is the same algorithm line by line.)
"""

from __future__ import annotations

import struct

_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")
_FIN_TEXT = 0x81


def text_frame(payload: bytes) -> bytes:
    """One complete, final, unmasked WebSocket text frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return _SHORT.pack(_FIN_TEXT, n) + payload
    if n < 65536:
        return _MEDIUM.pack(_FIN_TEXT, 126, n) + payload
    return _LONG.pack(_FIN_TEXT, 127, n) + payload


def _unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the repeating 4-byte ``mask`` (RFC 6455 section 5.3)."""
    length = len(payload)
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        length, "little"
    )


def split_text_frames(buffer: bytes, max_payload: int) -> tuple[list[bytes], int]:
    """The payloads of the complete, simple client text frames at the start of ``buffer``.

    A *simple* frame is final, unfragmented, masked, without RSV bits, a text frame no longer
    than ``max_payload``, carrying valid UTF-8. Scanning stops at the first frame that is
    incomplete or not simple, so the caller hands the rest to Autobahn's parser. Returns the
    unmasked payloads and how many bytes of ``buffer`` they took.
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
