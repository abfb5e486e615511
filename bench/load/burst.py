"""A reconnect storm, client side: every connection connects and logs in at once.

Unlike :func:`bench.load.setup.open_all` (at most 100 connecting at a time, so setup never
measures the listen queue), this starts every connect in one loop, as clients do when a
server restarts, and waits until each is logged in or has failed. A failure is recorded, not
raised: a server that drops part of a storm is a result.
"""

from __future__ import annotations

import time
from typing import Any

from bench.load.conn import Conn, Tally
from bench.load.loop import Loop
from bench.load.setup import LOGIN_ID


def storm(loop: Loop, conns: list[Conn], tally: Tally, timeout: float) -> dict[str, Any]:
    """Connect all of ``conns`` now; return per-connection times and failures.

    ``served_s`` of a connection is from its ``connect()`` to its ``login`` answer; the
    coordinator takes the storm's span from the earliest start to the latest answer over
    every worker (``CLOCK_MONOTONIC`` is shared by the processes of one machine).
    """
    for c in conns:
        c.login_on_open = True
    t0 = time.monotonic()
    for c in conns:
        c.start()
    started_s = time.monotonic() - t0
    deadline = t0 + timeout

    def settled() -> int:
        return sum(1 for c in conns if c.t_login or c.closed)

    while settled() < len(conns) and time.monotonic() < deadline:
        loop.poll(0.01)
    served = [c for c in conns if c.t_login and LOGIN_ID in c.answers]
    ok = [c for c in served if c.answers[LOGIN_ID].get("type") == "response"]
    return {
        "connections": len(conns),
        "logged_in": len(ok),
        "failed": len(conns) - len(ok),
        "failures": tally.failures[:5],
        "unsettled": len(conns) - settled(),
        "t_first_start": min((c.t_start for c in conns), default=t0),
        "t_last_login": max((c.t_login for c in ok), default=0.0),
        "connect_loop_s": round(started_s, 4),
        "served_s": sorted(round(c.t_login - c.t_start, 5) for c in ok),
    }
