"""Finite streams that page through their source: ``channels``, ``channel.users``, ``history``,
``conversations``.

A listing never takes a snapshot of its source: it holds one page of encoded items at a time
and asks its source for the next page (after the last name, or the last seq, it sent) only when
the page has been sent, as credit and the transport allow. So a stream with ``credit: 1`` over
ten thousand channels holds one page, not ten thousand items; the directory and the logs stay
the source of truth.

:class:`PagedStream` is the base: a subclass writes ``async def run()``, which calls
:meth:`PagedStream.emit` with each page and awaits it (the await returns once the page is sent);
when ``run`` returns, the stream completes. A stream holds one page at a time (from memory or
from a store's disk, at most 512 items / about 64 KiB of JSON), whatever its credit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Final

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chat.producers.stream import StreamHost, StreamProducer
from chat.protocol.errors import ErrorCode
from chat.protocol.frames import encode_kept
from chat.protocol.interactions import Interaction
from chat.protocol.items import is_unread, sent_prefix
from chat.stores.interface import PAGE_BYTES, PAGE_ITEMS, ILogStore, IPresence, LogItem

NAMES_PER_PAGE: Final = 64

logger = Logger()


class StreamStopped(Exception):
    """The stream ended (cancelled, or its connection closed) while its source was read."""


class PagedStream(StreamProducer):
    """Sends the pages its :meth:`run` emits, one at a time, then ``complete``."""

    __slots__ = ("done", "index", "page", "sent")

    def __init__(self, outbound: StreamHost, interaction: Interaction) -> None:
        super().__init__(outbound, interaction)
        self.page: Sequence[bytes] = ()
        self.index = 0
        self.sent: Deferred[None] | None = None  # fires when the page is sent
        self.done = False

    def start(self) -> None:
        Deferred.fromCoroutine(self.run()).addCallbacks(self._ran, self._failed)

    async def run(self) -> None:
        """Emit every page, in order."""
        raise NotImplementedError

    def emit(self, items: Sequence[bytes]) -> Deferred[None]:
        """Send ``items`` (JSON payloads); the Deferred fires once they are all sent."""
        if self.stopped:
            raise StreamStopped
        self.page, self.index = items, 0
        sent = self.sent = Deferred()
        if not items:
            self._page_sent()
        else:
            self.wake()
        return sent

    def _page_sent(self) -> None:
        self.page = ()
        sent, self.sent = self.sent, None
        if sent is not None:
            sent.callback(None)

    def _ran(self, _: object) -> None:
        self.done = True
        if not self.stopped:
            self.wake()

    def _failed(self, failure: Failure) -> None:
        if failure.check(StreamStopped) or self.stopped:
            return
        logger.failure("stream {route} failed", failure, route=self.interaction.route)
        self.fail(ErrorCode.INTERNAL, "the server failed to read the store")

    def produce(self, out: list[bytes], budget: int) -> int:
        if self.paused or self.stopped:
            return 0
        page = self.page
        count = self.allowance(len(page) - self.index)
        size = sent = 0
        while sent < count and size < budget:
            frame = self.frame_item(page[self.index + sent])
            out.append(frame)
            size += len(frame)
            sent += 1
        self.index += sent
        self.spend(sent)
        if self.index >= len(page) and self.sent is not None:
            self._page_sent()  # run() goes on, and may emit the next page at once
        if self.stopped:
            return size
        if self.done and self.sent is None:
            self.finish()
        elif self.index < len(self.page) and self.allowance(1):
            self.wake()  # budget spent: back of the queue (out of credit: request_n wakes us)
        return size

    def release(self) -> None:
        sent, self.sent = self.sent, None
        if sent is not None and not sent.called:
            sent.errback(StreamStopped())


class ChannelsStream(PagedStream):
    """``channels``: every channel sorted by name, with its member count."""

    __slots__ = ("presence", "store")

    def __init__(
        self, outbound: StreamHost, interaction: Interaction, store: ILogStore, presence: IPresence
    ) -> None:
        super().__init__(outbound, interaction)
        self.store = store
        self.presence = presence

    async def run(self) -> None:
        after: str | None = None
        while names := self.store.channels_after(after, NAMES_PER_PAGE):
            count = self.presence.member_count
            await self.emit([encode_kept({"channel": n, "users": count(n)}) for n in names])
            after = names[-1]


class MembersStream(PagedStream):
    """``channel.users``: the members of one channel sorted by name, and whether online."""

    __slots__ = ("channel", "presence")

    def __init__(
        self, outbound: StreamHost, interaction: Interaction, presence: IPresence, channel: str
    ) -> None:
        super().__init__(outbound, interaction)
        self.presence = presence
        self.channel = channel

    async def run(self) -> None:
        after: str | None = None
        online = self.presence.is_online
        while names := self.presence.members_after(self.channel, after, NAMES_PER_PAGE):
            await self.emit([encode_kept({"username": n, "online": online(n)}) for n in names])
            after = names[-1]


Match = Callable[[bytes], bool]


class LogPages:
    """Reads ``low..high`` of one log forward, a page at a time, for a :class:`PagedStream`."""

    def __init__(self, stream: PagedStream, store: ILogStore, log_key: str) -> None:
        self.stream = stream
        self.store = store
        self.log = log_key

    async def page(self, low: int, high: int) -> Sequence[LogItem]:
        """Items from ``low`` (or the oldest still retained after it) to at most ``high``.

        From memory when the store holds them; else from disk.
        """
        limit = min(PAGE_ITEMS, high - low + 1)
        items = self.store.cached(self.log, low - 1, limit, PAGE_BYTES)
        if items is None:
            items = await self.store.read(self.log, low - 1, limit, PAGE_BYTES)
            if self.stream.stopped:
                raise StreamStopped
        return [item for item in items if item.seq <= high]


async def scan(pages: LogPages, low: int, high: int, match: Match) -> list[int]:
    """The seqs of the items in ``low..high`` whose JSON ``match`` accepts (a window of at
    most :data:`PAGE_ITEMS` seqs, so the list stays small)."""
    found: list[int] = []
    while low <= high:
        items = await pages.page(low, high)
        if not items:
            break
        found.extend(item.seq for item in items if match(item.payload))
        low = items[-1].seq + 1
    return found


async def count(pages: LogPages, low: int, high: int, match: Match) -> int:
    """How many items in ``low..high`` ``match`` accepts, a window at a time."""
    total = 0
    while low <= high:
        window_high = min(high, low + PAGE_ITEMS - 1)
        total += len(await scan(pages, low, window_high, match))
        low = window_high + 1
    return total


class HistoryStream(PagedStream):
    """``history``: the stored items of a log between bounds fixed when it opened.

    With ``match`` (``history`` with ``user``), only the items it accepts are sent: the newest
    ``limit`` of them, or with ``after`` the oldest ``limit`` — found by counting backwards in
    windows of seqs first, so that nothing but one page is ever held.
    """

    __slots__ = ("after", "high", "limit", "low", "match", "pages")

    def __init__(
        self,
        outbound: StreamHost,
        interaction: Interaction,
        store: ILogStore,
        log_key: str,
        bounds: tuple[int, int] | None,
        limit: int,
        match: Match | None = None,
        after: bool = False,
    ) -> None:
        super().__init__(outbound, interaction)
        self.pages = LogPages(self, store, log_key)
        self.low, self.high = bounds if bounds is not None else (1, 0)
        self.limit = limit
        self.match = match
        self.after = after  # the oldest ``limit`` matches, not the newest

    async def run(self) -> None:
        low, high, match = self.low, self.high, self.match
        left = self.limit
        if match is not None and not self.after:
            low = await self._start_of_newest(match)
        while low <= high and left > 0:
            items = await self.pages.page(low, high)
            if not items:
                return
            low = items[-1].seq + 1
            payloads = [item.payload for item in items if match is None or match(item.payload)]
            if payloads:
                await self.emit(payloads[:left])
                left -= len(payloads[:left])

    async def _start_of_newest(self, match: Match) -> int:
        """The seq of the ``limit``-th newest match in ``low..high`` (``low`` if fewer)."""
        counted = 0
        window_high = self.high
        while window_high >= self.low:
            window_low = max(self.low, window_high - PAGE_ITEMS + 1)
            seqs = await scan(self.pages, window_low, window_high, match)
            if counted + len(seqs) >= self.limit:
                return seqs[len(seqs) - (self.limit - counted)]
            counted += len(seqs)
            window_high = window_low - 1
        return self.low


ConversationRow = tuple[str | None, str, int]  # channel (None: the inbox), log, last seq


class ConversationsStream(PagedStream):
    """``conversations``: per member channel and for the inbox, the last seq, the read
    position and the number of messages by others after it (retained ones only)."""

    __slots__ = ("positions", "rows", "store", "username")

    def __init__(
        self,
        outbound: StreamHost,
        interaction: Interaction,
        store: ILogStore,
        username: str,
        rows: Sequence[ConversationRow],
        positions: Deferred[dict[str, int]],
    ) -> None:
        super().__init__(outbound, interaction)
        self.store = store
        self.username = username
        self.rows = rows
        self.positions = positions

    async def run(self) -> None:
        positions = await self.positions
        for channel, log_key, last in self.rows:
            read = min(positions.get(log_key, 0), last)
            own = sent_prefix(channel, self.username)
            low = max(read + 1, self.store.first_seq(log_key))
            pages = LogPages(self, self.store, log_key)
            unread = await count(pages, low, last, partial(is_unread, own=own))
            row = {"channel": channel, "last_seq": last, "read_seq": read, "unread": unread}
            await self.emit([encode_kept(row)])
