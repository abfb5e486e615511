"""The producers (chat.producers) without sockets: a fake transport, a Clock, the real core.

Every test drives one connection's :class:`Outbound` the way the Twisted transport and the
reactor would: the fake transport pauses the Outbound when its buffer passes a high-water mark
(Twisted's is 64 KiB) and resumes it when the test "drains" it; reactor turns are run by hand
on a :class:`twisted.internet.task.Clock`. What the client would read is decoded from the raw
bytes with the independent decoder in tests/wsdecode.py.
"""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import Sequence
from typing import Any

import pytest
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from chat.producers.feed import FeedStream
from chat.producers.listing import ListStream
from chat.producers.outbound import FlushScheduler, Outbound
from chat.producers.statistics import StatisticsOptions, StatisticsStream
from chat.producers.stream import StreamProducer
from chat.protocol import interactions as ev
from chat.protocol.errors import ErrorCode
from chat.protocol.frames import encode_json
from chat.protocol.interactions import Interaction, Interactions
from chat.service import validation as v
from chat.stores.interface import LogItem, channel_log, inbox_log
from chat.stores.memory import MemoryLogStore
from tests.wsdecode import FrameDecoder

TWISTED_HIGH_WATER = 64 * 1024


class FakeTransport:
    """Keeps what was written; pauses its producer past ``high_water`` buffered bytes."""

    def __init__(self, high_water: int | None = None) -> None:
        self.high_water = high_water
        self.producer: Outbound | None = None
        self.decoder = FrameDecoder()
        self.frames: list[dict[str, Any]] = []
        self.writes = 0
        self.buffered = 0
        self.writes_while_paused = 0

    def write(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        self.writes += 1
        if self.producer is not None and self.producer.paused:
            self.writes_while_paused += 1
        for frame in self.decoder.feed(data):
            assert frame.fin
            self.frames.append(frame.json())
        self.buffered += len(data)
        if (
            self.high_water is not None
            and self.producer is not None
            and self.buffered > self.high_water
        ):
            self.producer.pauseProducing()  # as Twisted's FileDescriptor does

    def drain(self) -> None:
        """The kernel took everything: Twisted resumes the producer once the buffer is empty."""
        self.buffered = 0
        if self.producer is not None:
            self.producer.resumeProducing()


class Connection:
    """One connection's core, Outbound and fake transport, driven by hand."""

    def __init__(self, high_water: int | None = None, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.scheduler = FlushScheduler(self.clock)
        self.core = Interactions()
        self.transport = FakeTransport(high_water)
        self.reading = True
        self.outbound = Outbound(
            self.core,
            self.transport.write,
            self.scheduler,
            pause_reading=self._pause_reading,
            resume_reading=self._resume_reading,
        )
        self.transport.producer = self.outbound

    def _pause_reading(self) -> None:
        self.reading = False

    def _resume_reading(self) -> None:
        self.reading = True

    # The client side: frames go through the real core, dispatched as ChatConnection does.

    def client(self, **frame: Any) -> Any:
        event = self.core.receive(json.dumps(frame))
        match event:
            case ev.Cancelled(interaction):
                self.outbound.cancel(interaction)
            case ev.CreditGranted(interaction):
                stream = self.outbound.stream_of(interaction)
                if stream is not None:
                    stream.credit_wakes()
            case ev.ClientNext(interaction, data):
                stream = self.outbound.stream_of(interaction)
                if stream is not None:
                    stream.receive(data)
            case ev.Refused(frame_bytes):
                self.outbound.send(frame_bytes)
        return event

    def open(self, fid: int, kind: str = "stream", credit: int | None = None) -> Interaction:
        frame: dict[str, Any] = {"type": kind, "id": fid, "route": "test"}
        if credit is not None:
            frame["credit"] = credit
        event = self.client(**frame)
        assert isinstance(event, ev.Opened), event
        return event.interaction

    # The reactor side.

    def turn(self) -> int:
        """One reactor turn: run the calls due now, not the ones they schedule. Returns how many."""
        now = self.clock.seconds()
        due = [call for call in self.clock.getDelayedCalls() if call.getTime() <= now]
        for call in due:
            if call.active():  # an earlier call of this turn may have cancelled it
                self.clock.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)
        return len(due)

    def settle(self, max_turns: int = 10_000) -> None:
        """Run turns until nothing is due now (the connection is idle or paused)."""
        for _ in range(max_turns):
            if not self.turn():
                return
        raise AssertionError(f"still busy after {max_turns} turns: a stream that never rests")

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, running every timer and flush on the way, in order."""
        target = self.clock.seconds() + seconds
        for _ in range(100_000):
            self.settle()
            pending = [c.getTime() for c in self.clock.getDelayedCalls()]
            upcoming = [t for t in pending if t <= target]
            if not upcoming:
                break
            self.clock.advance(min(upcoming) - self.clock.seconds())
            self.settle()
        self.clock.advance(target - self.clock.seconds())
        self.settle()

    def catch_up(self, max_rounds: int = 10_000) -> None:
        """Drain the transport and flush until everything available was delivered."""
        for _ in range(max_rounds):
            self.settle()
            if not self.outbound.paused:
                return
            self.transport.drain()
        raise AssertionError("the connection never caught up")

    # What the client read.

    def frames(self, fid: int | None = None) -> list[dict[str, Any]]:
        return [f for f in self.transport.frames if fid is None or f.get("id") == fid]

    def items(self, fid: int) -> list[dict[str, Any]]:
        nexts = [f for f in self.frames(fid) if f["type"] == "next"]
        return [f["data"] for f in nexts]


def listener_count(store: MemoryLogStore) -> int:
    """Listeners registered anywhere in the memory store."""
    return sum(len(ring.listeners) for ring in store._logs.values())


def post(store: MemoryLogStore, channel: str, content: str = "hi", sender: str = "bob") -> LogItem:
    d = store.append(
        channel_log(channel),
        {"kind": "message", "channel": channel, "from": sender, "content": content},
    )
    item: LogItem = d.result  # the memory store fires at once
    return item


def join(store: MemoryLogStore, channel: str, who: str = "alice") -> int:
    item: LogItem = store.append(
        channel_log(channel), {"kind": "join", "channel": channel, "from": who}
    ).result
    return item.seq


def leave(store: MemoryLogStore, channel: str, who: str = "alice") -> int:
    item: LogItem = store.append(
        channel_log(channel), {"kind": "leave", "channel": channel, "from": who}
    ).result
    return item.seq


def private(store: MemoryLogStore, to: str, content: str = "psst") -> LogItem:
    item: LogItem = store.append(
        inbox_log(to),
        {"kind": "message", "channel": None, "from": "bob", "to": to, "content": content},
    ).result
    return item


def open_feed(
    conn: Connection,
    store: MemoryLogStore,
    fid: int = 1,
    credit: int | None = None,
    username: str = "alice",
    since: dict[str, int] | None = None,
) -> FeedStream:
    interaction = conn.open(fid, "stream", credit)
    feed = FeedStream(conn.outbound, interaction, store, username, since or {})
    conn.outbound.attach(feed)
    return feed


def seqs_of(items: Sequence[dict[str, Any]], channel: str | None) -> list[int]:
    return [i["seq"] for i in items if i.get("channel") == channel and i["kind"] != "gap"]


# --- Outbound: one producer for the transport --------------------------------------------


def test_outbound_and_streams_are_push_producers() -> None:
    conn = Connection()
    store = MemoryLogStore()
    assert verifyObject(IPushProducer, conn.outbound)
    assert verifyObject(IPushProducer, open_feed(conn, store))


def test_pause_producing_pauses_every_stream_and_stops_reading() -> None:
    conn = Connection()
    store = MemoryLogStore()
    feed = open_feed(conn, store, 1)
    listing = ListStream(conn.outbound, conn.open(2), [b"1", b"2"])
    conn.outbound.attach(listing)
    stats = start_statistics(conn, 3)
    streams: list[StreamProducer] = [feed, listing, stats]

    conn.outbound.pauseProducing()
    assert conn.outbound.paused
    assert all(stream.paused for stream in streams)
    assert not conn.reading
    conn.outbound.pauseProducing()  # Twisted may pause a paused producer again
    assert conn.outbound.pauses == 1

    conn.settle()
    assert conn.transport.frames == []  # nothing at all is written while paused

    conn.outbound.resumeProducing()
    assert conn.reading
    assert not any(stream.paused for stream in streams)
    conn.settle()
    assert [f["data"] for f in conn.frames(2) if f["type"] == "next"] == [1, 2]
    assert len(conn.items(3)) == 1


def test_a_stream_attached_while_paused_starts_paused() -> None:
    conn = Connection()
    conn.outbound.pauseProducing()
    listing = ListStream(conn.outbound, conn.open(1), [b"1"])
    conn.outbound.attach(listing)
    assert listing.paused
    conn.settle()
    assert conn.transport.frames == []
    conn.outbound.resumeProducing()
    conn.settle()
    assert [f["type"] for f in conn.frames(1)] == ["next", "complete"]


def test_feed_delivers_in_seq_order_per_log() -> None:
    conn = Connection()
    store = MemoryLogStore()
    feed = open_feed(conn, store)
    feed.follow("general", join(store, "general"))
    for n in range(5):
        post(store, "general", f"m{n}")
        private(store, "alice", f"p{n}")
    conn.settle()
    items = conn.items(1)
    assert seqs_of(items, "general") == [1, 2, 3, 4, 5, 6]
    assert seqs_of(items, None) == [1, 2, 3, 4, 5]
    assert [i["content"] for i in items if i["channel"] is None] == [f"p{n}" for n in range(5)]
    general = [i for i in items if i["channel"] == "general"]
    assert general[0] == {**general[0], "kind": "join", "from": "alice"}


def test_feed_items_are_the_stored_bytes_framed_without_reencoding() -> None:
    conn = Connection()
    store = MemoryLogStore()
    feed = open_feed(conn, store, 7)
    feed.follow("general", join(store, "general"))
    conn.settle()
    item = post(store, "general", "héllo 😀")
    before = len(conn.transport.frames)
    raw = bytearray()
    conn.outbound.write = raw.extend  # capture this flush's bytes as written
    conn.settle()
    assert len(conn.transport.frames) == before
    assert bytes(raw).endswith(b'{"type":"next","id":7,"data":' + item.payload + b"}")


# --- backpressure: pause, resume, no holes ------------------------------------------------


def test_resume_continues_from_the_cursor_in_order_with_no_holes() -> None:
    conn = Connection(high_water=TWISTED_HIGH_WATER)
    store = MemoryLogStore()
    feed = open_feed(conn, store)
    feed.follow("flood", join(store, "flood"))
    content = "x" * 300
    for _ in range(1500):  # about 500 KB of frames
        post(store, "flood", content)

    conn.settle()
    assert conn.outbound.paused, "the transport filled up"
    assert not conn.reading
    delivered = len(conn.items(1))
    assert 0 < delivered < 1501
    assert conn.transport.writes_while_paused == 0

    for _ in range(500):  # more arrive while the client is not reading
        post(store, "flood", content)
    conn.settle()
    assert len(conn.items(1)) == delivered  # paused: the cursor waits, nothing is written

    conn.catch_up()
    items = conn.items(1)
    assert [i["seq"] for i in items] == list(range(1, 2002))
    assert all(i["content"] == content for i in items[1:])
    assert conn.outbound.pauses > 1
    assert conn.transport.writes_while_paused == 0
    assert conn.transport.decoder.pending == 0


def test_nothing_is_lost_across_many_pause_cycles_on_two_feeds() -> None:
    conn = Connection(high_water=8 * 1024)
    store = MemoryLogStore()
    first, second = open_feed(conn, store, 1), open_feed(conn, store, 2)
    seq = join(store, "room")
    first.follow("room", seq)
    second.follow("room", seq)
    for round_ in range(20):
        for n in range(50):
            post(store, "room", f"{round_}-{n}" + "y" * 200)
            private(store, "alice", f"{round_}-{n}")
        conn.settle()
        conn.transport.drain()
    conn.catch_up()
    for fid in (1, 2):  # two feeds on one connection each get every item
        items = conn.items(fid)
        assert seqs_of(items, "room") == list(range(1, 1002))
        assert seqs_of(items, None) == list(range(1, 1001))


# --- credit -------------------------------------------------------------------------------


def test_feed_with_credit_never_exceeds_it_and_request_n_resumes_it() -> None:
    conn = Connection()
    store = MemoryLogStore()
    feed = open_feed(conn, store, 1, credit=3)
    feed.follow("general", join(store, "general"))
    for _ in range(9):
        post(store, "general")
    conn.settle()
    assert [i["seq"] for i in conn.items(1)] == [1, 2, 3]
    assert feed.interaction.credit == 0
    post(store, "general")  # a new item wakes the feed, but there is no credit
    conn.settle()
    assert len(conn.items(1)) == 3

    conn.client(type="request_n", id=1, n=4)
    conn.settle()
    assert [i["seq"] for i in conn.items(1)] == list(range(1, 8))
    conn.client(type="request_n", id=1, n=100)
    conn.settle()
    assert [i["seq"] for i in conn.items(1)] == list(range(1, 12))
    assert feed.interaction.credit == 3 + 4 + 100 - 11
    post(store, "general")
    conn.settle()
    assert [i["seq"] for i in conn.items(1)] == list(range(1, 13))


def test_credit_spans_logs() -> None:
    conn = Connection()
    store = MemoryLogStore()
    feed = open_feed(conn, store, 1, credit=4)
    feed.follow("a", join(store, "a"))
    feed.follow("b", join(store, "b"))
    for _ in range(5):
        post(store, "a")
        post(store, "b")
        private(store, "alice")
    conn.settle()
    assert len(conn.items(1)) == 4
    conn.client(type="request_n", id=1, n=50)
    conn.settle()
    items = conn.items(1)
    assert len(items) == 17
    assert seqs_of(items, "a") == seqs_of(items, "b") == [1, 2, 3, 4, 5, 6]
    assert seqs_of(items, None) == [1, 2, 3, 4, 5]


def test_credit_and_pause_combine() -> None:
    conn = Connection()
    store = MemoryLogStore()
    feed = open_feed(conn, store, 1, credit=2)
    feed.follow("general", join(store, "general"))
    for _ in range(10):
        post(store, "general")
    conn.settle()
    assert len(conn.items(1)) == 2

    conn.outbound.pauseProducing()
    conn.client(type="request_n", id=1, n=3)  # credit, but the transport is full
    conn.settle()
    assert len(conn.items(1)) == 2

    conn.outbound.resumeProducing()  # room, and credit for exactly three
    conn.settle()
    assert [i["seq"] for i in conn.items(1)] == [1, 2, 3, 4, 5]

    conn.outbound.pauseProducing()
    conn.outbound.resumeProducing()  # room, but no credit
    conn.settle()
    assert len(conn.items(1)) == 5

    conn.client(type="request_n", id=1, n=100)
    conn.settle()
    assert [i["seq"] for i in conn.items(1)] == list(range(1, 12))


# --- cancel and close free everything -----------------------------------------------------


def test_cancel_on_a_paused_feed_frees_its_listeners_at_once() -> None:
    conn = Connection()
    store = MemoryLogStore()
    feed = open_feed(conn, store, 1)
    feed.follow("a", join(store, "a"))
    feed.follow("b", join(store, "b"))
    conn.settle()
    assert listener_count(store) == 3  # inbox, a, b

    conn.outbound.pauseProducing()
    for _ in range(5):
        post(store, "a")
    conn.client(type="cancel", id=1)
    assert listener_count(store) == 0
    assert feed.stopped
    assert conn.outbound.streams == {}
    assert conn.core.open == {}

    ref = weakref.ref(feed)
    del feed
    gc.collect()
    assert ref() is None, gc.get_referrers(ref())

    conn.outbound.resumeProducing()
    post(store, "a")
    conn.settle()
    assert [f["type"] for f in conn.frames(1)] == ["next", "next"]  # the two joins only


def test_cancel_on_a_paused_feed_that_was_waiting_to_flush_frees_it() -> None:
    # The feed was woken by new items, then the transport filled before its turn came.
    conn = Connection()
    store = MemoryLogStore()
    feed = open_feed(conn, store, 1)
    feed.follow("a", join(store, "a"))
    conn.settle()
    post(store, "a")  # wakes the feed: it waits in the connection's ready queue
    conn.outbound.pauseProducing()
    conn.client(type="cancel", id=1)
    assert listener_count(store) == 0

    ref = weakref.ref(feed)
    del feed
    gc.collect()
    assert ref() is None, "the cancelled stream is still referenced while the client is paused"


def test_cancel_on_a_paused_list_stream_that_was_waiting_frees_its_items() -> None:
    conn = Connection()
    listing = ListStream(conn.outbound, conn.open(1), [b"1"] * 10)
    conn.outbound.attach(listing)  # queued for the next turn
    conn.outbound.pauseProducing()
    conn.client(type="cancel", id=1)
    ref = weakref.ref(listing)
    del listing
    gc.collect()
    assert ref() is None, "the cancelled stream (and its items) outlive the cancel"


def test_closing_the_outbound_while_paused_frees_every_cursor() -> None:
    conn = Connection()
    store = MemoryLogStore()
    feeds = [open_feed(conn, store, fid) for fid in (1, 2, 3)]
    for n, feed in enumerate(feeds):
        feed.follow(f"c{n}", join(store, f"c{n}"))
        feed.follow("shared", 1 if n else join(store, "shared"))
    listing = ListStream(conn.outbound, conn.open(4), [b"1"] * 3)
    conn.outbound.attach(listing)
    stats = start_statistics(conn, 5)
    conn.settle()
    for n in range(3):
        post(store, f"c{n}")  # wakes: some streams wait in the queue when the close comes
    conn.outbound.pauseProducing()
    assert listener_count(store) > 0

    conn.outbound.close()
    assert listener_count(store) == 0
    assert conn.outbound.streams == {}
    assert conn.core.open == {}
    assert all(feed.stopped for feed in feeds) and stats.stopped
    assert not [c for c in conn.clock.getDelayedCalls() if c.func == stats._tick]

    refs = [weakref.ref(s) for s in [*feeds, listing, stats]]
    del feeds, feed, listing, stats
    gc.collect()
    assert [r() for r in refs] == [None] * 5

    written = len(conn.transport.frames)
    conn.outbound.resumeProducing()
    post(store, "shared")
    conn.advance(10)
    assert len(conn.transport.frames) == written  # a closed connection writes nothing


def test_stop_producing_closes_the_outbound() -> None:
    conn = Connection()
    store = MemoryLogStore()
    feed = open_feed(conn, store)
    conn.outbound.stopProducing()
    assert conn.outbound.closed and feed.stopped
    assert listener_count(store) == 0


# --- retention while paused: one exact gap per log ----------------------------------------


def test_retention_overflow_while_paused_gives_one_exact_gap_per_log() -> None:
    conn = Connection()
    store = MemoryLogStore(retention=5)
    feed = open_feed(conn, store)
    feed.follow("a", join(store, "a"))  # a: 1
    feed.follow("b", join(store, "b"))  # b: 1
    conn.settle()
    assert len(conn.items(1)) == 2

    conn.outbound.pauseProducing()
    for _ in range(20):
        post(store, "a")  # a: 2..21, retained 17..21
    for _ in range(3):
        post(store, "b")  # b: 2..4, all retained
    for _ in range(12):
        private(store, "alice")  # inbox: 1..12, retained 8..12
    conn.settle()
    assert len(conn.items(1)) == 2

    conn.outbound.resumeProducing()
    conn.settle()
    items = conn.items(1)[2:]
    by_log: dict[str | None, list[dict[str, Any]]] = {}
    for item in items:
        by_log.setdefault(item["channel"], []).append(item)
    assert by_log["a"][0] == {"kind": "gap", "channel": "a", "first": 2, "last": 16}
    assert [i["seq"] for i in by_log["a"][1:]] == [17, 18, 19, 20, 21]
    assert [i["kind"] for i in by_log["b"]] == ["message"] * 3
    assert [i["seq"] for i in by_log["b"]] == [2, 3, 4]
    assert by_log[None][0] == {"kind": "gap", "channel": None, "first": 1, "last": 7}
    assert [i["seq"] for i in by_log[None][1:]] == [8, 9, 10, 11, 12]
    assert sum(1 for i in items if i["kind"] == "gap") == 2


def test_gap_ends_at_the_leave_item_of_a_left_channel() -> None:
    conn = Connection()
    store = MemoryLogStore(retention=3)
    feed = open_feed(conn, store)
    conn.outbound.pauseProducing()
    feed.follow("a", join(store, "a"))  # 1
    for _ in range(4):
        post(store, "a")  # 2..5
    feed.unfollow("a", leave(store, "a"))  # 6
    for _ in range(10):
        post(store, "a")  # 7..16: not for this session
    conn.outbound.resumeProducing()
    conn.settle()
    assert conn.items(1) == [{"kind": "gap", "channel": "a", "first": 1, "last": 6}]
    assert listener_count(store) == 1  # only the inbox: the left channel is done


def test_a_gap_spends_one_credit() -> None:
    conn = Connection()
    store = MemoryLogStore(retention=2)
    feed = open_feed(conn, store, 1, credit=1)
    for _ in range(6):
        private(store, "alice")
    feed.follow("a", join(store, "a"))
    conn.settle()
    # The inbox opened empty: its items from 1 are wanted; 1..4 are gone.
    assert len(conn.items(1)) == 1
    conn.client(type="request_n", id=1, n=10)
    conn.settle()
    items = conn.items(1)
    gaps = [i for i in items if i["kind"] == "gap"]
    assert gaps == [{"kind": "gap", "channel": None, "first": 1, "last": 4}]
    assert seqs_of(items, None) == [5, 6]
    assert seqs_of(items, "a") == [1]
    assert len(items) == 4


def test_since_positions_start_the_feed_after_them() -> None:
    conn = Connection()
    store = MemoryLogStore()
    for _ in range(5):
        private(store, "alice")
    join(store, "a")
    for _ in range(5):
        post(store, "a")
    feed = open_feed(conn, store, since={"@": 3, "a": 4})
    feed.follow("a", 1)
    conn.settle()
    items = conn.items(1)
    assert seqs_of(items, None) == [4, 5]
    assert seqs_of(items, "a") == [5, 6]


# --- fairness -----------------------------------------------------------------------------


SNAPSHOT_CALLS: dict[int, list[object]] = {}  # statistics stream id -> its snapshot calls


def start_statistics(
    conn: Connection,
    fid: int,
    credit: int | None = None,
    ids: tuple[str, ...] = ("users", "channels"),
    period: float = 2.0,
    values: dict[str, int] | None = None,
) -> StatisticsStream:
    counters = values if values is not None else {}
    calls: list[tuple[str, ...]] = []

    def snapshot(wanted: Sequence[str]) -> dict[str, int]:
        calls.append(tuple(wanted))
        return {STAT_FIELDS[i]: counters.get(i, 0) for i in wanted}

    stream = StatisticsStream(
        conn.outbound,
        conn.open(fid, "channel", credit),
        conn.clock,
        snapshot,
        StatisticsOptions(ids=ids, period=period),
        parse_change,
    )
    SNAPSHOT_CALLS[id(stream)] = calls
    conn.outbound.attach(stream)
    return stream


@pytest.mark.parametrize("content_length", [100, 1000, 4096])
def test_statistics_gets_out_in_the_first_flush_behind_a_huge_feed_backlog(
    content_length: int,
) -> None:
    conn = Connection(high_water=TWISTED_HIGH_WATER)
    store = MemoryLogStore()
    feed = open_feed(conn, store, 1)
    feed.follow("flood", join(store, "flood"))
    for _ in range(3000):
        post(store, "flood", "z" * content_length)
    start_statistics(conn, 2)  # opened after the feed: behind it in the queue

    conn.turn()  # the first flush
    assert conn.items(2) == [{"user_count": 0, "channel_count": 0}], (
        f"the statistics frame waited behind {conn.transport.buffered} bytes of the feed"
    )
    feed_items = conn.items(1)
    assert 0 < len(feed_items) < 3001


def test_two_busy_feeds_share_the_first_flush() -> None:
    conn = Connection(high_water=TWISTED_HIGH_WATER)
    store = MemoryLogStore()
    one, two = open_feed(conn, store, 1), open_feed(conn, store, 2)
    one.follow("x", join(store, "x"))
    two.follow("y", join(store, "y"))
    for _ in range(2000):
        post(store, "x", "a" * 200)
        post(store, "y", "b" * 200)
    conn.turn()
    assert conn.items(1) and conn.items(2)


# --- finite lists ------------------------------------------------------------------------


def payloads(n: int) -> list[bytes]:
    return [encode_json({"channel": f"c{i}", "users": i}) for i in range(n)]


def test_list_stream_sends_its_items_then_complete() -> None:
    conn = Connection()
    interaction = conn.open(4)
    conn.outbound.attach(ListStream(conn.outbound, interaction, payloads(3)))
    conn.settle()
    assert conn.frames(4) == [
        {"type": "next", "id": 4, "data": {"channel": "c0", "users": 0}},
        {"type": "next", "id": 4, "data": {"channel": "c1", "users": 1}},
        {"type": "next", "id": 4, "data": {"channel": "c2", "users": 2}},
        {"type": "complete", "id": 4},
    ]
    assert conn.core.open == {}
    assert conn.outbound.streams == {}


def test_empty_list_stream_completes_at_once() -> None:
    conn = Connection()
    conn.outbound.attach(ListStream(conn.outbound, conn.open(1), []))
    conn.settle()
    assert conn.frames(1) == [{"type": "complete", "id": 1}]


def test_list_stream_with_credit_waits_for_request_n_and_complete_needs_none() -> None:
    conn = Connection()
    conn.outbound.attach(ListStream(conn.outbound, conn.open(1, credit=2), payloads(5)))
    conn.settle()
    assert [f["type"] for f in conn.frames(1)] == ["next", "next"]
    conn.client(type="request_n", id=1, n=2)
    conn.settle()
    assert [f["type"] for f in conn.frames(1)] == ["next"] * 4
    conn.client(type="request_n", id=1, n=1)  # the last item; complete takes no credit
    conn.settle()
    assert [f["type"] for f in conn.frames(1)] == ["next"] * 5 + ["complete"]
    assert [d["users"] for d in conn.items(1)] == [0, 1, 2, 3, 4]


def test_list_stream_with_exact_credit_completes() -> None:
    conn = Connection()
    conn.outbound.attach(ListStream(conn.outbound, conn.open(1, credit=3), payloads(3)))
    conn.settle()
    assert [f["type"] for f in conn.frames(1)] == ["next"] * 3 + ["complete"]


def test_list_stream_supplied_later() -> None:
    conn = Connection()
    listing = ListStream(conn.outbound, conn.open(1))
    conn.outbound.attach(listing)
    conn.settle()
    assert conn.frames(1) == []
    listing.supply(payloads(2))
    conn.settle()
    assert [f["type"] for f in conn.frames(1)] == ["next", "next", "complete"]


def test_a_long_list_is_sent_whole_and_in_order_across_pauses() -> None:
    conn = Connection(high_water=TWISTED_HIGH_WATER)
    big = [encode_json({"username": f"user{i:05d}", "pad": "p" * 500}) for i in range(1000)]
    conn.outbound.attach(ListStream(conn.outbound, conn.open(1), big))
    conn.settle()
    assert conn.outbound.paused
    conn.catch_up()
    frames = conn.frames(1)
    assert [f["data"]["username"] for f in frames[:-1]] == [f"user{i:05d}" for i in range(1000)]
    assert frames[-1] == {"type": "complete", "id": 1}


def test_cancelled_list_stream_sends_nothing_more() -> None:
    conn = Connection()
    conn.outbound.attach(ListStream(conn.outbound, conn.open(1, credit=1), payloads(5)))
    conn.settle()
    conn.client(type="cancel", id=1)
    conn.client(type="request_n", id=1, n=10)  # late: ignored
    conn.settle()
    assert [f["type"] for f in conn.frames(1)] == ["next"]


# --- statistics ---------------------------------------------------------------------------


STAT_FIELDS = {
    "users": "user_count",
    "channels": "channel_count",
    "connections": "connection_count",
    "messages": "message_count",
    "memory": "memory_usage",
}


def parse_change(data: object, current: StatisticsOptions) -> StatisticsOptions:
    """A client ``next`` on the statistics channel: new ids and/or period, or invalid_data."""
    fields = v.obj(data, "statistics")
    ids, period = current.ids, current.period
    if "ids" in fields:
        raw = fields["ids"]
        if not isinstance(raw, list) or not raw or any(i not in STAT_FIELDS for i in raw):
            raise v.invalid(f"unknown statistics ids {raw!r:.40}")
        ids = tuple(raw)
    if "period_seconds" in fields:
        raw = fields["period_seconds"]
        if not isinstance(raw, int | float) or not 0.1 <= raw <= 3600:
            raise v.invalid('"period_seconds" must be from 0.1 to 3600')
        period = float(raw)
    return StatisticsOptions(ids=ids, period=period)


def test_statistics_sends_at_once_then_every_period() -> None:
    conn = Connection()
    values = {"users": 1, "channels": 2}
    start_statistics(conn, 5, values=values)
    conn.settle()
    assert conn.items(5) == [{"user_count": 1, "channel_count": 2}]

    conn.advance(1.9)
    assert len(conn.items(5)) == 1
    values["users"] = 7
    conn.advance(0.1)  # t = 2
    assert conn.items(5)[1:] == [{"user_count": 7, "channel_count": 2}]
    conn.advance(4)  # t = 6
    assert len(conn.items(5)) == 4
    assert conn.core.open.keys() == {5}  # it never completes on its own


def test_statistics_skips_ticks_without_credit_rather_than_queueing_them() -> None:
    conn = Connection()
    stats = start_statistics(conn, 5, credit=1)
    conn.settle()
    assert len(conn.items(5)) == 1
    conn.advance(10)  # five ticks, no credit
    assert len(conn.items(5)) == 1
    calls_before = len(SNAPSHOT_CALLS[id(stats)])

    conn.client(type="request_n", id=5, n=1)
    conn.settle()
    assert len(conn.items(5)) == 1  # the skipped ticks are not delivered late
    conn.advance(2)
    assert len(conn.items(5)) == 2
    assert len(SNAPSHOT_CALLS[id(stats)]) == calls_before + 1


def test_statistics_skips_ticks_while_paused() -> None:
    conn = Connection()
    start_statistics(conn, 5, period=1)
    conn.settle()
    conn.outbound.pauseProducing()
    conn.advance(5)
    assert len(conn.items(5)) == 1
    conn.outbound.resumeProducing()
    conn.settle()
    assert len(conn.items(5)) == 1
    conn.advance(1)
    assert len(conn.items(5)) == 2


def test_statistics_change_of_ids_sends_at_once_and_restarts_the_period() -> None:
    conn = Connection()
    stats = start_statistics(conn, 5, values={"users": 3, "connections": 9})
    conn.settle()
    conn.advance(1)  # t = 1: between ticks
    conn.client(type="next", id=5, data={"ids": ["connections"]})
    conn.settle()
    assert conn.items(5)[1:] == [{"connection_count": 9}]
    assert stats.options.ids == ("connections",)

    conn.advance(1.5)  # t = 2.5: the old tick at t = 2 is gone
    assert len(conn.items(5)) == 2
    conn.advance(0.5)  # t = 3: one period after the change
    assert conn.items(5)[2:] == [{"connection_count": 9}]


def test_statistics_change_of_period() -> None:
    conn = Connection()
    start_statistics(conn, 5)
    conn.settle()
    conn.client(type="next", id=5, data={"period_seconds": 0.5})
    conn.settle()
    assert len(conn.items(5)) == 2
    conn.advance(2)
    assert len(conn.items(5)) == 6
    conn.client(type="next", id=5, data={"period_seconds": 10, "ids": ["users"]})
    conn.advance(9.9)
    assert conn.items(5)[6:] == [{"user_count": 0}]
    conn.advance(0.1)
    assert len(conn.items(5)) == 8


def test_statistics_client_complete_ends_nothing() -> None:
    conn = Connection()
    start_statistics(conn, 5)
    conn.settle()
    conn.client(type="complete", id=5)
    conn.advance(2)
    assert len(conn.items(5)) == 2


@pytest.mark.parametrize(
    "change", [{"ids": ["nope"]}, {"period_seconds": 0}, {"period_seconds": 99999}, [1], None]
)
def test_statistics_invalid_change_fails_with_invalid_data(change: Any) -> None:
    conn = Connection()
    stats = start_statistics(conn, 5)
    conn.settle()
    conn.client(type="next", id=5, data=change)
    conn.settle()
    last = conn.frames(5)[-1]
    assert last["type"] == "error"
    assert last["error"]["code"] == ErrorCode.INVALID_DATA == "invalid_data"
    assert last["error"]["message"]
    assert stats.stopped
    assert conn.core.open == {}
    assert conn.clock.getDelayedCalls() == []
    conn.advance(10)
    assert len(conn.frames(5)) == 2


def test_statistics_cancel_stops_the_timer() -> None:
    conn = Connection()
    stats = start_statistics(conn, 5)
    conn.settle()
    conn.client(type="cancel", id=5)
    assert stats.stopped
    assert conn.clock.getDelayedCalls() == []
    conn.advance(10)
    assert len(conn.frames(5)) == 1
