"""The ``messages`` feed: one stream producer reading many logs by cursor.

A feed follows its session's inbox and every channel the session is (or becomes) a member
of. For each log it keeps a :class:`Cursor`: the next seq to deliver and the *segments* of
the log it must deliver (from a join item to the matching leave item, or open-ended). That
position is all the state a paused or out-of-credit feed holds; nothing is queued per
recipient. Logs wake the cursors that listen to them; a woken feed reads what is new straight
from the store's memory (:meth:`~chat.stores.interface.ILogStore.cached`), frames it, and hands
it to its connection.

A cursor further behind than the store's memory reads the log from disk, a page at a time
(:meth:`Cursor.load`), holding one of its connection's page slots
(:mod:`chat.producers.pages`) while the page is consumed. The rules that make this correct by
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

from chat.producers.stream import StreamHost, StreamProducer
from chat.protocol.errors import ErrorCode
from chat.protocol.frames import encode_json
from chat.protocol.interactions import Interaction
from chat.protocol.items import gap_item
from chat.service.interfaces import IMembershipListener
from chat.stores.interface import PAGE_BYTES, PAGE_ITEMS, ILogStore, LogItem, channel_log, inbox_log

INBOX_KEY = "@"
READ_BATCH = 64  # items read from memory per turn of one cursor
FRAME_OVERHEAD = 40  # WebSocket header + `{"type":"next","id":N,"data":` + `}`, about
TRIM_FROM = 8  # shorter runs are sent whole (the live case): at most 8 items over budget


def _within_budget(items: Sequence[LogItem], budget: int) -> Sequence[LogItem]:
    """The first items whose frames fit ``budget`` bytes (at least one)."""
    if len(items) <= TRIM_FROM:
        return items
    total = 0
    for index, item in enumerate(items):
        total += len(item.payload) + FRAME_OVERHEAD
        if total >= budget:
            return items[: index + 1]
    return items


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
        pending = self.feed.pending
        if self not in pending:  # else the feed is queued already, or paused, or out of credit
            pending[self] = None
            self.feed.wake()

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

    def stop(self) -> None:
        """The feed ended: stop listening, give back the page."""
        if self.listening:
            self.feed.store.unlisten(self.log, self.wake)
            self.listening = False
        self.drop_page()
        self.feed.outbound.pages.forget(self.wake)

    # Pages from disk

    def load(self) -> None:
        """Read a page of the log at the position; wake when it is here."""
        if self.loading:
            return
        if not self.feed.outbound.pages.take(self.wake):
            return  # the connection holds its pages already: woken when a slot is free
        self.loading = True
        asked = self.position

        last = min(self.feed.store.last_seq(self.log), asked - 1 + PAGE_ITEMS)

        def loaded(items: Sequence[LogItem]) -> None:
            self.loading = False
            if not items and self.position == asked:
                self.vanished = last  # the store lost them: one gap, not a loop of reads
            if self.feed.stopped or not items or items[-1].seq < self.position:
                self.feed.outbound.pages.give_back()  # moot by now
            else:
                self.page, self.page_start = items, 0
            self.wake()

        def failed(reason: object) -> None:
            self.loading = False
            self.feed.outbound.pages.give_back()
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
            self.feed.outbound.pages.give_back()


@implementer(IMembershipListener)
class FeedStream(StreamProducer):
    """The live feed of one session (route ``messages``)."""

    __slots__ = ("cursors", "inbox", "pending", "since", "store")

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
        size = 0
        pending = self.pending
        while pending and size < budget:
            allowed = self.allowance(READ_BATCH)
            if allowed == 0:
                return size  # request_n wakes us; the pending cursors stay pending
            cursor = next(iter(pending))
            del pending[cursor]
            added, count, more = self._read(cursor, out, allowed, budget - size)
            size += added
            self.spend(count)
            if more:
                pending[cursor] = None  # round-robin: back of the line
            if self.stopped:
                return size
        if pending and self.allowance(1):
            self.wake()
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
            if not items:
                break
            if items[0].seq > position:  # removed while the page was read: say so, then go on
                last_missing = items[0].seq - 1 if end is None else min(items[0].seq - 1, end)
                size += self._gap(cursor, out, last_missing)
                count += 1
                continue
            items = _within_budget(items, budget - size)
            chunk = self._framed(log, items)
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

    def _framed(self, log: str, items: Sequence[LogItem]) -> bytes:
        """The ``next`` frames of ``items`` for this interaction, joined; shared per flush."""
        prefix = self.interaction.prefix
        key = (log, items[0].seq, items[-1].seq, prefix)
        frames = self.outbound.frames
        chunk = frames.get(key)
        if chunk is None:
            frame_item = self.frame_item
            chunk = frames[key] = b"".join([frame_item(item.payload) for item in items])
        return chunk

    def release(self) -> None:
        self.inbox.stop()
        for cursor in self.cursors.values():
            cursor.stop()
        self.pending.clear()
