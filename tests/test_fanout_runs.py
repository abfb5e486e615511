"""A fan-out's shared reads are invisible: every client reads exactly the bytes it would read
if every feed read and framed its items itself.

Within one flush, feeds at the same position of a log reuse the first one's read
(``FlushScheduler.runs``, ``Cursor.shareable`` in chat/producers/feed.py). That is only right
if what a read produces depends on nothing else. This test runs one seeded random scenario
twice on the harness's Clock — subscribers that pause at random buffer sizes and drain at
random, feeds with and without credit, joins and leaves while items flow, items of every size,
retention overflow, a store whose memory holds few items so pages come from "disk" — once as
the server runs and once with sharing switched off, and compares every byte each connection
received.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from chat.producers import feed
from tests.producer_harness import Harness, SlowDiskStore

SEEDS = range(40)


def scenario(seed: int, share: bool, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Run the scenario of ``seed``; every connection's received frames, as raw JSON lines."""
    if not share:
        monkeypatch.setattr(feed.Cursor, "shareable", lambda self: False)
    rng = random.Random(seed)
    now = [1_700_000_000_000]

    def clock_ms() -> int:
        now[0] += 1
        return now[0]

    store = SlowDiskStore(None, cache=rng.choice([4, 16, 64]), retention=300)
    store.clock_ms = clock_ms
    harness = Harness(store=store)
    store.clock = harness.clock  # pages from "disk" come one turn later on the harness's clock
    channels = ["a", "b", "c"]
    conns = []
    credits: list[int | None] = []
    for n in range(rng.randint(5, 25)):
        conn = harness.connect(f"u{n}", high_water=rng.choice([None, 2_000, 8_000, 65_536]))
        credit = rng.choice([None, None, 1, 5, 50])
        conn.open_feed(1, credit=credit)
        for channel in rng.sample(channels, rng.randint(1, 3)):
            conn.join(channel)
        conns.append(conn)
        credits.append(credit)
    for _ in range(rng.randint(20, 60)):
        for _ in range(rng.randint(0, 40)):
            harness.post(rng.choice(channels), "x" * rng.choice([1, 10, 200, 3_000]))
        for _ in range(rng.randint(0, 3)):
            harness.turn()
        for conn, credit in zip(conns, credits, strict=True):
            roll = rng.random()
            if roll < 0.3:
                conn.transport.drain()
            elif roll < 0.4 and credit is not None:
                conn.client(type="request_n", id=1, n=rng.randint(1, 60))
            elif roll < 0.45:
                channel = rng.choice(channels)
                member = any(
                    i.get("kind") == "join" and i.get("channel") == channel for i in conn.items(1)
                )
                frame: dict[str, Any] = {
                    "type": "request",
                    "id": conn.next_id + 1,
                    "route": "channel.leave" if member else "channel.join",
                    "data": {"channel": channel},
                }
                conn.next_id += 1
                conn.client(**frame)
    for conn, credit in zip(conns, credits, strict=True):
        if credit is not None:
            conn.client(type="request_n", id=1, n=100_000)
        conn.catch_up()
    harness.settle()
    return [
        "\n".join(repr(f) for f in conn.transport.frames if not _login_answer(f)).encode()
        + b"\nafter close: %d" % len(conn.transport.after_close)
        for conn in conns
    ]


def _login_answer(frame: dict[str, Any]) -> bool:
    """A login's answer carries a random session id: the one frame that differs by design."""
    data = frame.get("data")
    return frame.get("type") == "response" and isinstance(data, dict) and "session_id" in data


@pytest.mark.parametrize("seed", SEEDS)
def test_shared_reads_give_every_client_the_bytes_its_own_reads_would(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = scenario(seed, True, monkeypatch)
    with monkeypatch.context() as alone:
        own = scenario(seed, False, alone)
    assert len(shared) == len(own)
    for index, (got, expected) in enumerate(zip(shared, own, strict=True)):
        assert got == expected, f"connection {index} of seed {seed} read other bytes"
