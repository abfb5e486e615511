"""The ring of recent items every store keeps (chat/stores/_cached.py), against a reference.

The reference is the plain statement of the rule: the ring holds the newest ``capacity`` items
of the contiguous run of seqs ending at the newest item it was given; an item that does not
follow the newest starts the run afresh.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chat.stores._cached import Ring
from chat.stores.interface import LogItem


def item(seq: int) -> LogItem:
    return LogItem(seq, b'{"seq":%d,"ts":0}' % seq)


class Reference:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.run: list[int] = []

    def add(self, seq: int) -> None:
        if self.run and seq != self.run[-1] + 1:
            self.run = []
        self.run = [*self.run, seq][-self.capacity :]

    def page(self, low: int, high: int) -> list[int] | None:
        if not self.run or not self.run[0] <= low <= self.run[-1] or high < low:
            return None
        return [s for s in self.run if low <= s <= high]


# Mostly the next seq, sometimes a jump forward (a missed notice), sometimes a repeat.
steps = st.lists(st.sampled_from([1] * 12 + [0, 2, 3, 17]), min_size=1, max_size=120)


@settings(max_examples=500, deadline=None)
@given(
    capacity=st.integers(1, 9),
    steps=steps,
    probes=st.lists(st.tuples(st.integers(-2, 140), st.integers(0, 12)), max_size=30),
)
def test_the_ring_holds_the_newest_contiguous_items(
    capacity: int, steps: list[int], probes: list[tuple[int, int]]
) -> None:
    ring, reference = Ring(capacity), Reference(capacity)
    seq = 0
    for step in steps:
        seq += step
        if step == 0 and ring.items:
            continue  # the same item heard twice: the stores never hand it in again
        seq = max(seq, 1)
        ring.add(item(seq))
        reference.add(seq)
        assert ring.last == reference.run[-1]
        assert ring.first == reference.run[0]
        for low, span in probes:
            got = ring.page(low, low + span)
            want = reference.page(low, low + span)
            assert (None if got is None else [i.seq for i in got]) == want, (low, span)
            one = ring.get(low)
            assert (one.seq if one is not None else None) == (low if low in reference.run else None)


def test_an_empty_ring_holds_nothing() -> None:
    ring = Ring(4)
    assert ring.last == 0 and ring.page(1, 5) is None and ring.get(1) is None
    ring.add(item(7))
    ring.clear()
    assert ring.page(7, 7) is None
