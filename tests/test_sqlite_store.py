"""The SQLite store beyond the shared contract: durability, group commit, failures, speed.

The contract itself (tests/test_store_contract.py) runs against this backend too; these tests
check what only a durable store promises: what survives a reopen, that a failed commit leaves
no hole, that listeners run only after the commit, that old items come from disk and recent
ones from memory, and that a history read of a huge log stays fast.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList
from zope.interface.verify import verifyObject

from chat.stores.errors import StoreClosed, StoreOpenError, StoreWriteError
from chat.stores.interface import ILogStore, LogItem
from chat.stores.sqlite import SqliteLogStore, with_seq
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


async def fill(store: ILogStore, log: str, count: int) -> list[LogItem]:
    """Append ``count`` items at once (one group commit or a few) and wait for all."""
    ds = [store.append(log, {"n": n}) for n in range(count)]
    results = await within(DeferredList(ds, fireOnOneErrback=True, consumeErrors=True))
    return [item for _ok, item in results]


def rows(path: Path, sql: str, *args: Any) -> list[Any]:
    with sqlite3.connect(path) as connection:
        return connection.execute(sql, args).fetchall()


def test_with_seq_matches_encoding_the_whole_item() -> None:
    assert with_seq(b'{"a":1}', 7, 9) == b'{"a":1,"seq":7,"ts":9}'
    assert with_seq(b"{}", 1, 2) == b'{"seq":1,"ts":2}'


@ensure
async def test_provides_ilogstore(stores: Stores) -> None:
    assert verifyObject(ILogStore, stores.open())


@ensure
async def test_items_directory_and_epoch_survive_a_reopen(stores: Stores) -> None:
    store = stores.open()
    epoch = store.epoch
    store.add_channel("general")
    store.remember_user("alice")
    written = await fill(store, "#general", 5)
    await fill(store, "@alice", 2)
    await stores.close(store)

    again = stores.open()
    assert again.epoch == epoch
    assert again.channels() == ["general"]
    assert again.knows_user("alice") and not again.knows_user("bob")
    assert (again.last_seq("#general"), again.last_seq("@alice")) == (5, 2)
    items = await within(again.history("#general", None, None, 100))
    assert [(i.seq, i.ts, i.payload) for i in items] == [(i.seq, i.ts, i.payload) for i in written]
    item = await within(again.append("#general", {"n": 5}))
    assert item.seq == 6  # seqs go on where they stopped


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


@ensure
async def test_recent_items_come_from_memory_older_ones_from_disk(stores: Stores) -> None:
    store = stores.open()
    await fill(store, "#x", 10)
    await stores.close(store)
    store = stores.open(cache=4)
    assert store.cached("#x", 0, 5) is None  # nothing in memory after a restart: read()
    assert [i.seq for i in await within(store.read("#x", 0, 5))] == [1, 2, 3, 4, 5]
    await fill(store, "#x", 6)  # seqs 11..16; the ring holds the newest 4
    cached = store.cached("#x", 12, 10)
    assert cached is not None and [i.seq for i in cached] == [13, 14, 15, 16]
    assert store.cached("#x", 11, 10) is None
    assert [i.seq for i in await within(store.read("#x", 8, 100))] == list(range(9, 17))
    assert [i.seq for i in await within(store.history("#x", 14, None, 5))] == list(range(9, 14))


@ensure
async def test_appends_issued_together_are_committed_together(stores: Stores) -> None:
    store = stores.open()
    items = await fill(store, "#x", 500)
    assert [i.seq for i in items] == list(range(1, 501))
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
    failed = [store.append("#x", {"content": big}) for _ in range(5)]
    for d in failed:
        with pytest.raises(StoreWriteError):
            await within(d)
    assert store.last_seq("#x") == 3
    await within(store.on_writer(lambda c: c.execute(repair)))
    item = await within(store.append("#x", {"content": "after"}))
    assert item.seq == 4  # the failed seqs were never seen, so they are reused: no hole
    assert [i.seq for i in await within(store.history("#x", None, None, 10))] == [1, 2, 3, 4]


@ensure
async def test_close_commits_what_is_queued(stores: Stores) -> None:
    store = stores.open()
    pending = [store.append("#x", {"n": n}) for n in range(200)]
    await within(store.close())
    for d in pending:
        assert (await within(d)).seq >= 1
    with pytest.raises(StoreClosed):
        await within(store.append("#x", {}))
    assert rows(stores.path, "SELECT count(*) FROM items")[0][0] == 200


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
    assert [i.seq for i in await within(again.read("#x", 0, 100))] == list(range(91, 101))


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
    assert [i.seq for i in await within(store.read("#x", 0, 10))] == [4, 5]
    assert rows(stores.path, "SELECT seq FROM items ORDER BY seq") == [(4,), (5,)]
    await stores.close(store)
    assert stores.open(retention_age=60.0, clock_ms=clock).first_seq("#x") == 4


@pytest.mark.slow
@ensure
async def test_history_of_a_million_item_log_is_fast(stores: Stores) -> None:
    store = stores.open()
    await fill(store, "#big", 1)  # creates the schema and the log
    await stores.close(store)
    count = 1_000_000
    payload = b'{"kind":"message","channel":"big","from":"a","content":"hello"}'
    with sqlite3.connect(stores.path) as connection:
        connection.executemany(
            "INSERT INTO items VALUES ('#big', ?, 0, ?)",
            ((s, payload) for s in range(2, count + 1)),
        )
        connection.execute("UPDATE logs SET last = ? WHERE log = '#big'", (count,))
    store = stores.open(retention=2 * count)
    started = time.perf_counter()
    items = await within(store.history("#big", None, None, 100))
    middle = await within(store.history("#big", 500_000, None, 100))
    elapsed = time.perf_counter() - started
    assert [i.seq for i in items] == list(range(count - 99, count + 1))
    assert [i.seq for i in middle] == list(range(499_900, 500_000))
    assert elapsed < 0.5, f"two history reads of 100 items took {elapsed:.3f}s"


def test_opening_a_corrupt_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    path.write_bytes(b"this is not a database, " * 400)
    with pytest.raises(StoreOpenError, match=r"cannot open the SQLite store .*chat\.db"):
        SqliteLogStore(path)


@pytest.mark.parametrize(
    "make", [lambda p: p.write_bytes(b"\x00garbage" * 1000), lambda p: p.mkdir()]
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
    for option in ["--retention-age=", "--sync="]:
        assert option in result.stdout


def test_payload_json_roundtrip(stores: Stores) -> None:
    assert json.loads(with_seq(b'{"a":"\\u00e9"}', 1, 2)) == {"a": "é", "seq": 1, "ts": 2}


_unused: list[Deferred[None]] = []
