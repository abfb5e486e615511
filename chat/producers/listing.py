"""Finite streams: a list of items, sent as credit and the transport allow, then ``complete``.

Used by ``channels``, ``channel.users`` and ``history``. The items are a snapshot taken when the
stream opens (already encoded JSON); a backend that reads them from disk hands them over later
through :meth:`ListStream.supply`.
"""

from __future__ import annotations

from collections.abc import Sequence

from chat.producers.stream import Outbound, StreamProducer
from chat.protocol.interactions import Interaction


class ListStream(StreamProducer):
    """Sends ``items`` (JSON payloads) as ``next`` frames, then ``complete``."""

    __slots__ = ("index", "items")

    def __init__(
        self,
        outbound: Outbound,
        interaction: Interaction,
        items: Sequence[bytes] | None = None,
    ) -> None:
        super().__init__(outbound, interaction)
        self.items: Sequence[bytes] | None = items
        self.index = 0

    def supply(self, items: Sequence[bytes]) -> None:
        """The items, when they were not known at opening."""
        self.items = items
        self.wake()

    def produce(self, out: list[bytes], budget: int) -> int:
        items = self.items
        if items is None or self.paused or self.stopped:
            return 0
        count = self.allowance(len(items) - self.index)
        size = 0
        sent = 0
        while sent < count and size < budget:
            frame = self.frame_item(items[self.index + sent])
            out.append(frame)
            size += len(frame)
            sent += 1
        self.index += sent
        self.spend(sent)
        if self.index >= len(items):
            self.finish()
        elif sent == count and self.allowance(1) == 0:
            pass  # out of credit: request_n wakes us
        else:
            self.wake()  # budget spent: back of the queue
        return size
