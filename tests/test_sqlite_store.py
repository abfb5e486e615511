"""The SQLite store beyond the shared contract: durability, group commit, failures.

The contract itself (tests/test_store_contract.py) runs against this backend too; these tests
check what only a durable store promises: what survives a reopen and a ``kill -9`` (items,
dedup records, read positions), that a failed commit leaves no hole and no dedup record, that
listeners run only after the commit, that old items come from disk and recent ones from memory,
and that reads far back are primary-key range scans.
"""

from __future__ import annotations

import json
import select
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults

from chat.stores.errors import StoreClosed, StoreOpenError, StoreWriteError
from chat.stores.interface import Appended, Dedup, ILogStore, LogItem
from chat.stores.sqlite import SqliteLogStore, with_seq
from chat.stores.sqlite.store import select_page
from tests.helpers import twistd_path, within

ensure = pytest_twisted.ensureDeferred


class Stores:
    """Opens stores on files under ``tmp_path`` and closes what the test left open."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "chat.db"
        self.opened: list[SqliteLogStore] = []

    def open(self, **options: Any) -> SqliteLogStore:
        store = SqliteLogStore(self.path, **options)
        self.opened.append(store)
        return store

    async def close(self, store: SqliteLogStore) -> None:
        await within(store.close())


@pytest_twisted.async_yield_fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    opener = Stores(tmp_path)
    yield opener
    for store in opener.opened:
        await within(store.close())


async def fill(store: ILogStore, log: str, count: int) -> list[Appended]:
    """Append ``count`` items at once (one group commit or a few) and wait for all."""
    ds = [store.append(log, {"n": n}) for n in range(count)]
    results: list[Appended] = await within(gatherResults(ds, consumeErrors=True))
    return results


async def everything(store: ILogStore, log: str, after: int = 0) -> list[LogItem]:
    """Every retained item after ``after``, page by page."""
    items: list[LogItem] = []
    while after < store.last_seq(log):
        page: Sequence[LogItem] = await within(store.read(log, after, 100))
        assert page and page[0].seq > after
        items.extend(page)
        after = page[-1].seq
    return items


def seqs(items: Sequence[LogItem]) -> list[int]:
    return [item.seq for item in items]


def rows(path: Path, sql: str, *args: Any) -> list[Any]:
    with sqlite3.connect(path) as connection:
        return connection.execute(sql, args).fetchall()


def test_with_seq_matches_encoding_the_whole_item() -> None:
    assert with_seq(b'{"a":1}', 7, 9) == b'{"a":1,"seq":7,"ts":9}'
    assert with_seq(b"{}", 1, 2) == b'{"seq":1,"ts":2}'
    assert json.loads(with_seq(b'{"a":"\\u00e9"}', 1, 2)) == {"a": "é", "seq": 1, "ts": 2}


# --- what survives ----------------------------------------------------------------------------


@ensure
async def test_items_directory_and_epoch_survive_a_reopen(stores: Stores) -> None:
    store = stores.open()
    epoch = store.epoch
    store.add_channel("general")
    store.remember_user("alice")
    written = await fill(store, "#general", 5)
    await fill(store, "@alice", 2)
    before = [(i.seq, i.ts, i.payload) for i in await everything(store, "#general")]
    await stores.close(store)

    again = stores.open()
    assert again.epoch == epoch
    assert list(again.channels_after(None, 10)) == ["general"]
    assert again.knows_user("alice") and not again.knows_user("bob")
    assert (again.last_seq("#general"), again.last_seq("@alice")) == (5, 2)
    assert [(i.seq, i.ts, i.payload) for i in await everything(again, "#general")] == before
    assert [(a.seq, a.ts) for a in written] == [(s, ts) for s, ts, _ in before]
    assert (await within(again.append("#general", {"n": 5}))).seq == 6  # seqs go on


@ensure
async def test_a_new_or_wiped_file_gets_a_new_epoch(stores: Stores, tmp_path: Path) -> None:
    store = stores.open()
    epoch = store.epoch
    await fill(store, "#x", 1)
    await stores.close(store)
    for name in ["chat.db", "chat.db-wal", "chat.db-shm"]:
        (tmp_path / name).unlink(missing_ok=True)
    fresh = stores.open()
    assert fresh.epoch != epoch
    assert fresh.last_seq("#x") == 0


CHILD = """
import sys
from twisted.internet import reactor
from chat.stores.interface import Dedup
from chat.stores.sqlite import SqliteLogStore

store = SqliteLogStore(sys.argv[1])

def acked(appended):
    print(f"acked {appended.seq} {appended.ts}", flush=True)
    for n in range(10_000):  # busy when the kill lands: no close, no final checkpoint
        store.append("#busy", {"n": n})

def go():
    store.save_read("alice", "@bob", 7)
    d = store.append("@alice", {"content": "hi"}, "@bob", Dedup("alice", "c1"))
    d.addCallback(acked)

reactor.callWhenRunning(go)
reactor.run()
"""


@ensure
async def test_a_dedup_record_survives_kill_9_right_after_the_acknowledgement(
    stores: Stores,
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(stores.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 20)
        assert ready, "the child never acknowledged its append"
        line = child.stdout.readline()
        child.send_signal(signal.SIGKILL)  # at once: the store was never closed
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    word, seq, ts = line.split()
    assert word == "acked"

    store = stores.open()
    retry = await within(store.append("@alice", {"content": "hi"}, "@bob", Dedup("alice", "c1")))
    assert retry == Appended(int(seq), int(ts), duplicate=True)
    assert (store.last_seq("@alice"), store.last_seq("@bob")) == (1, 1)
    assert await within(store.read_positions("alice")) == {"@bob": 7}  # queued before it
    other = await within(store.append("@alice", {}, "@bob", Dedup("alice", "c2")))
    assert (other.seq, other.duplicate) == (2, False)


@ensure
async def test_dedup_records_expire_by_the_clock_across_a_reopen(stores: Stores) -> None:
    now = [1_000_000_000]

    def clock() -> int:
        return now[0]

    key = Dedup("alice", "c1")
    store = stores.open(clock_ms=clock, dedup_window=60.0)
    first = await within(store.append("#x", {}, None, key))
    await stores.close(store)
    now[0] += 59_000
    store = stores.open(clock_ms=clock, dedup_window=60.0)
    assert await within(store.append("#x", {}, None, key)) == Appended(
        first.seq, first.ts, duplicate=True
    )
    now[0] += 2_000
    later = await within(store.append("#x", {}, None, key))
    assert (later.seq, later.duplicate) == (2, False)


# --- memory and disk --------------------------------------------------------------------------


@ensure
async def test_recent_items_come_from_memory_older_ones_from_disk(stores: Stores) -> None:
    store = stores.open()
    await fill(store, "#x", 10)
    await stores.close(store)
    store = stores.open(cache=4)
    assert store.cached("#x", 0, 5) is None  # nothing in memory after a restart: read()
    first_page: Sequence[LogItem] = await within(store.read("#x", 0, 5))
    assert seqs(first_page) == [1, 2, 3, 4, 5]
    await fill(store, "#x", 6)  # seqs 11..16; the ring holds the newest 4
    held = store.cached("#x", 12, 10)
    assert held is not None and seqs(list(held)) == [13, 14, 15, 16]
    assert store.cached("#x", 11, 10) is None
    assert seqs(await everything(store, "#x", 8)) == list(range(9, 17))


@ensure
async def test_appends_issued_together_are_committed_together(stores: Stores) -> None:
    store = stores.open()
    appended = await fill(store, "#x", 500)
    assert [a.seq for a in appended] == list(range(1, 501))
    assert store._writer.transactions < 50  # group commit: not one transaction per append


@ensure
async def test_listeners_run_only_after_the_item_is_committed(stores: Stores) -> None:
    store = stores.open()
    seen: list[list[Any]] = []

    def listener() -> None:  # another connection sees the item: it is committed
        seen.append(rows(stores.path, "SELECT seq FROM items WHERE log = '#x' ORDER BY seq"))

    store.listen("#x", listener)
    await fill(store, "#x", 1)
    assert seen == [[(1,)]]


@ensure
async def test_reads_far_back_are_primary_key_range_scans(stores: Stores) -> None:
    store = stores.open()
    await fill(store, "#big", 1)  # creates the schema and the log
    await stores.close(store)
    count = 200_000
    payload = b'{"kind":"message","channel":"big","from":"a","content":"hello"}'
    with sqlite3.connect(stores.path) as connection:
        connection.executemany(
            "INSERT INTO items VALUES ('#big', ?, 0, ?)",
            ((s, payload) for s in range(2, count + 1)),
        )
        connection.executemany(
            "INSERT INTO items VALUES ('#other', ?, 0, ?)", ((s, payload) for s in range(1, 1000))
        )
        connection.execute("UPDATE logs SET last = ? WHERE log = '#big'", (count,))
    store = stores.open(retention=2 * count, cache=8)
    middle: Sequence[LogItem] = await within(store.read("#big", 99_999, 100))
    newest: Sequence[LogItem] = await within(store.read("#big", count - 100, 100))
    assert seqs(middle) == list(range(100_000, 100_100))
    assert seqs(newest) == list(range(count - 99, count + 1))

    statements: list[str] = []
    with sqlite3.connect(stores.path) as connection:
        connection.set_trace_callback(statements.append)
        select_page("#big", 100_000, 100_099, 1 << 20)(connection)
        [query] = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        plan = " ".join(str(row) for row in connection.execute("EXPLAIN QUERY PLAN " + query))
    assert "USING PRIMARY KEY" in plan and "SCAN" not in plan, plan


# --- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "breakage, repair",
    [
        ("PRAGMA query_only = ON", "PRAGMA query_only = OFF"),  # a read-only database
        ("PRAGMA max_page_count = {pages}", "PRAGMA max_page_count = 1000000"),  # a full disk
    ],
    ids=["read-only", "disk-full"],
)
@ensure
async def test_a_failed_commit_fails_its_appends_and_leaves_no_hole(
    stores: Stores, breakage: str, repair: str
) -> None:
    store = stores.open()
    await fill(store, "#x", 3)
    pages = rows(stores.path, "PRAGMA page_count")[0][0]
    await within(store.on_writer(lambda c: c.execute(breakage.format(pages=pages))))
    big = "x" * 20_000  # needs new pages, so a capped file cannot take it
    key = Dedup("alice", "c1")
    failed: list[Deferred[Any]] = [store.append("#x", {"content": big}) for _ in range(4)]
    failed.append(store.append("#x", {"content": big}, None, key))
    failed.append(store.save_read("alice", "#x", 3))
    for d in failed:
        with pytest.raises(StoreWriteError):
            await within(d)
    assert store.last_seq("#x") == 3
    await within(store.on_writer(lambda c: c.execute(repair)))
    retried = await within(store.append("#x", {"content": "after"}, None, key))
    assert (retried.seq, retried.duplicate) == (4, False)  # no hole, and no dedup record
    assert seqs(await everything(store, "#x")) == [1, 2, 3, 4]
    assert await within(store.read_positions("alice")) == {}


@ensure
async def test_close_commits_what_is_queued(stores: Stores) -> None:
    store = stores.open()
    pending = [store.append("#x", {"n": n}) for n in range(200)]
    saved = store.save_read("alice", "#x", 200)
    await within(store.close())
    for d in pending:
        assert (await within(d)).seq >= 1
    assert await within(saved) == 200
    with pytest.raises(StoreClosed):
        await within(store.append("#x", {}))
    with pytest.raises(StoreClosed):
        await within(store.save_read("alice", "#x", 201))
    assert rows(stores.path, "SELECT count(*) FROM items")[0][0] == 200
    assert rows(stores.path, "SELECT seq FROM reads") == [(200,)]


@ensure
async def test_retention_by_count_trims_the_file(stores: Stores) -> None:
    store = stores.open(retention=10)
    for _ in range(10):
        await fill(store, "#x", 10)
    assert store.first_seq("#x") == 91
    stored = rows(stores.path, "SELECT count(*) FROM items")[0][0]
    assert 10 <= stored <= 11  # the writer trims in steps of retention // 10 (here 1)
    await stores.close(store)
    again = stores.open(retention=10)
    assert again.first_seq("#x") == 91
    assert seqs(await everything(again, "#x")) == list(range(91, 101))


@ensure
async def test_retention_by_age_removes_old_items(stores: Stores) -> None:
    now = [1_000_000]

    def clock() -> int:
        return now[0]

    store = stores.open(retention_age=60.0, clock_ms=clock)
    await fill(store, "#x", 3)
    now[0] += 61_000
    await fill(store, "#x", 2)
    await within(store._trim_by_age())
    assert store.first_seq("#x") == 4
    assert seqs(await everything(store, "#x")) == [4, 5]
    assert rows(stores.path, "SELECT seq FROM items ORDER BY seq") == [(4,), (5,)]
    await stores.close(store)
    assert stores.open(retention_age=60.0, clock_ms=clock).first_seq("#x") == 4


def test_opening_a_corrupt_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    path.write_bytes(b"this is not a database, " * 400)
    with pytest.raises(StoreOpenError, match=r"cannot open the SQLite store .*chat\.db"):
        SqliteLogStore(path)


@pytest.mark.parametrize(
    "make",
    [lambda p: p.write_bytes(b"\x00garbage" * 1000), lambda p: p.mkdir()],
    ids=["garbage", "a-directory"],
)
def test_twistd_refuses_a_bad_database_file_with_one_line(
    tmp_path: Path, make: Callable[[Path], Any]
) -> None:
    path = tmp_path / "broken.db"
    make(path)
    result = subprocess.run(
        [
            twistd_path(),
            "-n",
            "--pidfile=",
            "chat",
            "--listen",
            "tcp:0",
            "--store",
            f"sqlite:{path}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0
    assert "Traceback" not in output
    assert output.count("\n") == 0, output
    assert str(path) in output and "cannot open the SQLite store" in output


def test_twistd_stores_in_sqlite_by_default() -> None:
    result = subprocess.run(
        [twistd_path(), "-n", "--pidfile=", "chat", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "[default: sqlite:chat.db]" in " ".join(result.stdout.split())
    for option in ["--retention-age=", "--sync=", "--cache=", "--dedup-window="]:
        assert option in result.stdout
