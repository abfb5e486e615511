"""The SQLite store: durable logs in one WAL-mode database file (``--store sqlite:chat.db``).

Theory of operation
-------------------

- **Writes** go to one writer thread (:mod:`chat.stores.sqlite.writer`), which group-commits
  everything queued. ``append`` encodes the item's JSON on the reactor (without ``seq``/``ts``)
  and queues it; only after the ``COMMIT`` does the reactor learn of the items
  (``callFromThread``): the cached base puts them in the log's ring, advances ``last_seq``,
  wakes the listeners, and then the append Deferreds fire, so a ``message`` is acknowledged only
  once its item is durable.
- **Reads** of recent items are answered by the cached base from the ring (the newest
  ``cache`` items of each log appended since start); older ones are fetched in pages on a
  separate reader thread with its own connection (WAL lets it read while the writer commits).
  Every range read is a primary-key range scan on ``(log, seq)``, stopped after ``max_bytes``.
- **Retention**: by count, logically exact (the cached base's ``first_seq``) and physically
  trimmed by the writer inside the append transactions, in steps of ``retention // 10`` rows;
  by age (``retention_age``), a periodic job on the writer thread deletes older items and
  raises the logs' floors. Neither runs on the reactor.
- **Per-user state**: dedup records and read positions are tables written by the writer thread;
  ``read_positions`` runs on the writer thread too, after everything queued before it.
- The directory (channels, known users) and the ``epoch`` live in the same file, so they
  survive restarts; the epoch is created with the file and never changes after.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from twisted.internet.defer import Deferred, DeferredList, fail, gatherResults, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from chat.protocol.frames import encode_kept
from chat.protocol.items import leave_item
from chat.stores._cached import CachedLogStore, LogState
from chat.stores.directory import Table
from chat.stores.errors import StoreClosed, StoreOpenError, StoreWriteError
from chat.stores.interface import Appended, Dedup, ILogStore, LogItem, channel_log
from chat.stores.memory import DEFAULT_DEDUP_WINDOW, wall_clock_ms
from chat.stores.sqlite._threads import Job, Worker
from chat.stores.sqlite.writer import SCHEMA, Append, Entry, Member, Name, SaveRead, Writer

DEFAULT_RETENTION: Final = 100_000
DEFAULT_CACHE: Final = 1_000  # recent items per log kept in memory for live delivery
SYNC_MODES: Final = ("full", "normal")

logger = Logger()


def _ping(connection: sqlite3.Connection) -> None:
    connection.execute("SELECT count(*) FROM meta").fetchone()


def connect(path: str, sync: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA busy_timeout = 5000")
    mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        connection.close()
        raise sqlite3.DatabaseError(f"cannot switch to WAL mode (journal_mode is {mode})")
    connection.execute(f"PRAGMA synchronous = {sync.upper()}")
    return connection


def select_page(
    log_key: str, low: int, high: int, max_bytes: int
) -> Callable[[sqlite3.Connection], list[LogItem]]:
    """A reader-thread job: items ``low..high`` of one log, stopped after ``max_bytes``."""

    def run(connection: sqlite3.Connection) -> list[LogItem]:
        rows = connection.execute(
            "SELECT seq, payload FROM items WHERE log = ? AND seq BETWEEN ? AND ? ORDER BY seq",
            (log_key, low, high),
        )
        items = []
        total = 0
        for seq, payload in rows:
            items.append(LogItem(seq, payload))
            total += len(payload)
            if total >= max_bytes:
                break
        return items

    return run


def load(path: str, sync: str) -> tuple[str, dict[str, tuple[int, int]], set[str], set[str]]:
    """Create or check the file; its epoch, each log's (last, floor), channels, users."""
    connection = connect(path, sync)
    try:
        connection.execute("BEGIN IMMEDIATE")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                connection.execute(statement)
        connection.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', ?)", (uuid.uuid4().hex,))
        connection.execute("COMMIT")
        epoch = connection.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]
        logs = {
            key: (last, floor)
            for key, last, floor in connection.execute("SELECT log, last, floor FROM logs")
        }
        channels = {name for (name,) in connection.execute("SELECT name FROM channels")}
        users = {name for (name,) in connection.execute("SELECT name FROM users")}
        return str(epoch), logs, channels, users
    finally:
        connection.close()


@implementer(ILogStore)
class SqliteLogStore(CachedLogStore):
    """An :class:`ILogStore` in one SQLite file: the durable default (``sqlite:chat.db``)."""

    def __init__(
        self,
        path: str | Path,
        retention: int = DEFAULT_RETENTION,
        retention_age: float | None = None,
        sync: str = "full",
        cache: int = DEFAULT_CACHE,
        reactor: Any = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        dedup_window: float = DEFAULT_DEDUP_WINDOW,
    ) -> None:
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {', '.join(SYNC_MODES)}, got {sync!r}")
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.init_logs(retention, cache)
        self.path = str(path)
        self.retention_age = retention_age
        self.clock_ms = clock_ms
        try:
            self.epoch, lasts, channels, users = load(self.path, sync)
        except sqlite3.Error as exc:
            raise StoreOpenError(f"cannot open the SQLite store {self.path}: {exc}") from None
        self.load_directory(channels, users)
        for key, (last, floor) in lasts.items():
            state = self.state(key)
            state.last, state.floor = last, floor
        self._writer = Writer(
            lambda: connect(self.path, sync),
            reactor,
            lasts,
            retention,
            int(dedup_window * 1000),
            clock_ms,
            self._committed,
            self._failed,
        )

        def read_connection() -> sqlite3.Connection:
            connection = connect(self.path, sync)
            connection.execute("PRAGMA query_only = ON")
            return connection

        self._reader = Worker("chat-sqlite-reader", read_connection, reactor)
        self._closing: Deferred[None] | None = None
        self._close_waiters: list[Deferred[None]] | None = []
        self._trimmer: LoopingCall | None = None
        if retention_age is not None:
            self._trimmer = LoopingCall(self._trim_by_age)
            self._trimmer.clock = reactor
            self._trimmer.start(min(max(retention_age / 10, 1.0), 60.0), now=False)

    def start(self) -> Deferred[None]:
        return succeed(None)

    # Writing (reactor side)

    def append(
        self,
        log: str,
        fields: Mapping[str, Any],
        copy_to: str | None = None,
        dedup: Dedup | None = None,
    ) -> Deferred[Appended]:
        if self._closing is not None:
            return fail(StoreClosed(f"the store {self.path} is closed"))
        item = dict(fields)
        item.pop("seq", None)
        item.pop("ts", None)
        logs = (log,) if copy_to is None else (log, copy_to)
        key = None if dedup is None else (dedup.sender, copy_to or log, dedup.client_id)
        entry = Append(logs, encode_kept(item), key)  # queued until committed: exact size
        self._writer.put(entry)
        return entry.deferred

    def _committed(
        self,
        entries: list[Entry],
        outcomes: list[Any],
        items: dict[str, list[LogItem]],
        trims: dict[str, int],
    ) -> None:
        for key, keep_from in trims.items():
            state = self.state(key)
            state.floor = max(state.floor, keep_from)
        for key, committed in items.items():
            self.took(key, committed)
        for entry, outcome in zip(entries, outcomes, strict=True):
            if isinstance(entry, Append | SaveRead):
                entry.deferred.callback(outcome)

    def _failed(self, entries: list[Entry], exc: BaseException) -> None:
        logger.error(
            "SQLite store {path}: could not commit {count} writes: {error}",
            path=self.path,
            count=len(entries),
            error=exc,
        )
        for entry in entries:
            if isinstance(entry, Append | SaveRead):
                entry.deferred.errback(StoreWriteError(f"could not store it: {exc}"))

    def save_read(self, username: str, log: str, seq: int) -> Deferred[int]:
        if self._closing is not None:
            return fail(StoreClosed(f"the store {self.path} is closed"))
        entry = SaveRead(username, log, seq)
        self._writer.put(entry)
        return entry.deferred

    def read_positions(self, username: str) -> Deferred[dict[str, int]]:
        return self.on_writer(lambda connection: Writer.read_positions(connection, username))

    def record_membership(self, channel: str, username: str, joined: bool) -> None:
        """Note who is in which channel (written with the appends queued around it)."""
        if self._closing is None:
            self._writer.put(Member(channel, username, joined))

    def end_left_over_memberships(self) -> Deferred[int]:
        """Sessions do not survive a restart: the memberships the last run left open (it was
        killed, not shut down) end now, each with its ``leave`` item. Fires with how many."""

        def end(memberships: list[tuple[str, str]]) -> Deferred[int]:
            leaves = []
            for channel, username in memberships:
                leaves.append(self.append(channel_log(channel), leave_item(channel, username)))
                self.record_membership(channel, username, False)
            done = gatherResults(leaves, consumeErrors=True)
            return done.addCallback(lambda _: len(memberships))

        return self.on_writer(Writer.memberships).addCallback(end)

    def persist_name(self, table: Table, name: str) -> None:
        if self._closing is None:
            self._writer.put(Name(table, name))

    def _trim_by_age(self) -> Deferred[None]:
        assert self.retention_age is not None
        cutoff = self.clock_ms() - int(self.retention_age * 1000)
        writer = self._writer

        def trimmed(floors: dict[str, int]) -> None:
            for key, keep_from in floors.items():
                state: LogState = self.state(key)
                state.floor = max(state.floor, keep_from)

        def failed(reason: Any) -> None:
            logger.error(
                "SQLite store {path}: trimming by age failed: {error}",
                path=self.path,
                error=reason.value,
            )

        d = self.on_writer(lambda connection: writer.trim_older_than(connection, cutoff))
        return d.addCallbacks(trimmed, failed)

    # Reading old items

    def fetch(self, log: str, low: int, high: int, max_bytes: int) -> Deferred[Sequence[LogItem]]:
        if self._closing is not None:
            return fail(StoreClosed(f"the store {self.path} is closed"))
        d: Deferred[Sequence[LogItem]] = self._reader.call(select_page(log, low, high, max_bytes))
        return d

    # Tests and maintenance

    def on_writer(self, function: Callable[[sqlite3.Connection], Any]) -> Deferred[Any]:
        """Run ``function(connection)`` on the writer thread, after everything queued."""
        if self._closing is not None:
            return fail(StoreClosed(f"the store {self.path} is closed"))
        job = Job(function)
        self._writer.start()
        self._writer.queue.put(job)
        return job.deferred

    # Closing

    def ping(self) -> Deferred[None]:
        """A trivial query on the reader thread: the file is there and readable."""
        if self._closing is not None:
            return fail(StoreClosed(f"the store {self.path} is closed"))
        d: Deferred[None] = self._reader.call(_ping)
        return d

    def close(self) -> Deferred[None]:
        """Commit what is queued, then close both connections; idempotent."""
        if self._closing is None:
            if self._trimmer is not None and self._trimmer.running:
                self._trimmer.stop()
            stopped = DeferredList([self._writer.stop(), self._reader.stop()], consumeErrors=True)
            self._closing = stopped.addCallback(self._closed)
        done: Deferred[None] = Deferred()
        if self._close_waiters is None:
            done.callback(None)
        else:
            self._close_waiters.append(done)
        return done

    def _closed(self, _: object) -> None:
        waiters, self._close_waiters = self._close_waiters, None
        for waiter in waiters or ():
            waiter.callback(None)
