"""``python -m bench.load``: run one scenario against one running server (see bench.load)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

from bench.load.coordinator import Coordinator
from bench.load.loop import ServerError, Timeout, log
from bench.load.scenarios import SCENARIOS
from bench.procstat import own_cpu_seconds, raise_nofile


def main() -> None:
    parser = argparse.ArgumentParser(description="load process of the benchmark harness")
    parser.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ws")
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--params", default="{}", help="JSON object of scenario parameters")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost"):
        parser.error("the harness only loads 127.0.0.1")
    raise_nofile()
    coordinator = Coordinator(args, json.loads(args.params))
    coordinator.start_workers(args.workers)
    cpu0 = own_cpu_seconds()
    t0 = time.monotonic()
    try:
        result = SCENARIOS[args.scenario](coordinator)
        result["ok"] = True
    except (Timeout, ServerError, RuntimeError) as exc:
        log("scenario failed:", exc)
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result["load_process_cpu_s"] = round(own_cpu_seconds() - cpu0, 2)
    result["load_wall_s"] = round(time.monotonic() - t0, 2)
    print("RESULT " + json.dumps(result), flush=True)
    # Wait until the harness has stopped the server, then leave without closing sockets
    # one by one.
    with contextlib.suppress(KeyboardInterrupt):
        sys.stdin.read()
    coordinator.stop_workers()
    os._exit(0)


if __name__ == "__main__":
    main()
