"""Closed-loop publishing from pre-built requests: ingest and the stalled consumer's load.

Requests are built and masked once (a ring of ``4 * window`` ids per connection, reused only
long after their answer came: the servers answer a connection's requests in order), so the
load process spends its time sending, not building frames.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.load.conn import Conn
from bench.load.loop import Loop
from bench.load.payloads import content_length, message_request
from bench.procstat import own_cpu_seconds


class Ring:
    """Pre-built ``message`` requests of one connection, handed out ``n`` at a time."""

    __slots__ = ("frames", "pos")

    def __init__(self, channel: str, content: bytes, size: int, first_id: int = 10) -> None:
        self.frames = [message_request(first_id + k, channel, content) for k in range(size)]
        self.pos = 0

    def take(self, n: int) -> bytes:
        """The next ``n`` requests as one write (``n`` at most the ring's size)."""
        frames, p = self.frames, self.pos
        size = len(frames)
        self.pos = (p + n) % size
        if p + n <= size:
            return b"".join(frames[p : p + n])
        return b"".join(frames[p:] + frames[: p + n - size])


def run_ingest(
    loop: Loop,
    conns: list[Conn],
    channel: str,
    window: int,
    duration: float,
    drain_timeout: float,
) -> tuple[int, int, float, float, int]:
    """Each connection keeps ``window`` message requests in flight for ``duration`` seconds.

    Returns (acks within the duration, error answers, own CPU s, wall s, acks after it).
    Requests are pre-built and masked once (a ring of 4 * window ids, reused only long after
    their answer came: the server answers a connection's requests in order).
    """
    length = content_length(channel, conns[0].name if conns else "p")
    content = b"y" * length
    rings = [Ring(channel, content, 4 * window) for _c in conns]
    acks = [0] * len(conns)
    errors = [0] * len(conns)
    sending = [True]

    def sender(i: int, c: Conn, n: int) -> None:
        c.send(rings[i].take(n))

    def make_handler(i: int, c: Conn) -> Callable[[int], None]:
        def on_acks(got: int, bad: int) -> None:
            acks[i] += got
            errors[i] += bad
            if sending[0]:
                sender(i, c, got + bad)  # an error ends its request too

        return c.ack_handler(on_acks)

    for i, c in enumerate(conns):
        loop.handlers[c.fd] = make_handler(i, c)
    cpu0 = own_cpu_seconds()
    t0 = time.monotonic()
    for i, c in enumerate(conns):
        sender(i, c, window)
    end = t0 + duration
    while time.monotonic() < end:
        loop.poll(0.005)
    in_time = sum(acks)
    wall = time.monotonic() - t0
    cpu = own_cpu_seconds() - cpu0
    sending[0] = False
    expected = in_time + window * len([c for c in conns if not c.closed])
    deadline = time.monotonic() + drain_timeout
    while sum(acks) < expected and time.monotonic() < deadline:
        loop.poll(0.01)
    return in_time, sum(errors), cpu, wall, sum(acks) - in_time
