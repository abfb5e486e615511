"""One module per scenario; each has ``run(coordinator) -> result dict``.

:data:`SCENARIOS` maps the names ``bench.run`` and ``python -m bench.load --scenario`` use to
them. A scenario reads its sizes from ``coordinator.params`` (``bench/params.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.load.coordinator import Coordinator
from bench.load.scenarios import catchup, fanout, idle, ingest, rooms, stalled, storm

SCENARIOS: dict[str, Callable[[Coordinator], dict[str, Any]]] = {
    "fanout": fanout.run,
    "latency": fanout.run_latency,
    "ingest": ingest.run,
    "stalled": stalled.run,
    "idle": idle.run,
    "rooms": rooms.run,
    "storm": storm.run,
    "catchup": catchup.run,
}
