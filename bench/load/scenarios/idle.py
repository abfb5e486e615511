"""Idle connections: what one logged-in connection with an open feed costs the server.

RSS per connection = (RSS after - RSS before) / N, and the server's CPU while they sit
idle. The handshake offers the subprotocol and every target must select it
(:func:`bench.load.framing.check_handshake`), so the bare Autobahn baseline's connections
did the same negotiation as the chat server's.
"""

from __future__ import annotations

import time
from typing import Any

from bench.load.coordinator import Coordinator


def run(co: Coordinator) -> dict[str, Any]:
    p = co.params
    n = p["connections"]
    names = [f"c{i:06d}" for i in range(n)]
    parts = co.split(names)
    co.loop.run_for(p["settle_s"])  # let the freshly started server's RSS settle
    rss_before = co.rss()
    t0 = time.monotonic()
    replies = co.all_workers(
        "idle",
        p["setup_timeout"] * 4,
        per_worker=[{"names": part} for part in parts],
        timeout=p["setup_timeout"] * 3,
    )
    setup_s = time.monotonic() - t0
    rss_peak = co.rss()
    co.loop.run_for(p["settle_s"])
    snap0 = co.snapshot()
    co.loop.run_for(p["idle_cpu_s"])
    cpu = co.cpu_between(snap0, co.snapshot())
    rss_after = co.rss()
    status = co.all_workers("status", 30)
    return {
        "connections": n,
        "setup_s": round(setup_s, 2),
        "connections_per_s": round(n / setup_s),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_right_after_setup_kib": rss_peak,
        "rss_per_connection_bytes": round((rss_after - rss_before) * 1024 / n),
        "server_cpu_pct_idle": cpu.get("server_pct"),
        "others_cpu_pct": cpu.get("others_pct"),
        "connections_closed": sum(s["closed"] for s in status),
        "worker_setup_s": [round(r["setup_s"], 2) for r in replies],
    }
