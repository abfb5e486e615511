"""The writer thread of the SQLite store: group commit, dedup records, read positions, trimming.

Everything that changes the file goes through one thread, in the order the reactor queued it:
appends (with their dedup check and record), directory names, read positions, and maintenance
jobs. The thread takes *everything* queued (up to :data:`MAX_BATCH`) and commits it in one
transaction, so one ``fsync`` covers many appends. It assigns seqs from its own per-log
counters and advances them only after ``COMMIT`` succeeds; a failed commit is rolled back and
fails every entry of the batch, and since nobody was told of those seqs, the next batch reuses
them and the log stays gapless.

A dedup record is written in the same transaction as the item it deduplicates, so a crash
(even ``kill -9`` right after the commit) keeps both or neither: a retried ``message`` is then
found as a duplicate, or appended for the first time.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
from collections.abc import Callable
from typing import Any, Final

from twisted.internet.defer import Deferred

from chat.stores.interface import Appended, LogItem
from chat.stores.sqlite._threads import Job, Stop, Worker

MAX_BATCH: Final = 4_096  # entries per transaction at most
ROWS_PER_INSERT: Final = 256  # items per INSERT statement at most (a power of two)
DEDUP_PURGE_SECONDS: Final = 60.0  # how often expired dedup records are deleted

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
CREATE TABLE IF NOT EXISTS dedup (
    sender TEXT NOT NULL, target TEXT NOT NULL, client_id TEXT NOT NULL,
    seq INTEGER NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (sender, target, client_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_ts ON dedup (ts);
CREATE TABLE IF NOT EXISTS members (
    channel TEXT NOT NULL, username TEXT NOT NULL, PRIMARY KEY (channel, username)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reads (
    username TEXT NOT NULL, log TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (username, log)
) WITHOUT ROWID;
"""


def _insert_items_sql(rows: int) -> str:
    return "INSERT INTO items VALUES " + ", ".join(["(?, ?, ?, ?)"] * rows)


_INSERT_ITEMS = {1 << i: _insert_items_sql(1 << i) for i in range(ROWS_PER_INSERT.bit_length())}


def insert_items(connection: sqlite3.Connection, values: list[Any]) -> None:
    """Insert item rows given as one flat list of (log, seq, ts, payload) values.

    Why not ``executemany``: it releases the GIL around every row's ``sqlite3_step`` and takes
    it back after, and each time it has to wait for the reactor thread to let go of it. One
    statement per up to :data:`ROWS_PER_INSERT` rows (in power-of-two sizes, so that a few
    statements are ever prepared) takes the GIL back a few times per commit instead of once per
    item, which is what slowed the reactor down under load.
    """
    rows = len(values) // 4
    done = 0
    size = ROWS_PER_INSERT
    while done < rows:
        while size > rows - done:
            size //= 2
        connection.execute(_INSERT_ITEMS[size], values[done * 4 : (done + size) * 4])
        done += size


def with_seq(body: bytes, seq: int, ts: int) -> bytes:
    """``body`` (a JSON object) with ``"seq"`` and ``"ts"`` added last, as the memory store."""
    tail = b'"seq":%d,"ts":%d}' % (seq, ts)
    if body == b"{}":
        return b"{" + tail
    return body[:-1] + b"," + tail


class Append:
    """One queued append: its logs (one, or two for a private message), the item's JSON
    without seq and ts, its dedup key, and who waits for it."""

    __slots__ = ("body", "dedup", "deferred", "logs")

    def __init__(self, logs: tuple[str, ...], body: bytes, dedup: tuple[str, str, str] | None):
        self.logs = logs
        self.body = body
        self.dedup = dedup  # (sender, target log, client_id)
        self.deferred: Deferred[Appended] = Deferred()


class Name:
    """One queued directory entry: a channel or a known user."""

    __slots__ = ("name", "table")

    def __init__(self, table: str, name: str) -> None:
        self.table = table
        self.name = name


class Member:
    """One queued membership change: who is in which channel, so that the memberships of
    sessions a crash cut short can be ended (with their ``leave`` items) at the next start."""

    __slots__ = ("channel", "joined", "username")

    def __init__(self, channel: str, username: str, joined: bool) -> None:
        self.channel = channel
        self.username = username
        self.joined = joined


class SaveRead:
    """One queued read position; fires with the position stored."""

    __slots__ = ("deferred", "log", "seq", "username")

    def __init__(self, username: str, log: str, seq: int) -> None:
        self.username = username
        self.log = log
        self.seq = seq
        self.deferred: Deferred[int] = Deferred()


Entry = Append | Name | Member | SaveRead
# (entries, their outcomes, committed items by log, new floors by log)
Committed = Callable[[list[Entry], list[Any], dict[str, list[LogItem]], dict[str, int]], None]
Failed = Callable[[list[Entry], BaseException], None]


class Writer(Worker):
    """The writer thread."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        reactor: Any,
        lasts: dict[str, tuple[int, int]],
        retention: int,
        dedup_window_ms: int,
        clock_ms: Callable[[], int],
        committed: Committed,
        failed: Failed,
    ) -> None:
        super().__init__("chat-sqlite-writer", connect, reactor)
        # Owned by the writer thread once it runs:
        self.last = {key: last for key, (last, _floor) in lasts.items()}
        self.floor = {key: floor for key, (_last, floor) in lasts.items()}
        self.retention = retention
        self.trim_step = max(1, retention // 10)
        self.dedup_window_ms = dedup_window_ms
        self.clock_ms = clock_ms
        self.committed = committed
        self.failed = failed
        self.unsaved_names: list[Name | Member] = []  # retried with the next transaction
        self.transactions = 0  # append transactions committed (group commit makes it small)
        self.purged_at = 0

    def put(self, entry: Entry) -> None:
        self.start()
        self.queue.put(entry)

    def fail_job(self, job: Any, exc: BaseException) -> None:
        if isinstance(job, Append | SaveRead):
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
        group: list[Entry] = []
        for entry in batch:
            if isinstance(entry, Append | Name | Member | SaveRead):
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

    def commit(self, connection: sqlite3.Connection, group: list[Entry]) -> None:
        names = self.unsaved_names + [e for e in group if isinstance(e, Name | Member)]
        entries = [entry for entry in group if not isinstance(entry, Name | Member)]
        ts = self.clock_ms()
        new_last: dict[str, int] = {}
        batch_dedup: dict[tuple[str, str, str], tuple[int, int]] = {}
        items: dict[str, list[LogItem]] = {}
        outcomes: list[Any] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                values: list[Any] = []  # item rows, flattened (insert_items)
                dedup_rows = []
                for entry in entries:
                    if isinstance(entry, SaveRead):
                        outcomes.append(self._save_read(connection, entry))
                        continue
                    earlier = self._earlier(connection, entry, batch_dedup, ts)
                    if earlier is not None:
                        outcomes.append(Appended(earlier[0], earlier[1], duplicate=True))
                        continue
                    first_seq = 0
                    for log in entry.logs:
                        seq = (new_last.get(log) or self.last.get(log, 0)) + 1
                        new_last[log] = seq
                        payload = with_seq(entry.body, seq, ts)
                        values += (log, seq, ts, payload)
                        items.setdefault(log, []).append(LogItem(seq, payload))
                        first_seq = first_seq or seq
                    if entry.dedup is not None:
                        batch_dedup[entry.dedup] = (first_seq, ts)
                        dedup_rows.append((*entry.dedup, first_seq, ts))
                    outcomes.append(Appended(first_seq, ts))
                trims = self._trims(new_last)
                insert_items(connection, values)
                connection.executemany(
                    "INSERT INTO logs VALUES (?, ?, 1) "
                    "ON CONFLICT (log) DO UPDATE SET last = excluded.last",
                    new_last.items(),
                )
                connection.executemany(
                    "INSERT OR REPLACE INTO dedup VALUES (?, ?, ?, ?, ?)", dedup_rows
                )
                for key, keep_from in trims.items():
                    connection.execute(
                        "DELETE FROM items WHERE log = ? AND seq < ?", (key, keep_from)
                    )
                    connection.execute("UPDATE logs SET floor = ? WHERE log = ?", (keep_from, key))
                for name in names:
                    if isinstance(name, Member):
                        self._member(connection, name)
                    else:
                        connection.execute(
                            f"INSERT OR IGNORE INTO {name.table} VALUES (?)", (name.name,)
                        )
                self._purge_dedup(connection, ts)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back
                        connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self.unsaved_names = names
            self.reactor.callFromThread(self.failed, entries, exc)
            return
        self.unsaved_names = []
        self.transactions += 1
        self.last.update(new_last)
        self.floor.update(trims)
        self.reactor.callFromThread(self.committed, entries, outcomes, items, trims)

    def _earlier(
        self,
        connection: sqlite3.Connection,
        entry: Append,
        batch: dict[tuple[str, str, str], tuple[int, int]],
        now: int,
    ) -> tuple[int, int] | None:
        """The (seq, ts) of an earlier append with the same dedup key, within the window."""
        if entry.dedup is None:
            return None
        found = batch.get(entry.dedup)
        if found is None:
            row = connection.execute(
                "SELECT seq, ts FROM dedup WHERE sender = ? AND target = ? AND client_id = ?",
                entry.dedup,
            ).fetchone()
            found = (row[0], row[1]) if row is not None else None
        if found is not None and found[1] >= now - self.dedup_window_ms:
            return found
        return None

    @staticmethod
    def _member(connection: sqlite3.Connection, entry: Member) -> None:
        if entry.joined:
            connection.execute(
                "INSERT OR IGNORE INTO members VALUES (?, ?)", (entry.channel, entry.username)
            )
        else:
            connection.execute(
                "DELETE FROM members WHERE channel = ? AND username = ?",
                (entry.channel, entry.username),
            )

    @staticmethod
    def memberships(connection: sqlite3.Connection) -> list[tuple[str, str]]:
        return [(c, u) for c, u in connection.execute("SELECT channel, username FROM members")]

    @staticmethod
    def _save_read(connection: sqlite3.Connection, entry: SaveRead) -> int:
        connection.execute(
            "INSERT INTO reads VALUES (?, ?, ?) "
            "ON CONFLICT (username, log) DO UPDATE SET seq = max(seq, excluded.seq)",
            (entry.username, entry.log, entry.seq),
        )
        row = connection.execute(
            "SELECT seq FROM reads WHERE username = ? AND log = ?", (entry.username, entry.log)
        ).fetchone()
        return int(row[0])

    def _trims(self, new_last: dict[str, int]) -> dict[str, int]:
        trims = {}
        for key, last in new_last.items():
            keep_from = last - self.retention + 1
            if keep_from - self.floor.get(key, 1) >= self.trim_step:
                trims[key] = keep_from
        return trims

    def _purge_dedup(self, connection: sqlite3.Connection, now: int) -> None:
        if now - self.purged_at >= DEDUP_PURGE_SECONDS * 1000:
            connection.execute("DELETE FROM dedup WHERE ts < ?", (now - self.dedup_window_ms,))
            self.purged_at = now

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

    @staticmethod
    def read_positions(connection: sqlite3.Connection, username: str) -> dict[str, int]:
        rows = connection.execute("SELECT log, seq FROM reads WHERE username = ?", (username,))
        return {log: seq for log, seq in rows}
