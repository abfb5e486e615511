"""Ingest: many publishers in one channel with no open feeds, each keeping requests in flight.

The cost per publish (parse, validate, append, answer) without any delivery; the publishers
live in the workers (:meth:`bench.load.worker.Worker.cmd_ingest`).
"""

from __future__ import annotations

import time
from typing import Any

from bench.load.coordinator import Coordinator


def run(co: Coordinator) -> dict[str, Any]:
    p = co.params
    names = [f"i{i:06d}" for i in range(p["publishers"])]
    parts = co.split(names)
    t0 = time.monotonic()
    co.all_workers(
        "publishers",
        p["setup_timeout"] * 2,
        per_worker=[{"names": part} for part in parts],
        channel="ingest",
        window=p["window"],
        timeout=p["setup_timeout"],
    )
    setup_s = time.monotonic() - t0
    for wid in range(len(co.workers)):
        co.tell(wid, "ingest", duration=p["duration"], drain_timeout=p["drain_timeout"])
    snap0 = co.snapshot()
    co.loop.run_for(p["duration"])  # the workers publish meanwhile: CPU over exactly that
    cpu = co.cpu_between(snap0, co.snapshot())
    wait = p["drain_timeout"] + 60
    replies = [co.hear(wid, wait) for wid in range(len(co.workers))]
    acks = sum(r["acks"] for r in replies)
    return {
        "publishers": p["publishers"],
        "window": p["window"],
        "setup_s": round(setup_s, 2),
        "duration_s": p["duration"],
        "acked": acks,
        "acks_per_s": round(acks / p["duration"]),
        "errors": sum(r["errors"] for r in replies),
        "late_acks": sum(r["late_acks"] for r in replies),
        "connections_closed": sum(r["closed"] for r in replies),
        **co.cpu_fields(cpu),
    }
