"""The one in-memory layer of every store: a ring of recent items per log, its state, the wake.

Theory of operation
-------------------

Every backend keeps, for each log it has seen, a :class:`LogState`: the newest committed seq
(``last``), the lowest seq its backing store still retains (``floor``), a :class:`Ring` of the
newest committed items, and the listeners to wake after an append. The backend calls
:meth:`CachedLogStore.took` with items once they are committed (SQLite: after ``COMMIT``; Redis:
when the append's reply or its pub/sub notice arrives; memory: at once); the base puts them in
the ring, advances ``last`` and wakes the log's listeners once.

Reads are answered here: :meth:`CachedLogStore.cached` from the ring when it holds the first
item asked for, else ``None``; :meth:`CachedLogStore.read` from the ring or, for older items,
from the backend's one hook, :meth:`CachedLogStore.fetch` (a seq range, bounded in items and
bytes). The memory store is this base with a ring as large as its retention, so it never
fetches.

The rules, written once:

- the ring holds a contiguous run of seqs ending at the newest item it was given; an item that
  does not follow the newest (a notice was missed) empties it first, so it never has holes;
- a page starts at ``max(after + 1, first_seq)``: items retention removed are never read, and
  the reader (the feed) tells its client about them with one ``gap`` before reading;
- a page ends at ``last`` or where the ring ends, whichever is first, and is cut to about
  ``max_bytes``: a short page says nothing about whether the reader caught up; only
  ``position > last_seq`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred, succeed

from chat.stores.directory import Directory
from chat.stores.interface import PAGE_BYTES, Listener, LogItem, within_bytes


class Ring:
    """The newest ``capacity`` items of one log, contiguous by seq, addressed by seq."""

    __slots__ = ("capacity", "first", "items", "start")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: list[LogItem] = []
        self.start = 0  # index of the oldest item
        self.first = 0  # seq of the oldest item (meaningless while empty)

    @property
    def last(self) -> int:
        """The seq of the newest item held; 0 when empty."""
        return self.first + len(self.items) - 1 if self.items else 0

    def clear(self) -> None:
        self.items = []
        self.start = 0
        self.first = 0

    def add(self, item: LogItem) -> None:
        """Hold ``item``; if it does not follow the newest item held, start afresh with it."""
        items = self.items
        if items and item.seq != self.first + len(items):
            self.clear()
            items = self.items
        if not items:
            self.first = item.seq
            items.append(item)
        elif len(items) < self.capacity:
            items.append(item)
        else:
            items[self.start] = item
            self.start = (self.start + 1) % self.capacity
            self.first += 1

    def get(self, seq: int) -> LogItem | None:
        items = self.items
        if not items or not self.first <= seq <= self.last:
            return None
        return items[(self.start + seq - self.first) % len(items)]

    def page(self, low: int, high: int) -> list[LogItem] | None:
        """Items ``low..high``, cut where the ring ends; ``None`` when ``low`` is not held."""
        items = self.items
        if not items or not self.first <= low <= self.last or high < low:
            return None
        high = min(high, self.last)
        n = len(items)
        i = (self.start + low - self.first) % n
        j = (self.start + high - self.first) % n
        if i <= j:
            return items[i : j + 1]
        return items[i:] + items[: j + 1]


class LogState:
    """What this process knows of one log."""

    __slots__ = ("floor", "last", "listeners", "ring")

    def __init__(self, last: int, floor: int, capacity: int) -> None:
        self.last = last  # the newest committed seq
        self.floor = floor  # the backing store retains nothing below this seq
        self.ring = Ring(capacity)
        self.listeners: dict[Listener, None] = {}  # an ordered set


class CachedLogStore(Directory):
    """The ring, the log states, the reads and the wake of every :class:`ILogStore`.

    A backend sets ``retention`` and ``cache`` (ring capacity), calls :meth:`took` with
    committed items and implements :meth:`fetch`; it may raise a log's ``floor`` when its
    backing store drops old items (trimming by age).
    """

    retention: int
    cache: int

    def init_logs(self, retention: int, cache: int) -> None:
        if retention < 1:
            raise ValueError("retention must be at least 1 item per log")
        self.retention = retention
        self.cache = min(max(1, cache), retention)
        self._logs: dict[str, LogState] = {}

    def state(self, log: str) -> LogState:
        state = self._logs.get(log)
        if state is None:
            state = self._logs[log] = LogState(0, 1, self.cache)
        return state

    def known_state(self, log: str) -> LogState | None:
        return self._logs.get(log)

    def all_states(self) -> dict[str, LogState]:
        return self._logs

    # Committed items come in here.

    def took(self, log: str, items: Sequence[LogItem]) -> None:
        """``items`` (ascending seqs) of ``log`` are committed: hold them, wake the listeners."""
        state = self.state(log)
        ring = state.ring
        was = state.last
        for item in items:
            if item.seq > state.last:
                ring.add(item)
                state.last = item.seq
            elif item.seq == ring.last + 1 and ring.items:
                ring.add(item)  # fills the ring up to a last we learned of without the item
        if state.last > was:  # an item heard twice (Redis: reply and notice) wakes once
            self.wake(state)

    def moved(self, log: str, last: int) -> None:
        """``log`` has items up to ``last`` that this process has not seen: wake its readers."""
        state = self.state(log)
        if last > state.last:
            state.last = last
            self.wake(state)

    @staticmethod
    def wake(state: LogState) -> None:
        for listener in list(state.listeners):
            listener()

    # Reading

    def last_seq(self, log: str) -> int:
        state = self._logs.get(log)
        return state.last if state else 0

    def first_seq(self, log: str) -> int:
        state = self._logs.get(log)
        return self.first_of(state) if state else 1

    def first_of(self, state: LogState) -> int:
        """The oldest seq retained: by count (exact), and by the backing store's floor."""
        return max(state.floor, state.last - self.retention + 1, 1)

    def cached(
        self, log: str, after: int, limit: int, max_bytes: int = PAGE_BYTES
    ) -> Sequence[LogItem] | None:
        state = self._logs.get(log)
        if state is None:
            return []
        low = max(after + 1, self.first_of(state))
        high = min(state.last, low + limit - 1)
        if high < low:
            return []
        items = state.ring.page(low, high)
        return None if items is None else within_bytes(items, max_bytes)

    def read(
        self, log: str, after: int, limit: int, max_bytes: int = PAGE_BYTES
    ) -> Deferred[Sequence[LogItem]]:
        items = self.cached(log, after, limit, max_bytes)
        if items is not None:
            return succeed(items)
        state = self._logs[log]
        low = max(after + 1, self.first_of(state))
        return self.fetch(log, low, min(state.last, low + limit - 1), max_bytes)

    def fetch(self, log: str, low: int, high: int, max_bytes: int) -> Deferred[Sequence[LogItem]]:
        """Items ``low..high`` of ``log`` from the backing store, cut to about ``max_bytes``."""
        raise NotImplementedError

    # Listeners

    def listen(self, log: str, listener: Listener) -> None:
        self.state(log).listeners[listener] = None

    def unlisten(self, log: str, listener: Listener) -> None:
        state = self._logs.get(log)
        if state is not None:
            state.listeners.pop(listener, None)
