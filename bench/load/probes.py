"""Probe subscribers: a few subscribers that parse every frame they get.

They check the server's work — each ``seq`` follows the previous one of the same log, no
``gap`` — and measure publish-to-deliver latency from the send time each message carries
(:func:`bench.load.payloads.sent_at_ns`). The bulk subscribers only count.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from bench.load.conn import Conn
from bench.load.framing import OP_PING, FrameReader
from bench.load.loop import Loop
from bench.load.marks import BUF, BUFVIEW, MSG_MARK
from bench.load.payloads import sent_at_ns

MAX_PROBLEMS = 20


class ProbeState:
    """What the probes of one run saw: latency samples (sent ns, received ns) and problems."""

    def __init__(self) -> None:
        self.latencies: list[tuple[int, int]] = []
        self.problems: list[str] = []

    def problem(self, line: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(line)

    def latencies_ms(self, after_ns: int = 0) -> list[float]:
        """Latency samples (ms) of messages sent at or after ``after_ns``."""
        return [(r - s) / 1e6 for s, r in self.latencies if s >= after_ns]


def install(
    loop: Loop, probes: list[Conn], counts: list[int], state: ProbeState, since: dict[str, int]
) -> None:
    """Give each probe a parsing read handler; ``counts[k]`` counts probe k's messages.

    ``since`` holds each log's last seq before the measurement (a channel name, or ``"@"``
    for the probe's own inbox, which starts at 0). One channel per probe is parsed with
    byte searches (the fan-out's rate); several logs with :mod:`json`.
    """
    for k, c in enumerate(probes):
        c.idx = k
        c.state = "counting"
        assert c.sock is not None
        last = {ch: since.get(ch, 0) for ch in c.channels}
        last["@"] = since.get("@", 0)
        loop.handlers[c.fd] = _handler(c, c.sock, c.reader, last, counts, state)


def _handler(
    c: Conn,
    sock: socket.socket,
    reader: FrameReader,
    last: dict[str, int],
    counts: list[int],
    state: ProbeState,
) -> Any:
    single = len(last) == 2  # one channel + the inbox: the fast byte-level parse
    only = next(iter(last)) if single else ""

    def handler(ev: int) -> None:
        try:
            n = sock.recv_into(BUF)
        except BlockingIOError:
            return
        except OSError:
            n = 0
        if n == 0:
            c.fail("probe closed")
            state.problem(f"{c.name}: connection closed")
            return
        now = time.monotonic_ns()
        got = 0
        for opcode, payload in reader.feed(BUFVIEW[:n]):
            if opcode == OP_PING:
                c.pong(payload)
                continue
            if opcode != 1:
                continue
            if MSG_MARK in payload:
                if single and b'"channel":null' not in payload:
                    i = payload.index(b'"seq":') + 6
                    seq = int(payload[i : payload.index(b",", i)])
                    key = only
                else:
                    item = json.loads(payload)["data"]
                    seq = item["seq"]
                    key = item["channel"] or "@"
                if seq != last.get(key, 0) + 1:
                    state.problem(f"{c.name}: {key} seq {seq} after {last.get(key)}")
                last[key] = seq
                state.latencies.append((sent_at_ns(payload), now))
                got += 1
            elif b'"kind":"gap"' in payload:
                state.problem(f"{c.name}: gap {payload[:200]!r}")
        counts[c.idx] += got

    return handler
