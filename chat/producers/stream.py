"""The base of every stream producer: credit, pause/resume, and waking the connection.

A stream never writes to the transport. When it may have something to send it calls
:meth:`StreamProducer.wake`, which queues it on its connection's :class:`Outbound`; the
connection later calls :meth:`StreamProducer.produce` with a byte budget, and the stream
appends ready WebSocket frames, spending one credit per ``next``. Keeping the write in one
place is what lets a connection coalesce frames and share the transport fairly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from chat.protocol.errors import ErrorCode
from chat.protocol.frames import next_frame
from chat.protocol.interactions import Interaction

# What a feed read from one log, kept for the rest of a flush (chat.producers.feed):
# (log, position, items allowed, byte budget, interaction prefix) ->
# (the frames' chunks, their bytes, the items framed, the position after, whether more is ready)
RunKey = tuple[str, int, int, int, bytes]
Run = tuple[tuple[bytes, ...], int, int, int, bool]


class StreamHost(Protocol):
    """What a stream needs from its connection: the :class:`chat.producers.outbound.Outbound`."""

    runs: dict[RunKey, Run]  # log reads shared per flush

    def ready(self, stream: StreamProducer) -> None: ...

    def delivered(self, count: int) -> None: ...

    def finish(self, stream: StreamProducer) -> None: ...

    def fail(self, stream: StreamProducer, code: ErrorCode, message: str) -> None: ...


@implementer(IPushProducer)
class StreamProducer:
    """One outbound stream of one interaction.

    Subclasses implement :meth:`produce` and, when they hold resources (log listeners,
    timers), :meth:`release`, which runs exactly once when the stream ends for any reason.
    """

    __slots__ = (
        "__weakref__",
        "interaction",
        "on_release",
        "outbound",
        "paused",
        "queued",
        "stopped",
    )

    def __init__(self, outbound: StreamHost, interaction: Interaction) -> None:
        self.outbound = outbound
        self.interaction = interaction
        self.paused = False
        self.stopped = False
        self.queued = False  # set by Outbound while the stream waits in its ready queue
        self.on_release: Callable[[], None] | None = None  # called once when the stream stops

    # IPushProducer

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.wake()

    def stopProducing(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.release()
            if self.on_release is not None:
                self.on_release()

    # For subclasses and the connection

    def start(self) -> None:
        """Called once the stream is attached to its connection."""
        self.wake()

    def wake(self) -> None:
        """Ask the connection to call :meth:`produce` soon."""
        if not (self.queued or self.stopped or self.paused):
            self.outbound.ready(self)

    def receive(self, data: object) -> None:
        """A client ``next`` on a channel interaction; streams ignore it by default."""

    def produce(self, out: list[bytes], budget: int) -> int:
        """Append frames to ``out``, at most about ``budget`` bytes; return the bytes added.

        A stream that leaves work undone because of the budget calls :meth:`wake` again
        before returning, so that it goes to the back of the connection's queue.
        """
        raise NotImplementedError

    def release(self) -> None:
        """Free what the stream holds; called once when it stops."""

    def allowance(self, wanted: int) -> int:
        """How many of ``wanted`` items the client's credit allows now."""
        credit = self.interaction.credit
        return wanted if credit is None else min(wanted, credit)

    def spend(self, n: int) -> None:
        """``n`` items were framed: take them off the credit and count them."""
        if self.interaction.credit is not None:
            self.interaction.credit -= n
        self.outbound.delivered(n)

    def frame_item(self, payload: bytes) -> bytes:
        """A ``next`` frame of this interaction carrying an item that is already JSON."""
        return next_frame(self.interaction.prefix, payload)

    def finish(self) -> None:
        """End the stream with ``complete``."""
        self.outbound.finish(self)

    def fail(self, code: ErrorCode, message: str) -> None:
        """End the stream with ``error``."""
        self.outbound.fail(self, code, message)
