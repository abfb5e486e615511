"""The ``messages`` feed: one stream producer reading many logs by cursor.

A feed follows its session's inbox and every channel the session is (or becomes) a member
of. For each log it keeps a :class:`Cursor`: the next seq to deliver and the *segments* of
the log it must deliver (from a join item to the matching leave item, or open-ended). That
position is all the state a paused or out-of-credit feed holds; nothing is queued per
recipient. Logs wake the cursors that listen to them; a woken feed reads what is new straight
from the store's memory, frames it, and hands it to its connection.

When retention has removed items the cursor still wanted, the feed sends one ``gap`` item
naming exactly the missing seqs of that log and moves on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from chat.producers.stream import Outbound, StreamProducer
from chat.protocol.errors import ErrorCode
from chat.protocol.frames import encode_json
from chat.protocol.interactions import Interaction
from chat.stores.interface import ILogStore, LogItem, channel_log, inbox_log

INBOX_KEY = "@"
READ_BATCH = 64  # items per read: bounds how far one read overshoots the byte budget


FRAME_OVERHEAD = 40  # WebSocket header + `{"type":"next","id":N,"data":` + `}`, about
TRIM_FROM = 8  # shorter reads are sent whole (the live case): at most 8 items over budget


def _within_budget(items: Sequence[LogItem], budget: int) -> Sequence[LogItem]:
    """The first items whose frames fit ``budget`` bytes (at least one)."""
    total = 0
    for index, item in enumerate(items):
        total += len(item.payload) + FRAME_OVERHEAD
        if total >= budget:
            return items[: index + 1]
    return items


class Cursor:
    """A feed's position in one log, and the ranges of that log it must deliver."""

    __slots__ = ("channel", "feed", "listening", "loaded", "loading", "log", "position", "segments")

    def __init__(self, feed: FeedStream, log: str, channel: str | None) -> None:
        self.feed = feed
        self.log = log
        self.channel = channel
        self.position = 0  # the next seq to deliver
        self.segments: list[list[int | None]] = []  # [start, end or None]; a few at most
        self.listening = False
        self.loading = False
        self.loaded: Sequence[LogItem] | None = None

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

    def stop_listening(self) -> None:
        if self.listening:
            self.feed.store.unlisten(self.log, self.wake)
            self.listening = False

    def load(self, want: int) -> None:
        """Read items the store does not hold in memory; wake when they are here."""
        if self.loading:
            return
        self.loading = True
        position = self.position

        def loaded(items: Sequence[LogItem]) -> None:
            self.loading = False
            # The first item is later than asked when retention removed the ones before it.
            if items and items[0].seq >= self.position == position:
                self.loaded = items
            self.wake()

        def failed(reason: object) -> None:
            self.loading = False
            self.feed.fail(ErrorCode.INTERNAL, f"the store could not read {self.log}")

        self.feed.store.read(self.log, position - 1, want).addCallbacks(loaded, failed)

    def take_loaded(self) -> Sequence[LogItem] | None:
        items = self.loaded
        self.loaded = None
        if items and items[0].seq >= self.position:
            return items  # a first seq beyond the position is a gap, which _read reports
        return None

    def gap_item(self, first: int, last: int) -> bytes:
        return encode_json({"kind": "gap", "channel": self.channel, "first": first, "last": last})


class FeedStream(StreamProducer):
    """The live feed of one session (route ``messages``)."""

    __slots__ = ("cursors", "inbox", "pending", "since", "store")

    def __init__(
        self,
        outbound: Outbound,
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

    def follow(self, channel: str, join_seq: int) -> None:
        """The session is a member of ``channel`` since its join item ``join_seq``."""
        cursor = self.cursors.get(channel)
        if cursor is None:
            cursor = self.cursors[channel] = Cursor(self, channel_log(channel), channel)
            since = self.since.pop(channel, None)
            last = self.store.last_seq(cursor.log)
            cursor.open_segment(join_seq if since is None else min(since, last) + 1)
        elif not cursor.following():
            cursor.open_segment(join_seq)

    def unfollow(self, channel: str, leave_seq: int) -> None:
        """The session left ``channel`` with its leave item ``leave_seq`` (delivered last)."""
        cursor = self.cursors.get(channel)
        if cursor is not None:
            cursor.close_segment(leave_seq)
            cursor.wake()

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
        if pending and self.allowance(1):
            self.wake()
        return size

    def _read(
        self, cursor: Cursor, out: list[bytes], allowed: int, budget: int
    ) -> tuple[int, int, bool]:
        """Deliver from one cursor: (bytes added, items sent, whether it may have more)."""
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
            want = allowed - count
            if end is not None:
                want = min(want, end - position + 1)
            items = cursor.take_loaded() if cursor.loaded is not None else None
            if items is not None and items[0].seq == position:
                items = items[:want]  # credit or a leave may have shrunk ``want`` since the read
            if items is None:
                items = store.cached(log, position - 1, want)
                if items is None:
                    cursor.load(want)
                    return size, count, False  # the load wakes the cursor
            if not items:
                return size, count, False  # caught up
            first = items[0].seq
            if first > position:  # retention removed what this cursor still wanted
                last_missing = first - 1 if end is None else min(first - 1, end)
                frame = self.frame_item(cursor.gap_item(position, last_missing))
                out.append(frame)
                size += len(frame)
                count += 1
                cursor.position = last_missing + 1
                continue
            caught_up = len(items) < want
            if len(items) > TRIM_FROM:
                trimmed = _within_budget(items, budget - size)
                caught_up = caught_up and len(trimmed) == len(items)
                items = trimmed
            chunk = self._framed(log, items)
            out.append(chunk)
            size += len(chunk)
            count += len(items)
            cursor.position = items[-1].seq + 1
            if caught_up and end is None:
                return size, count, False
        if not segments:
            cursor.stop_listening()
            return size, count, False
        return size, count, cursor.position <= store.last_seq(log)

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
        self.inbox.stop_listening()
        for cursor in self.cursors.values():
            cursor.stop_listening()
        self.pending.clear()
