"""Pages read from a store's disk, bounded per connection.

A stream far behind its log reads it in pages (:data:`~chat.stores.interface.PAGE_BYTES` of
JSON at most). A connection may hold at most :data:`PAGES_PER_CONNECTION` such pages at once,
whatever its streams do: a client that opens many streams and stops reading makes the server
hold a few pages and its cursors, never its backlog. A stream that finds no free slot waits;
it is woken, in turn, when one is given back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

PAGES_PER_CONNECTION: Final = 4

Wake = Callable[[], None]


class PageSlots:
    """At most ``size`` pages held at once; the rest wait their turn, first come first served.

    A slot given back while streams wait is handed to the first of them (it is woken and its
    next :meth:`take` succeeds), so a waiting stream is never overtaken.
    """

    __slots__ = ("free", "granted", "size", "waiting")

    def __init__(self, size: int = PAGES_PER_CONNECTION) -> None:
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
