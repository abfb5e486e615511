"""Running one measurement: a fresh server, one load process, the result, the noise.

:func:`one` runs a measurement ``--repeat`` times and keeps the run least disturbed by other
processes; :func:`one_run` starts the server (and Redis or an SQLite file when the
measurement names a store), runs ``python -m bench.load`` against it, stops both, and
records how busy the machine was just before.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.params import LISTEN_BACKLOG, REPEATABLE
from bench.procstat import system_busy_seconds
from bench.servers import CHILDREN, ROOT, Redis, Server, say

BRIEF = (
    "ok",
    "error",
    "deliveries_per_s",
    "complete",
    "latency_ms",
    "acks_per_s",
    "rss_growth_total_kib",
    "catchup_items_per_s",
    "stalled_after",
    "all_served_s",
    "rss_per_connection_bytes",
    "server_cpu_pct",
    "server_cpu_us_per_delivery",
    "others_cpu_pct",
)


def run_load(
    server: Server, scenario: str, params: dict[str, Any], workers: int, timeout: float
) -> dict[str, Any]:
    """Run the load process against ``server``; stop the server; return the result."""
    cmd = [sys.executable, "-m", "bench.load", "--scenario", scenario]
    cmd += ["--port", str(server.port), "--path", "/ws", "--server-pid", str(server.proc.pid)]
    cmd += ["--workers", str(workers), "--params", json.dumps(params)]
    load = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    CHILDREN.add(load)
    assert load.stdout is not None and load.stdin is not None
    sel = selectors.DefaultSelector()
    sel.register(load.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    result: dict[str, Any] | None = None
    while result is None and time.monotonic() < deadline:
        if not sel.select(1.0):
            if load.poll() is not None:
                break
            continue
        chunk = os.read(load.stdout.fileno(), 1 << 16)
        if not chunk:
            break
        buf += chunk
        for line in buf.split(b"\n")[:-1]:
            if line.startswith(b"RESULT "):
                result = json.loads(line[7:])
        buf = buf.split(b"\n")[-1]
    if result is None:
        result = {"ok": False, "error": f"no result from the load process within {timeout}s"}
    result["server_stop_s"] = round(server.stop(), 2)
    result["server_log_problems"] = server.log_problems()
    try:
        load.stdin.close()
        load.wait(15)
    except subprocess.TimeoutExpired:
        load.kill()
        load.wait(5)
    CHILDREN.discard(load)
    return result


def machine_busy(seconds: float = 1.0) -> float:
    """Percent of one core the whole machine used over ``seconds`` (200 = both cores busy)."""
    a = system_busy_seconds()
    time.sleep(seconds)  # a measured interval, not a synchronisation
    return 100 * (system_busy_seconds() - a) / seconds


QUIET_BUDGET = {"left": 0.0}  # seconds of waiting for quiet left in this invocation


def wait_quiet(limit_pct: float, max_wait: float) -> float:
    """Wait (at most ``max_wait`` s, and within the invocation's budget) until other
    processes use under ``limit_pct`` of a core.

    The machine may be shared; a run started while something else is busy says less about
    the server. Returns the last busy figure measured.
    """
    t0 = time.monotonic()
    deadline = t0 + min(max_wait, QUIET_BUDGET["left"])
    busy = machine_busy()
    while busy > limit_pct and time.monotonic() < deadline:
        say(f"  machine busy ({busy:.0f}% of a core used by other processes), waiting ...")
        busy = machine_busy(2.0)
    QUIET_BUDGET["left"] -= time.monotonic() - t0
    return busy


def one(
    target: str,
    scenario: str,
    label: str,
    params: dict[str, Any],
    args: argparse.Namespace,
    log_dir: Path,
) -> dict[str, Any]:
    """Run one measurement ``--repeat`` times; keep the least disturbed run.

    "Least disturbed" is the successful run during which other processes used the least
    CPU (``others_cpu_pct``), not the one with the best figure, so that repeating does not
    bias the result upwards. Every run's headline figures are kept under ``"runs"``.
    """
    repeat = max(1, args.repeat) if scenario in REPEATABLE else 1
    runs = [one_run(target, scenario, label, params, args, log_dir) for _ in range(repeat)]
    if repeat == 1:
        return runs[0]
    ok = [r for r in runs if r.get("ok")] or runs
    best = min(ok, key=lambda r: r.get("others_cpu_pct") or 0.0)
    keys = ("deliveries_per_s", "acks_per_s", "latency_ms", "all_served_s", "others_cpu_pct")
    best["runs"] = [{k: r.get(k) for k in (*keys, "ok") if k in r} for r in runs]
    return best


def one_run(
    target: str,
    scenario: str,
    label: str,
    params: dict[str, Any],
    args: argparse.Namespace,
    log_dir: Path,
) -> dict[str, Any]:
    """One fresh server (and its store), one load process, one result."""
    busy = wait_quiet(args.quiet_pct, args.quiet_wait) if args.quiet_wait > 0 else machine_busy()
    say(f"{label} on {target} ...")
    retention = params.get("retention") if target == "chat" else None
    store_kind = params.get("store", "memory")
    redis: Redis | None = None
    store = "memory"
    if target == "chat" and store_kind == "sqlite":
        db = log_dir / f"{label}.db"
        for old in log_dir.glob(f"{label}.db*"):
            old.unlink()
        store = f"sqlite:{db}"
    try:
        if target == "chat" and store_kind == "redis":
            redis = Redis(log_dir, label)
            store = redis.url
        server = Server(
            target,
            log_dir,
            label,
            retention,
            args.chat_arg,
            grace=2.0 if args.quick else 5.0,
            chat_env=args.chat_env,
            store=store,
            backlog=params.get("listen_backlog", LISTEN_BACKLOG),
        )
        try:
            result = run_load(server, scenario, params, args.workers, args.scenario_timeout)
        finally:
            if server.proc.poll() is None:
                server.stop()
    except (OSError, RuntimeError) as exc:  # a server (or redis-server) that did not start
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        if redis is not None:
            redis.stop()
    result["machine_busy_before_pct"] = round(busy, 1)
    if target == "chat":
        result["store"] = store_kind
    brief = {k: result.get(k) for k in BRIEF if result.get(k) is not None}
    say(f"  {label} {target}: {json.dumps(brief)}")
    return result


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    versions = {}
    for module in ("twisted", "autobahn"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:
            versions[module] = "?"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "chat"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
    except Exception:
        commit, dirty = "?", False
    import resource

    somaxconn = None
    with contextlib.suppress(OSError):
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **versions,
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE),
        "somaxconn": somaxconn,  # the kernel caps every listen backlog at this
        "git_commit": commit + ("+uncommitted changes in chat/" if dirty else ""),
    }
