"""The interfaces every backend implements: :class:`ILogStore` and :class:`IPresence`.

A *log* is named by a key: ``#<channel>`` for a channel, ``@<username>`` for an inbox (names
cannot contain ``#`` or ``@``, so keys never collide). Appending assigns the next seq (gapless,
from 1), stamps ``ts``, encodes the item's JSON exactly once, makes it durable as the backend
defines durable, and only then wakes the log's listeners: a reader never sees an item that a
crash could take back. Appends to one log are stored in the order they were called.

Reads come in two speeds. :meth:`ILogStore.cached` answers synchronously from the items a
backend keeps in memory (the live delivery path, which must never wait for a disk), or says
``None`` when it cannot; :meth:`ILogStore.read` may go to disk and returns a Deferred. Both
return a bounded page (``limit`` items, about ``max_bytes`` of JSON): readers far behind page
through a log, they never load it whole.

A store also keeps two small kinds of per-user state that must survive restarts and be shared
by the nodes of a cluster: the *dedup* record of each ``client_id`` (written atomically with the
append it deduplicates) and *read positions*.

:class:`IPresence` is who is logged in and who is in which channel, answered for this process
(memory, SQLite) or for every node sharing a Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import attrs
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

CHANNEL_PREFIX: Final = "#"
INBOX_PREFIX: Final = "@"
PAGE_ITEMS: Final = 512  # items per read at most
PAGE_BYTES: Final = 64 * 1024  # JSON bytes per read, about (at least one item)


def channel_log(channel: str) -> str:
    return CHANNEL_PREFIX + channel


def inbox_log(username: str) -> str:
    return INBOX_PREFIX + username


class LogItem:
    """One stored item: its seq and its JSON, encoded once when it was appended.

    Its ``ts`` is in the JSON (``"ts"`` is always the last field), so it is not kept twice:
    every retained item of every log is one of these, and each field costs memory.
    """

    __slots__ = ("payload", "seq")

    def __init__(self, seq: int, payload: bytes) -> None:
        self.seq = seq
        self.payload = payload

    @property
    def ts(self) -> int:
        """The item's ``ts``, read from the end of its JSON (``...,"ts":123}``)."""
        payload = self.payload
        return int(payload[payload.rindex(b":") + 1 : -1])

    def __repr__(self) -> str:
        return f"LogItem({self.seq}, {self.payload!r})"


SHORT_PAGE: Final = 8  # runs this short are taken whole: the live case, never worth measuring


def within_bytes(items: Sequence[LogItem], max_bytes: int, per_item: int = 0) -> Sequence[LogItem]:
    """The first items whose JSON, plus ``per_item`` bytes each, adds up to about
    ``max_bytes`` (at least one item). A store cuts its pages with it (``per_item`` 0); a feed
    cuts what it frames to its write budget (``per_item``: a ``next`` frame's own bytes)."""
    if len(items) <= SHORT_PAGE:
        return items
    total = 0
    for index, item in enumerate(items):
        total += len(item.payload) + per_item
        if total >= max_bytes:
            return items[: index + 1]
    return items


@attrs.frozen
class Dedup:
    """Deduplicate an append by ``(sender, target log, client_id)`` within the store's window."""

    sender: str
    client_id: str


@attrs.frozen
class Appended:
    """What an append did: the seq and ts of the item in the log appended to.

    ``duplicate``: an earlier append with the same :class:`Dedup` key was found within the
    window, nothing was appended, and ``seq``/``ts`` are the earlier item's.
    """

    seq: int
    ts: int
    duplicate: bool = False


Listener = Callable[[], None]


def history_bounds(
    first: int, last: int, before: int | None, after: int | None, limit: int
) -> tuple[int, int] | None:
    """The seqs ``(low, high)`` a ``history`` read returns from a log holding ``first..last``.

    Exclusive ``before``/``after`` bounds; when more than ``limit`` match, the newest
    ``limit``, unless ``after`` is given, then the oldest ``limit`` after it. ``None``: none.
    """
    low = max(first, (after or 0) + 1)
    high = min(last, before - 1 if before is not None else last)
    if high < low:
        return None
    if after is None:
        return max(low, high - limit + 1), high
    return low, min(high, low + limit - 1)


class ILogStore(Interface):
    """Append-only logs with retention, the directory, dedup records and read positions."""

    epoch: str = Attribute("Identifies this store's contents; changes only when it is new.")
    retention: int = Attribute("Items retained per log.")

    def start() -> Deferred[None]:
        """Connect and load; fires when the store can serve (at once for local stores)."""

    def append(
        log: str,
        fields: Mapping[str, Any],
        copy_to: str | None = None,
        dedup: Dedup | None = None,
    ) -> Deferred[Appended]:
        """Append an item whose JSON is ``fields`` plus ``seq`` and ``ts``; fire when stored.

        ``copy_to``: append the same item to that log too, atomically (a private message is
        stored in both inboxes or in neither); the answer is about ``log``. ``dedup``: when the
        same sender appended with the same ``client_id`` to the same target (``copy_to`` if
        given, else ``log``) within the dedup window, append nothing and answer the earlier
        item's seq and ts with ``duplicate``. Listeners of each log are called after the
        item is stored and readable.
        """

    def last_seq(log: str) -> int:
        """The seq of the newest item of ``log`` (0 when it has none)."""

    def first_seq(log: str) -> int:
        """The oldest seq still retained (``last_seq + 1`` when nothing is retained)."""

    def cached(
        log: str, after: int, limit: int, max_bytes: int = PAGE_BYTES
    ) -> Sequence[LogItem] | None:
        """Retained items with seq > ``after``, oldest first, from memory: a page of at most
        ``limit`` items and about ``max_bytes`` (at least one item).

        ``None`` means the backend does not hold the first of them in memory: call
        :meth:`read`. A page may end before ``limit`` even when more items exist; the
        reader compares its position with :meth:`last_seq` to know whether it caught up.
        """

    def read(
        log: str, after: int, limit: int, max_bytes: int = PAGE_BYTES
    ) -> Deferred[Sequence[LogItem]]:
        """Like :meth:`cached`, from wherever the items are."""

    def listen(log: str, listener: Listener) -> None:
        """Call ``listener()`` after each append to ``log`` (at most once per append)."""

    def unlisten(log: str, listener: Listener) -> None:
        """Stop calling ``listener`` for ``log``; unknown listeners are ignored."""

    def save_read(username: str, log: str, seq: int) -> Deferred[int]:
        """Raise ``username``'s read position in ``log`` to ``seq``; fire with the stored one
        (the larger of the old and the new: it never moves back)."""

    def read_positions(username: str) -> Deferred[dict[str, int]]:
        """Every read position of ``username``, by log; sees every earlier ``save_read``."""

    def add_channel(channel: str) -> None:
        """Record that ``channel`` exists (it then exists for good)."""

    def channels_after(after: str | None, limit: int) -> Sequence[str]:
        """Up to ``limit`` channel names sorted by code point, each greater than ``after``."""

    def has_channel(channel: str) -> bool:
        """Whether ``channel`` exists."""

    def channel_count() -> int:
        """How many channels exist."""

    def remember_user(username: str) -> None:
        """Record that ``username`` has logged in (private messages may then reach it)."""

    def knows_user(username: str) -> bool:
        """Whether ``username`` has ever logged in, as far as this process has heard."""

    def find_user(username: str) -> Deferred[bool]:
        """Like :meth:`knows_user`, but a store shared by several nodes asks them all."""

    def ping() -> Deferred[None]:
        """Fire when the backend answers a trivial query; fail when it cannot (/healthz)."""

    def close() -> Deferred[None]:
        """Finish pending writes and release resources."""


class IPresence(Interface):
    """Who holds which username, who is in which channel, who is online.

    Only ``claim`` is asynchronous (a cluster must agree atomically on who holds a username);
    everything else answers from memory, so listings and statistics never wait on a network,
    and records changes without waiting (a shared presence writes them behind).
    """

    def start() -> Deferred[None]:
        """Begin (leases, mirrors); fires when ready."""

    def stop() -> Deferred[None]:
        """Give up what this node holds, for a clean shutdown."""

    def claim(username: str, session_id: str) -> Deferred[bool]:
        """Take ``username`` for a new session; False when a live session holds it."""

    def release(username: str, session_id: str) -> None:
        """The session ended: free ``username`` (only if this session still holds it)."""

    def set_online(username: str, online: bool) -> None:
        """Whether ``username``'s session has a connection attached now."""

    def joined(channel: str, username: str) -> None:
        """``username`` is now a member of ``channel``."""

    def left(channel: str, username: str) -> None:
        """``username`` is no longer a member of ``channel``."""

    def members_after(channel: str, after: str | None, limit: int) -> Sequence[str]:
        """Up to ``limit`` members of ``channel`` sorted by code point, each above ``after``."""

    def is_online(username: str) -> bool:
        """Whether ``username`` has a live session with a connection now."""

    def member_count(channel: str) -> int:
        """How many members ``channel`` has."""

    def user_count() -> int:
        """How many sessions live (logged-in users, lingering ones included)."""
