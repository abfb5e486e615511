"""The ``statistics`` channel: a ticker that sends a snapshot at once and then every period.

A snapshot is taken when it is written, so it is never stale, and at most one is ever due: a
tick that finds the stream paused or without credit is skipped, not queued. A client
``next`` changes the ids and/or the period; the change sends a snapshot at once and restarts
the period. Invalid changes end the interaction with ``invalid_data``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from chat.producers.stream import StreamHost, StreamProducer
from chat.protocol.errors import ProtocolError
from chat.protocol.frames import encode_json
from chat.protocol.interactions import Interaction


@attrs.frozen
class StatisticsOptions:
    ids: tuple[str, ...]
    period: float


Snapshot = Callable[[Sequence[str]], dict[str, int]]
ParseChange = Callable[[object, StatisticsOptions], StatisticsOptions]


class StatisticsStream(StreamProducer):
    """Sends ``snapshot(ids)`` now and every ``period`` seconds, as credit allows."""

    __slots__ = ("clock", "due", "options", "parse_change", "snapshot", "timer")

    def __init__(
        self,
        outbound: StreamHost,
        interaction: Interaction,
        clock: IReactorTime,
        snapshot: Snapshot,
        options: StatisticsOptions,
        parse_change: ParseChange,
    ) -> None:
        super().__init__(outbound, interaction)
        self.clock = clock
        self.snapshot = snapshot
        self.options = options
        self.parse_change = parse_change
        self.due = False  # a snapshot is to be sent, taken when it is written
        self.timer: IDelayedCall | None = None

    def start(self) -> None:
        self._restart()

    def receive(self, data: object) -> None:
        try:
            self.options = self.parse_change(data, self.options)
        except ProtocolError as exc:
            self.fail(exc.code, exc.message)
            return
        self._restart()

    def _restart(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.due = True
        self.timer = self.clock.callLater(self.options.period, self._tick)
        self.wake()

    def _tick(self) -> None:
        self.timer = self.clock.callLater(self.options.period, self._tick)
        if not self.paused and self.allowance(1):
            self.due = True
            self.wake()

    def produce(self, out: list[bytes], budget: int) -> int:
        if not self.due or self.paused or self.stopped or not self.allowance(1):
            return 0
        self.due = False
        frame = self.frame_item(encode_json(self.snapshot(self.options.ids)))
        out.append(frame)
        self.spend(1)
        return len(frame)

    def release(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
