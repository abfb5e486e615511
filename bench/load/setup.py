"""Setting up groups of connections: connect and log in, join channels, open feeds.

Everything here waits for answers with a deadline and raises :class:`~bench.load.loop.Timeout`
with a status line. Requests go out in bounded batches so thousands of answers are never all
in flight at once (the servers allow 64 open interactions per connection, and a burst of
answers would only measure the kernel's buffers).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from bench.load.conn import Conn, Tally
from bench.load.loop import Loop, Timeout

CONNECT_CONCURRENCY = 100  # connections connecting or handshaking at once during setup

# Request ids used during setup. Each connection's ids are unique among its open ones.
LOGIN_ID = 1
FEED_ID = 2
FEED_CHECK_ID = 4  # round trip after opening the feed: its answer means the feed is open
JOIN_BASE_ID = 10  # channel.join of a connection's k-th channel: JOIN_BASE_ID + k


def open_all(
    loop: Loop,
    conns: list[Conn],
    tally: Tally,
    timeout: float,
    rcvbuf: int | None = None,
    concurrency: int = CONNECT_CONCURRENCY,
    login: bool = True,
) -> None:
    """Connect and handshake every connection, at most ``concurrency`` at a time.

    With ``login``, each sends its ``login`` request (id 1) as soon as it is open (the chat
    server closes connections that do not log in within 10 s), and this returns once every
    one is answered.
    """
    for c in conns:
        c.login_on_open = login
    logged_in = tally.answered.get(LOGIN_ID, 0)
    waiting = deque(conns)
    base = tally.opened
    deadline = time.monotonic() + timeout
    while tally.opened - base < len(conns):
        tally.check()
        in_flight = len(conns) - len(waiting) - (tally.opened - base)
        while waiting and in_flight < concurrency:
            waiting.popleft().start(rcvbuf)
            in_flight += 1
        if time.monotonic() > deadline:
            raise Timeout(f"opening: {tally.opened - base}/{len(conns)} open after {timeout}s")
        loop.poll(0.02)
    tally.check()
    while login and tally.answered.get(LOGIN_ID, 0) - logged_in < len(conns):
        tally.check()
        if time.monotonic() > deadline:
            raise Timeout(
                f"logins: {tally.answered.get(LOGIN_ID, 0) - logged_in}/{len(conns)} "
                f"answered after {timeout}s"
            )
        loop.poll(0.02)
    tally.check()


def ask_all(
    loop: Loop,
    conns: list[Conn],
    tally: Tally,
    fid: int | Iterable[int],
    build: Callable[[Conn], None],
    timeout: float,
    batch: int = 500,
) -> None:
    """Send requests on every connection (``build`` sends them) and wait for all answers.

    ``fid`` is the id (or the ids) ``build`` uses; this returns once each has been answered on
    every connection. Connections are asked in batches of ``batch``.
    """
    fids = [fid] if isinstance(fid, int) else list(fid)
    base = {f: tally.answered.get(f, 0) for f in fids}
    deadline = time.monotonic() + timeout
    sent = 0
    while True:
        tally.check()
        done = min(tally.answered.get(f, 0) - base[f] for f in fids)
        if done >= len(conns):
            return
        while sent < len(conns) and sent - done < batch:
            build(conns[sent])
            sent += 1
        if time.monotonic() > deadline:
            raise Timeout(f"answers to ids {fids}: {done}/{len(conns)} after {timeout}s")
        loop.poll(0.02)


def join_channels(loop: Loop, conns: list[Conn], tally: Tally, timeout: float) -> dict[str, int]:
    """Every connection joins each of its ``channels``; returns the highest join seq per channel.

    The joins of one connection are pipelined (the answers of a connection come in order on
    every server here). The highest seq of each channel is what feeds later start after, so
    that nobody's feed carries the setup's join items.
    """
    if not conns:
        return {}
    most = max(len(c.channels) for c in conns)

    def build(c: Conn) -> None:
        for k, channel in enumerate(c.channels):
            c.request(JOIN_BASE_ID + k, "channel.join", {"channel": channel})
        for k in range(len(c.channels), most):  # so every connection answers every id
            c.request(JOIN_BASE_ID + k, "channel.join", {"channel": c.channels[0]})

    ask_all(loop, conns, tally, range(JOIN_BASE_ID, JOIN_BASE_ID + most), build, timeout)
    last: dict[str, int] = {}
    for c in conns:
        for k, channel in enumerate(c.channels):
            seq = c.answer(JOIN_BASE_ID + k)["seq"]
            last[channel] = max(last.get(channel, 0), seq)
    return last


def open_feeds(
    loop: Loop,
    conns: list[Conn],
    tally: Tally,
    last_seqs: dict[str, int],
    epoch: str,
    timeout: float,
) -> None:
    """Open each connection's ``messages`` feed after ``last_seqs`` of its channels.

    Then a round trip (an idempotent ``channel.join`` of its first channel, which appends
    nothing) whose answer means the feed is open: requests are handled in order.
    """

    def build(c: Conn) -> None:
        since = {ch: last_seqs[ch] for ch in c.channels}
        c.request(FEED_ID, "messages", {"since": since, "epoch": epoch}, kind="stream")
        c.request(FEED_CHECK_ID, "channel.join", {"channel": c.channels[0]})

    ask_all(loop, conns, tally, FEED_CHECK_ID, build, timeout)


def merge_max(into: dict[str, int], other: dict[str, Any]) -> dict[str, int]:
    """``into`` updated with the larger seq per channel of ``other``."""
    for channel, seq in other.items():
        into[channel] = max(into.get(channel, 0), int(seq))
    return into
