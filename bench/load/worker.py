"""Worker processes: the bulk subscribers, ingest publishers and idle connections.

The coordinator (:mod:`bench.load.coordinator`) forks ``--workers`` of them and drives each
over a pipe with ``(command, kwargs)`` messages; a worker answers each command with one dict
(``{"error": ...}`` if it raised). While counting, a worker publishes its subscribers' lowest
and total delivery counts in a shared array every millisecond, so the coordinator's
closed-loop publisher can see the slowest subscriber without a round trip.
"""

from __future__ import annotations

import os
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from bench.load.burst import storm
from bench.load.conn import Conn, Tally
from bench.load.loop import EPOLLIN, Loop
from bench.load.publishing import run_ingest
from bench.load.setup import ask_all, join_channels, open_all, open_feeds
from bench.procstat import own_cpu_seconds, raise_nofile

Target = tuple[str, int, str]


class Worker:
    """One worker process: obeys commands from the coordinator over a pipe."""

    def __init__(self, wid: int, pipe: Connection, shared: Any, target: Target) -> None:
        self.wid = wid
        self.pipe = pipe
        self.shared = shared  # RawArray: [min count, total count] per worker
        self.target = target
        self.loop = Loop()
        self.tally = Tally()
        self.conns: list[Conn] = []
        self.by_name: dict[str, Conn] = {}
        self.counts: list[int] = []
        self.counting = False
        self.exit = False
        self.cpu0 = 0.0
        self.wall0 = 0.0
        self.ingest_window = 0
        self.ingest_channel = ""
        self.storm_conns: list[Conn] = []
        self.loop.add(pipe.fileno(), self.on_command, EPOLLIN)

    def run(self) -> None:
        last_share = 0.0
        while not self.exit:
            self.loop.poll(0.001 if self.counting else 0.05)
            if self.counting:
                now = time.monotonic()
                if now - last_share >= 0.001:
                    last_share = now
                    self.share()

    def share(self) -> None:
        counts = self.counts
        self.shared[2 * self.wid] = min(counts) if counts else 1 << 62
        self.shared[2 * self.wid + 1] = sum(counts)

    def on_command(self, ev: int) -> None:
        try:
            name, args = self.pipe.recv()
        except EOFError:
            self.exit = True
            return
        try:
            reply = getattr(self, "cmd_" + name)(**args)
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        if reply is not None:
            self.pipe.send(reply)

    def _new(self, names: list[str]) -> list[Conn]:
        base = len(self.conns)
        conns = [Conn(self.loop, self.target, n, self.tally, base + i) for i, n in enumerate(names)]
        self.conns.extend(conns)
        self.by_name.update((c.name, c) for c in conns)
        self.counts.extend(0 for _ in conns)
        return conns

    # subscribers: connect, then join and open feeds in the order the coordinator says

    def cmd_connect(self, specs: list[tuple[str, list[str]]], timeout: float) -> dict[str, Any]:
        """Connect and log in ``(name, channels)`` subscribers; nothing joined yet."""
        t0 = time.monotonic()
        conns = self._new([name for name, _ in specs])
        for c, (_, channels) in zip(conns, specs, strict=True):
            c.channels = list(channels)
        open_all(self.loop, conns, self.tally, timeout)
        epoch = conns[0].answer(1)["epoch"] if conns else None
        return {"setup_s": time.monotonic() - t0, "epoch": epoch}

    def cmd_join(self, names: list[str], timeout: float) -> dict[str, Any]:
        """The named subscribers join their channels: the highest join seq per channel."""
        conns = [self.by_name[n] for n in names]
        return {"last": join_channels(self.loop, conns, self.tally, timeout)}

    def cmd_feeds(
        self, names: list[str], last_seqs: dict[str, int], epoch: str, timeout: float
    ) -> dict[str, Any]:
        """The named subscribers open their feeds after ``last_seqs``."""
        conns = [self.by_name[n] for n in names]
        open_feeds(self.loop, conns, self.tally, last_seqs, epoch, timeout)
        return {}

    def cmd_count(self) -> dict[str, Any]:
        """From now on, count delivered messages without parsing (the measurement)."""
        for c in self.conns:
            if not c.closed:
                self.loop.handlers[c.fd] = c.count_with(self.counts)
        self.counting = True
        self.share()
        self.cpu0 = own_cpu_seconds()
        self.wall0 = time.monotonic()
        return {}

    def cmd_report(self) -> dict[str, Any]:
        counts = self.counts
        return {
            "cpu_s": own_cpu_seconds() - self.cpu0,
            "wall_s": time.monotonic() - self.wall0,
            "min": min(counts, default=0),
            "max": max(counts, default=0),
            "total": sum(counts),
            "closed": self.tally.closed,
            "connections": len(self.conns),
        }

    # ingest publishers

    def cmd_publishers(
        self, names: list[str], channel: str, window: int, timeout: float
    ) -> dict[str, Any]:
        """Ingest: connect publishers, log in, join ``channel``."""
        conns = self._new(names)
        open_all(self.loop, conns, self.tally, timeout)
        ask_all(
            self.loop,
            conns,
            self.tally,
            3,
            lambda c: c.request(3, "channel.join", {"channel": channel}),
            timeout,
        )
        self.ingest_window = window
        self.ingest_channel = channel
        return {}

    def cmd_ingest(self, duration: float, drain_timeout: float) -> dict[str, Any]:
        acks, errors, cpu, wall, late = run_ingest(
            self.loop,
            self.conns,
            self.ingest_channel,
            self.ingest_window,
            duration,
            drain_timeout,
        )
        return {
            "acks": acks,
            "errors": errors,
            "cpu_s": cpu,
            "wall_s": wall,
            "late_acks": late,
            "closed": self.tally.closed,
        }

    # idle connections

    def cmd_idle(self, names: list[str], timeout: float) -> dict[str, Any]:
        """Idle: connect, log in, open ``messages``, round trip (``channels`` completes)."""
        t0 = time.monotonic()
        conns = self._new(names)
        open_all(self.loop, conns, self.tally, timeout)

        def build(c: Conn) -> None:
            c.request(2, "messages", kind="stream")
            c.request(3, "channels", kind="stream")

        ask_all(self.loop, conns, self.tally, 3, build, timeout)
        return {"setup_s": time.monotonic() - t0, "closed": self.tally.closed}

    # reconnect storm

    def cmd_storm_prepare(self, names: list[str]) -> dict[str, Any]:
        """Build the storm's connections (no socket yet), so that "go" only connects."""
        self.storm_conns = self._new(names)
        return {}

    def cmd_storm_go(self, timeout: float) -> dict[str, Any]:
        """Connect every prepared connection at once and log each in (see bench.load.burst)."""
        return storm(self.loop, self.storm_conns, self.tally, timeout)

    def cmd_status(self) -> dict[str, Any]:
        return {"closed": self.tally.closed, "connections": len(self.conns)}

    def cmd_exit(self) -> None:
        self.exit = True
        self.pipe.send({})


def worker_main(wid: int, pipe: Connection, shared: Any, target: Target) -> None:
    """Entry point of a forked worker process."""
    raise_nofile()
    try:
        Worker(wid, pipe, shared, target).run()
    except Exception:
        traceback.print_exc()
    os._exit(0)  # skip closing thousands of sockets one by one with the server still up
