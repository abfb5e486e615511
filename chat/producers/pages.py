"""Slots for pages read from a store's disk: how many a holder may keep at once.

A stream far behind its log reads it in pages (:data:`~chat.stores.interface.PAGE_BYTES` of
JSON at most). A ``messages`` feed reads many logs, one cursor each; its cursors share one
slot, so the feed holds one page at a time however many channels it is behind in. A cursor
that finds the slot taken waits; it is woken, in turn, when the slot is given back.

The slot belongs to the feed, not to the connection: a stream stalled on its own credit must
never keep another stream of the same connection from its pages (a client that waits for one
stream before granting another credit would deadlock).
"""

from __future__ import annotations

from collections.abc import Callable

Wake = Callable[[], None]


class PageSlots:
    """At most ``size`` pages held at once; the rest wait their turn, first come first served.

    A slot given back while streams wait is handed to the first of them (it is woken and its
    next :meth:`take` succeeds), so a waiting stream is never overtaken.
    """

    __slots__ = ("free", "granted", "size", "waiting")

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self.waiting: dict[Wake, None] = {}  # an ordered set: first come, first woken
        self.granted: set[Wake] = set()  # woken with a slot kept for them

    def take(self, wake: Wake) -> bool:
        """Take a slot; ``False`` means none is free and ``wake()`` will be called when one is."""
        if wake in self.granted:
            self.granted.discard(wake)
            return True
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return True
        self.waiting[wake] = None
        return False

    def give_back(self) -> None:
        """A page was consumed or dropped: its slot goes to the first stream waiting, if any."""
        if self.waiting:
            wake = next(iter(self.waiting))
            del self.waiting[wake]
            self.granted.add(wake)
            wake()
        else:
            self.free += 1

    def forget(self, wake: Wake) -> None:
        """A stream that waited for a slot (or was granted one) has stopped."""
        self.waiting.pop(wake, None)
        if wake in self.granted:
            self.granted.discard(wake)
            self.give_back()
