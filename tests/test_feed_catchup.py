"""The feed's disk path, deterministically: far-behind readers, pages, page slots, retention.

The store here holds only its newest 8 items of each log in memory; older ones come from
"disk" one reactor turn later (tests/producer_harness.py ``SlowDiskStore``). Every test checks
the whole delivered sequence against what the log holds: every retained item once, in order,
and one exact ``gap`` for what retention removed.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.producer_harness import TWISTED_HIGH_WATER, Harness, SlowDiskStore


def slow_harness(cache: int = 8, retention: int = 100_000, manual: bool = False) -> Harness:
    harness = Harness(store=SlowDiskStore(None, cache=cache, retention=retention, manual=manual))
    harness.store.clock = harness.clock  # "disk" answers come on the harness's reactor turns
    return harness


def delivered(items: list[dict[str, Any]], channel: str | None) -> list[Any]:
    """(seq) for items, ("gap", first, last) for gaps, of one log."""
    out: list[Any] = []
    for item in items:
        if item.get("channel") != channel:
            continue
        out.append(("gap", item["first"], item["last"]) if item["kind"] == "gap" else item["seq"])
    return out


@pytest.mark.parametrize("length", [10, 100, 200, 300, 4000])
def test_a_reader_from_since_zero_gets_every_item_of_a_long_log(length: int) -> None:
    harness = slow_harness()
    poster = harness.connect("poster")
    poster.join("r")
    for n in range(3000):
        harness.post("r", f"{n:05d}" + "x" * length)
    reader = harness.connect("reader", high_water=TWISTED_HIGH_WATER)
    reader.open_feed(1, since={"r": 0})
    reader.join("r")
    reader.catch_up()
    assert delivered(reader.items(1), "r") == list(range(1, 3003))
    assert harness.store.fetches < 3002 // 8  # pages, not an item at a time


def test_a_stalled_consumer_far_behind_catches_up_without_waiting_for_appends() -> None:
    harness = slow_harness()
    reader = harness.connect("reader", high_water=16 * 1024)
    reader.open_feed(1)
    reader.join("flood")
    reader.outbound.pauseProducing()  # the client stops reading
    for n in range(5000):
        harness.post("flood", f"{n}" + "y" * 150)
    reader.catch_up()  # no new append happens during the catch-up
    assert delivered(reader.items(1), "flood") == list(range(1, 5002))


def test_a_short_page_is_not_mistaken_for_the_end() -> None:
    # Sizes that cut disk pages and write slices at every possible place.
    harness = slow_harness()
    harness.connect("poster").join("r")
    for n in range(2000):
        harness.post("r", "z" * (1 + (n * 997) % 4000))
    reader = harness.connect("reader")
    reader.open_feed(1, credit=7, since={"r": 0})
    reader.join("r")
    for _ in range(400):
        reader.client(type="request_n", id=1, n=5 + _ % 11)
        harness.settle()
    reader.client(type="request_n", id=1, n=10_000)
    harness.settle()
    assert delivered(reader.items(1), "r") == list(range(1, 2003))


def test_retention_while_stalled_gives_one_exact_gap_then_every_retained_item() -> None:
    harness = slow_harness(retention=2000)
    reader = harness.connect("reader")
    reader.open_feed(1)
    reader.join("r")  # 1
    reader.outbound.pauseProducing()
    for _ in range(4500):
        harness.post("r")  # 2..4501; 2502..4501 retained
    reader.catch_up()
    assert delivered(reader.items(1), "r") == [1, ("gap", 2, 2501), *range(2502, 4502)]


def test_appends_while_a_page_is_read_give_gaps_only_for_what_was_really_removed() -> None:
    harness = slow_harness(retention=500, manual=True)
    reader = harness.connect("reader")
    reader.open_feed(1)
    reader.join("r")  # 1
    reader.outbound.pauseProducing()
    for _ in range(1000):
        harness.post("r")  # 2..1001; 502..1001 retained
    reader.outbound.resumeProducing()
    harness.settle()  # a gap 2..501, then a page read of 502.. is waiting
    assert harness.store.waiting
    for _ in range(300):
        harness.post("r")  # 1002..1301: the floor moves to 802 while the page is read
    seen: list[Any] = []
    for _ in range(100):
        harness.store.serve()
        harness.settle()
        if not harness.store.waiting:
            break
    seen = delivered(reader.items(1), "r")
    gaps = [g for g in seen if isinstance(g, tuple)]
    numbers = [s for s in seen if isinstance(s, int)]
    assert gaps[0] == ("gap", 2, 501)
    assert numbers == sorted(set(numbers)) and numbers[-1] == 1301  # in order, no duplicate
    assert numbers[0] == 1
    covered = set(numbers)
    for _, first, last in gaps:
        covered.update(range(first, last + 1))
    assert covered == set(range(1, 1302))  # every seq delivered or named in a gap
    assert all(g[2] < 802 for g in gaps)  # nothing still retained was called a gap


def test_a_feed_far_behind_in_many_channels_holds_one_disk_page() -> None:
    harness = slow_harness(manual=True)
    for n in range(10):
        harness.connect(f"p{n}").join(f"c{n}")
        for _ in range(200):
            harness.post(f"c{n}")
    reader = harness.connect("reader")
    reader.open_feed(1, since={f"c{n}": 0 for n in range(10)})
    for n in range(10):
        reader.join(f"c{n}")
    feed = reader.outbound.streams[1]
    for _ in range(2000):
        held = sum(1 for cursor in feed.cursors.values() if cursor.page is not None)
        assert held + len(harness.store.waiting) <= 1
        if not harness.store.serve():
            break
        harness.settle()
    for n in range(10):
        assert delivered(reader.items(1), f"c{n}") == list(range(1, 203))


def test_streams_stalled_on_their_credit_never_starve_another_stream() -> None:
    # A client may wait for one stream before granting another credit: each must progress.
    harness = slow_harness()
    harness.connect("poster").join("r")
    for _ in range(300):
        harness.post("r", "q" * 500)
    reader = harness.connect("reader")
    for fid in range(1, 41):
        reader.open(fid, "history", {"channel": "r", "limit": 200, "before": 100}, credit=1)
    reader.open_feed(50, credit=1, since={"r": 0})
    reader.join("r")
    harness.settle()
    for fid in range(1, 41):
        assert [i["seq"] for i in reader.items(fid)] == [1], fid  # each got its first item
    assert [i["seq"] for i in reader.items(50)] == [1]


def test_a_page_that_comes_back_empty_is_one_gap_not_a_loop_of_reads() -> None:
    harness = slow_harness(manual=True)
    harness.connect("poster").join("r")
    for _ in range(100):
        harness.post("r")
    reader = harness.connect("reader")
    reader.open_feed(1, since={"r": 0})
    reader.join("r")
    harness.settle()
    assert len(harness.store.waiting) == 1
    d, _page = harness.store.waiting.pop()
    d.callback([])  # the backing store lost those items
    harness.settle()
    assert harness.store.fetches <= 3
    items = delivered(reader.items(1), "r")
    assert isinstance(items[0], tuple) and items[0][1] == 1
