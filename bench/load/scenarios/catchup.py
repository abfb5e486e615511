"""Catch-up: a reader far behind, on each store.

A poster appends ``items`` messages to one channel; then a fresh client logs in, opens
``messages`` with ``{"since": {channel: 0}, "epoch": <its login's epoch>}`` and joins. It must
receive every retained item in order, after one ``gap`` naming what retention removed
(PROTOCOL.md: nothing is dropped while a client is merely behind), at full speed.
Reported: items received against expected, the gap items seen against the one expected, and
the catch-up rate (items/s, from opening the feed to the last item). A reader that stops
getting items for ``stall_s`` seconds is reported as *stalled after K of M items* instead of
waiting: then one more message is posted (``nudge``) to see whether an append releases more.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench.load.conn import Conn
from bench.load.coordinator import Coordinator
from bench.load.framing import OP_PING
from bench.load.logcheck import FeedChecker
from bench.load.marks import BUF, BUFVIEW
from bench.load.publishing import Ring
from bench.load.setup import ask_all

CHANNEL = "catchup"
JOIN_ID = 3


def post(co: Coordinator, poster: Conn, n: int) -> dict[str, Any]:
    """Append ``n`` messages with ``window`` requests open; wait for every answer."""
    p = co.params
    window = p["window"]
    ring = Ring(CHANNEL, b"c" * p["content_chars"], 4 * window)
    done = {"acks": 0, "errors": 0, "sent": 0}

    def top_up() -> None:
        k = min(window - (done["sent"] - done["acks"] - done["errors"]), n - done["sent"])
        if k > 0:
            done["sent"] += k
            poster.send(ring.take(k))

    def on_acks(got: int, bad: int) -> None:
        done["acks"] += got
        done["errors"] += bad
        top_up()

    co.loop.handlers[poster.fd] = poster.ack_handler(on_acks)
    t0 = time.monotonic()
    top_up()
    co.loop.run_until(
        lambda: done["acks"] + done["errors"] >= n,
        p["post_timeout"],
        lambda: f"{done['acks']} of {n} posts answered",
        step=0.005,
    )
    elapsed = time.monotonic() - t0
    return {**done, "post_s": round(elapsed, 3), "posts_per_s": round(n / elapsed)}


class Reader:
    """The catching-up client: parses every frame, notes the answer to its join."""

    def __init__(self, co: Coordinator, conn: Conn) -> None:
        self.conn = conn
        self.checker = FeedChecker(last=0)
        self.join_seq: int | None = None
        assert conn.sock is not None
        sock, reader = conn.sock, conn.reader
        conn.state = "counting"

        def on_readable(ev: int) -> None:
            try:
                n = sock.recv_into(BUF)
            except BlockingIOError:
                return
            except OSError:
                n = 0
            if n == 0:
                conn.fail("reader closed by the server")
                return
            for opcode, payload in reader.feed(BUFVIEW[:n]):
                if opcode == OP_PING:
                    conn.pong(payload)
                elif opcode == 1:
                    if b'"type":"next"' in payload:
                        self.checker.frame(payload)
                    elif b'"id":%d' % JOIN_ID in payload:
                        self.join_seq = int(json.loads(payload)["data"]["seq"])

        co.loop.handlers[conn.fd] = on_readable

    def done(self) -> bool:
        return self.join_seq is not None and self.checker.last >= self.join_seq


def run(co: Coordinator) -> dict[str, Any]:
    p = co.params
    timeout = p["setup_timeout"]
    retention = int(p["retention"])
    (poster,) = co.connect(["poster"], timeout)
    ask_all(
        co.loop,
        [poster],
        co.tally,
        JOIN_ID,
        lambda c: c.request(JOIN_ID, "channel.join", {"channel": CHANNEL}),
        timeout,
    )
    posted = post(co, poster, p["items"])
    (conn,) = co.connect(["reader"], timeout)
    epoch = conn.answer(1)["epoch"]
    reader = Reader(co, conn)
    checker = reader.checker
    snap0 = co.snapshot()
    t_open = time.monotonic()
    conn.request(2, "messages", {"since": {CHANNEL: 0}, "epoch": epoch}, kind="stream")
    conn.request(JOIN_ID, "channel.join", {"channel": CHANNEL})
    deadline = t_open + p["catchup_timeout"]
    stalled = False
    while not reader.done() and not conn.closed:
        now = time.monotonic()
        if now - max(checker.t_progress, t_open) > p["stall_s"]:
            stalled = True
            break
        if now > deadline:
            break
        co.loop.poll(0.005)
    cpu = co.cpu_between(snap0, co.snapshot())
    t_last = checker.t_last_item or time.monotonic()
    got = checker.items
    rate = round(got / (t_last - t_open)) if got and t_last > t_open else None
    join_seq = reader.join_seq or 0
    first_retained = max(1, join_seq - retention + 1)
    expected = join_seq - first_retained + 1 if join_seq else None
    result: dict[str, Any] = {
        "items_posted": p["items"],
        "content_chars": p["content_chars"],
        "retention": retention,
        **posted,
        "join_seq": reader.join_seq,
        "expected_items": expected,
        "expected_gap": [1, first_retained - 1] if first_retained > 1 else None,
        **checker.summary(),
        "caught_up": reader.done(),
        "stalled": stalled,
        "reader_closed": conn.closed,
        "catchup_s": round(t_last - t_open, 3),
        # the figure reported, only for a reader that got everything; else how fast it went
        # while it got anything (``partial_items_per_s``)
        "catchup_items_per_s": rate if reader.done() else None,
        "partial_items_per_s": None if reader.done() else rate,
        "server_cpu_pct": cpu.get("server_pct"),
        "others_cpu_pct": cpu.get("others_pct"),
    }
    gaps = [(g["first"], g["last"]) for g in checker.gaps]
    result["gap_as_expected"] = gaps == (
        [tuple(result["expected_gap"])] if result["expected_gap"] else []
    )
    if stalled:
        result["stalled_after"] = (
            f"stalled after {got} of {expected} items ({p['stall_s']} s without one)"
        )
        before = checker.items
        nudge = post(co, poster, 1)
        co.loop.run_for(min(2.0, p["stall_s"]))
        result["nudge"] = {"posted": nudge["acks"], "items_after": checker.items - before}
    return result
