"""The one contract every ILogStore backend passes (chat.stores.interface).

To run it against a new backend, add one :class:`Backend` to ``BACKENDS``: a name and a
factory that builds a fresh, empty store from a :class:`StoreConfig`. The factory may return
the store or a Deferred/coroutine of it; every test awaits every Deferred the store returns,
so a backend whose appends and reads complete later passes the same tests as the memory one.
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest_twisted
from twisted.internet.defer import Deferred, ensureDeferred
from zope.interface.verify import verifyObject

from chat.protocol.frames import encode_json
from chat.stores.interface import ILogStore, LogItem, channel_log, inbox_log
from chat.stores.memory import MemoryLogStore
from chat.stores.redis import RedisLogStore
from chat.stores.sqlite import SqliteLogStore
from tests.helpers import within
from tests.redis_fixtures import shared_redis_url

ensure = pytest_twisted.ensureDeferred


@attrs.frozen
class StoreConfig:
    """What a contract test asks of a fresh store."""

    tmp_path: Path  # where a durable backend may keep its files
    retention: int  # items retained per log (at least)
    clock_ms: Callable[[], int]  # the store's clock for ``ts``


@attrs.frozen
class Backend:
    name: str
    make: Callable[[StoreConfig], ILogStore | Deferred[ILogStore] | Awaitable[ILogStore]]


BACKENDS: list[Backend] = [
    Backend("memory", lambda c: MemoryLogStore(retention=c.retention, clock_ms=c.clock_ms)),
    Backend(
        "sqlite",
        lambda c: SqliteLogStore(
            c.tmp_path / "chat.db", retention=c.retention, clock_ms=c.clock_ms
        ),
    ),
    Backend(
        "redis",  # a real redis-server on a free port; a fresh key prefix per store
        lambda c: RedisLogStore(
            shared_redis_url(),
            prefix=f"test:{uuid.uuid4().hex}:",
            retention=c.retention,
            clock_ms=c.clock_ms,
        ).start(),
    ),
]


class FakeClock:
    """Milliseconds that advance by one on every reading, starting at a fixed instant."""

    def __init__(self, start: int = 1_763_780_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1
        return self.now


class OpenStore:
    """``await open_store(retention=..., clock_ms=...)``: a fresh store of one backend."""

    def __init__(self, backend: Backend, tmp_path: Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.opened: list[ILogStore] = []

    async def __call__(
        self, retention: int = 10_000, clock_ms: Callable[[], int] | None = None
    ) -> ILogStore:
        path = self.tmp_path / f"store{len(self.opened)}"
        path.mkdir()
        made: Any = self.backend.make(StoreConfig(path, retention, clock_ms or FakeClock()))
        if isinstance(made, Deferred) or inspect.isawaitable(made):
            made = await within(ensureDeferred(made))
        self.opened.append(made)
        return made  # type: ignore[no-any-return]

    async def close(self, store: ILogStore) -> None:
        self.opened.remove(store)
        await within(store.close())

    async def close_all(self) -> None:
        while self.opened:
            await self.close(self.opened[-1])


@pytest_twisted.async_yield_fixture(params=BACKENDS, ids=lambda backend: backend.name)
async def open_store(request: Any, tmp_path: Path) -> Any:
    opener = OpenStore(request.param, tmp_path)
    yield opener
    await opener.close_all()


async def append(store: ILogStore, log: str, **fields: Any) -> LogItem:
    item: LogItem = await within(store.append(log, fields))
    return item


async def fill(store: ILogStore, log: str, count: int, **fields: Any) -> list[LogItem]:
    return [await append(store, log, n=i, **fields) for i in range(count)]


async def read(store: ILogStore, log: str, after: int, limit: int) -> list[int]:
    items: Sequence[LogItem] = await within(store.read(log, after, limit))
    return [item.seq for item in items]


async def history(
    store: ILogStore, log: str, before: int | None, after: int | None, limit: int
) -> list[int]:
    items: Sequence[LogItem] = await within(store.history(log, before, after, limit))
    return [item.seq for item in items]


def cached(store: ILogStore, log: str, after: int, limit: int) -> list[int] | None:
    items = store.cached(log, after, limit)
    return None if items is None else [item.seq for item in items]


def seqs(items: Sequence[LogItem]) -> list[int]:
    return [item.seq for item in items]


# --- the interface ------------------------------------------------------------------------


@ensure
async def test_provides_ilogstore(open_store: OpenStore) -> None:
    store = await open_store()
    assert verifyObject(ILogStore, store)


@ensure
async def test_epoch_is_a_nonempty_string_that_appends_do_not_change(
    open_store: OpenStore,
) -> None:
    store = await open_store()
    epoch = store.epoch
    assert isinstance(epoch, str) and epoch
    await fill(store, "#x", 3)
    assert store.epoch == epoch


@ensure
async def test_fresh_stores_have_different_epochs(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()
    assert first.epoch != second.epoch


def test_log_keys_cannot_collide() -> None:
    assert channel_log("alice") == "#alice"
    assert inbox_log("alice") == "@alice"
    assert channel_log("alice") != inbox_log("alice")


# --- seqs ---------------------------------------------------------------------------------


@ensure
async def test_an_unknown_log_is_empty(open_store: OpenStore) -> None:
    store = await open_store()
    assert store.last_seq("#nothing") == 0
    assert store.first_seq("#nothing") == 1
    assert cached(store, "#nothing", 0, 10) in ([], None)
    assert await read(store, "#nothing", 0, 10) == []
    assert await history(store, "#nothing", None, None, 10) == []


@ensure
async def test_seqs_are_gapless_from_one_per_log(open_store: OpenStore) -> None:
    store = await open_store()
    items = await fill(store, "#general", 20)
    assert seqs(items) == list(range(1, 21))
    assert store.last_seq("#general") == 20
    assert store.first_seq("#general") == 1


@ensure
async def test_logs_are_independent(open_store: OpenStore) -> None:
    store = await open_store()
    for round_ in range(5):
        for log in ("#a", "#b", "@alice"):
            item = await append(store, log, round=round_)
            assert item.seq == round_ + 1
    await fill(store, "#a", 3)
    assert (store.last_seq("#a"), store.last_seq("#b"), store.last_seq("@alice")) == (8, 5, 5)
    assert await read(store, "#b", 0, 100) == [1, 2, 3, 4, 5]
    assert store.last_seq("#alice") == 0  # the channel "alice" is not the inbox "@alice"


# --- items --------------------------------------------------------------------------------


@ensure
async def test_item_json_is_the_fields_plus_seq_and_ts(open_store: OpenStore) -> None:
    clock = FakeClock(1_000)
    store = await open_store(clock_ms=clock)
    fields = {"kind": "message", "channel": "général", "from": "alice", "content": "hé 😀"}
    item = await within(store.append("#général", fields))
    assert item.seq == 1
    assert item.ts == 1_001  # the store's clock, read once for this item
    assert isinstance(item.payload, bytes)
    assert json.loads(item.payload) == {**fields, "seq": 1, "ts": 1_001}
    # Compact UTF-8 JSON, like every byte the server sends; fields in the order given.
    assert item.payload == encode_json({**fields, "seq": 1, "ts": 1_001})
    assert fields == {
        "kind": "message",
        "channel": "général",
        "from": "alice",
        "content": "hé 😀",
    }  # the caller's mapping is untouched


@ensure
async def test_ts_is_milliseconds_from_the_clock_and_never_goes_back(
    open_store: OpenStore,
) -> None:
    clock = FakeClock(1_763_780_000_000)
    store = await open_store(clock_ms=clock)
    items = await fill(store, "#x", 5)
    assert [i.ts for i in items] == sorted(i.ts for i in items)
    assert all(1_763_780_000_000 < i.ts <= clock.now for i in items)
    for item in items:
        assert json.loads(item.payload)["ts"] == item.ts
        assert json.loads(item.payload)["seq"] == item.seq


@ensure
async def test_payload_is_encoded_once_and_shared_with_readers(open_store: OpenStore) -> None:
    store = await open_store()
    item = await append(store, "#x", content="shared")
    first = store.cached("#x", 0, 1)
    second = store.cached("#x", 0, 1)
    if first is not None and second is not None:
        # The in-memory read path hands every reader the very bytes encoded at append.
        assert first[0].payload is item.payload
        assert second[0].payload is item.payload
    read_items = await within(store.read("#x", 0, 1))
    assert read_items[0].payload == item.payload
    history_items = await within(store.history("#x", None, None, 1))
    assert history_items[0].payload == item.payload


# --- reads after a seq ------------------------------------------------------------------


@ensure
async def test_read_after_a_seq_with_a_limit(open_store: OpenStore) -> None:
    store = await open_store()
    await fill(store, "#x", 10)
    assert await read(store, "#x", 0, 100) == list(range(1, 11))
    assert await read(store, "#x", 0, 3) == [1, 2, 3]
    assert await read(store, "#x", 4, 3) == [5, 6, 7]
    assert await read(store, "#x", 8, 5) == [9, 10]
    assert await read(store, "#x", 9, 1) == [10]
    assert await read(store, "#x", 10, 5) == []
    assert await read(store, "#x", 50, 5) == []


@ensure
async def test_cached_agrees_with_read_when_it_answers(open_store: OpenStore) -> None:
    store = await open_store()
    await fill(store, "#x", 10)
    for after in range(12):
        for limit in (1, 2, 5, 20):
            answer = cached(store, "#x", after, limit)
            if answer is not None:
                assert answer == await read(store, "#x", after, limit), (after, limit)


@ensure
async def test_read_items_carry_their_payloads(open_store: OpenStore) -> None:
    store = await open_store()
    await fill(store, "#x", 4)
    items = await within(store.read("#x", 1, 2))
    assert [json.loads(i.payload)["n"] for i in items] == [1, 2]
    assert [json.loads(i.payload)["seq"] for i in items] == [2, 3]


# --- retention ----------------------------------------------------------------------------


@ensure
async def test_retention_drops_the_oldest_items(open_store: OpenStore) -> None:
    store = await open_store(retention=5)
    await fill(store, "#x", 12)
    assert store.last_seq("#x") == 12
    first = store.first_seq("#x")
    # At least `retention` items are retained; those before first_seq are gone for good.
    assert 1 < first <= 8
    retained = list(range(first, 13))
    assert await read(store, "#x", 0, 100) == retained
    assert await read(store, "#x", first - 2, 100) == retained
    assert await history(store, "#x", None, None, 100) == retained
    assert await history(store, "#x", None, 0, 100) == retained
    answer = cached(store, "#x", 0, 100)
    assert answer is None or answer == retained


@ensure
async def test_reads_never_return_removed_items(open_store: OpenStore) -> None:
    store = await open_store(retention=3)
    for n in range(1, 30):
        await append(store, "#x", n=n)
        first = store.first_seq("#x")
        assert first <= n
        got = await read(store, "#x", 0, 100)
        assert got == list(range(first, n + 1))
        assert all(seq >= first for seq in await history(store, "#x", None, None, 1000))


@ensure
async def test_retention_is_per_log(open_store: OpenStore) -> None:
    store = await open_store(retention=3)
    await fill(store, "#busy", 20)
    await fill(store, "#quiet", 2)
    assert store.first_seq("#quiet") == 1
    assert await read(store, "#quiet", 0, 10) == [1, 2]


@ensure
async def test_first_seq_of_a_log_with_items_within_retention(open_store: OpenStore) -> None:
    store = await open_store(retention=100)
    await fill(store, "#x", 7)
    assert store.first_seq("#x") == 1
    assert store.last_seq("#x") == 7


# --- history ------------------------------------------------------------------------------


def expected_history(
    first: int, last: int, before: int | None, after: int | None, limit: int
) -> list[int]:
    """PROTOCOL.md: exclusive bounds; the newest `limit`, unless `after` is given."""
    matching = [
        seq
        for seq in range(first, last + 1)
        if (before is None or seq < before) and (after is None or seq > after)
    ]
    if len(matching) <= limit:
        return matching
    return matching[:limit] if after is not None else matching[-limit:]


@ensure
async def test_history_bounds_and_limit_exactly_as_the_protocol_says(
    open_store: OpenStore,
) -> None:
    store = await open_store(retention=100)
    await fill(store, "#x", 12)
    for before in [None, 1, 2, 5, 12, 13, 20]:
        for after in [None, 0, 1, 4, 11, 12, 15]:
            for limit in [1, 2, 3, 100]:
                got = await history(store, "#x", before, after, limit)
                assert got == expected_history(1, 12, before, after, limit), (
                    before,
                    after,
                    limit,
                )


@ensure
async def test_history_with_retention(open_store: OpenStore) -> None:
    store = await open_store(retention=4)
    await fill(store, "#x", 10)
    first = store.first_seq("#x")
    for before in [None, 3, first, first + 1, 10, 11]:
        for after in [None, 0, 2, first, 9, 10]:
            for limit in [1, 2, 10]:
                got = await history(store, "#x", before, after, limit)
                assert got == expected_history(first, 10, before, after, limit), (
                    before,
                    after,
                    limit,
                )


@ensure
async def test_history_examples(open_store: OpenStore) -> None:
    store = await open_store()
    await fill(store, "#x", 10)
    assert await history(store, "#x", None, None, 3) == [8, 9, 10]  # newest, oldest first
    assert await history(store, "#x", None, 2, 3) == [3, 4, 5]  # after: the oldest after it
    assert await history(store, "#x", 8, None, 3) == [5, 6, 7]
    assert await history(store, "#x", 8, 2, 3) == [3, 4, 5]
    assert await history(store, "#x", 5, 4, 3) == []
    assert await history(store, "#x", 3, 1, 100) == [2]


# --- listeners ----------------------------------------------------------------------------


class Recorder:
    """A listener that notes the store's last seq when called, and can be awaited."""

    def __init__(self, store: ILogStore, log: str) -> None:
        self.store = store
        self.log = log
        self.calls: list[int] = []
        self.waiting: list[tuple[int, Deferred[None]]] = []

    def __call__(self) -> None:
        self.calls.append(self.store.last_seq(self.log))
        for count, d in list(self.waiting):
            if len(self.calls) >= count:
                self.waiting.remove((count, d))
                d.callback(None)

    async def called(self, count: int) -> None:
        """Wait until called ``count`` times in all."""
        if len(self.calls) < count:
            d: Deferred[None] = Deferred()
            self.waiting.append((count, d))
            await within(d)


@ensure
async def test_listeners_are_called_after_each_append(open_store: OpenStore) -> None:
    store = await open_store()
    listener = Recorder(store, "#x")
    store.listen("#x", listener)
    await append(store, "#x")
    await listener.called(1)
    await append(store, "#x")
    await listener.called(2)
    # Called after the item was stored: the store already knew it when the listener ran.
    assert listener.calls == [1, 2]


@ensure
async def test_the_new_item_is_readable_from_the_listener(open_store: OpenStore) -> None:
    store = await open_store()
    seen: list[list[int] | None] = []

    def listener() -> None:
        seen.append(cached(store, "#x", store.last_seq("#x") - 1, 10))

    store.listen("#x", listener)
    await fill(store, "#x", 2)
    await within(store.read("#x", 0, 10))
    assert len(seen) == 2
    for expected, got in zip([[1], [2]], seen, strict=True):
        assert got is None or got == expected


@ensure
async def test_listeners_are_per_log(open_store: OpenStore) -> None:
    store = await open_store()
    on_x, on_y = Recorder(store, "#x"), Recorder(store, "#y")
    store.listen("#x", on_x)
    store.listen("#y", on_y)
    await append(store, "#y")
    await on_y.called(1)
    await append(store, "#x")
    await on_x.called(1)
    assert on_x.calls == [1] and on_y.calls == [1]


@ensure
async def test_every_listener_of_a_log_is_called(open_store: OpenStore) -> None:
    store = await open_store()
    listeners = [Recorder(store, "#x") for _ in range(3)]
    for listener in listeners:
        store.listen("#x", listener)
    await append(store, "#x")
    for listener in listeners:
        await listener.called(1)
        assert listener.calls == [1]


@ensure
async def test_a_listener_added_twice_is_called_once_per_append(open_store: OpenStore) -> None:
    store = await open_store()
    listener = Recorder(store, "#x")
    store.listen("#x", listener)
    store.listen("#x", listener)
    await append(store, "#x")
    await listener.called(1)
    await append(store, "#x")
    await listener.called(2)
    assert listener.calls == [1, 2]


@ensure
async def test_unlisten_stops_the_calls(open_store: OpenStore) -> None:
    store = await open_store()
    gone, stays = Recorder(store, "#x"), Recorder(store, "#x")
    store.listen("#x", gone)
    store.listen("#x", stays)
    await append(store, "#x")
    await gone.called(1)
    await stays.called(1)
    store.unlisten("#x", gone)
    await fill(store, "#x", 3)
    await stays.called(4)  # the appends after unlisten have been announced
    assert gone.calls == [1]
    assert len(stays.calls) == 4  # once per append
    assert stays.calls == sorted(stays.calls) and stays.calls[-1] == 4


@ensure
async def test_unlisten_of_an_unknown_listener_is_ignored(open_store: OpenStore) -> None:
    store = await open_store()
    store.unlisten("#never", lambda: None)
    store.listen("#x", Recorder(store, "#x"))
    store.unlisten("#x", lambda: None)
    await append(store, "#x")


@ensure
async def test_a_listener_may_unlisten_itself_while_called(open_store: OpenStore) -> None:
    store = await open_store()
    calls: list[int] = []
    other = Recorder(store, "#x")

    def once() -> None:
        calls.append(1)
        store.unlisten("#x", once)

    store.listen("#x", once)
    store.listen("#x", other)
    await fill(store, "#x", 3)
    await other.called(3)
    assert calls == [1]


@ensure
async def test_listening_does_not_create_items(open_store: OpenStore) -> None:
    store = await open_store()
    store.listen("#x", lambda: None)
    assert store.last_seq("#x") == 0
    assert store.first_seq("#x") == 1
    assert await read(store, "#x", 0, 10) == []


# --- the directory of channels and users ---------------------------------------------------


@ensure
async def test_channels_are_sorted_by_code_point(open_store: OpenStore) -> None:
    store = await open_store()
    names = ["b", "B", "a", "_", "-", ".", "Z9", "9", "zz", "a.b", "a-b", "A"]
    for channel in names:
        store.add_channel(channel)
    assert list(store.channels()) == sorted(names, key=lambda s: [ord(c) for c in s])
    assert list(store.channels()) == [
        "-",
        ".",
        "9",
        "A",
        "B",
        "Z9",
        "_",
        "a",
        "a-b",
        "a.b",
        "b",
        "zz",
    ]


@ensure
async def test_channel_count_and_has_channel(open_store: OpenStore) -> None:
    store = await open_store()
    assert store.channel_count() == 0
    assert list(store.channels()) == []
    assert not store.has_channel("general")
    store.add_channel("general")
    store.add_channel("general")  # adding again changes nothing
    store.add_channel("random")
    assert store.channel_count() == 2
    assert store.has_channel("general") and store.has_channel("random")
    assert not store.has_channel("General")  # names are case-sensitive
    assert list(store.channels()) == ["general", "random"]


@ensure
async def test_channels_are_independent_of_logs(open_store: OpenStore) -> None:
    store = await open_store()
    await append(store, channel_log("ghost"))
    assert not store.has_channel("ghost")
    store.add_channel("quiet")
    assert store.last_seq(channel_log("quiet")) == 0


@ensure
async def test_remember_and_know_users(open_store: OpenStore) -> None:
    store = await open_store()
    assert not store.knows_user("alice")
    store.remember_user("alice")
    store.remember_user("alice")
    assert store.knows_user("alice")
    assert not store.knows_user("Alice")
    assert not store.knows_user("bob")
    assert not store.has_channel("alice")  # users are not channels


@ensure
async def test_close_fires(open_store: OpenStore) -> None:
    store = await open_store()
    await fill(store, "#x", 2)
    d = store.close()
    assert isinstance(d, Deferred)
    open_store.opened.remove(store)
    assert await within(d) is None
