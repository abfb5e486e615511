"""Stalled consumer: one subscriber stops reading while a million items are published.

A subscriber with a 4 KiB ``SO_RCVBUF`` opens its feed, joins, and is never read again; a
second one reads normally; publishers publish ``items`` to the channel, never more than
``healthy_lag`` ahead of the reading subscriber. The server's RSS is sampled throughout
(the chat server's promise: a cursor per stalled client, no buffer). Then the stalled
subscriber reads again and must receive everything still retained, with ``gap`` items naming
exactly what retention removed (:class:`bench.load.logcheck.FeedChecker`).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from bench.load.conn import Conn
from bench.load.coordinator import Coordinator
from bench.load.framing import OP_CLOSE, OP_PING, FrameReader
from bench.load.logcheck import FeedChecker
from bench.load.loop import EPOLLIN
from bench.load.marks import BUF, BUFVIEW
from bench.load.payloads import content_length
from bench.load.publishing import Ring
from bench.load.setup import ask_all

CHANNEL = "stall"


def _join(co: Coordinator, conns: list[Conn], fid: int = 3) -> None:
    ask_all(
        co.loop,
        conns,
        co.tally,
        fid,
        lambda c: c.request(fid, "channel.join", {"channel": CHANNEL}),
        co.params["setup_timeout"],
    )


class StallPublishers:
    """``publishers`` connections keeping ``window`` requests open each, bounded by the
    reading subscriber's progress, until ``items`` have been answered."""

    def __init__(self, co: Coordinator, conns: list[Conn], healthy_counts: list[int]) -> None:
        p = co.params
        self.co = co
        self.conns = conns
        self.healthy = healthy_counts
        self.total = p["items"]
        self.window = p["window"]
        self.lag_limit = p["healthy_lag"]
        content = b"z" * content_length(CHANNEL, "q000")
        self.rings = [Ring(CHANNEL, content, 4 * self.window) for _ in conns]
        self.acks = [0] * len(conns)
        self.answered = [0] * len(conns)  # acks and errors: requests no longer open
        self.sent_by = [0] * len(conns)
        self.sent = 0
        self.errors = 0
        for i, c in enumerate(conns):
            co.loop.handlers[c.fd] = c.ack_handler(self._on_acks(i))

    def _on_acks(self, i: int) -> Callable[[int, int], None]:
        def on_acks(got: int, bad: int) -> None:
            self.acks[i] += got
            self.errors += bad
            self.answered[i] += got + bad
            self.top_up(i)

        return on_acks

    def top_up(self, i: int) -> None:
        """Keep ``window`` requests open on publisher ``i`` (the server allows 64)."""
        n = min(
            self.window - (self.sent_by[i] - self.answered[i]),
            self.total - self.sent,
            self.lag_limit - (self.sent - self.healthy[0]),
        )
        if n > 0:
            self.sent += n
            self.sent_by[i] += n
            self.conns[i].send(self.rings[i].take(n))

    def run(self, samples: list[tuple[float, int, int]], t0: float) -> dict[str, Any]:
        """Publish everything, sampling RSS every ``sample_every`` s; the phase's figures."""
        p = self.co.params
        next_sample = t0
        deadline = t0 + p["publish_timeout"]
        at_checkpoint: tuple[float, int] | None = None
        first_error = ""
        while True:
            acked = sum(self.acks)
            now = time.monotonic()
            if now >= next_sample:
                rss = self.co.rss()
                samples.append((now - t0, acked, rss))
                if at_checkpoint is None and acked >= p["checkpoint"]:
                    at_checkpoint = (now - t0, rss)
                next_sample = now + p["sample_every"]
            if sum(self.answered) >= self.total or now > deadline:
                break
            if self.errors and not first_error:
                first_error = f"{self.errors} error answers by {now - t0:.1f}s"
            if all(c.closed for c in self.conns):
                break
            for i in range(len(self.conns)):
                self.top_up(i)
            self.co.loop.poll(0.002)
        return {
            "acked": sum(self.acks),
            "publish_s": time.monotonic() - t0,
            "rss_at_checkpoint_kib": at_checkpoint[1] if at_checkpoint else None,
            "first_publish_error": first_error or None,
        }


def _last_seq(co: Coordinator, probe: Conn) -> int:
    """The channel's last seq: an idempotent join on a publisher switched back to parsing."""
    probe.state = "open"
    probe.reader = FrameReader()
    probe.tail = b""
    co.loop.handlers[probe.fd] = probe.on_event
    _join(co, [probe], 5)
    return int(probe.answer(5)["seq"])


def _resume(co: Coordinator, stalled: Conn, checker: FeedChecker, last_seq: int) -> dict[str, Any]:
    """Read the stalled subscriber again, as a normal client would, until ``last_seq``."""
    p = co.params
    sock = stalled.sock
    assert sock is not None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, p["resume_rcvbuf"])
    reader = stalled.reader
    state: dict[str, Any] = {"done": False}

    def on_readable(ev: int) -> None:
        try:
            n = sock.recv_into(BUF)
        except BlockingIOError:
            return
        except OSError as exc:
            state["closed_by_server"] = f"{type(exc).__name__}: {exc}"
            n = 0
        if n == 0:
            state.setdefault("closed_by_server", "connection closed (EOF)")
            stalled.fail("stalled subscriber closed")
            state["done"] = True
            return
        for opcode, payload in reader.feed(BUFVIEW[:n]):
            if opcode == OP_PING:
                stalled.pong(payload)
            elif opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big")
                state["closed_by_server"] = f"close frame {code} {payload[2:100]!r}"
            elif opcode == 1:
                checker.frame(payload)
                if checker.last >= last_seq:
                    state["done"] = True

    stalled.state = "counting"
    co.loop.add(stalled.fd, on_readable, EPOLLIN)
    t_resume = time.monotonic()
    messages0 = checker.messages
    deadline = t_resume + p["catchup_timeout"]
    while not state["done"] and time.monotonic() < deadline:
        co.loop.poll(0.01)
    catch_s = time.monotonic() - t_resume
    got = checker.messages - messages0
    return {
        "caught_up": state["done"] and checker.last >= last_seq,
        "catchup_s": round(catch_s, 3),
        "catchup_messages": got,
        "catchup_items_per_s": round(got / catch_s) if catch_s > 0 else None,
        "stalled_closed_by_server": state.get("closed_by_server"),
    }


def run(co: Coordinator) -> dict[str, Any]:
    p = co.params
    timeout = p["setup_timeout"]
    samples: list[tuple[float, int, int]] = []  # (t, items acked, RSS KiB)

    (stalled,) = co.connect(["stalled"], timeout, rcvbuf=p["rcvbuf"])
    stalled.keep_items = True
    stalled.request(2, "messages", kind="stream")
    _join(co, [stalled])
    checker = FeedChecker(last=stalled.answer(3)["seq"] - 1)
    for frame in stalled.items:  # items already parsed (its own join item)
        data = frame.get("data", {})
        if data.get("kind") == "gap":
            checker.gap(data)
        elif isinstance(data.get("seq"), int):
            checker.last = max(checker.last, data["seq"])
    co.loop.remove(stalled.fd)  # stop reading: no more recv on this socket
    (healthy,) = co.connect(["healthy"], timeout)
    healthy.request(2, "messages", kind="stream")
    _join(co, [healthy])
    publishers = co.connect([f"q{i:03d}" for i in range(p["publishers"])], timeout)
    _join(co, publishers)
    healthy_counts = [0]
    healthy.idx = 0
    co.loop.handlers[healthy.fd] = healthy.count_with(healthy_counts)

    rss_before = co.rss()
    t0 = time.monotonic()
    samples.append((0.0, 0, rss_before))
    pubs = StallPublishers(co, publishers, healthy_counts)
    snap0 = co.snapshot()
    phase = pubs.run(samples, t0)
    cpu = co.cpu_between(snap0, co.snapshot())
    acked = phase["acked"]
    rss_end = co.rss()
    samples.append((time.monotonic() - t0, acked, rss_end))
    # let the healthy subscriber finish, then ask for the channel's last seq
    drain_deadline = time.monotonic() + p["drain_timeout"]
    while healthy_counts[0] < acked and time.monotonic() < drain_deadline:
        co.loop.poll(0.01)
    last_seq = _last_seq(co, publishers[0])
    co.loop.run_for(1.0)  # a settled RSS figure after publishing
    rss_settled = co.rss()
    samples.append((time.monotonic() - t0, acked, rss_settled))
    resumed = _resume(co, stalled, checker, last_seq)
    checks = checker.summary()
    gaps = checker.gaps
    at_checkpoint = phase["rss_at_checkpoint_kib"]
    return {
        "items": p["items"],
        "acked": acked,
        "publish_errors": pubs.errors,
        "publishers": len(publishers),
        "publish_s": round(phase["publish_s"], 2),
        "publish_items_per_s": round(acked / phase["publish_s"]),
        "server_cpu_pct": cpu.get("server_pct"),
        "load_cpu_pct": {"coordinator": cpu.get("load_coordinator_pct")},
        "others_cpu_pct": cpu.get("others_pct"),
        "healthy_received": healthy_counts[0],
        "rss_before_kib": rss_before,
        "rss_at_checkpoint_kib": at_checkpoint,
        "checkpoint_items": p["checkpoint"],
        "rss_end_kib": rss_end,
        "rss_settled_kib": rss_settled,
        "rss_growth_checkpoint_to_end_kib": rss_end - at_checkpoint if at_checkpoint else None,
        "rss_growth_total_kib": rss_end - rss_before,
        "rss_after_catchup_kib": co.rss(),
        "last_seq": last_seq,
        **resumed,
        "gaps": gaps[:5],
        "gap_count": len(gaps),
        "messages_after_last_gap": last_seq - gaps[-1]["last"] if gaps else None,
        "retention": p.get("retention"),
        "order_problems": checks["order_problems"],
        "first_publish_error": phase["first_publish_error"],
        "publishers_closed": sum(1 for c in publishers if c.closed),
        "samples": [(round(t, 3), a, r) for t, a, r in samples],
    }
