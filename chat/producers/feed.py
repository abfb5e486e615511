"""The ``messages`` feed: one stream producer reading many logs by cursor.

A feed follows its session's inbox and every channel the session is (or becomes) a member
of. For each log it keeps a :class:`Cursor`: the next seq to deliver and the *segments* of
the log it must deliver (from a join item to the matching leave item, or open-ended). That
position is all the state a paused or out-of-credit feed holds; nothing is queued per
recipient. Logs wake the cursors that listen to them; a woken feed reads what is new straight
from the store's memory (:meth:`~chat.stores.interface.ILogStore.cached`), frames it, and hands
it to its connection.

In a fan-out, hundreds of feeds read the same new items from the same position in one flush.
What such a read produces depends only on the log, the position, the credit allowed, the byte
budget and the interaction id — when the cursor is *shareable* (:meth:`Cursor.shareable`) — so
the first feed's result (the framed chunk, the count, the new position) is kept for the rest
of the flush (:attr:`~chat.producers.outbound.FlushScheduler.runs`) and every other feed
reuses it: one lookup per delivery instead of a read, a frame and a join. The logs do not move
during a flush (nothing appends from inside a ``produce``), so a kept run stays exact.

A cursor further behind than the store's memory reads the log from disk, a page at a time
(:meth:`Cursor.load`); a feed holds one such page at a time for all its cursors
(:class:`~chat.producers.pages.PageSlots` of one), so a feed far behind in a hundred
channels holds one page, not a hundred. The rules that make this correct by
construction:

- *where the items are* is decided by seqs only: a cursor has caught up when its position is
  past :meth:`~chat.stores.interface.ILogStore.last_seq`, never because a page was short;
- a loaded page is consumed from the front as the position advances, and dropped, explicitly,
  as soon as it no longer holds the position;
- before reading, a position below :meth:`~chat.stores.interface.ILogStore.first_seq` gets one
  ``gap`` item naming exactly the seqs retention removed, up to the oldest retained one; a page
  whose first item is later than the position (items removed while it was read) gets a gap up
  to that item, and then the page is delivered, not read again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from zope.interface import implementer

from chat.producers.pages import PageSlots
from chat.producers.stream import StreamHost, StreamProducer
from chat.protocol.errors import ErrorCode
from chat.protocol.frames import encode_json
from chat.protocol.interactions import Interaction
from chat.protocol.items import gap_item
from chat.service.interfaces import IMembershipListener
from chat.stores.interface import (
    PAGE_BYTES,
    PAGE_ITEMS,
    ILogStore,
    LogItem,
    channel_log,
    inbox_log,
    within_bytes,
)

INBOX_KEY = "@"
READ_BATCH = 64  # items read from memory per turn of one cursor
FRAME_OVERHEAD = 40  # WebSocket header + `{"type":"next","id":N,"data":` + `}`, about


class Cursor:
    """A feed's position in one log, the ranges of that log it must deliver, and at most one
    page of it read from disk."""

    __slots__ = (
        "channel",
        "feed",
        "listening",
        "loading",
        "log",
        "page",
        "page_start",
        "position",
        "segments",
        "vanished",
    )

    def __init__(self, feed: FeedStream, log: str, channel: str | None) -> None:
        self.feed = feed
        self.log = log
        self.channel = channel
        self.position = 0  # the next seq to deliver
        self.segments: list[list[int | None]] = []  # [start, end or None]; a few at most
        self.listening = False
        self.loading = False
        self.page: Sequence[LogItem] | None = None  # read from disk; holds a page slot
        self.page_start = 0  # index in ``page`` of the next item to deliver
        self.vanished = 0  # a page read here came back empty: seqs up to this one are gone

    def wake(self) -> None:
        feed = self.feed
        pending = feed.pending
        if self not in pending:  # else the feed is queued already, or paused, or out of credit
            pending[self] = None
            if not (feed.queued or feed.stopped or feed.paused):  # StreamProducer.wake, inline:
                feed.outbound.ready(feed)  # this runs once per delivery

    def open_segment(self, start: int) -> None:
        if not self.segments:
            self.position = start
        self.segments.append([start, None])
        if not self.listening:
            self.feed.store.listen(self.log, self.wake)
            self.listening = True
        self.wake()

    def close_segment(self, end: int) -> None:
        if self.segments and self.segments[-1][1] is None:
            self.segments[-1][1] = end

    def following(self) -> bool:
        return bool(self.segments) and self.segments[-1][1] is None

    def shareable(self) -> bool:
        """Whether what this cursor reads next depends on its log and position only: one
        open-ended segment, no page of its own, nothing seen to vanish from here on."""
        segments = self.segments
        return (
            len(segments) == 1
            and segments[0][1] is None
            and self.page is None
            and not self.loading
            and self.vanished < self.position
        )

    def stop(self) -> None:
        """The feed ended: stop listening, give back the page."""
        if self.listening:
            self.feed.store.unlisten(self.log, self.wake)
            self.listening = False
        self.drop_page()
        self.feed.pages.forget(self.wake)

    # Pages from disk

    def load(self) -> None:
        """Read a page of the log at the position; wake when it is here."""
        if self.loading:
            return
        if not self.feed.pages.take(self.wake):
            return  # the connection holds its pages already: woken when a slot is free
        self.loading = True
        asked = self.position

        last = min(self.feed.store.last_seq(self.log), asked - 1 + PAGE_ITEMS)

        def loaded(items: Sequence[LogItem]) -> None:
            self.loading = False
            if not items and self.position == asked:
                self.vanished = last  # the store lost them: one gap, not a loop of reads
            if self.feed.stopped or not items or items[-1].seq < self.position:
                self.feed.pages.give_back()  # moot by now
            else:
                self.page, self.page_start = items, 0
            self.wake()

        def failed(reason: object) -> None:
            self.loading = False
            self.feed.pages.give_back()
            self.feed.fail(ErrorCode.INTERNAL, f"the store could not read {self.log}")

        self.feed.store.read(self.log, asked - 1, PAGE_ITEMS, PAGE_BYTES).addCallbacks(
            loaded, failed
        )

    def from_page(self, want: int) -> Sequence[LogItem] | None:
        """Up to ``want`` items of the loaded page from the position on (the first may be
        later, if retention removed the position); ``None`` when the page does not hold it."""
        page = self.page
        if page is None:
            return None
        position = self.position
        start = self.page_start
        while start < len(page) and page[start].seq < position:
            start += 1
        if start == len(page):
            self.drop_page()
            return None
        self.page_start = start
        return page[start : start + want]

    def consumed(self) -> None:
        """Items up to the position were delivered: drop the page once it is used up."""
        page = self.page
        if page is not None and page[-1].seq < self.position:
            self.drop_page()

    def drop_page(self) -> None:
        if self.page is not None:
            self.page = None
            self.page_start = 0
            self.feed.pages.give_back()


@implementer(IMembershipListener)
class FeedStream(StreamProducer):
    """The live feed of one session (route ``messages``)."""

    __slots__ = ("cursors", "inbox", "pages", "pending", "since", "store")

    def __init__(
        self,
        outbound: StreamHost,
        interaction: Interaction,
        store: ILogStore,
        username: str,
        since: Mapping[str, int],
    ) -> None:
        super().__init__(outbound, interaction)
        self.store = store
        self.since = dict(since)
        self.cursors: dict[str, Cursor] = {}
        self.pending: dict[Cursor, None] = {}  # cursors that may have items; an ordered set
        self.pages = PageSlots(1)  # the one page from disk this feed may hold
        inbox = self.inbox = Cursor(self, inbox_log(username), None)
        start = self.since.pop(INBOX_KEY, None)
        last = store.last_seq(inbox.log)
        inbox.open_segment(last + 1 if start is None else min(start, last) + 1)

    # IMembershipListener

    def joined(self, channel: str, join_seq: int) -> None:
        """The session is a member of ``channel`` since its join item ``join_seq``."""
        cursor = self.cursors.get(channel)
        if cursor is None:
            cursor = self.cursors[channel] = Cursor(self, channel_log(channel), channel)
            since = self.since.pop(channel, None)
            last = self.store.last_seq(cursor.log)
            cursor.open_segment(join_seq if since is None else min(since, last) + 1)
        elif not cursor.following():
            cursor.open_segment(join_seq)

    def left(self, channel: str, leave_seq: int) -> None:
        """The session left ``channel`` with its leave item ``leave_seq`` (delivered last)."""
        cursor = self.cursors.get(channel)
        if cursor is not None:
            cursor.close_segment(leave_seq)
            cursor.wake()

    # Producing

    def produce(self, out: list[bytes], budget: int) -> int:
        if self.paused or self.stopped:
            return 0
        size = sent = 0
        pending = self.pending
        runs = self.outbound.runs
        interaction = self.interaction
        # allowance() and spend() of StreamProducer, inlined: this loop runs once per cursor
        # per delivery in a fan-out, and `delivered` is reported once per produce.
        while pending and size < budget:
            credit = interaction.credit
            allowed = READ_BATCH if credit is None else min(READ_BATCH, credit)
            if allowed == 0:
                break  # request_n wakes us; the pending cursors stay pending
            cursor = next(iter(pending))
            del pending[cursor]
            if cursor.shareable():
                key = (cursor.log, cursor.position, allowed, budget - size, interaction.prefix)
                run = runs.get(key)
                if run is None:
                    mark = len(out)
                    added, count, more = self._read(cursor, out, allowed, budget - size)
                    if count and cursor.page is None and not cursor.loading:
                        runs[key] = (tuple(out[mark:]), added, count, cursor.position, more)
                else:
                    chunks, added, count, cursor.position, more = run
                    out.extend(chunks)
            else:
                added, count, more = self._read(cursor, out, allowed, budget - size)
            size += added
            sent += count
            if credit is not None:
                interaction.credit = credit - count
            if more:
                pending[cursor] = None  # round-robin: back of the line
            if self.stopped:
                break
        else:
            if pending and self.allowance(1):
                self.wake()
        if sent:
            self.outbound.delivered(sent)
        return size

    def _read(
        self, cursor: Cursor, out: list[bytes], allowed: int, budget: int
    ) -> tuple[int, int, bool]:
        """Deliver from one cursor: (bytes added, items sent, whether it may have more now)."""
        size = count = 0
        segments = cursor.segments
        store = self.store
        log = cursor.log
        while segments and count < allowed and size < budget:
            end = segments[0][1]
            position = cursor.position
            if end is not None and position > end:
                del segments[0]
                if segments:
                    cursor.position = max(position, segments[0][0] or 0)
                continue
            if position > store.last_seq(log):
                break  # caught up: the next append wakes the cursor
            first = max(store.first_seq(log), cursor.vanished + 1)
            if position < first:  # retention removed what this cursor still wanted
                size += self._gap(cursor, out, first - 1 if end is None else min(first - 1, end))
                count += 1
                continue
            want = allowed - count
            if end is not None:
                want = min(want, end - position + 1)
            items = cursor.from_page(want)
            if items is None:
                items = store.cached(log, position - 1, want, budget - size)
                if items is None:
                    cursor.load()
                    return size, count, False  # the load (or a free page slot) wakes it
            if not items:  # the store holds nothing here after all: wait for an append
                return size, count, False  # (never "more": that would spin this loop)
            if items[0].seq > position:  # removed while the page was read: say so, then go on
                last_missing = items[0].seq - 1 if end is None else min(items[0].seq - 1, end)
                size += self._gap(cursor, out, last_missing)
                count += 1
                continue
            items = within_bytes(items, budget - size, FRAME_OVERHEAD)
            frame_item = self.frame_item
            chunk = b"".join([frame_item(item.payload) for item in items])
            out.append(chunk)
            size += len(chunk)
            count += len(items)
            cursor.position = items[-1].seq + 1
            cursor.consumed()
        if not segments:
            cursor.stop()
            return size, count, False
        return size, count, cursor.position <= store.last_seq(log)

    def _gap(self, cursor: Cursor, out: list[bytes], last_missing: int) -> int:
        frame = self.frame_item(
            encode_json(gap_item(cursor.channel, cursor.position, last_missing))
        )
        out.append(frame)
        cursor.position = last_missing + 1
        return len(frame)

    def release(self) -> None:
        self.inbox.stop()
        for cursor in self.cursors.values():
            cursor.stop()
        self.pending.clear()
