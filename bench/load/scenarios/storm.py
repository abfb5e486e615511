"""Reconnect storm: N clients connect and log in at the same moment.

After a restart every client reconnects at once. The workers build their connections, then
all get "go" together and start every ``connect()`` in one loop (:mod:`bench.load.burst`).
Reported: the time until every client is logged in (earliest connect to latest login
answer, over all workers), per-client percentiles, failures, the server's CPU, and the
kernel's listen-queue counters (``/proc/net/netstat``: overflows, drops, SYN retransmits)
over the storm: a listen backlog too short for the storm shows as overflows and as ~1 s
steps in the per-client times (a dropped SYN is retried after 1 s, then 3 s).
"""

from __future__ import annotations

from typing import Any

from bench.load.coordinator import Coordinator
from bench.load.payloads import percentiles
from bench.procstat import tcp_ext_counters


def run(co: Coordinator) -> dict[str, Any]:
    p = co.params
    n = p["clients"]
    parts = co.split([f"r{i:06d}" for i in range(n)])
    co.all_workers("storm_prepare", 60, per_worker=[{"names": part} for part in parts])
    net0 = tcp_ext_counters()
    snap0 = co.snapshot()
    replies = co.all_workers("storm_go", p["timeout"] + 30, timeout=p["timeout"])
    cpu = co.cpu_between(snap0, co.snapshot())
    net1 = tcp_ext_counters()
    served = sorted(s for r in replies for s in r["served_s"])
    logged_in = sum(r["logged_in"] for r in replies)
    t_first = min(r["t_first_start"] for r in replies)
    t_last = max(r["t_last_login"] for r in replies)
    failures = [f for r in replies for f in r["failures"]]
    return {
        "clients": n,
        "logged_in": logged_in,
        "failed": n - logged_in,
        "first_failures": failures[:5],
        "all_served": logged_in == n,
        # the figure reported: from the first connect() to the last login answer
        "all_served_s": round(t_last - t_first, 3) if logged_in else None,
        "served_ms": {k: round(v * 1000, 1) for k, v in percentiles(served).items()},
        "connect_loop_s": [r["connect_loop_s"] for r in replies],
        "listen_queue": {k: net1.get(k, 0) - v for k, v in net0.items()},
        **co.cpu_fields(cpu),
    }
