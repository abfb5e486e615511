"""The one ``IPushProducer`` a connection registers with its transport.

Twisted allows one producer per transport, so this object stands for all of the connection's
outbound streams (as ``HTTPChannel`` and ``H2Connection`` do for their requests): when the
transport's buffer fills, :meth:`Outbound.pauseProducing` pauses every stream and stops
reading from the client; when it drains, :meth:`Outbound.resumeProducing` resumes them.

Writing happens in :meth:`Outbound.flush`, which the :class:`FlushScheduler` runs once per
reactor turn for every connection with work: control frames (responses, errors, completes)
first, then the ready streams round-robin, each given a slice of bytes per turn so a busy feed
cannot starve the statistics channel. Frames are joined into writes of about
``write_size`` bytes, and the loop stops as soon as the transport pauses us.

Closing goes through here too (:meth:`Outbound.close_with`): every control frame queued
before the decision to close is written, then the close frame, and nothing after it (a
conforming client drops whatever follows a close frame, RFC 6455 section 5.5.1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from twisted.internet.interfaces import IPushProducer, IReactorTime
from zope.interface import implementer

from chat.producers.stream import Run, RunKey, StreamProducer
from chat.protocol.errors import ErrorCode
from chat.protocol.interactions import Interaction, Interactions
from chat.protocol.wsframe import text_frame

SLICE_BYTES = 16 * 1024
WRITE_SIZE = 64 * 1024


class FlushScheduler:
    """Runs :meth:`Outbound.flush` for every connection with work, once per reactor turn.

    Everything that arrives in one turn (many messages read from many sockets) is written in
    the next, so a connection gets one write carrying all its new frames.

    ``runs`` keeps, for the length of one run, what a feed read from a log at a position
    (:mod:`chat.producers.feed`): subscribers at the same position with the same feed id (the
    common case in a fan-out) reuse the first one's framed chunk instead of reading and
    framing the items again.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.dirty: dict[Outbound, None] = {}
        self.scheduled = False
        self.runs: dict[RunKey, Run] = {}
        self.deliveries = 0  # `next` frames written by every stream, since start
        self.bytes_written = 0

    def schedule(self, outbound: Outbound) -> None:
        self.dirty[outbound] = None
        if not self.scheduled:
            self.scheduled = True
            self.clock.callLater(0, self.run)

    def run(self) -> None:
        self.scheduled = False
        dirty, self.dirty = self.dirty, {}
        try:
            for outbound in dirty:
                outbound.flush()
        finally:
            self.runs.clear()


@implementer(IPushProducer)
class Outbound:
    """All outbound traffic of one connection, and its producer towards the transport."""

    __slots__ = (
        "bytes_written",
        "closed",
        "control",
        "interactions",
        "pause_reading",
        "paused",
        "pauses",
        "queue",
        "resume_reading",
        "runs",
        "scheduler",
        "streams",
        "write",
    )

    def __init__(
        self,
        interactions: Interactions,
        write: Callable[[bytes], None],
        scheduler: FlushScheduler,
        pause_reading: Callable[[], None] = lambda: None,
        resume_reading: Callable[[], None] = lambda: None,
    ) -> None:
        self.interactions = interactions
        self.write = write
        self.scheduler = scheduler
        self.runs = scheduler.runs
        self.pause_reading = pause_reading
        self.resume_reading = resume_reading
        self.streams: dict[int, StreamProducer] = {}
        self.queue: list[StreamProducer] = []  # streams with something to send, in turn order
        self.control: list[bytes] = []
        self.paused = False
        self.closed = False
        self.pauses = 0  # how often the transport paused us (observability and tests)
        self.bytes_written = 0

    # IPushProducer, called by the transport

    def pauseProducing(self) -> None:
        if self.paused:
            return
        self.paused = True
        self.pauses += 1
        for stream in self.streams.values():
            stream.pauseProducing()
        self.pause_reading()

    def resumeProducing(self) -> None:
        if not self.paused or self.closed:
            return
        self.paused = False
        self.resume_reading()
        for stream in list(self.streams.values()):
            stream.resumeProducing()
        self.scheduler.schedule(self)

    def stopProducing(self) -> None:
        self.close()

    # Streams

    def attach(self, stream: StreamProducer) -> None:
        """Start ``stream``, which then delivers until it ends or is cancelled."""
        self.streams[stream.interaction.id] = stream
        if self.paused:
            stream.pauseProducing()
        stream.start()

    def stream_of(self, interaction: Interaction) -> StreamProducer | None:
        stream = self.streams.get(interaction.id)
        return stream if stream is not None and stream.interaction is interaction else None

    def cancel(self, interaction: Interaction) -> None:
        """The client cancelled: stop the stream at once, whatever it was doing."""
        stream = self.stream_of(interaction)
        if stream is not None:
            self._forget(stream)
            stream.stopProducing()

    def ready(self, stream: StreamProducer) -> None:
        stream.queued = True
        queue = self.queue
        queue.append(stream)
        if len(queue) == 1:  # else scheduled already, or paused (resuming schedules)
            self.scheduler.schedule(self)

    def finish(self, stream: StreamProducer) -> None:
        self._end(stream, self.interactions.complete(stream.interaction))

    def fail(self, stream: StreamProducer, code: ErrorCode, message: str) -> None:
        self._end(stream, self.interactions.fail(stream.interaction, code, message))

    def _end(self, stream: StreamProducer, frame: bytes | None) -> None:
        self._forget(stream)
        stream.stopProducing()
        if frame is not None:
            self.send(frame)

    def _forget(self, stream: StreamProducer) -> None:
        """Drop every reference to ``stream``, even while paused (no flush will run)."""
        if self.streams.get(stream.interaction.id) is stream:
            del self.streams[stream.interaction.id]
        if stream.queued:
            stream.queued = False
            with contextlib.suppress(ValueError):  # not there while its turn is being run
                self.queue.remove(stream)

    # Control frames and writing

    def send(self, payload: bytes) -> None:
        """Queue one frame that is not a stream item (response, error, complete)."""
        if self.closed:
            return
        self.control.append(text_frame(payload))
        self.scheduler.schedule(self)

    def close_with(self, send_close: Callable[[], None]) -> None:
        """Write the control frames queued so far, then the close frame (``send_close``), and
        nothing after it: every stream stops and every interaction ends."""
        if self.closed:
            return
        if self.control:
            out, self.control = self.control, []
            self._write(out, sum(map(len, out)))
        send_close()
        self.close()

    def flush(self) -> None:
        """Write control frames, then stream frames until done or paused."""
        if self.closed:
            return
        out = self.control
        self.control = []
        size = sum(map(len, out))
        while self.queue and not self.paused:
            turn, self.queue = self.queue, []  # streams woken during this turn go next
            for index, stream in enumerate(turn):
                if self.paused:  # the transport filled up: the rest keep their places
                    self.queue[:0] = turn[index:]
                    break
                stream.queued = False
                if stream.stopped:
                    continue
                size += stream.produce(out, SLICE_BYTES)
                if size >= WRITE_SIZE:
                    self._write(out, size)
                    out = []
                    size = 0
        if out:
            self._write(out, size)

    def delivered(self, count: int) -> None:
        """Streams report the ``next`` frames they produced (for /metrics)."""
        self.scheduler.deliveries += count

    def _write(self, frames: list[bytes], size: int) -> None:
        self.bytes_written += size
        self.scheduler.bytes_written += size
        self.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def close(self) -> None:
        """The connection is gone: stop every stream and forget every interaction."""
        if self.closed:
            return
        self.closed = True
        streams = list(self.streams.values())
        self.streams.clear()
        self.queue.clear()
        self.control.clear()
        for stream in streams:
            stream.stopProducing()
        self.interactions.close_all()
