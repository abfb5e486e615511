"""Counting delivered items without parsing: markers found with ``bytearray.count``.

While measuring, bulk subscribers and publishers never parse a frame: each read goes into one
shared buffer (:data:`BUF`, one per process: the loop is single-threaded) and markers are
counted at C speed. ``"kind":"message"`` occurs exactly once per delivered message, because
inside a JSON string a quote is always escaped, so it cannot occur in ``content``; likewise
``"type":"response"`` / ``"type":"error"`` once per answer. A marker split across two reads
is counted from the bytes kept from the previous read (the *tail*).
"""

from __future__ import annotations

MSG_MARK = b'"kind":"message"'
RESP_MARK = b'"type":"response"'
ERR_MARK = b'"type":"error"'
EDGE = len(MSG_MARK) - 1  # bytes kept from the end of a read to catch a split MSG_MARK
KEEP = max(len(RESP_MARK), len(ERR_MARK), len(MSG_MARK)) - 1

BUF = bytearray(1 << 18)
BUFVIEW = memoryview(BUF)


def count_in_read(mark: bytes, tail: bytes, n: int) -> int:
    """Occurrences of ``mark`` ending in the ``n`` bytes just read into BUF.

    ``tail`` holds (at least) the last ``len(mark) - 1`` bytes before them, so a mark split
    across two reads is counted exactly once: in the read where it ends.
    """
    k = len(mark) - 1
    return BUF.count(mark, 0, n) + (tail[-k:] + bytes(BUFVIEW[: min(n, k)])).count(mark)


def next_tail(tail: bytes, n: int) -> bytes:
    """The tail to keep after a read of ``n`` bytes into BUF."""
    return (tail + bytes(BUFVIEW[max(0, n - KEEP) : n]))[-KEEP:]
