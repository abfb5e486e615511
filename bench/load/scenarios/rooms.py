"""Many rooms: many channels of Zipf-distributed size, many publishers, private messages.

A chat server's usual load is not one big channel: it is many small rooms, where the cost
per publish (parse, route, append, wake) matters more than the cost per delivery. Here
``connections`` users log in; ``publishers`` of them only publish (members of their
channels, no feed), the others receive (an open feed, ``probes`` of them parsing every
frame). Each user is in ``per_user`` distinct channels of ``channels``, drawn with
probability ∝ 1 / rank^``zipf_s`` (a few big rooms, a long tail of small ones). Each publish
goes, with probability ``private_fraction``, to a random receiver as a private message,
else to one of the publisher's channels.

``rate`` None publishes closed loop (at most ``window`` requests open per publisher, and no
new request while ``in_flight`` deliveries are under way, sent but not yet received):
deliveries/s and acks/s at saturation. With a ``rate`` (publishes/s in all), the probes'
latency at that load.
"""

from __future__ import annotations

import random
import time
from typing import Any

from bench.load.conn import Conn
from bench.load.coordinator import Coordinator
from bench.load.payloads import (
    content_length,
    message_request,
    percentiles,
    private_request,
    timed_content,
)
from bench.load.probes import ProbeState, install
from bench.load.setup import join_channels


def membership(p: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """User names and each user's channels (seeded: the same for every target)."""
    rng = random.Random(p["seed"])
    names = [f"ch{i:04d}" for i in range(p["channels"])]
    weights = [1 / (rank + 1) ** p["zipf_s"] for rank in range(len(names))]
    users = [f"u{i:06d}" for i in range(p["connections"])]
    per_user = min(p["per_user"], len(names))
    picks: list[list[str]] = []
    for _ in users:
        chosen: dict[str, None] = {}
        while len(chosen) < per_user:
            chosen[rng.choices(names, weights)[0]] = None
        picks.append(list(chosen))
    return users, picks


class Publishers:
    """The publishing side: builds each request, counts what it should deliver."""

    def __init__(
        self, co: Coordinator, conns: list[Conn], receivers: list[str], feeds: dict[str, int]
    ) -> None:
        p = co.params
        self.co = co
        self.conns = conns
        self.receivers = receivers
        self.feeds = feeds  # channel -> members with an open feed
        self.rng = random.Random(p["seed"] + 1)
        self.window = p["window"]
        self.private = p["private_fraction"]
        self.clen = content_length("ch0000", conns[0].name)
        self.next_id = [100] * len(conns)
        self.sent_by = [0] * len(conns)
        self.answered = [0] * len(conns)
        self.acks = 0
        self.errors = 0
        self.sent = 0
        self.private_sent = 0
        self.expected = 0  # deliveries the publishes sent so far must cause
        for i, c in enumerate(conns):
            co.loop.handlers[c.fd] = c.ack_handler(self._on_acks(i))

    def _on_acks(self, i: int) -> Any:
        def on_acks(got: int, bad: int) -> None:
            self.acks += got
            self.errors += bad
            self.answered[i] += got + bad

        return on_acks

    def open(self, i: int) -> int:
        return self.sent_by[i] - self.answered[i]

    def send(self, i: int, n: int) -> None:
        """Send ``n`` publishes from publisher ``i`` in one write."""
        c = self.conns[i]
        frames = []
        for _ in range(n):
            fid = self.next_id[i]
            self.next_id[i] = fid + 1
            content = timed_content(self.clen)
            if self.rng.random() < self.private:
                frames.append(private_request(fid, self.rng.choice(self.receivers), content))
                self.expected += 1
                self.private_sent += 1
            else:
                channel = self.rng.choice(c.channels)
                frames.append(message_request(fid, channel, content))
                self.expected += self.feeds.get(channel, 0)
        c.send(b"".join(frames))
        self.sent_by[i] += n
        self.sent += n


def setup(co: Coordinator) -> tuple[Publishers, list[Conn], dict[str, Any]]:
    p = co.params
    timeout = p["setup_timeout"]
    t0 = time.monotonic()
    users, picks = membership(p)
    n_pub = p["publishers"]
    pubs = co.connect(users[:n_pub], timeout)
    for c, channels in zip(pubs, picks[:n_pub], strict=True):
        c.channels = channels
    epoch = pubs[0].answer(1)["epoch"]
    last = join_channels(co.loop, pubs, co.tally, timeout)
    specs = list(zip(users[n_pub:], picks[n_pub:], strict=True))
    probes, last_subs, info = co.subscribe(specs, p["probes"], timeout)
    for channel, seq in last_subs.items():
        last[channel] = max(last.get(channel, 0), seq)
    co.open_feeds_in_order(last, epoch, timeout)
    feeds: dict[str, int] = {}
    for _, channels in specs:
        for channel in channels:
            feeds[channel] = feeds.get(channel, 0) + 1
    sizes = sorted(feeds.values(), reverse=True)
    publishers = Publishers(co, pubs, users[n_pub:], feeds)
    info.update(
        connections=len(users),
        receivers=len(specs),
        publishers=n_pub,
        channels=p["channels"],
        channel_sizes={
            "largest": sizes[:5],
            "median": sizes[len(sizes) // 2],
            "smallest": sizes[-1],
        },
        probes=len(probes),
        setup_s=round(time.monotonic() - t0, 2),
        last_seqs=last,
    )
    return publishers, probes, info


def run(co: Coordinator) -> dict[str, Any]:
    p = co.params
    pubs, probes, info = setup(co)
    last = info.pop("last_seqs")
    counts = [0] * len(probes)
    state = ProbeState()
    install(co.loop, probes, counts, state, last)
    co.all_workers("count", 30)
    rate = p.get("rate")
    n = len(pubs.conns)
    fell_behind = None
    snap0 = co.snapshot()
    t0 = snap0["t"]
    end = t0 + p["duration"]
    steady: dict[str, Any] = {}
    turn = 0
    while (now := time.monotonic()) < end:
        if "t" not in steady and now - t0 >= p["warmup"]:
            steady = {
                "snap": co.snapshot(),
                "delivered": co.delivered_total(counts),
                "acks": pubs.acks,
            }
            steady["t"] = steady["snap"]["t"]
        behind = pubs.expected - co.delivered_total(counts)
        if rate is None:
            # top publishers up in turn while fewer than in_flight deliveries are under way
            budget = p["in_flight"] - behind
            for _ in range(n):
                if budget <= 0:
                    break
                turn = (turn + 1) % n
                k = pubs.window - pubs.open(turn)
                if k > 0:
                    before = pubs.expected
                    pubs.send(turn, k)
                    budget -= pubs.expected - before
        else:
            if behind > p["in_flight"]:
                fell_behind = f"{behind} deliveries behind at {now - t0:.1f}s"
                break
            want = min(int((now - t0) * rate) - pubs.sent, 1000)
            for _ in range(want):  # one publish each, round robin (64 may be open)
                for _skip in range(n):
                    turn = (turn + 1) % n
                    if pubs.open(turn) < 60:
                        pubs.send(turn, 1)
                        break
        co.loop.poll(0.001)
    snap_end = co.snapshot()
    t_end = snap_end["t"]
    acks_end = pubs.acks
    delivered_end = co.delivered_total(counts)
    cpu = co.cpu_between(steady.get("snap", snap0), snap_end)
    deadline = t_end + p["drain_timeout"]
    while (co.delivered_total(counts) < pubs.expected or pubs.acks + pubs.errors < pubs.sent) and (
        time.monotonic() < deadline
    ):
        co.loop.poll(0.005)
    t_drained = time.monotonic()
    reports = co.all_workers("report", 30)
    total = sum(r["total"] for r in reports) + sum(counts)
    d_steady = t_end - steady.get("t", t0)
    delivered_steady = delivered_end - steady.get("delivered", 0)
    samples = state.latencies_ms(after_ns=int((t0 + p["warmup"]) * 1e9))
    result: dict[str, Any] = {
        **info,
        "published": pubs.sent,
        "private_messages": pubs.private_sent,
        "acked": pubs.acks,
        "publish_errors": pubs.errors,
        "delivered": total,
        "expected": pubs.expected,
        "complete": total == pubs.expected,
        "connections_closed": sum(r["closed"] for r in reports) + co.tally.closed,
        "duration_s": round(t_end - t0, 3),
        "drain_s": round(t_drained - t_end, 3),
        "deliveries_per_s": round(total / (t_drained - t0)),
        "deliveries_per_s_steady": round(delivered_steady / d_steady) if d_steady > 0 else None,
        "acks_per_s": round(acks_end / (t_end - t0)),
        "acks_per_s_steady": round((acks_end - steady.get("acks", 0)) / d_steady)
        if d_steady > 0
        else None,
        "publishes_per_s": round(pubs.sent / (t_end - t0), 1),
        "deliveries_per_publish": round(pubs.expected / pubs.sent, 1) if pubs.sent else None,
        # deliveries still owed when publishing stopped: small when the rate was sustained,
        # growing with the duration when it was not (latency then measures a queue)
        "deliveries_behind_at_end": pubs.expected - delivered_end,
        "server_cpu_us_per_delivery": round(1e6 * cpu["server_s"] / delivered_steady, 3)
        if cpu and delivered_steady
        else None,
        **co.cpu_fields(cpu),
        "latency_samples": len(samples),
        "latency_ms": percentiles(samples),
        "probe_problems": state.problems,
    }
    if rate is not None:
        result["target_publishes_per_s"] = rate
    if fell_behind:
        result["fell_behind"] = fell_behind
    return result
