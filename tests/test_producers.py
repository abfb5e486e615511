"""The producers, driven through the real connection: frames in, bytes out, on a Clock.

Every test goes through :class:`~chat.connection.ChatConnection` (core, router, routes and
producers as the server runs them), with a fake transport that pauses like Twisted's and a
node on a :class:`~twisted.internet.task.Clock` (see tests/producer_harness.py).
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from twisted.internet.interfaces import IPushProducer
from zope.interface.verify import verifyObject

from chat.producers.listing import NAMES_PER_PAGE
from chat.protocol.errors import ErrorCode
from chat.stores.memory import MemoryLogStore
from tests.producer_harness import TWISTED_HIGH_WATER, Harness, seqs_of

# --- Outbound: one producer for the transport --------------------------------------------


def test_outbound_and_streams_are_push_producers() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    assert verifyObject(IPushProducer, conn.outbound)
    assert verifyObject(IPushProducer, conn.open_feed())


def test_pause_producing_pauses_every_stream_and_stops_reading() -> None:
    harness = Harness()
    for name in ("a", "b"):
        harness.store.add_channel(name)
    conn = harness.connect("alice")
    conn.open_feed(1)
    conn.open(2, "channels", credit=1)
    conn.open(3, "statistics", {"ids": ["channels"]}, kind="channel")
    streams = list(conn.outbound.streams.values())
    conn.outbound.pauseProducing()
    assert conn.outbound.paused
    assert all(stream.paused for stream in streams)
    assert not conn.reading
    conn.outbound.pauseProducing()  # Twisted may pause a paused producer again
    assert conn.outbound.pauses == 1

    written = len(conn.transport.frames)
    harness.settle()
    assert len(conn.transport.frames) == written  # nothing at all is written while paused

    conn.outbound.resumeProducing()
    assert conn.reading
    assert not any(stream.paused for stream in streams)
    harness.settle()
    assert conn.items(2) == [{"channel": "a", "users": 0}]
    assert conn.items(3) == [{"channel_count": 2}]


def test_a_stream_opened_while_paused_starts_paused() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.outbound.pauseProducing()
    conn.open(1, "channels")
    assert conn.outbound.streams[1].paused
    harness.settle()
    assert conn.frames(1) == []
    conn.outbound.resumeProducing()
    harness.settle()
    assert [f["type"] for f in conn.frames(1)] == ["complete"]


def test_feed_delivers_in_seq_order_per_log() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.open_feed(1)
    conn.join("general")
    for n in range(5):
        harness.post("general", f"m{n}")
        harness.private("alice", f"p{n}")
    harness.settle()
    items = conn.items(1)
    assert seqs_of(items, "general") == [1, 2, 3, 4, 5, 6]
    assert seqs_of(items, None) == [1, 2, 3, 4, 5]
    assert [i["content"] for i in items if i["channel"] is None] == [f"p{n}" for n in range(5)]
    general = [i for i in items if i["channel"] == "general"]
    assert general[0] == {**general[0], "kind": "join", "from": "alice"}


class ForgetfulStore(MemoryLogStore):
    """Claims items in its memory and then hands back none: a store bug the feed must survive."""

    forgetful = False

    def cached(self, log: str, after: int, limit: int, max_bytes: int = 1 << 20) -> Any:
        return [] if self.forgetful else super().cached(log, after, limit, max_bytes)


def test_a_store_that_hands_back_nothing_never_spins_the_flush() -> None:
    store = ForgetfulStore()
    harness = Harness(store=store)
    conn = harness.connect("alice")
    conn.open_feed(1)
    conn.join("general")
    harness.settle()
    store.forgetful = True
    harness.post("general", "lost for now")
    harness.settle()  # raises if the feed keeps asking: "a stream that never rests"
    store.forgetful = False
    harness.post("general", "found")
    harness.settle()
    assert [i["content"] for i in conn.items(1) if i["kind"] == "message"] == [
        "lost for now",
        "found",
    ]


def test_feed_items_are_the_stored_bytes_framed_without_reencoding() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.open_feed(7)
    conn.join("general")
    harness.post("general", "héllo 😀")
    stored = harness.store.cached("#general", 1, 1)[0].payload
    raw = bytearray()
    conn.connection.outbound.write = raw.extend  # capture the next flush's bytes as written
    harness.post("general", "again")
    harness.settle()
    again = harness.store.cached("#general", 2, 1)[0].payload
    assert bytes(raw).endswith(b'{"type":"next","id":7,"data":' + again + b"}")
    assert b'"content":"h\xc3\xa9llo \xf0\x9f\x98\x80"' in stored  # UTF-8, not \\u escapes


# --- backpressure: pause, resume, no holes ------------------------------------------------


def test_resume_continues_from_the_cursor_in_order_with_no_holes() -> None:
    harness = Harness()
    conn = harness.connect("alice", high_water=TWISTED_HIGH_WATER)
    conn.open_feed(1)
    conn.join("flood")
    content = "x" * 300
    for _ in range(1500):  # about 500 KB of frames
        harness.post("flood", content)
    harness.settle()
    assert conn.outbound.paused, "the transport filled up"
    assert not conn.reading
    delivered = len(conn.items(1))
    assert 0 < delivered < 1501
    assert conn.transport.writes_while_paused == 0

    for _ in range(500):  # more arrive while the client is not reading
        harness.post("flood", content)
    assert len(conn.items(1)) == delivered  # paused: the cursor waits, nothing is written

    conn.catch_up()
    items = conn.items(1)
    assert [i["seq"] for i in items] == list(range(1, 2002))
    assert all(i["content"] == content for i in items[1:])
    assert conn.outbound.pauses > 1
    assert conn.transport.writes_while_paused == 0
    assert conn.transport.decoder.pending == 0


def test_nothing_is_lost_across_many_pause_cycles_on_two_feeds() -> None:
    harness = Harness()
    conn = harness.connect("alice", high_water=8 * 1024)
    conn.open_feed(1)
    conn.open_feed(2)
    conn.join("room")
    for round_ in range(20):
        for n in range(50):
            harness.post("room", f"{round_}-{n}" + "y" * 200)
            harness.private("alice", f"{round_}-{n}")
        conn.transport.drain()
    conn.catch_up()
    for fid in (1, 2):  # two feeds on one connection each get every item
        items = conn.items(fid)
        assert seqs_of(items, "room") == list(range(1, 1002))
        assert seqs_of(items, None) == list(range(1, 1001))


# --- credit -------------------------------------------------------------------------------


def test_feed_with_credit_never_exceeds_it_and_request_n_resumes_it() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    feed = conn.open_feed(1, credit=3)
    conn.join("general")
    for _ in range(9):
        harness.post("general")
    assert [i["seq"] for i in conn.items(1)] == [1, 2, 3]
    assert feed.interaction.credit == 0
    harness.post("general")  # a new item wakes the feed, but there is no credit
    assert len(conn.items(1)) == 3

    conn.client(type="request_n", id=1, n=4)
    harness.settle()
    assert [i["seq"] for i in conn.items(1)] == list(range(1, 8))
    conn.client(type="request_n", id=1, n=100)
    harness.settle()
    assert [i["seq"] for i in conn.items(1)] == list(range(1, 12))
    assert feed.interaction.credit == 3 + 4 + 100 - 11
    harness.post("general")
    assert [i["seq"] for i in conn.items(1)] == list(range(1, 13))


def test_credit_spans_logs() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.open_feed(1, credit=4)
    conn.join("a")
    conn.join("b")
    for _ in range(5):
        harness.post("a")
        harness.post("b")
        harness.private("alice")
    assert len(conn.items(1)) == 4
    conn.client(type="request_n", id=1, n=50)
    harness.settle()
    items = conn.items(1)
    assert len(items) == 17
    assert seqs_of(items, "a") == seqs_of(items, "b") == [1, 2, 3, 4, 5, 6]
    assert seqs_of(items, None) == [1, 2, 3, 4, 5]


def test_credit_and_pause_combine() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.open_feed(1, credit=2)
    conn.join("general")
    for _ in range(10):
        harness.post("general")
    assert len(conn.items(1)) == 2

    conn.outbound.pauseProducing()
    conn.client(type="request_n", id=1, n=3)  # credit, but the transport is full
    harness.settle()
    assert len(conn.items(1)) == 2

    conn.outbound.resumeProducing()  # room, and credit for exactly three
    harness.settle()
    assert [i["seq"] for i in conn.items(1)] == [1, 2, 3, 4, 5]

    conn.outbound.pauseProducing()
    conn.outbound.resumeProducing()  # room, but no credit
    harness.settle()
    assert len(conn.items(1)) == 5

    conn.client(type="request_n", id=1, n=100)
    harness.settle()
    assert [i["seq"] for i in conn.items(1)] == list(range(1, 12))


# --- cancel and close free everything -----------------------------------------------------


def test_cancel_on_a_paused_feed_frees_its_listeners_at_once() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.open_feed(1)
    conn.join("a")
    conn.join("b")
    assert harness.listeners() == 3  # inbox, a, b

    conn.outbound.pauseProducing()
    for _ in range(5):
        harness.post("a")
    feed = conn.outbound.streams[1]
    conn.client(type="cancel", id=1)
    assert harness.listeners() == 0
    assert feed.stopped
    assert conn.outbound.streams == {}
    assert conn.core.open == {}
    assert conn.connection.session is not None and conn.connection.session.listeners == []

    ref = weakref.ref(feed)
    del feed
    gc.collect()
    assert ref() is None, gc.get_referrers(ref())

    conn.outbound.resumeProducing()
    harness.post("a")
    assert [f["type"] for f in conn.frames(1)] == ["next", "next"]  # the two joins only


def test_cancel_on_a_paused_feed_that_was_waiting_to_flush_frees_it() -> None:
    # The feed was woken by new items, then the transport filled before its turn came.
    harness = Harness()
    conn = harness.connect("alice")
    feed = conn.open_feed(1)
    conn.join("a")
    harness.store.append("#a", {"kind": "message"})  # wakes the feed: it waits in the queue
    conn.outbound.pauseProducing()
    conn.client(type="cancel", id=1)
    assert harness.listeners() == 0
    ref = weakref.ref(feed)
    del feed
    gc.collect()
    assert ref() is None, "the cancelled stream is still referenced while the client is paused"


def test_cancel_on_a_paused_listing_frees_it() -> None:
    harness = Harness()
    for n in range(200):
        harness.store.add_channel(f"c{n:03d}")
    conn = harness.connect("alice")
    conn.open(1, "channels", credit=1)
    harness.settle()
    listing = conn.outbound.streams[1]
    conn.outbound.pauseProducing()
    conn.client(type="cancel", id=1)
    ref = weakref.ref(listing)
    del listing
    gc.collect()
    assert ref() is None, "the cancelled stream (and its page) outlives the cancel"


def test_closing_the_connection_while_paused_frees_every_cursor() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    for fid in (1, 2, 3):
        conn.open_feed(fid)
    for n in range(3):
        conn.join(f"c{n}")
    conn.join("shared")
    conn.open(4, "channels", credit=1)
    conn.open(5, "statistics", kind="channel")
    harness.settle()
    streams = list(conn.outbound.streams.values())
    for n in range(3):
        harness.post(f"c{n}")
    conn.outbound.pauseProducing()
    assert harness.listeners() > 0

    conn.connection.connection_lost()
    assert harness.listeners() == 0
    assert conn.outbound.streams == {}
    assert conn.core.open == {}
    assert all(stream.stopped for stream in streams)
    assert not [c for c in harness.clock.getDelayedCalls() if "tick" in repr(c.func)]

    refs = [weakref.ref(s) for s in streams]
    del streams
    gc.collect()
    assert [r() for r in refs] == [None] * 5

    written = len(conn.transport.frames)
    conn.outbound.resumeProducing()
    harness.post("shared")
    harness.advance(10)
    assert len(conn.transport.frames) == written  # a closed connection writes nothing


def test_stop_producing_closes_the_outbound() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    feed = conn.open_feed()
    conn.outbound.stopProducing()
    assert conn.outbound.closed and feed.stopped
    assert harness.listeners() == 0


# --- retention while paused: one exact gap per log ----------------------------------------


def test_retention_overflow_while_paused_gives_one_exact_gap_per_log() -> None:
    harness = Harness(store=None)
    harness.store.init_logs(5, 5)  # retention 5 (a fresh memory store)
    conn = harness.connect("alice")
    conn.open_feed()
    conn.join("a")  # a: 1
    conn.join("b")  # b: 1
    assert len(conn.items(1)) == 2

    conn.outbound.pauseProducing()
    for _ in range(20):
        harness.post("a")  # a: 2..21, retained 17..21
    for _ in range(3):
        harness.post("b")  # b: 2..4, all retained
    for _ in range(12):
        harness.private("alice")  # inbox: 1..12, retained 8..12
    assert len(conn.items(1)) == 2

    conn.outbound.resumeProducing()
    harness.settle()
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
    harness = Harness()
    harness.store.init_logs(3, 3)
    conn = harness.connect("alice")
    conn.open_feed()
    conn.outbound.pauseProducing()
    conn.join("a")  # 1
    for _ in range(4):
        harness.post("a")  # 2..5
    conn.leave("a")  # 6
    for _ in range(10):
        harness.post("a")  # 7..16: not for this session
    conn.outbound.resumeProducing()
    harness.settle()
    assert conn.items(1) == [{"kind": "gap", "channel": "a", "first": 1, "last": 6}]
    assert harness.listeners() == 1  # only the inbox: the left channel is done


def test_a_gap_spends_one_credit() -> None:
    harness = Harness()
    harness.store.init_logs(2, 2)
    conn = harness.connect("alice")
    for _ in range(6):
        harness.private("alice")
    conn.open_feed(1, credit=1, since={"@": 0})
    conn.join("a")
    # The inbox's items from 1 are wanted; 1..4 are gone.
    assert len(conn.items(1)) == 1
    conn.client(type="request_n", id=1, n=10)
    harness.settle()
    items = conn.items(1)
    gaps = [i for i in items if i["kind"] == "gap"]
    assert gaps == [{"kind": "gap", "channel": None, "first": 1, "last": 4}]
    assert seqs_of(items, None) == [5, 6]
    assert seqs_of(items, "a") == [1]
    assert len(items) == 4


def test_since_positions_start_the_feed_after_them() -> None:
    harness = Harness()
    for _ in range(5):
        harness.private("alice")
    conn = harness.connect("alice")
    conn.join("a")
    for _ in range(5):
        harness.post("a")
    conn.open_feed(since={"@": 3, "a": 4})
    harness.settle()
    items = conn.items(1)
    assert seqs_of(items, None) == [4, 5]
    assert seqs_of(items, "a") == [5, 6]


# --- fairness -----------------------------------------------------------------------------


@pytest.mark.parametrize("content_length", [100, 1000, 4096])
def test_statistics_gets_out_in_the_first_flush_behind_a_huge_feed_backlog(
    content_length: int,
) -> None:
    harness = Harness()
    conn = harness.connect("alice", high_water=TWISTED_HIGH_WATER)
    conn.open_feed(1)
    conn.join("flood")
    conn.outbound.pauseProducing()
    for _ in range(3000):
        harness.post("flood", "z" * content_length)
    conn.open(2, "statistics", {"ids": ["users"]}, kind="channel")  # behind the feed
    conn.outbound.resumeProducing()
    harness.turn()  # the first flush
    assert conn.items(2) == [{"user_count": 1}], (
        f"the statistics frame waited behind {conn.transport.buffered} bytes of the feed"
    )
    assert 0 < len(conn.items(1)) < 3001


def test_two_busy_feeds_share_the_first_flush() -> None:
    harness = Harness()
    conn = harness.connect("alice", high_water=TWISTED_HIGH_WATER)
    conn.open_feed(1)
    conn.open_feed(2)
    conn.join("x")
    conn.outbound.pauseProducing()
    for _ in range(2000):
        harness.post("x", "a" * 200)
    conn.outbound.resumeProducing()
    harness.turn()
    assert len(conn.items(1)) > 1 and len(conn.items(2)) > 1


# --- listings page through their source ---------------------------------------------------


def test_channels_lists_every_channel_sorted_then_completes() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    for name in ["b", "B", "a", "_", "0"]:
        conn.join(name)
    conn.open(4, "channels")
    harness.settle()
    frames = conn.frames(4)
    assert [f["data"]["channel"] for f in frames[:-1]] == ["0", "B", "_", "a", "b"]
    assert frames[-1] == {"type": "complete", "id": 4}
    assert conn.core.open == {}
    assert conn.outbound.streams == {}


def test_empty_listing_completes_at_once() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.open(1, "channels")
    harness.settle()
    assert conn.frames(1) == [{"type": "complete", "id": 1}]


def test_listing_with_credit_waits_for_request_n_and_complete_needs_none() -> None:
    harness = Harness()
    for n in range(5):
        harness.store.add_channel(f"c{n}")
    conn = harness.connect("alice")
    conn.open(1, "channels", credit=2)
    harness.settle()
    assert [f["type"] for f in conn.frames(1)] == ["next", "next"]
    conn.client(type="request_n", id=1, n=2)
    harness.settle()
    assert [f["type"] for f in conn.frames(1)] == ["next"] * 4
    conn.client(type="request_n", id=1, n=1)  # the last item; complete takes no credit
    harness.settle()
    assert [f["type"] for f in conn.frames(1)] == ["next"] * 5 + ["complete"]
    assert [d["channel"] for d in conn.items(1)] == [f"c{n}" for n in range(5)]


def test_a_listing_with_credit_one_holds_one_page_not_the_directory() -> None:
    harness = Harness()
    for n in range(10_000):
        harness.store.add_channel(f"c{n:05d}")
    conn = harness.connect("alice")
    for fid in range(1, 60):
        conn.open(fid, "channels", credit=1)
    harness.settle()
    pages = [len(stream.page) for stream in conn.outbound.streams.values()]
    assert len(pages) == 59 and max(pages) <= NAMES_PER_PAGE
    conn.client(type="request_n", id=1, n=2**31 - 1)
    conn.catch_up()
    names = [d["channel"] for d in conn.items(1)]
    assert names == [f"c{n:05d}" for n in range(10_000)]
    assert conn.frames(1)[-1] == {"type": "complete", "id": 1}


def test_channel_users_pages_the_members_and_says_who_is_online() -> None:
    harness = Harness()
    names = [f"u{n:04d}" for n in range(300)]
    for name in names:
        harness.presence.joined("big", name)
    harness.presence.set_online("u0007", True)
    conn = harness.connect("alice")
    conn.open(1, "channel.users", {"channel": "big"}, credit=1)
    harness.settle()
    assert len(conn.outbound.streams[1].page) <= NAMES_PER_PAGE
    conn.client(type="request_n", id=1, n=1000)
    harness.settle()
    items = conn.items(1)
    assert [i["username"] for i in items] == names
    assert [i["username"] for i in items if i["online"]] == ["u0007"]


def test_a_long_list_is_sent_whole_and_in_order_across_pauses() -> None:
    harness = Harness()
    conn = harness.connect("alice", high_water=TWISTED_HIGH_WATER)
    conn.join("big")
    for n in range(1000):
        harness.post("big", f"{n:05d}" + "p" * 500)
    conn.open(1, "history", {"channel": "big", "limit": 1000})
    harness.settle()
    assert conn.outbound.paused
    conn.catch_up()
    frames = conn.frames(1)
    assert [f["data"]["seq"] for f in frames[:-1]] == list(range(2, 1002))
    assert frames[-1] == {"type": "complete", "id": 1}


def test_cancelled_listing_sends_nothing_more() -> None:
    harness = Harness()
    for n in range(5):
        harness.store.add_channel(f"c{n}")
    conn = harness.connect("alice")
    conn.open(1, "channels", credit=1)
    harness.settle()
    conn.client(type="cancel", id=1)
    conn.client(type="request_n", id=1, n=10)  # late: ignored
    harness.settle()
    assert [f["type"] for f in conn.frames(1)] == ["next"]


# --- statistics ---------------------------------------------------------------------------


def test_statistics_sends_at_once_then_every_period() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.open(5, "statistics", {"ids": ["users", "connections"]}, kind="channel")
    harness.settle()
    assert conn.items(5) == [{"user_count": 1, "connection_count": 1}]
    harness.advance(1.9)
    assert len(conn.items(5)) == 1
    harness.connect("bob")
    harness.advance(0.1)  # t = 2
    assert conn.items(5)[1:] == [{"user_count": 2, "connection_count": 2}]
    harness.advance(4)  # t = 6
    assert len(conn.items(5)) == 4
    assert 5 in conn.core.open  # it never completes on its own


def test_statistics_skips_ticks_without_credit_rather_than_queueing_them() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.open(5, "statistics", credit=1, kind="channel")
    harness.settle()
    assert len(conn.items(5)) == 1
    harness.advance(10)  # five ticks, no credit
    assert len(conn.items(5)) == 1
    conn.client(type="request_n", id=5, n=1)
    harness.settle()
    assert len(conn.items(5)) == 1  # the skipped ticks are not delivered late
    harness.advance(2)
    assert len(conn.items(5)) == 2


def test_statistics_skips_ticks_while_paused() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.open(5, "statistics", {"period_seconds": 1}, kind="channel")
    harness.settle()
    conn.outbound.pauseProducing()
    harness.advance(5)
    assert len(conn.items(5)) == 1
    conn.outbound.resumeProducing()
    harness.settle()
    assert len(conn.items(5)) == 1
    harness.advance(1)
    assert len(conn.items(5)) == 2


def test_statistics_change_of_ids_sends_at_once_and_restarts_the_period() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.open(5, "statistics", kind="channel")
    harness.settle()
    harness.advance(1)  # t = 1: between ticks
    conn.client(type="next", id=5, data={"ids": ["connections"]})
    harness.settle()
    assert conn.items(5)[1:] == [{"connection_count": 1}]
    harness.advance(1.5)  # t = 2.5: the old tick at t = 2 is gone
    assert len(conn.items(5)) == 2
    harness.advance(0.5)  # t = 3: one period after the change
    assert conn.items(5)[2:] == [{"connection_count": 1}]


def test_statistics_change_of_period() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.open(5, "statistics", kind="channel")
    harness.settle()
    conn.client(type="next", id=5, data={"period_seconds": 0.5})
    harness.settle()
    assert len(conn.items(5)) == 2
    harness.advance(2)
    assert len(conn.items(5)) == 6
    conn.client(type="next", id=5, data={"period_seconds": 10, "ids": ["users"]})
    harness.advance(9.9)
    assert conn.items(5)[6:] == [{"user_count": 1}]
    harness.advance(0.1)
    assert len(conn.items(5)) == 8


def test_statistics_client_complete_ends_nothing() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.open(5, "statistics", kind="channel")
    harness.settle()
    conn.client(type="complete", id=5)
    harness.advance(2)
    assert len(conn.items(5)) == 2


@pytest.mark.parametrize(
    "change", [{"ids": ["nope"]}, {"period_seconds": 0}, {"period_seconds": 99999}, [1], None]
)
def test_statistics_invalid_change_fails_with_invalid_data(change: Any) -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.open(5, "statistics", kind="channel")
    harness.settle()
    stats = conn.outbound.streams[5]
    conn.client(type="next", id=5, data=change)
    harness.settle()
    last = conn.frames(5)[-1]
    assert last["type"] == "error"
    assert last["error"]["code"] == ErrorCode.INVALID_DATA == "invalid_data"
    assert last["error"]["message"]
    assert stats.stopped
    assert conn.core.open == {}
    harness.advance(10)
    assert len(conn.frames(5)) == 2


def test_statistics_cancel_stops_the_timer() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.open(5, "statistics", kind="channel")
    harness.settle()
    stats = conn.outbound.streams[5]
    conn.client(type="cancel", id=5)
    assert stats.stopped
    assert stats.timer is None
    harness.advance(10)
    assert len(conn.frames(5)) == 1
