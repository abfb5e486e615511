"""The SQLite store: durable logs in one WAL-mode database file (``--store sqlite:chat.db``).

Theory of operation
-------------------

- **One writer thread** (:class:`Writer`) owns the write connection. ``append`` encodes the
  item's JSON on the reactor (without ``seq``/``ts``) and queues it; the writer takes
  *everything* queued (up to :data:`MAX_BATCH`) and commits it in one transaction: group
  commit, so one ``fsync`` covers many appends. The writer assigns seqs inside the
  transaction from its own per-log counters and advances them only after ``COMMIT``
  succeeds. A failed commit is rolled back and fails every append of the batch: no client has
  seen those seqs (nobody is told before the commit), so the next batch reuses them and the log
  stays gapless.
- **Only after the commit** does the reactor learn of the items (``callFromThread``): it puts
  them in the log's ring of recent items, advances ``last_seq``, wakes the listeners, then fires
  the append Deferreds (so a ``message`` is acknowledged only once its item is durable).
- **Reads**: :meth:`SqliteLogStore.cached` answers from the ring (the newest ``cache`` items of
  each log appended since start) and returns ``None`` only for older items, which
  :meth:`SqliteLogStore.read` and ``history`` fetch on a separate reader thread with its own
  connection (WAL lets it read while the writer commits). Every range read is a primary-key
  range scan on ``(log, seq)``.
- **Retention**: by count, logically exact (``first_seq = last_seq - retention + 1``) and
  physically trimmed by the writer inside the append transactions, in steps of
  ``retention // 10`` rows; by age (``retention_age``), a periodic job on the writer thread
  deletes the items older than the age (the ``ts`` index finds them). Neither runs on the
  reactor.
- The directory (channels, known users) and the ``epoch`` live in the same file, so they
  survive restarts; the epoch is created with the file and never changes after.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from chat.protocol.frames import encode_json
from chat.stores._sqlite_threads import Job, Stop, Worker
from chat.stores.directory import Directory, Table
from chat.stores.errors import StoreClosed, StoreOpenError, StoreWriteError
from chat.stores.interface import ILogStore, Listener, LogItem, history_bounds
from chat.stores.memory import wall_clock_ms

DEFAULT_RETENTION: Final = 100_000
DEFAULT_CACHE: Final = 1_000  # recent items per log kept in memory for live delivery
MAX_BATCH: Final = 4_096  # appends per transaction at most
SYNC_MODES: Final = ("full", "normal")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs (
    log TEXT PRIMARY KEY, last INTEGER NOT NULL, floor INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (
    log TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (log, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_ts ON items (ts);
CREATE TABLE IF NOT EXISTS channels (name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY) WITHOUT ROWID;
"""

log = Logger()


def _ping(connection: sqlite3.Connection) -> None:
    connection.execute("SELECT count(*) FROM meta").fetchone()


def with_seq(body: bytes, seq: int, ts: int) -> bytes:
    """``body`` (a JSON object) with ``"seq"`` and ``"ts"`` added last, as the memory store."""
    tail = b'"seq":%d,"ts":%d}' % (seq, ts)
    if body == b"{}":
        return b"{" + tail
    return body[:-1] + b"," + tail


def connect(path: str, sync: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA busy_timeout = 5000")
    mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        connection.close()
        raise sqlite3.DatabaseError(f"cannot switch to WAL mode (journal_mode is {mode})")
    connection.execute(f"PRAGMA synchronous = {sync.upper()}")
    return connection


def select_range(
    log_key: str, low: int, high: int
) -> Callable[[sqlite3.Connection], list[LogItem]]:
    def run(connection: sqlite3.Connection) -> list[LogItem]:
        rows = connection.execute(
            "SELECT seq, ts, payload FROM items WHERE log = ? AND seq BETWEEN ? AND ? ORDER BY seq",
            (log_key, low, high),
        )
        return [LogItem(seq, ts, bytes(payload)) for seq, ts, payload in rows]

    return run


class RecentItems:
    """The newest ``capacity`` committed items of one log, contiguous, addressed by seq."""

    __slots__ = ("capacity", "items", "start")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: list[LogItem] = []
        self.start = 0  # index of the oldest item once the ring is full

    @property
    def oldest(self) -> int | None:
        return self.items[self.start].seq if self.items else None

    def add(self, item: LogItem) -> None:
        if len(self.items) < self.capacity:
            self.items.append(item)
        else:
            self.items[self.start] = item
            self.start = (self.start + 1) % self.capacity

    def between(self, low: int, high: int) -> list[LogItem]:
        """Items ``low..high`` (inclusive); the caller checks they are held."""
        items = self.items
        n = len(items)
        oldest = items[self.start].seq
        i = (self.start + low - oldest) % n
        j = (self.start + high - oldest) % n
        if i <= j:
            return items[i : j + 1]
        return items[i:] + items[: j + 1]


class LogState:
    """What the reactor knows of one log: committed bounds, recent items, listeners."""

    __slots__ = ("floor", "last", "listeners", "recent")

    def __init__(self, last: int, floor: int, capacity: int) -> None:
        self.last = last
        self.floor = floor  # no item below this seq is retained (trimmed)
        self.recent = RecentItems(capacity)
        self.listeners: dict[Listener, None] = {}  # an ordered set


class Append:
    """One queued append: the item's JSON without seq and ts, and who waits for it."""

    __slots__ = ("body", "deferred", "log")

    def __init__(self, log_key: str, body: bytes) -> None:
        self.log = log_key
        self.body = body
        self.deferred: Deferred[LogItem] = Deferred()


class Name:
    """One queued directory entry: a channel or a known user."""

    __slots__ = ("name", "table")

    def __init__(self, table: str, name: str) -> None:
        self.table = table
        self.name = name


Committed = Callable[[list[Append], list[LogItem], dict[str, int]], None]
Failed = Callable[[list[Append], BaseException], None]


class Writer(Worker):
    """The writer thread: group-commits appends and directory entries, trims retention."""

    def __init__(
        self,
        path: str,
        sync: str,
        reactor: Any,
        lasts: dict[str, tuple[int, int]],
        retention: int,
        clock_ms: Callable[[], int],
        committed: Committed,
        failed: Failed,
    ) -> None:
        super().__init__("chat-sqlite-writer", lambda: connect(path, sync), reactor)
        # Owned by the writer thread once it runs:
        self.last = {key: last for key, (last, _floor) in lasts.items()}
        self.floor = {key: floor for key, (_last, floor) in lasts.items()}
        self.retention = retention
        self.trim_step = max(1, retention // 10)
        self.clock_ms = clock_ms
        self.committed = committed
        self.failed = failed
        self.unsaved_names: list[Name] = []  # retried with the next transaction
        self.transactions = 0  # append transactions committed (group commit makes it small)

    def put(self, entry: Append | Name) -> None:
        self.start()
        self.queue.put(entry)

    def fail_job(self, job: Any, exc: BaseException) -> None:
        if isinstance(job, Append):
            self.reactor.callFromThread(self.failed, [job], exc)
        elif isinstance(job, Job):
            super().fail_job(job, exc)

    def handle(self, connection: sqlite3.Connection, job: Any) -> Stop | None:
        batch = [job]
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        group: list[Append | Name] = []
        for entry in batch:
            if isinstance(entry, Append | Name):
                group.append(entry)
                continue
            if group:
                self.commit(connection, group)
                group = []
            if isinstance(entry, Stop):
                return entry  # nothing is queued after a Stop
            self.run_job(connection, entry)
        if group:
            self.commit(connection, group)
        return None

    def commit(self, connection: sqlite3.Connection, group: list[Append | Name]) -> None:
        appends = [entry for entry in group if isinstance(entry, Append)]
        names = self.unsaved_names + [entry for entry in group if isinstance(entry, Name)]
        ts = self.clock_ms()
        new_last: dict[str, int] = {}
        rows = []
        items = []
        for append in appends:
            seq = (new_last.get(append.log) or self.last.get(append.log, 0)) + 1
            new_last[append.log] = seq
            payload = with_seq(append.body, seq, ts)
            rows.append((append.log, seq, ts, payload))
            items.append(LogItem(seq, ts, payload))
        trims = {}
        for key, last in new_last.items():
            keep_from = last - self.retention + 1
            if keep_from - self.floor.get(key, 1) >= self.trim_step:
                trims[key] = keep_from
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", rows)
                connection.executemany(
                    "INSERT INTO logs VALUES (?, ?, 1) "
                    "ON CONFLICT (log) DO UPDATE SET last = excluded.last",
                    new_last.items(),
                )
                for key, keep_from in trims.items():
                    connection.execute(
                        "DELETE FROM items WHERE log = ? AND seq < ?", (key, keep_from)
                    )
                    connection.execute("UPDATE logs SET floor = ? WHERE log = ?", (keep_from, key))
                for name in names:
                    connection.execute(
                        f"INSERT OR IGNORE INTO {name.table} VALUES (?)", (name.name,)
                    )
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back
                        connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self.unsaved_names = names
            self.reactor.callFromThread(self.failed, appends, exc)
            return
        self.unsaved_names = []
        self.transactions += 1
        self.last.update(new_last)
        self.floor.update(trims)
        self.reactor.callFromThread(self.committed, appends, items, trims)

    def trim_older_than(self, connection: sqlite3.Connection, cutoff_ms: int) -> dict[str, int]:
        """Delete every item with ``ts < cutoff_ms`` (and those before it); the new floors."""
        rows = connection.execute(
            "SELECT log, max(seq) FROM items WHERE ts < ? GROUP BY log", (cutoff_ms,)
        ).fetchall()
        if not rows:
            return {}
        floors = {key: seq + 1 for key, seq in rows}
        connection.execute("BEGIN IMMEDIATE")
        try:
            for key, keep_from in floors.items():
                connection.execute("DELETE FROM items WHERE log = ? AND seq < ?", (key, keep_from))
                connection.execute("UPDATE logs SET floor = ? WHERE log = ?", (keep_from, key))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        self.floor.update(floors)
        return floors


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
class SqliteLogStore(Directory):
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
    ) -> None:
        if retention < 1:
            raise ValueError("retention must be at least 1 item per log")
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {', '.join(SYNC_MODES)}, got {sync!r}")
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.path = str(path)
        self.retention = retention
        self.retention_age = retention_age
        self.cache = min(max(1, cache), retention)
        self.clock_ms = clock_ms
        try:
            self.epoch, lasts, channels, users = load(self.path, sync)
        except sqlite3.Error as exc:
            raise StoreOpenError(f"cannot open the SQLite store {self.path}: {exc}") from None
        self.load_directory(channels, users)
        self._logs = {
            key: LogState(last, floor, self.cache) for key, (last, floor) in lasts.items()
        }
        self._writer = Writer(
            self.path, sync, reactor, lasts, retention, clock_ms, self._committed, self._failed
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

    # Appending (reactor side)

    def append(self, log: str, fields: Mapping[str, Any]) -> Deferred[LogItem]:
        if self._closing is not None:
            return fail(StoreClosed(f"the store {self.path} is closed"))
        item = dict(fields)
        item.pop("seq", None)
        item.pop("ts", None)
        entry = Append(log, encode_json(item))
        self._writer.put(entry)
        return entry.deferred

    def _state(self, log: str) -> LogState:
        state = self._logs.get(log)
        if state is None:
            state = self._logs[log] = LogState(0, 1, self.cache)
        return state

    def _committed(
        self, appends: list[Append], items: list[LogItem], trims: dict[str, int]
    ) -> None:
        touched: dict[str, LogState] = {}
        for append, item in zip(appends, items, strict=True):
            state = touched.get(append.log) or self._state(append.log)
            touched[append.log] = state
            state.last = item.seq
            state.recent.add(item)
        for key, keep_from in trims.items():
            state = self._state(key)
            state.floor = max(state.floor, keep_from)
        for state in touched.values():
            for listener in list(state.listeners):
                listener()
        for append, item in zip(appends, items, strict=True):
            append.deferred.callback(item)

    def _failed(self, appends: list[Append], exc: BaseException) -> None:
        log.error(
            "SQLite store {path}: could not commit {count} appends: {error}",
            path=self.path,
            count=len(appends),
            error=exc,
        )
        for append in appends:
            append.deferred.errback(StoreWriteError(f"could not store the item: {exc}"))

    def _trim_by_age(self) -> Deferred[None]:
        assert self.retention_age is not None
        cutoff = self.clock_ms() - int(self.retention_age * 1000)
        writer = self._writer

        def trimmed(floors: dict[str, int]) -> None:
            for key, keep_from in floors.items():
                state = self._state(key)
                state.floor = max(state.floor, keep_from)

        def failed(reason: Any) -> None:
            log.error(
                "SQLite store {path}: trimming by age failed: {error}",
                path=self.path,
                error=reason.value,
            )

        d = self.on_writer(lambda connection: writer.trim_older_than(connection, cutoff))
        return d.addCallbacks(trimmed, failed)

    # Reading

    def last_seq(self, log: str) -> int:
        state = self._logs.get(log)
        return state.last if state else 0

    def first_seq(self, log: str) -> int:
        state = self._logs.get(log)
        return self._first(state) if state else 1

    def _first(self, state: LogState) -> int:
        return max(state.floor, state.last - self.retention + 1, 1)

    def cached(self, log: str, after: int, limit: int) -> Sequence[LogItem] | None:
        state = self._logs.get(log)
        if state is None:
            return []
        low = max(after + 1, self._first(state))
        high = min(state.last, low + limit - 1)
        if high < low:
            return []
        oldest = state.recent.oldest
        if oldest is None or low < oldest:
            return None
        return state.recent.between(low, high)

    def read(self, log: str, after: int, limit: int) -> Deferred[Sequence[LogItem]]:
        items = self.cached(log, after, limit)
        if items is not None:
            return succeed(items)
        state = self._logs[log]
        low = max(after + 1, self._first(state))
        return self._select(log, low, min(state.last, low + limit - 1))

    def history(
        self, log: str, before: int | None, after: int | None, limit: int
    ) -> Deferred[Sequence[LogItem]]:
        state = self._logs.get(log)
        if state is None:
            return succeed([])
        bounds = history_bounds(self._first(state), state.last, before, after, limit)
        if bounds is None:
            return succeed([])
        low, high = bounds
        oldest = state.recent.oldest
        if oldest is not None and low >= oldest:
            return succeed(state.recent.between(low, high))
        return self._select(log, low, high)

    def _select(self, log: str, low: int, high: int) -> Deferred[Sequence[LogItem]]:
        if self._closing is not None:
            return fail(StoreClosed(f"the store {self.path} is closed"))
        d: Deferred[Sequence[LogItem]] = self._reader.call(select_range(log, low, high))
        return d

    # Listeners

    def listen(self, log: str, listener: Listener) -> None:
        self._state(log).listeners[listener] = None

    def unlisten(self, log: str, listener: Listener) -> None:
        state = self._logs.get(log)
        if state is not None:
            state.listeners.pop(listener, None)

    # Directory

    def persist_name(self, table: Table, name: str) -> None:
        if self._closing is None:
            self._writer.put(Name(table, name))

    # Tests and maintenance

    def on_writer(self, function: Callable[[sqlite3.Connection], Any]) -> Deferred[Any]:
        """Run ``function(connection)`` on the writer thread, between transactions."""
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
