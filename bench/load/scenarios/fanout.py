"""Fan-out and latency: one publisher, one channel, N subscribers.

``fanout`` publishes closed-loop (at most a window of messages ahead of the slowest
subscriber: the saturation throughput); ``latency`` publishes at a fixed rate, one point of
the latency-versus-throughput curve (``bench.run`` runs one per rate). Both report
deliveries/s, publish-to-deliver latency over the probes' receipts, and the server's CPU per
delivery.
"""

from __future__ import annotations

import time
from typing import Any

from bench.load.conn import Conn
from bench.load.coordinator import Coordinator
from bench.load.payloads import (
    content_length,
    fanout_window,
    message_request,
    percentiles,
    timed_content,
)
from bench.load.probes import ProbeState, install
from bench.load.setup import ask_all

CHANNEL = "bench"


def setup(
    co: Coordinator, n_subs: int, channel: str = CHANNEL
) -> tuple[Conn, list[Conn], dict[str, Any]]:
    """The publisher (a member without a feed) and ``n_subs`` subscribers with open feeds.

    Subscribers join first and open their feed afterwards, after the last join seq: with the
    naive order (feed, then join) N subscribers joining one by one cost N²/2 ``join``
    deliveries during setup. The probes are spread over both orders (see
    :mod:`bench.load.coordinator`).
    """
    p = co.params
    timeout = p["setup_timeout"]
    t0 = time.monotonic()
    (publisher,) = co.connect(["p000000"], timeout)
    epoch = publisher.answer(1)["epoch"]
    ask_all(
        co.loop,
        [publisher],
        co.tally,
        3,
        lambda c: c.request(3, "channel.join", {"channel": channel}),
        timeout,
    )
    specs = [(f"s{i:06d}", [channel]) for i in range(n_subs)]
    probes, last, info = co.subscribe(specs, p["probes"], timeout)
    since = max(last.get(channel, 0), publisher.answer(3)["seq"])
    last[channel] = since
    co.open_feeds_in_order(last, epoch, timeout)
    info.update(
        subscribers=n_subs,
        probes=len(probes),
        probe_positions=[co.order.index(c.name) for c in probes],
        since_seq=since,
        setup_s=round(time.monotonic() - t0, 2),
    )
    return publisher, probes, info


def publish_run(
    co: Coordinator,
    publisher: Conn,
    probes: list[Conn],
    channel: str,
    n_subs: int,
    since: int,
    rate: float | None,
) -> dict[str, Any]:
    """Publish for the configured duration: closed loop (``rate`` None) or at ``rate``/s."""
    p = co.params
    duration = p["duration"]
    warmup = p["warmup"]
    window = fanout_window(p, n_subs)
    max_lag = p["max_lag"]
    counts: list[int] = [0] * len(probes)
    state = ProbeState()
    install(co.loop, probes, counts, state, {channel: since})
    acks = [0]

    def on_acks(got: int, bad: int) -> None:
        acks[0] += got
        publisher.errors += bad

    co.loop.handlers[publisher.fd] = publisher.ack_handler(on_acks)
    co.all_workers("count", 30)
    clen = content_length(channel, publisher.name)
    next_id = 10
    published = 0
    max_msgs = p["max_messages"]
    fell_behind = None
    max_seen_lag = 0
    snap0 = co.snapshot()
    t0 = snap0["t"]
    end = t0 + duration
    steady: dict[str, Any] = {}
    while True:
        now = time.monotonic()
        if now >= end or published >= max_msgs:
            break
        if "t" not in steady and now - t0 >= warmup:
            steady.update(snap=co.snapshot(), delivered=co.delivered_total(counts))
            steady["t"] = steady["snap"]["t"]
        low = co.current_min(counts)
        lag = published - low
        max_seen_lag = max(max_seen_lag, lag)
        if rate is None:
            want = window - lag
        else:
            if lag > max_lag:
                fell_behind = f"subscribers {lag} messages behind at {now - t0:.1f}s"
                break
            want = min(int((now - t0) * rate) - published, 1000)
        if want > 0:
            want = min(want, max_msgs - published)
            frames = []
            for _ in range(want):
                frames.append(message_request(next_id, channel, timed_content(clen)))
                next_id += 1
            publisher.send(b"".join(frames))
            published += want
        co.loop.poll(0.001)
    delivered_end = co.delivered_total(counts)
    snap_end = co.snapshot()
    t_end = snap_end["t"]
    cpu = co.cpu_between(steady.get("snap", snap0), snap_end)
    # drain: wait until every subscriber has every published message
    deadline = t_end + p["drain_timeout"]
    while co.current_min(counts) < published and time.monotonic() < deadline:
        co.loop.poll(0.005)
    t_drained = time.monotonic()
    reports = co.all_workers("report", 30)
    lows = [r["min"] for r in reports] + ([min(counts)] if counts else [])
    highs = [r["max"] for r in reports] + ([max(counts)] if counts else [])
    total = sum(r["total"] for r in reports) + sum(counts)
    closed = sum(r["closed"] for r in reports) + co.tally.closed
    d_steady = t_end - steady.get("t", t0)
    delivered_steady = delivered_end - steady.get("delivered", 0)
    samples = state.latencies_ms(after_ns=int((t0 + warmup) * 1e9))
    result: dict[str, Any] = {
        "published": published,
        "acked": acks[0],
        "publisher_errors": publisher.errors,
        "delivered": total,
        "expected": published * n_subs,
        "complete": total == published * n_subs and min(lows, default=0) == published,
        "min_per_subscriber": min(lows, default=0),
        "max_per_subscriber": max(highs, default=0),
        "connections_closed": closed,
        "duration_s": round(t_end - t0, 3),
        "drain_s": round(t_drained - t_end, 3),
        # the figure reported: every delivery, from the first publish to the last
        # delivery of the drain (window fill and drain cancel out, see docs)
        "deliveries_per_s": round(total / (t_drained - t0)),
        # after the warm-up, until publishing stopped (bursty when the window is big)
        "deliveries_per_s_steady": round(delivered_steady / d_steady if d_steady > 0 else 0),
        "publishes_per_s": round(published / (t_end - t0), 1),
        # server CPU per delivery over the same steady window: the cost of one delivery
        "server_cpu_us_per_delivery": round(1e6 * cpu["server_s"] / delivered_steady, 3)
        if cpu and delivered_steady
        else None,
        **co.cpu_fields(cpu),
        "max_lag_messages": max_seen_lag,
        # deliveries still owed when publishing stopped (see rooms): a rate not sustained
        "deliveries_behind_at_end": published * n_subs - delivered_end,
        "latency_samples": len(samples),
        "latency_ms": percentiles(samples),
        "probe_problems": state.problems,
    }
    if fell_behind:
        result["fell_behind"] = fell_behind
    if rate is not None:
        result["target_publishes_per_s"] = rate
    return result


def run(co: Coordinator) -> dict[str, Any]:
    """Closed-loop fan-out: the saturation throughput."""
    p = co.params
    publisher, probes, info = setup(co, p["subscribers"])
    result = publish_run(co, publisher, probes, CHANNEL, p["subscribers"], info["since_seq"], None)
    return {**info, **result, "window": fanout_window(p, p["subscribers"])}


def run_latency(co: Coordinator) -> dict[str, Any]:
    """One point of the latency curve: publishing at ``rate``/s (None: closed loop)."""
    p = co.params
    publisher, probes, info = setup(co, p["subscribers"])
    rate = p.get("rate")
    result = publish_run(co, publisher, probes, CHANNEL, p["subscribers"], info["since_seq"], rate)
    if rate is None:
        result["window"] = fanout_window(p, p["subscribers"])
    return {**info, **result}
