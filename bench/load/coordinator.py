"""The coordinator: the load process's main side, shared by every scenario.

It forks the worker processes (:mod:`bench.load.worker`) that hold the bulk of the
connections, keeps the publisher(s) and the *probe* subscribers itself, samples CPU and RSS,
and sets subscribers up in a controlled order (:meth:`Coordinator.subscribe`).

Why the order matters: a server fans an item out to its subscribers in some order — the
floor baseline in join order, the chat server in the order feeds were opened — and the last
one served waits longest. Probes are therefore spread evenly over *both* orders (every
server then has its probes at the same places of its own order), instead of joining first
and being served first by one server and last by another.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from bench.load.conn import Conn, Tally
from bench.load.loop import Loop, Timeout
from bench.load.setup import join_channels, merge_max, open_all, open_feeds
from bench.load.worker import worker_main
from bench.procstat import cpu_seconds, irq_seconds, own_cpu_seconds, rss_kib, system_busy_seconds

Spec = tuple[str, list[str]]  # a subscriber: its name and the channels it joins


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)``: one in the middle of each k-th part."""
    k = min(k, n)
    return [int((i + 0.5) * n / k) for i in range(k)] if k else []


class Coordinator:
    """Publisher(s), probes and the workers of one scenario run."""

    def __init__(self, args: argparse.Namespace, params: dict[str, Any]) -> None:
        self.args = args
        self.params = params
        self.target = (args.host, args.port, args.path)
        self.server_pid: int = args.server_pid
        self.loop = Loop()
        self.tally = Tally()
        self.workers: list[tuple[BaseProcess, Connection]] = []
        self.shared: Any = None
        self.owner: dict[str, int] = {}  # subscriber name -> worker id
        self.order: list[str] = []  # subscribers in join (and feed-open) order
        self.probe_by_name: dict[str, Conn] = {}

    # workers

    def start_workers(self, n: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self.shared = ctx.RawArray("q", 2 * max(n, 1))
        for wid in range(n):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main, args=(wid, theirs, self.shared, self.target), daemon=True
            )
            proc.start()
            theirs.close()
            self.workers.append((proc, mine))

    def tell(self, wid: int, name: str, **args: Any) -> None:
        self.workers[wid][1].send((name, args))

    def hear(self, wid: int, timeout: float) -> dict[str, Any]:
        pipe = self.workers[wid][1]
        deadline = time.monotonic() + timeout
        while not pipe.poll(0.02):
            self.loop.poll(0)  # keep our own sockets serviced meanwhile
            if time.monotonic() > deadline:
                raise Timeout(f"worker {wid} did not answer within {timeout:.0f}s")
            if not self.workers[wid][0].is_alive():
                raise RuntimeError(f"worker {wid} died")
        reply: dict[str, Any] = pipe.recv()
        if "error" in reply:
            raise RuntimeError(f"worker {wid}: {reply['error']}\n{reply.get('trace', '')}")
        return reply

    def all_workers(
        self,
        name: str,
        wait_s: float,
        /,
        per_worker: list[dict[str, Any]] | None = None,
        **args: Any,
    ) -> list[dict[str, Any]]:
        """Send command ``name`` to every worker; wait up to ``wait_s`` for each reply."""
        for wid in range(len(self.workers)):
            self.tell(wid, name, **(per_worker[wid] if per_worker else {}), **args)
        return [self.hear(wid, wait_s) for wid in range(len(self.workers))]

    def stop_workers(self) -> None:
        for _proc, pipe in self.workers:
            with contextlib.suppress(OSError):
                pipe.send(("exit", {}))
        for proc, _pipe in self.workers:
            proc.join(5)
            if proc.is_alive():
                proc.kill()

    def split(self, names: list[str]) -> list[list[str]]:
        k = len(self.workers)
        return [names[i::k] for i in range(k)]

    # connections of the coordinator itself

    def connect(self, names: list[str], timeout: float, rcvbuf: int | None = None) -> list[Conn]:
        conns = [Conn(self.loop, self.target, n, self.tally, i) for i, n in enumerate(names)]
        open_all(self.loop, conns, self.tally, timeout, rcvbuf)
        return conns

    # subscribers in a controlled order

    def subscribe(
        self, specs: list[Spec], n_probes: int, timeout: float
    ) -> tuple[list[Conn], dict[str, int], dict[str, Any]]:
        """Connect, log in and join ``specs`` (in that order); probes spread evenly.

        The bulk subscribers go to the workers (round robin), the probes stay here. Joins
        happen in ``specs`` order, segment by segment (the workers' share of the bulk between
        two probes, then the probe), so a probe's place in every server's member order is
        known. Returns (probes, highest join seq per channel, timings); feeds are opened by
        :meth:`open_feeds_in_order` afterwards, in the same order.
        """
        t0 = time.monotonic()
        probe_at = set(spread(len(specs), n_probes))
        probe_specs = [s for i, s in enumerate(specs) if i in probe_at]
        bulk = [s for i, s in enumerate(specs) if i not in probe_at]
        k = max(1, len(self.workers))
        parts: list[list[Spec]] = [bulk[w::k] for w in range(k)]
        for w, part in enumerate(parts):
            self.owner.update((name, w) for name, _ in part)
        for wid in range(len(self.workers)):
            self.tell(wid, "connect", specs=parts[wid], timeout=timeout)
        probes = self.connect([name for name, _ in probe_specs], timeout)
        for c, (_, channels) in zip(probes, probe_specs, strict=True):
            c.channels = list(channels)
        replies = [self.hear(wid, timeout * 3) for wid in range(len(self.workers))]
        connected_s = time.monotonic() - t0
        self.order = [name for name, _ in specs]
        self.probe_by_name = {c.name: c for c in probes}
        last: dict[str, int] = {}
        for reply in self.in_order(
            lambda conns: {"last": join_channels(self.loop, conns, self.tally, timeout)},
            "join",
            timeout,
        ):
            merge_max(last, reply["last"])
        info = {
            "connect_s": round(connected_s, 2),
            "join_s": round(time.monotonic() - t0 - connected_s, 2),
            "worker_epochs": [r.get("epoch") for r in replies],
        }
        return probes, last, info

    def open_feeds_in_order(self, last: dict[str, int], epoch: str, timeout: float) -> None:
        """Open every subscriber's feed, in the order of :meth:`subscribe`."""

        def local(conns: list[Conn]) -> dict[str, Any]:
            open_feeds(self.loop, conns, self.tally, last, epoch, timeout)
            return {}

        self.in_order(local, "feeds", timeout, last_seqs=last, epoch=epoch)

    def in_order(
        self,
        local: Callable[[list[Conn]], dict[str, Any]],
        command: str,
        timeout: float,
        **args: Any,
    ) -> list[dict[str, Any]]:
        """Run a setup step over every subscriber in :attr:`order`, segment by segment."""
        replies: list[dict[str, Any]] = []
        segment: list[str] = []

        def flush() -> None:
            if not segment:
                return
            per: list[list[str]] = [[] for _ in self.workers]
            for name in segment:
                per[self.owner[name]].append(name)
            replies.extend(
                self.all_workers(
                    command,
                    timeout * 3,
                    per_worker=[{"names": p} for p in per],
                    timeout=timeout,
                    **args,
                )
            )
            segment.clear()

        for name in self.order:
            probe = self.probe_by_name.get(name)
            if probe is None:
                segment.append(name)
                continue
            flush()
            replies.append(local([probe]))
        flush()
        return replies

    # measuring

    def snapshot(self) -> dict[str, Any]:
        """CPU seconds used so far by the server, this process, the workers, the machine."""
        workers = []
        for proc, _pipe in self.workers:
            try:
                workers.append(cpu_seconds(proc.pid or 0))
            except OSError:
                workers.append(0.0)
        return {
            "t": time.monotonic(),
            "server": cpu_seconds(self.server_pid),
            "coordinator": own_cpu_seconds(),
            "workers": workers,
            "machine": system_busy_seconds(),
            "irq": irq_seconds(),
        }

    @staticmethod
    def cpu_between(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        """CPU use between two snapshots, in percent of one core.

        ``others_pct`` is what the rest of the machine used meanwhile (other people's
        processes): a busy machine makes every figure of that run lower.
        """
        wall = b["t"] - a["t"]
        if wall <= 0:
            return {}

        def pct(x: float) -> float:
            return round(100 * x / wall, 1)

        server = b["server"] - a["server"]
        coord = b["coordinator"] - a["coordinator"]
        workers = [y - x for x, y in zip(a["workers"], b["workers"], strict=True)]
        machine = b["machine"] - a["machine"]
        return {
            "wall_s": round(wall, 3),
            "server_s": round(server, 4),
            "server_pct": pct(server),
            "load_coordinator_pct": pct(coord),
            "load_workers_pct": [pct(w) for w in workers],
            "others_pct": pct(max(0.0, machine - server - coord - sum(workers))),
            "softirq_pct": pct(b["irq"] - a["irq"]),
        }

    @staticmethod
    def cpu_fields(cpu: dict[str, Any]) -> dict[str, Any]:
        """The CPU figures every result carries, from :meth:`cpu_between`."""
        return {
            "server_cpu_pct": cpu.get("server_pct"),
            "load_cpu_pct": {
                "coordinator": cpu.get("load_coordinator_pct"),
                "workers": cpu.get("load_workers_pct"),
            },
            "others_cpu_pct": cpu.get("others_pct"),
            "softirq_cpu_pct": cpu.get("softirq_pct"),
        }

    def rss(self) -> int:
        return rss_kib(self.server_pid)

    def current_min(self, counts: list[int]) -> int:
        """The fewest messages any subscriber (probe or bulk) has received so far."""
        low = min(counts) if counts else 1 << 62
        shared = self.shared
        for wid in range(len(self.workers)):
            low = min(low, shared[2 * wid])
        return low

    def delivered_total(self, counts: list[int]) -> int:
        """Messages received so far by every subscriber together."""
        shared = self.shared
        return sum(counts) + sum(shared[2 * wid + 1] for wid in range(len(self.workers)))
