"""The interface every log store implements (after Centrifuge's ``Broker``).

A *log* is named by a key: ``#<channel>`` for a channel, ``@<username>`` for an inbox (names
cannot contain ``#`` or ``@``, so keys never collide). Appending assigns the next seq (gapless,
from 1), stamps ``ts``, encodes the item's JSON exactly once, makes it durable as the backend
defines durable, and only then wakes the log's listeners: a reader never sees an item that a
crash could take back.

Reads come in two speeds. :meth:`ILogStore.cached` answers synchronously from the items a
backend keeps in memory (the live delivery path, which must never wait for a disk), or says
``None`` when it cannot; :meth:`ILogStore.read` may go to disk and returns a Deferred.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

CHANNEL_PREFIX: Final = "#"
INBOX_PREFIX: Final = "@"


def channel_log(channel: str) -> str:
    return CHANNEL_PREFIX + channel


def inbox_log(username: str) -> str:
    return INBOX_PREFIX + username


class LogItem:
    """One stored item: its seq, its ts, and its JSON, encoded once when it was appended."""

    __slots__ = ("payload", "seq", "ts")

    def __init__(self, seq: int, ts: int, payload: bytes) -> None:
        self.seq = seq
        self.ts = ts
        self.payload = payload

    def __repr__(self) -> str:
        return f"LogItem({self.seq}, {self.ts}, {self.payload!r})"


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
    """Append-only logs with retention, plus the directory of channels and known users."""

    epoch: str = Attribute("Identifies this store's contents; changes only when it is new.")

    def append(log: str, fields: Mapping[str, Any]) -> Deferred[LogItem]:
        """Append an item whose JSON is ``fields`` plus ``seq`` and ``ts``; fire when stored.

        Listeners of ``log`` are called after the item is stored and readable.
        """

    def last_seq(log: str) -> int:
        """The seq of the newest item of ``log`` (0 when it has none)."""

    def first_seq(log: str) -> int:
        """The oldest seq still retained (``last_seq + 1`` when nothing is retained)."""

    def cached(log: str, after: int, limit: int) -> Sequence[LogItem] | None:
        """Up to ``limit`` retained items with seq > ``after``, oldest first, from memory.

        ``None`` means the backend does not hold them in memory: call :meth:`read`.
        """

    def read(log: str, after: int, limit: int) -> Deferred[Sequence[LogItem]]:
        """Like :meth:`cached`, from wherever the items are."""

    def history(
        log: str, before: int | None, after: int | None, limit: int
    ) -> Deferred[Sequence[LogItem]]:
        """Retained items with ``after < seq < before`` (bounds optional), oldest first.

        When more than ``limit`` match: the newest ``limit``, unless ``after`` is given,
        then the oldest ``limit`` after it.
        """

    def listen(log: str, listener: Listener) -> None:
        """Call ``listener()`` after each append to ``log`` (at most once per append)."""

    def unlisten(log: str, listener: Listener) -> None:
        """Stop calling ``listener`` for ``log``; unknown listeners are ignored."""

    def add_channel(channel: str) -> None:
        """Record that ``channel`` exists (it then exists for good)."""

    def channels() -> Sequence[str]:
        """Every channel that exists, sorted by code point."""

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
