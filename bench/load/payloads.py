"""What the load clients send: message requests of a fixed item size, with a send time.

Every channel message carries ``T`` + the send time (``time.monotonic_ns()``, 19 digits) at
the start of its ``content``: a probe that receives it computes publish-to-deliver latency
without any state shared with the publisher (``CLOCK_MONOTONIC`` is one clock for every
process on the machine). The rest is filler, so that a stored item is about
:data:`ITEM_BYTES` bytes of JSON on every server.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench.load.framing import masked_frame

TS_DIGITS = 19
ITEM_BYTES = 150  # target size of one stored item's JSON (with a 6-digit seq)


def content_length(channel: str, sender: str) -> int:
    """Length of ``content`` that makes a stored item about ITEM_BYTES bytes long."""
    skeleton = json.dumps(
        {
            "kind": "message",
            "channel": channel,
            "from": sender,
            "content": "",
            "seq": 100000,
            "ts": 1763780000000,
        },
        separators=(",", ":"),
    )
    return max(TS_DIGITS + 2, ITEM_BYTES - len(skeleton))


def timed_content(length: int) -> bytes:
    """``T`` + the send time (monotonic ns, fixed width) + filler: ``length`` bytes."""
    return b"T%019d " % time.monotonic_ns() + b"x" * (length - TS_DIGITS - 2)


def sent_at_ns(payload: bytes) -> int:
    """The send time written by :func:`timed_content` into a delivered item's ``content``."""
    j = payload.index(b'"content":"T') + 12
    return int(payload[j : j + TS_DIGITS])


def message_request(fid: int, channel: str, content: bytes) -> bytes:
    """A masked ``message`` request to ``channel`` (built by hand: cheaper than json)."""
    return masked_frame(
        b'{"type":"request","id":%d,"route":"message","data":{"channel":"%s","content":"%s"}}'
        % (fid, channel.encode(), content)
    )


def private_request(fid: int, user: str, content: bytes) -> bytes:
    """A masked private ``message`` request to ``user``."""
    return masked_frame(
        b'{"type":"request","id":%d,"route":"message","data":{"user":"%s","content":"%s"}}'
        % (fid, user.encode(), content)
    )


def fanout_window(p: dict[str, Any], n_subs: int) -> int:
    """Messages the publisher may be ahead of the slowest subscriber.

    ``"auto"`` keeps about ``in_flight`` deliveries under way whatever the subscriber count
    (between 16 and 1000 messages, well under the chat server's retention of 10,000), so
    the server always has work queued while no server buffers more than that.
    """
    if p["window"] != "auto":
        return int(p["window"])
    return max(16, min(1000, int(p["in_flight"]) // max(1, n_subs)))


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50 / p90 / p99 / max of latency samples (ms), or ``{}`` when there are none."""
    if not samples_ms:
        return {}
    s = sorted(samples_ms)

    def at(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * len(s)))], 3)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(s[-1], 3)}
