"""The memory store: logs in per-log ring buffers, gone when the process ends.

Each log keeps its newest ``retention`` items in a fixed-size ring indexed by ``seq``, so an
append and a read after any seq are O(1) plus the items returned, and a log's memory is bounded
by its retention whatever happens to its readers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from chat.protocol.frames import encode_json
from chat.stores.directory import Directory
from chat.stores.interface import ILogStore, Listener, LogItem, history_bounds

DEFAULT_RETENTION: Final = 10_000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class RingLog:
    """The newest ``capacity`` items of one log, addressed by seq."""

    __slots__ = ("capacity", "items", "last", "listeners")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: list[LogItem] = []
        self.last = 0
        self.listeners: dict[Listener, None] = {}  # an ordered set

    @property
    def first(self) -> int:
        return max(1, self.last - self.capacity + 1)

    def add(self, item: LogItem) -> None:
        if len(self.items) < self.capacity:
            self.items.append(item)
        else:
            self.items[(item.seq - 1) % self.capacity] = item
        self.last = item.seq

    def after(self, after: int, limit: int) -> list[LogItem]:
        last = self.last
        start = after + 1
        if start <= last - self.capacity:
            start = last - self.capacity + 1  # the oldest retained
        stop = min(last, start + limit - 1)
        if stop < start:
            return []
        cap = self.capacity
        i, j = (start - 1) % cap, (stop - 1) % cap
        if i <= j:
            return self.items[i : j + 1]
        return self.items[i:] + self.items[: j + 1]

    def between(self, before: int | None, after: int | None, limit: int) -> list[LogItem]:
        bounds = history_bounds(self.first, self.last, before, after, limit)
        if bounds is None:
            return []
        low, high = bounds
        return self.after(low - 1, high - low + 1)


@implementer(ILogStore)
class MemoryLogStore(Directory):
    """An :class:`ILogStore` in memory: for tests and throwaway runs (``--store memory``)."""

    def __init__(
        self, retention: int = DEFAULT_RETENTION, clock_ms: Callable[[], int] = wall_clock_ms
    ) -> None:
        if retention < 1:
            raise ValueError("retention must be at least 1 item per log")
        self.retention = retention
        self.clock_ms = clock_ms
        self.epoch = uuid.uuid4().hex
        self._logs: dict[str, RingLog] = {}
        self.load_directory()

    def _log(self, log: str) -> RingLog:
        ring = self._logs.get(log)
        if ring is None:
            ring = self._logs[log] = RingLog(self.retention)
        return ring

    def append(self, log: str, fields: Mapping[str, Any]) -> Deferred[LogItem]:
        ring = self._log(log)
        seq = ring.last + 1
        ts = self.clock_ms()
        item = LogItem(seq, ts, encode_json({**fields, "seq": seq, "ts": ts}))
        ring.add(item)
        for listener in list(ring.listeners):
            listener()
        return succeed(item)

    def last_seq(self, log: str) -> int:
        ring = self._logs.get(log)
        return ring.last if ring else 0

    def first_seq(self, log: str) -> int:
        ring = self._logs.get(log)
        return ring.first if ring else 1

    def cached(self, log: str, after: int, limit: int) -> Sequence[LogItem] | None:
        ring = self._logs.get(log)
        return ring.after(after, limit) if ring else []

    def read(self, log: str, after: int, limit: int) -> Deferred[Sequence[LogItem]]:
        return succeed(self.cached(log, after, limit) or [])

    def history(
        self, log: str, before: int | None, after: int | None, limit: int
    ) -> Deferred[Sequence[LogItem]]:
        ring = self._logs.get(log)
        return succeed(ring.between(before, after, limit) if ring else [])

    def listen(self, log: str, listener: Listener) -> None:
        self._log(log).listeners[listener] = None

    def unlisten(self, log: str, listener: Listener) -> None:
        ring = self._logs.get(log)
        if ring is not None:
            ring.listeners.pop(listener, None)

    def ping(self) -> Deferred[None]:
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)
