"""The memory store: the cached base with a ring as large as the retention, gone at exit.

Each log keeps its newest ``retention`` items in its :class:`~chat.stores._cached.Ring`, so an
append and a read after any seq are O(1) plus the items returned, and a log's memory is bounded
by its retention whatever happens to its readers. Dedup records and read positions are dicts.

Every item is kept as exact-size bytes: ``orjson.dumps`` returns a buffer rounded up to about
4 KB that never shrinks (orjson issue #483), so a stored item is copied once to its own size.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Final

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from chat.protocol.frames import encode_kept
from chat.stores._cached import CachedLogStore
from chat.stores.interface import Appended, Dedup, ILogStore, LogItem

DEFAULT_RETENTION: Final = 10_000
DEFAULT_DEDUP_WINDOW: Final = 300.0


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


DedupKey = tuple[str, str, str]  # sender, target log, client_id


@implementer(ILogStore)
class MemoryLogStore(CachedLogStore):
    """An :class:`ILogStore` in memory: for tests and throwaway runs (``--store memory``)."""

    def __init__(
        self,
        retention: int = DEFAULT_RETENTION,
        clock_ms: Callable[[], int] = wall_clock_ms,
        dedup_window: float = DEFAULT_DEDUP_WINDOW,
    ) -> None:
        self.init_logs(retention, retention)
        self.clock_ms = clock_ms
        self.dedup_window_ms = int(dedup_window * 1000)
        self.epoch = uuid.uuid4().hex
        self._dedup: OrderedDict[DedupKey, tuple[int, int]] = OrderedDict()  # oldest first
        self._reads: dict[str, dict[str, int]] = {}
        self.load_directory()

    def start(self) -> Deferred[None]:
        return succeed(None)

    def append(
        self,
        log: str,
        fields: Mapping[str, Any],
        copy_to: str | None = None,
        dedup: Dedup | None = None,
    ) -> Deferred[Appended]:
        ts = self.clock_ms()
        key: DedupKey | None = None
        if dedup is not None:
            key = (dedup.sender, copy_to or log, dedup.client_id)
            earlier = self._dedup_lookup(key, ts)
            if earlier is not None:
                return succeed(Appended(earlier[0], earlier[1], duplicate=True))
        seq = self._append_one(log, fields, ts)
        if copy_to is not None:
            self._append_one(copy_to, fields, ts)
        if key is not None:
            self._dedup[key] = (seq, ts)
        return succeed(Appended(seq, ts))

    def _append_one(self, log: str, fields: Mapping[str, Any], ts: int) -> int:
        seq = self.last_seq(log) + 1
        self.took(log, [LogItem(seq, encode_kept({**fields, "seq": seq, "ts": ts}))])
        return seq

    def _dedup_lookup(self, key: DedupKey, now: int) -> tuple[int, int] | None:
        oldest = now - self.dedup_window_ms
        records = self._dedup
        while records:
            first_key, (_, ts) = next(iter(records.items()))
            if ts >= oldest:
                break
            del records[first_key]
        return records.get(key)

    def save_read(self, username: str, log: str, seq: int) -> Deferred[int]:
        positions = self._reads.setdefault(username, {})
        stored = positions[log] = max(positions.get(log, 0), seq)
        return succeed(stored)

    def read_positions(self, username: str) -> Deferred[dict[str, int]]:
        return succeed(dict(self._reads.get(username, {})))

    def ping(self) -> Deferred[None]:
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)
