"""The one contract every ILogStore backend passes (chat.stores.interface).

To run it against a new backend, add one :class:`Backend` to :data:`BACKENDS`: a name, a
constructor that builds a store from a :class:`StoreConfig` (the suite calls ``start()``), how
a second store opens the same data (``again``), and, for a backend that hears its own appends
again later (Redis' pub/sub notices), how to wait until it has (``settle``). Every test awaits
every Deferred the store returns, so a backend whose appends and reads complete later passes
the same tests as the memory one.

Every test that reads far behind runs with the ring shrunk to a few items (``cache``), so each
read beyond it goes to the backing store; the paging and retention rules are also checked by a
property test against a tiny reference model of one log (:class:`ModelLog`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, gatherResults
from zope.interface.verify import verifyObject

from chat.protocol.frames import encode_json
from chat.stores.interface import (
    PAGE_BYTES,
    PAGE_ITEMS,
    SHORT_PAGE,
    Appended,
    Dedup,
    ILogStore,
    LogItem,
    channel_log,
    history_bounds,
    inbox_log,
)
from chat.stores.memory import MemoryLogStore
from chat.stores.redis import RedisLogStore
from chat.stores.sqlite import SqliteLogStore
from tests.helpers import until, within
from tests.redis_fixtures import shared_redis_url

ensure = pytest_twisted.ensureDeferred


# --- the backends -------------------------------------------------------------------------


@attrs.frozen
class StoreConfig:
    """What a contract test asks of a store."""

    place: Path  # the store's data: two configs with one place open the same data
    retention: int  # items retained per log
    cache: int  # ring capacity: recent items held in memory (memory's ring is its retention)
    clock_ms: Callable[[], int]  # the store's clock, for ``ts`` and the dedup window
    dedup_window: float  # seconds


Again = Literal["none", "reopen", "share"]


async def nothing_to_wait_for(store: ILogStore) -> None:
    """A store that learns of its own appends once, when they are answered."""


async def redis_settle(store: ILogStore) -> None:
    """Wait until this node heard every notice of the appends answered so far.

    The events channel is ordered and a marker published after those appends were answered
    is delivered after their notices, so once the marker is heard nothing earlier is pending.
    """
    assert isinstance(store, RedisLogStore)
    token = uuid.uuid4().hex
    heard: Deferred[None] = Deferred()

    def marker(data: bytes) -> None:
        if data.decode() == token and not heard.called:
            heard.callback(None)

    store.on_event("~", marker)
    await within(store.publish_event("~", token))
    await within(heard)


@attrs.frozen
class Backend:
    """One backend under the contract.

    ``again``: how a second store opens the same data — ``"none"`` (it cannot: memory),
    ``"reopen"`` (after the first is closed: a file), ``"share"`` (while the first stays
    open: another node). ``settle(store)``: wait until ``store`` learned all it will learn
    of the appends answered so far.
    """

    name: str
    make: Callable[[StoreConfig], ILogStore]
    again: Again = "none"
    settle: Callable[[ILogStore], Awaitable[None]] = nothing_to_wait_for


BACKENDS: list[Backend] = [
    Backend(
        "memory",
        lambda c: MemoryLogStore(
            retention=c.retention, clock_ms=c.clock_ms, dedup_window=c.dedup_window
        ),
    ),
    Backend(
        "sqlite",  # a real file under the test's tmp_path
        lambda c: SqliteLogStore(
            c.place / "chat.db",
            retention=c.retention,
            cache=c.cache,
            clock_ms=c.clock_ms,
            dedup_window=c.dedup_window,
        ),
        again="reopen",
    ),
    Backend(
        "redis",  # a real redis-server on a free port; the place names the key prefix
        lambda c: RedisLogStore(
            shared_redis_url(),
            prefix=f"test:{c.place.name}:",
            retention=c.retention,
            cache=c.cache,
            clock_ms=c.clock_ms,
            dedup_window=c.dedup_window,
        ),
        again="share",
        settle=redis_settle,
    ),
]
SHARING = [backend for backend in BACKENDS if backend.again != "none"]


def backend_id(backend: Backend) -> str:
    return backend.name


class FakeClock:
    """Milliseconds that advance by one on every reading (and by ``advance``)."""

    def __init__(self, start: int = 1_763_780_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


class OpenStore:
    """``await open_store(retention=..., cache=...)``: a fresh, started store of one backend;
    ``await open_store.again(store)``: a second store on the same data."""

    def __init__(self, backend: Backend, tmp_path: Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.opened: list[ILogStore] = []
        self.configs: dict[int, StoreConfig] = {}
        self.places = 0

    async def __call__(
        self,
        retention: int = 10_000,
        cache: int = 1_000,
        clock_ms: Callable[[], int] | None = None,
        dedup_window: float = 300.0,
    ) -> ILogStore:
        self.places += 1
        place = self.tmp_path / f"store{self.places}-{uuid.uuid4().hex[:8]}"
        place.mkdir()
        config = StoreConfig(place, retention, cache, clock_ms or FakeClock(), dedup_window)
        return await self.open(config)

    async def open(self, config: StoreConfig) -> ILogStore:
        store = self.backend.make(config)
        self.opened.append(store)
        self.configs[id(store)] = config
        assert await within(store.start()) is None
        return store

    async def again(self, store: ILogStore) -> ILogStore:
        """Another store on ``store``'s data: a reopen (``store`` is closed) or a node."""
        assert self.backend.again != "none", f"{self.backend.name} keeps no data to reopen"
        config = self.configs[id(store)]
        if self.backend.again == "reopen":
            await self.close(store)
        return await self.open(config)

    async def settle(self, *stores: ILogStore) -> None:
        for store in stores:
            await self.backend.settle(store)

    async def close(self, store: ILogStore) -> None:
        self.opened.remove(store)
        await within(store.close())

    async def close_all(self) -> None:
        while self.opened:
            await self.close(self.opened[-1])


@pytest_twisted.async_yield_fixture(params=BACKENDS, ids=backend_id)
async def open_store(request: Any, tmp_path: Path) -> Any:
    opener = OpenStore(request.param, tmp_path)
    yield opener
    await opener.close_all()


@pytest_twisted.async_yield_fixture(params=SHARING, ids=backend_id)
async def open_shared(request: Any, tmp_path: Path) -> Any:
    """Like ``open_store``, for the backends whose data a second store can open."""
    opener = OpenStore(request.param, tmp_path)
    yield opener
    await opener.close_all()


# --- helpers ------------------------------------------------------------------------------


def message(n: int, size: int = 0) -> dict[str, Any]:
    return {"kind": "message", "n": n, "content": "x" * size}


async def append(
    store: ILogStore,
    log: str,
    fields: Mapping[str, Any] | None = None,
    copy_to: str | None = None,
    dedup: Dedup | None = None,
) -> Appended:
    appended: Appended = await within(store.append(log, fields or {}, copy_to, dedup))
    assert isinstance(appended, Appended)
    return appended


async def append_all(
    store: ILogStore, log: str, items: Iterable[Mapping[str, Any]]
) -> list[Appended]:
    """Append every item at once (without waiting for each), then wait for all."""
    ds = [store.append(log, fields) for fields in items]
    results: list[Appended] = await within(gatherResults(ds, consumeErrors=True), 30)
    return results


async def fill(store: ILogStore, log: str, count: int, size: int = 0) -> list[Appended]:
    return await append_all(store, log, (message(n, size) for n in range(count)))


def payload_of(fields: Mapping[str, Any], appended: Appended) -> bytes:
    """The JSON an item is stored as: its fields, then the store's seq and ts."""
    return encode_json({**fields, "seq": appended.seq, "ts": appended.ts})


def seqs(items: Sequence[LogItem]) -> list[int]:
    return [item.seq for item in items]


def cached(store: ILogStore, log: str, after: int, limit: int) -> list[int] | None:
    items = store.cached(log, after, limit)
    return None if items is None else seqs(items)


def bounded(page: Sequence[LogItem], max_bytes: int) -> bool:
    """A page holds about ``max_bytes``: the items before its last add up to less (pages of
    at most ``SHORT_PAGE`` items, the live case, are sent whole)."""
    return len(page) <= SHORT_PAGE or sum(len(item.payload) for item in page[:-1]) < max_bytes


def check_page(
    page: Sequence[LogItem], after: int, limit: int, max_bytes: int, first: int, last: int
) -> None:
    """A page read after ``after`` from a log holding ``first..last`` when it was asked."""
    start = max(after + 1, first)
    if start > last or limit < 1:
        assert list(page) == [], (after, first, last)
        return
    assert page, f"an empty page after {after} while {start}..{last} are retained"
    assert len(page) <= limit
    assert seqs(page) == list(range(start, start + len(page))), (after, first, last)
    assert page[-1].seq <= last
    assert bounded(page, max_bytes), [len(item.payload) for item in page]


async def read_page(
    store: ILogStore, log: str, after: int, limit: int = PAGE_ITEMS, max_bytes: int = PAGE_BYTES
) -> list[LogItem]:
    """One page of ``read``, checked against the page rules."""
    first, last = store.first_seq(log), store.last_seq(log)
    answer: Sequence[LogItem] = await within(store.read(log, after, limit, max_bytes))
    page = list(answer)
    check_page(page, after, limit, max_bytes, first, last)
    return page


async def read(store: ILogStore, log: str, after: int, limit: int = PAGE_ITEMS) -> list[int]:
    return seqs(await read_page(store, log, after, limit))


async def drain(
    store: ILogStore, log: str, after: int, limit: int = PAGE_ITEMS, max_bytes: int = PAGE_BYTES
) -> list[LogItem]:
    """Every item after ``after``, page after page: a short page does not mean the end, only
    a position at ``last_seq`` does."""
    items: list[LogItem] = []
    position = after
    while position < store.last_seq(log):
        page = await read_page(store, log, position, limit, max_bytes)
        position = page[-1].seq
        items.extend(page)
    return items


async def drained(store: ILogStore, log: str, after: int = 0) -> list[int]:
    return seqs(await drain(store, log, after))


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


# --- the interface ------------------------------------------------------------------------


@ensure
async def test_provides_ilogstore_and_starts_with_none(open_store: OpenStore) -> None:
    store = await open_store()  # the opener checks that start() fired with None
    assert verifyObject(ILogStore, store)
    assert await within(store.start()) is None  # starting a started store changes nothing
    assert await within(store.ping()) is None


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
    assert await drained(store, "#nothing") == []


@ensure
async def test_seqs_are_gapless_from_one_per_log(open_store: OpenStore) -> None:
    store = await open_store()
    appended = [await append(store, "#general", message(n)) for n in range(20)]
    assert [a.seq for a in appended] == list(range(1, 21))
    assert not any(a.duplicate for a in appended)
    assert store.last_seq("#general") == 20
    assert store.first_seq("#general") == 1
    assert await drained(store, "#general") == list(range(1, 21))


@ensure
async def test_appends_issued_together_are_stored_in_call_order(open_store: OpenStore) -> None:
    store = await open_store()
    appended = await fill(store, "#x", 300)
    assert [a.seq for a in appended] == list(range(1, 301))
    items = await drain(store, "#x", 0)
    assert [json.loads(item.payload)["n"] for item in items] == list(range(300))


@ensure
async def test_logs_are_independent(open_store: OpenStore) -> None:
    store = await open_store()
    for round_ in range(5):
        for log in ("#a", "#b", "@alice"):
            assert (await append(store, log, {"round": round_})).seq == round_ + 1
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
    appended = await append(store, "#général", fields)
    assert (appended.seq, appended.duplicate) == (1, False)
    assert 1_000 < appended.ts <= clock.now  # the store's clock
    [item] = await read_page(store, "#général", 0)
    assert (item.seq, item.ts) == (1, appended.ts)
    assert isinstance(item.payload, bytes)
    # Compact UTF-8 JSON, like every byte the server sends; fields in the order given.
    assert item.payload == payload_of(fields, appended)
    assert fields == {
        "kind": "message",
        "channel": "général",
        "from": "alice",
        "content": "hé 😀",
    }  # the caller's mapping is untouched


@ensure
async def test_seq_and_ts_in_the_fields_are_replaced_by_the_stores(open_store: OpenStore) -> None:
    store = await open_store()
    await fill(store, "#x", 2)
    appended = await append(store, "#x", {"seq": 99, "ts": 5, "content": "c"})
    [item] = await read_page(store, "#x", 2)
    assert json.loads(item.payload) == {"content": "c", "seq": 3, "ts": appended.ts}


@ensure
async def test_ts_is_milliseconds_from_the_clock_and_never_goes_back(
    open_store: OpenStore,
) -> None:
    clock = FakeClock(1_763_780_000_000)
    store = await open_store(clock_ms=clock)
    appended = [await append(store, "#x", message(n)) for n in range(5)]
    appended += await fill(store, "#x", 5)
    stamps = [a.ts for a in appended]
    assert stamps == sorted(stamps)
    assert all(1_763_780_000_000 < ts <= clock.now for ts in stamps)
    for a, item in zip(appended, await drain(store, "#x", 0), strict=True):
        assert (item.seq, item.ts) == (a.seq, a.ts)
        assert (json.loads(item.payload)["seq"], json.loads(item.payload)["ts"]) == (a.seq, a.ts)


@ensure
async def test_payload_is_encoded_once_and_shared_with_readers(open_store: OpenStore) -> None:
    store = await open_store()
    appended = await append(store, "#x", {"content": "shared"})
    first = store.cached("#x", 0, 1)
    second = store.cached("#x", 0, 1)
    if first is not None and second is not None:
        # The in-memory read path hands every reader the very bytes kept at append.
        assert first[0].payload is second[0].payload
    [item] = await read_page(store, "#x", 0, 1)
    assert item.payload == payload_of({"content": "shared"}, appended)


# --- reads after a seq, in pages ----------------------------------------------------------


@ensure
async def test_read_after_a_seq_with_a_limit(open_store: OpenStore) -> None:
    store = await open_store()
    await fill(store, "#x", 10)
    assert await drained(store, "#x", 0) == list(range(1, 11))
    # Each page is a non-empty run from after + 1 (read_page checks), at most `limit` long.
    for after, limit in [(0, 100), (0, 3), (4, 3), (8, 5), (9, 1)]:
        page = await read(store, "#x", after, limit)
        assert page[0] == after + 1 and len(page) <= limit
    assert await read(store, "#x", 10, 5) == []
    assert await read(store, "#x", 50, 5) == []
    assert await read(store, "#x", 3, 0) == []  # a limit of 0 asks for nothing


@ensure
async def test_cached_agrees_with_read_when_it_answers(open_store: OpenStore) -> None:
    store = await open_store(cache=4)
    await fill(store, "#x", 10)
    answered = 0
    for after in range(12):
        for limit in (1, 2, 5, 20):
            answer = cached(store, "#x", after, limit)
            if answer is not None:
                answered += 1
                assert answer == await read(store, "#x", after, limit), (after, limit)
    assert answered > 0  # at least the newest items are held in memory


@ensure
async def test_read_items_carry_their_payloads(open_store: OpenStore) -> None:
    store = await open_store()
    await fill(store, "#x", 4)
    items = await read_page(store, "#x", 1, 2)
    assert [json.loads(i.payload)["n"] for i in items] == [1, 2][: len(items)]
    assert [json.loads(i.payload)["seq"] for i in items] == [2, 3][: len(items)]


@pytest.mark.parametrize("cache", [4, 8])
@ensure
async def test_paging_from_anywhere_yields_every_retained_item_once_in_order(
    open_store: OpenStore, cache: int
) -> None:
    store = await open_store(retention=2_500, cache=cache)
    sizes = [(n * 7919) % 1_500 for n in range(3_000)]  # 0 to 1.5 KB, mixed
    fields = [message(n, size) for n, size in enumerate(sizes)]
    appended = await append_all(store, "#x", fields)
    payloads = {a.seq: payload_of(f, a) for a, f in zip(appended, fields, strict=True)}
    first, last = store.first_seq("#x"), store.last_seq("#x")
    assert (first, last) == (501, 3_000)
    cases = [
        (0, PAGE_ITEMS, PAGE_BYTES),
        (0, 7, PAGE_BYTES),
        (first - 1, PAGE_ITEMS, 1),  # a byte budget smaller than any item: one item a page
        (first, 100, 10_000),
        (1_234, 512, 20_000),
        (2_999, 1, PAGE_BYTES),
        (2_950, 1, 1),
        (last, PAGE_ITEMS, PAGE_BYTES),
        (last + 10, PAGE_ITEMS, PAGE_BYTES),
    ]
    for after, limit, max_bytes in cases:
        items = await drain(store, "#x", after, limit, max_bytes)  # every page checked
        expected = list(range(max(after + 1, first), last + 1))
        assert seqs(items) == expected, (after, limit, max_bytes)
        assert all(item.payload == payloads[item.seq] for item in items)


@ensure
async def test_a_page_holds_at_least_one_item_however_small_the_budget(
    open_store: OpenStore,
) -> None:
    store = await open_store(cache=4)
    await fill(store, "#x", 40, size=3_000)
    for max_bytes in (1, 2_999, 3_100, 7_000):
        page = await read_page(store, "#x", 0, PAGE_ITEMS, max_bytes)
        assert len(page) >= 1
        assert len(page) <= max(SHORT_PAGE, max_bytes // 3_000 + 1)


# --- retention ----------------------------------------------------------------------------


@pytest.mark.parametrize("cache", [4, 8])
@ensure
async def test_retention_drops_the_oldest_items(open_store: OpenStore, cache: int) -> None:
    store = await open_store(retention=5, cache=cache)
    await fill(store, "#x", 12)
    assert store.last_seq("#x") == 12
    assert store.first_seq("#x") == 8  # exactly `retention` items are retained
    retained = list(range(8, 13))
    assert await drained(store, "#x", 0) == retained
    assert await drained(store, "#x", 6) == retained
    answer = cached(store, "#x", 0, 100)
    assert answer is None or answer == retained


@ensure
async def test_reads_never_return_removed_items(open_store: OpenStore) -> None:
    store = await open_store(retention=3, cache=4)
    for n in range(1, 30):
        await append(store, "#x", message(n))
        first = store.first_seq("#x")
        assert first == max(1, n - 2)
        assert await drained(store, "#x", 0) == list(range(first, n + 1))


@ensure
async def test_retention_is_per_log(open_store: OpenStore) -> None:
    store = await open_store(retention=3, cache=4)
    await fill(store, "#busy", 20)
    await fill(store, "#quiet", 2)
    assert store.first_seq("#quiet") == 1
    assert await drained(store, "#quiet") == [1, 2]
    assert store.first_seq("#busy") == 18


@ensure
async def test_first_seq_of_a_log_with_items_within_retention(open_store: OpenStore) -> None:
    store = await open_store(retention=100)
    await fill(store, "#x", 7)
    assert store.first_seq("#x") == 1
    assert store.last_seq("#x") == 7


@pytest.mark.parametrize("cache", [4, 8])
@ensure
async def test_a_far_behind_reader_is_moved_past_what_retention_removed(
    open_store: OpenStore, cache: int
) -> None:
    store = await open_store(retention=50, cache=cache)
    await fill(store, "#x", 30)
    position = 0
    floors = []
    for _round in range(12):  # appends outpace the reader: first_seq moves past it
        first = store.first_seq("#x")
        floors.append(first)
        page = await read_page(store, "#x", position, 7)  # starts at max(position + 1, first)
        assert page[0].seq == max(position + 1, first)
        position = page[-1].seq
        await fill(store, "#x", 20)
    assert floors[-1] > floors[0] and position < store.first_seq("#x")
    rest = await drain(store, "#x", position, 7)
    assert seqs(rest) == list(range(store.first_seq("#x"), store.last_seq("#x") + 1))


@ensure
async def test_a_reader_racing_appends_never_gets_removed_or_repeated_items(
    open_store: OpenStore,
) -> None:
    store = await open_store(retention=40, cache=4)
    await fill(store, "#x", 100)
    position = 0
    seen: list[int] = []
    for n in range(30):
        first = store.first_seq("#x")
        reading = store.read("#x", position, 7, 2_000)
        writing = append_all(store, "#x", (message(n * 10 + i) for i in range(10)))
        page = seqs(await within(reading))
        await writing
        assert page, "something after the position was retained"
        assert page == list(range(page[0], page[0] + len(page)))  # no hole within a page
        assert page[0] > position and page[0] >= first  # nothing removed, nothing repeated
        # Whatever was skipped, retention removed (by the time the page was answered).
        assert page[0] == position + 1 or page[0] <= store.first_seq("#x")
        seen.extend(page)
        position = page[-1]
    seen.extend(seqs(await drain(store, "#x", position)))
    assert seen == sorted(set(seen)) and seen[-1] == store.last_seq("#x") == 400


# --- history, paged through read ----------------------------------------------------------


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


@settings(max_examples=1_000, deadline=None)
@given(
    first=st.integers(1, 60),
    count=st.integers(0, 60),
    before=st.none() | st.integers(-2, 130),
    after=st.none() | st.integers(-2, 130),
    limit=st.integers(1, 70),
)
def test_history_bounds_is_the_protocols_rule(
    first: int, count: int, before: int | None, after: int | None, limit: int
) -> None:
    last = first + count - 1
    bounds = history_bounds(first, last, before, after, limit)
    expected = expected_history(first, last, before, after, limit)
    if not expected:
        assert bounds is None
    else:
        assert bounds == (expected[0], expected[-1])


async def history(
    store: ILogStore, log: str, before: int | None, after: int | None, limit: int
) -> list[int]:
    """A history read as the producer does it: ``history_bounds``, then pages of ``read``."""
    bounds = history_bounds(store.first_seq(log), store.last_seq(log), before, after, limit)
    if bounds is None:
        return []
    low, high = bounds
    found: list[int] = []
    position = low - 1
    while position < high:
        page = await read_page(store, log, position, high - position)
        position = page[-1].seq
        found.extend(page_seq for page_seq in seqs(page) if page_seq <= high)
    return found


@ensure
async def test_history_bounds_and_limit_through_read(open_store: OpenStore) -> None:
    store = await open_store(retention=100, cache=4)
    await fill(store, "#x", 12)
    for before in [None, 1, 2, 5, 12, 13, 20]:
        for after in [None, 0, 1, 4, 11, 12, 15]:
            for limit in [1, 3, 100]:
                got = await history(store, "#x", before, after, limit)
                assert got == expected_history(1, 12, before, after, limit), (
                    before,
                    after,
                    limit,
                )


@ensure
async def test_history_with_retention(open_store: OpenStore) -> None:
    store = await open_store(retention=4, cache=4)
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
    store = await open_store(cache=4)
    await fill(store, "#x", 10)
    assert await history(store, "#x", None, None, 3) == [8, 9, 10]  # newest, oldest first
    assert await history(store, "#x", None, 2, 3) == [3, 4, 5]  # after: the oldest after it
    assert await history(store, "#x", 8, None, 3) == [5, 6, 7]
    assert await history(store, "#x", 8, 2, 3) == [3, 4, 5]
    assert await history(store, "#x", 5, 4, 3) == []
    assert await history(store, "#x", 3, 1, 100) == [2]


# --- copies (a private message in both inboxes) -------------------------------------------


@ensure
async def test_a_copy_lands_in_both_logs_with_one_ts_and_each_its_own_seq(
    open_store: OpenStore,
) -> None:
    store = await open_store()
    await fill(store, "@bob", 2)
    on_alice, on_bob = Recorder(store, "@alice"), Recorder(store, "@bob")
    store.listen("@alice", on_alice)
    store.listen("@bob", on_bob)
    fields = {"kind": "message", "from": "alice", "to": "bob", "content": "hi"}
    appended = await append(store, "@alice", fields, copy_to="@bob")
    assert (appended.seq, appended.duplicate) == (1, False)  # the answer is about `log`
    await open_store.settle(store)
    assert on_alice.calls == [1] and on_bob.calls == [3]  # both woken, once
    [mine] = await drain(store, "@alice", 0)
    [theirs] = await drain(store, "@bob", 2)
    assert (mine.seq, theirs.seq) == (1, 3)
    assert mine.ts == theirs.ts == appended.ts
    assert mine.payload == payload_of(fields, appended)
    assert json.loads(theirs.payload) == {**fields, "seq": 3, "ts": appended.ts}


@ensure
async def test_a_private_message_to_oneself_is_stored_once(open_store: OpenStore) -> None:
    store = await open_store()
    fields = {"kind": "message", "from": "alice", "to": "alice", "content": "note"}
    appended = await append(store, "@alice", fields, copy_to=None)
    assert appended.seq == 1
    assert await drained(store, "@alice") == [1]


# --- dedup --------------------------------------------------------------------------------


@ensure
async def test_a_retry_within_the_window_is_a_duplicate_and_appends_nothing(
    open_store: OpenStore,
) -> None:
    clock = FakeClock()
    store = await open_store(clock_ms=clock, dedup_window=60.0)
    listener = Recorder(store, "#x")
    store.listen("#x", listener)
    first = await append(store, "#x", {"content": "hi"}, dedup=Dedup("alice", "c1"))
    assert not first.duplicate
    clock.advance(30_000)  # half the window
    again = await append(store, "#x", {"content": "hi again"}, dedup=Dedup("alice", "c1"))
    assert again == Appended(first.seq, first.ts, duplicate=True)
    await open_store.settle(store)
    assert store.last_seq("#x") == 1
    assert listener.calls == [1]  # nothing was appended: nobody was woken
    [item] = await drain(store, "#x", 0)
    assert json.loads(item.payload)["content"] == "hi"


@ensure
async def test_dedup_is_per_sender_target_and_client_id(open_store: OpenStore) -> None:
    store = await open_store()
    key = Dedup("alice", "c1")
    assert not (await append(store, "#x", {}, dedup=key)).duplicate
    assert not (await append(store, "#x", {}, dedup=Dedup("alice", "c2"))).duplicate
    assert not (await append(store, "#x", {}, dedup=Dedup("bob", "c1"))).duplicate
    assert not (await append(store, "#y", {}, dedup=key)).duplicate
    assert not (await append(store, "#x", {})).duplicate  # no client_id: never a duplicate
    # Private messages: the target is the recipient's inbox (`copy_to`), not the sender's.
    to_bob = await append(store, "@alice", {}, copy_to="@bob", dedup=key)
    to_carol = await append(store, "@alice", {}, copy_to="@carol", dedup=key)
    to_self = await append(store, "@alice", {}, dedup=key)
    assert not (to_bob.duplicate or to_carol.duplicate or to_self.duplicate)
    assert (to_bob.seq, to_carol.seq, to_self.seq) == (1, 2, 3)
    retry = await append(store, "@alice", {}, copy_to="@bob", dedup=key)
    assert retry == Appended(to_bob.seq, to_bob.ts, duplicate=True)
    assert (await append(store, "#x", {}, dedup=key)).duplicate
    assert [store.last_seq(log) for log in ("#x", "#y", "@alice", "@bob", "@carol")] == [
        4,
        1,
        3,
        1,
        1,
    ]


@ensure
async def test_after_the_window_the_same_client_id_appends_again(open_store: OpenStore) -> None:
    clock = FakeClock()
    store = await open_store(clock_ms=clock, dedup_window=10.0)
    key = Dedup("alice", "c1")
    first = await append(store, "#x", {"n": 1}, dedup=key)
    clock.advance(11_000)  # by the store's clock, the window is over
    later = await append(store, "#x", {"n": 2}, dedup=key)
    assert (later.seq, later.duplicate) == (2, False)
    assert later.ts > first.ts
    again = await append(store, "#x", {"n": 3}, dedup=key)  # a new window from `later`
    assert again == Appended(later.seq, later.ts, duplicate=True)
    assert await drained(store, "#x") == [1, 2]


@ensure
async def test_identical_appends_issued_back_to_back_store_one_item(
    open_store: OpenStore,
) -> None:
    store = await open_store()
    key = Dedup("alice", "c1")
    ds = [store.append("#x", {"n": n}, None, key) for n in range(5)]
    ds += [store.append("@alice", {"n": n}, "@bob", key) for n in range(3)]
    results: list[Appended] = await within(gatherResults(ds, consumeErrors=True))
    channel, private = results[:5], results[5:]
    assert [r.duplicate for r in channel] == [False, True, True, True, True]
    assert {(r.seq, r.ts) for r in channel} == {(1, channel[0].ts)}
    assert [r.duplicate for r in private] == [False, True, True]
    assert {(r.seq, r.ts) for r in private} == {(1, private[0].ts)}
    items = await drain(store, "#x", 0)
    assert [json.loads(item.payload)["n"] for item in items] == [0]  # the first one called
    assert (store.last_seq("@alice"), store.last_seq("@bob")) == (1, 1)


@ensure
async def test_a_duplicate_of_a_private_message_appends_to_neither_inbox(
    open_store: OpenStore,
) -> None:
    store = await open_store()
    key = Dedup("alice", "c1")
    first = await append(store, "@alice", {"content": "hi"}, "@bob", key)
    again = await append(store, "@alice", {"content": "hi"}, "@bob", key)
    assert again == Appended(first.seq, first.ts, duplicate=True)
    await open_store.settle(store)
    assert (await drained(store, "@alice"), await drained(store, "@bob")) == ([1], [1])


# --- read positions -----------------------------------------------------------------------


@ensure
async def test_a_read_position_never_moves_back(open_store: OpenStore) -> None:
    store = await open_store()
    assert await within(store.save_read("alice", "#x", 5)) == 5
    assert await within(store.save_read("alice", "#x", 3)) == 5
    assert await within(store.save_read("alice", "#x", 5)) == 5
    assert await within(store.save_read("alice", "#x", 9)) == 9
    assert await within(store.read_positions("alice")) == {"#x": 9}


@ensure
async def test_read_positions_list_every_log_and_see_the_saves_just_before(
    open_store: OpenStore,
) -> None:
    store = await open_store()
    assert await within(store.read_positions("alice")) == {}
    saves = [
        store.save_read("alice", "#x", 4),
        store.save_read("alice", "@alice", 2),
        store.save_read("bob", "#x", 7),
        store.save_read("alice", "#x", 1),
    ]
    positions = store.read_positions("alice")  # issued without waiting for the saves
    others = store.read_positions("bob")
    assert await within(positions) == {"#x": 4, "@alice": 2}
    assert await within(others) == {"#x": 7}
    assert await within(gatherResults(saves)) == [4, 2, 7, 4]


# --- listeners ----------------------------------------------------------------------------


@ensure
async def test_listeners_are_called_once_after_each_append(open_store: OpenStore) -> None:
    store = await open_store()
    listener = Recorder(store, "#x")
    store.listen("#x", listener)
    await append(store, "#x")
    await listener.called(1)
    await append(store, "#x")
    await listener.called(2)
    await fill(store, "#x", 5)
    await open_store.settle(store)
    # Called after the item was stored (the store knew it), at most once per append (appends
    # committed together may wake once): the last seq seen only ever grows.
    assert listener.calls[:2] == [1, 2] and listener.calls[-1] == 7
    assert listener.calls == sorted(set(listener.calls))


@ensure
async def test_the_new_item_is_readable_from_the_listener(open_store: OpenStore) -> None:
    store = await open_store()
    seen: list[list[int] | None] = []

    def listener() -> None:
        seen.append(cached(store, "#x", store.last_seq("#x") - 1, 10))

    store.listen("#x", listener)
    await append(store, "#x")
    await append(store, "#x")
    await open_store.settle(store)
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
    await open_store.settle(store)
    assert on_x.calls == [1] and on_y.calls == [1]


@ensure
async def test_every_listener_of_a_log_is_called(open_store: OpenStore) -> None:
    store = await open_store()
    listeners = [Recorder(store, "#x") for _ in range(3)]
    for listener in listeners:
        store.listen("#x", listener)
    await append(store, "#x")
    await open_store.settle(store)
    for listener in listeners:
        assert listener.calls == [1]


@ensure
async def test_a_listener_added_twice_is_called_once_per_append(open_store: OpenStore) -> None:
    store = await open_store()
    listener = Recorder(store, "#x")
    store.listen("#x", listener)
    store.listen("#x", listener)
    await append(store, "#x")
    await append(store, "#x")
    await open_store.settle(store)
    assert listener.calls == [1, 2]


@ensure
async def test_unlisten_stops_the_calls(open_store: OpenStore) -> None:
    store = await open_store()
    gone, stays = Recorder(store, "#x"), Recorder(store, "#x")
    store.listen("#x", gone)
    store.listen("#x", stays)
    await append(store, "#x")
    await open_store.settle(store)
    store.unlisten("#x", gone)
    for _ in range(3):
        await append(store, "#x")
    await open_store.settle(store)
    assert gone.calls == [1]
    assert stays.calls == [1, 2, 3, 4]  # once per append


@ensure
async def test_unlisten_of_an_unknown_listener_is_ignored(open_store: OpenStore) -> None:
    store = await open_store()
    store.unlisten("#never", lambda: None)
    recorder = Recorder(store, "#x")
    store.listen("#x", recorder)
    store.unlisten("#x", lambda: None)  # not listening: the recorder stays
    store.unlisten("#y", recorder)  # listening, but to another log
    await append(store, "#x")
    await open_store.settle(store)
    assert recorder.calls == [1]


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
    for _ in range(3):
        await append(store, "#x")
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


CHANNELS = ["b", "B", "a", "_", "-", ".", "Z9", "9", "zz", "a.b", "a-b", "A", "é", "ü1"]


@ensure
async def test_channels_are_listed_in_code_point_order(open_store: OpenStore) -> None:
    store = await open_store()
    for channel in CHANNELS:
        store.add_channel(channel)
    listed = list(store.channels_after(None, 100))
    assert listed == sorted(CHANNELS, key=lambda s: [ord(c) for c in s])
    assert listed[:6] == ["-", ".", "9", "A", "B", "Z9"]
    assert listed[-3:] == ["zz", "é", "ü1"]


@pytest.mark.parametrize("limit", [1, 2, 5, 100])
@ensure
async def test_channels_page_after_a_name(open_store: OpenStore, limit: int) -> None:
    store = await open_store()
    for channel in CHANNELS:
        store.add_channel(channel)
    everything = sorted(CHANNELS)
    pages: list[list[str]] = []
    after: str | None = None
    while page := list(store.channels_after(after, limit)):
        assert len(page) <= limit and len(pages) <= len(CHANNELS), "paging never ends"
        pages.append(page)
        after = page[-1]
    assert [name for page in pages for name in page] == everything
    assert all(len(page) == limit for page in pages[:-1])
    between = [name for name in everything if name > "a0"]  # after a name that is no channel
    assert list(store.channels_after("a0", limit)) == between[:limit]
    assert list(store.channels_after("zzz", limit)) == ["é", "ü1"][:limit]
    assert list(store.channels_after(None, 0)) == []


@ensure
async def test_channel_count_and_has_channel(open_store: OpenStore) -> None:
    store = await open_store()
    assert store.channel_count() == 0
    assert list(store.channels_after(None, 10)) == []
    assert not store.has_channel("general")
    store.add_channel("general")
    store.add_channel("general")  # adding again changes nothing
    store.add_channel("random")
    assert store.channel_count() == 2
    assert store.has_channel("general") and store.has_channel("random")
    assert not store.has_channel("General")  # names are case-sensitive
    assert list(store.channels_after(None, 10)) == ["general", "random"]


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
    assert await within(store.find_user("alice")) is False
    store.remember_user("alice")
    store.remember_user("alice")
    assert store.knows_user("alice")
    assert await within(store.find_user("alice")) is True
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


# --- a second store on the same data (a reopen, or another node) --------------------------


@ensure
async def test_the_same_data_keeps_its_items_epoch_and_seqs(open_shared: OpenStore) -> None:
    first = await open_shared(cache=4)
    epoch = first.epoch
    fields = [message(n, 100) for n in range(30)]
    appended = await append_all(first, "#general", fields)
    second = await open_shared.again(first)
    assert second.epoch == epoch
    await until(lambda: second.last_seq("#general") == 30)
    items = await drain(second, "#general", 0, 7)
    assert [item.payload for item in items] == [
        payload_of(f, a) for f, a in zip(fields, appended, strict=True)
    ]
    assert (await append(second, "#general", message(30))).seq == 31  # seqs go on


@ensure
async def test_the_same_data_keeps_its_directory(open_shared: OpenStore) -> None:
    first = await open_shared()
    first.add_channel("general")
    first.remember_user("alice")
    await open_shared.settle(first)
    second = await open_shared.again(first)
    await until(lambda: second.has_channel("general") and second.knows_user("alice"))
    assert list(second.channels_after(None, 10)) == ["general"]
    assert await within(second.find_user("alice")) is True
    assert not second.knows_user("bob")


@ensure
async def test_dedup_holds_across_stores_on_the_same_data(open_shared: OpenStore) -> None:
    clock = FakeClock()
    first = await open_shared(clock_ms=clock)
    key = Dedup("alice", "c1")
    original = await append(first, "#x", {"content": "hi"}, dedup=key)
    private = await append(first, "@alice", {"content": "psst"}, "@bob", key)
    second = await open_shared.again(first)  # a restart, or another node
    assert await append(second, "#x", {"content": "hi"}, dedup=key) == Appended(
        original.seq, original.ts, duplicate=True
    )
    assert await append(second, "@alice", {"content": "psst"}, "@bob", key) == Appended(
        private.seq, private.ts, duplicate=True
    )
    assert (await append(second, "#x", {}, dedup=Dedup("alice", "c2"))).seq == 2


@ensure
async def test_read_positions_hold_across_stores_on_the_same_data(
    open_shared: OpenStore,
) -> None:
    first = await open_shared()
    await within(first.save_read("alice", "#x", 12))
    await within(first.save_read("alice", "@alice", 3))
    second = await open_shared.again(first)
    assert await within(second.read_positions("alice")) == {"#x": 12, "@alice": 3}
    assert await within(second.save_read("alice", "#x", 4)) == 12  # still never back


# --- a property test against a reference model --------------------------------------------


class ModelLog:
    """One log as the contract describes it: gapless seqs from 1, the newest ``retention``
    items retained."""

    def __init__(self, retention: int) -> None:
        self.retention = retention
        self.payloads: list[bytes] = []  # index seq - 1

    @property
    def last(self) -> int:
        return len(self.payloads)

    @property
    def first(self) -> int:
        return max(1, self.last - self.retention + 1)

    def where(self, anchor: str, offset: int) -> int:
        base = {"start": 0, "first": self.first - 1, "last": self.last}[anchor]
        return max(0, base + offset)


positions = st.tuples(st.sampled_from(["start", "first", "last"]), st.integers(-3, 40))
limits = st.sampled_from([1, 2, 7, PAGE_ITEMS]) | st.integers(1, 600)
budgets = st.sampled_from([1, 200, 4_000, PAGE_BYTES]) | st.integers(1, 100_000)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(st.integers(0, 2_500), min_size=1, max_size=60)),
        st.tuples(st.just("read"), positions, limits, budgets),
        st.tuples(st.just("drain"), positions, limits, budgets),
        st.tuples(st.just("behind"), positions, limits, budgets, st.integers(1, 25)),
    ),
    min_size=1,
    max_size=12,
)


async def run_model(
    backend: Backend, tmp_path: Path, retention: int, cache: int, program: list[Any]
) -> None:
    """Run ``program`` against a fresh store and the model; every answer must agree."""
    opener = OpenStore(backend, tmp_path)
    store = await opener(retention=retention, cache=cache)
    model = ModelLog(retention)
    sizes = iter(range(10**9))

    async def append_sizes(lengths: Sequence[int]) -> None:
        fields = [message(next(sizes), length) for length in lengths]
        appended = await append_all(store, "#x", fields)
        assert [a.seq for a in appended] == list(
            range(model.last + 1, model.last + 1 + len(fields))
        )
        model.payloads.extend(payload_of(f, a) for f, a in zip(fields, appended, strict=True))
        assert (store.first_seq("#x"), store.last_seq("#x")) == (model.first, model.last)

    async def page(after: int, limit: int, max_bytes: int) -> list[LogItem]:
        assert (store.first_seq("#x"), store.last_seq("#x")) == (model.first, model.last)
        in_memory = store.cached("#x", after, limit, max_bytes)
        items = await read_page(store, "#x", after, limit, max_bytes)
        check_page(items, after, limit, max_bytes, model.first, model.last)
        assert all(item.payload == model.payloads[item.seq - 1] for item in items)
        if in_memory is not None:
            assert seqs(in_memory) == seqs(items)
        return items

    try:
        for operation in program:
            kind = operation[0]
            if kind == "append":
                await append_sizes(operation[1])
            elif kind == "read":
                _, (anchor, offset), limit, max_bytes = operation
                await page(model.where(anchor, offset), limit, max_bytes)
            elif kind == "drain":
                _, (anchor, offset), limit, max_bytes = operation
                after = model.where(anchor, offset)
                expected = list(range(max(after + 1, model.first), model.last + 1))
                assert seqs(await drain(store, "#x", after, limit, max_bytes)) == expected
            else:  # a reader behind while appends go on: pages follow the moving floor
                _, (anchor, offset), limit, max_bytes, burst = operation
                position = model.where(anchor, offset)
                for _round in range(20):
                    if position >= model.last:
                        break
                    items = await page(position, limit, max_bytes)
                    position = items[-1].seq
                    await append_sizes([100] * burst)
                rest = await drain(store, "#x", position, limit, max_bytes)
                assert seqs(rest) == list(range(max(position + 1, model.first), model.last + 1))
    finally:
        await opener.close_all()


def model_test(backend: Backend) -> Callable[..., Any]:
    """The model test of one backend: a function of its own per backend, because
    pytest-twisted rewraps a hypothesis test's inner function on every call, which breaks
    when one function object is parametrized."""

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        retention=st.sampled_from([3, 10, 60]),
        cache=st.sampled_from([4, 8]),
        program=operations,
    )
    @ensure
    async def test(tmp_path: Path, retention: int, cache: int, program: list[Any]) -> None:
        await run_model(backend, tmp_path, retention, cache, program)

    test.__name__ = test.__qualname__ = f"test_reads_follow_the_model_of_one_log_{backend.name}"
    return test


for _backend in BACKENDS:
    globals()[f"test_reads_follow_the_model_of_one_log_{_backend.name}"] = model_test(_backend)
