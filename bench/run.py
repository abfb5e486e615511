"""The benchmark harness: ``.venv/bin/python -m bench.run [--quick]`` (see docs/benchmarks.md).

For every scenario and every target it starts a FRESH server process, drives it with a
separate load process (:mod:`bench.load`), stops the server, and records the figures.

Targets:

- ``chat``: the project's server exactly as users run it,
  ``twistd -n --pidfile= chat --listen tcp:PORT:interface=127.0.0.1 --store memory``;
- ``autobahn``: baseline (a), Autobahn ``sendMessage`` per client (:mod:`bench.baselines`);
- ``floor``: baseline (b), pre-framed bytes, one coalesced ``transport.write`` per client.

Everything listens and connects on 127.0.0.1 only. Every wait has a deadline. Results go to
``bench/results/results.json`` and ``bench/results/benchmarks.png`` (``--quick``:
``results-quick.json`` / ``benchmarks-quick.png``), server logs to ``--log-dir``.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import json
import os
import platform
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.procstat import raise_nofile, system_busy_seconds

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGETS = ("chat", "autobahn", "floor")
SCENARIOS = ("fanout", "latency", "ingest", "stalled", "idle")

FULL: dict[str, dict[str, Any]] = {
    "fanout": {
        "subscribers": [100, 1000, 5000],
        "duration": 10.0,  # seconds of publishing
        "warmup": 2.0,  # seconds excluded from the steady-state rate
        "window": "auto",  # messages the publisher may be ahead of the slowest subscriber:
        "in_flight": 200_000,  # auto = this many deliveries / subscribers, within 16..1000
        "probes": 8,  # subscribers that parse every frame (order check, latency)
        "max_messages": 2_000_000,
        "max_lag": 5000,
        "drain_timeout": 30.0,
        "setup_timeout": 60.0,
    },
    "latency": {
        "subscribers": 1000,
        "fraction": 0.5,  # of the maximum publish rate measured by "fanout" at 1000
        "duration": 10.0,
        "warmup": 1.0,
        "window": "auto",  # unused: the latency run publishes at a fixed rate
        "in_flight": 200_000,
        "probes": 8,
        "max_messages": 2_000_000,
        "max_lag": 5000,  # stop (and say so) if subscribers fall this far behind
        "drain_timeout": 30.0,
        "setup_timeout": 60.0,
    },
    "ingest": {
        "publishers": 100,
        "window": 10,  # requests in flight per publisher
        "duration": 10.0,
        "drain_timeout": 10.0,
        "setup_timeout": 60.0,
    },
    "stalled": {
        "items": 1_000_000,
        "checkpoint": 100_000,
        "publishers": 4,
        "window": 32,  # requests in flight per publisher (the server allows 64 open)
        "rcvbuf": 4096,  # SO_RCVBUF of the stalled subscriber, set before connect
        "resume_rcvbuf": 1 << 20,
        "healthy_lag": 2000,  # publishers wait if the healthy subscriber is this far behind
        "sample_every": 0.1,
        "publish_timeout": 400.0,
        "drain_timeout": 60.0,
        "catchup_timeout": 180.0,
        "setup_timeout": 60.0,
    },
    "idle": {
        "connections": 10_000,
        "settle_s": 1.0,
        "idle_cpu_s": 2.0,
        "setup_timeout": 60.0,
    },
}

QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "fanout": {"subscribers": [100, 1000], "duration": 2.0, "warmup": 0.5},
    "latency": {"duration": 2.0, "warmup": 0.5},
    "ingest": {"duration": 2.0, "publishers": 50},
    # more than retention (10,000) + what the kernel buffers (~30,000): there is a gap
    "stalled": {"items": 60_000, "checkpoint": 6_000, "sample_every": 0.05},
    "idle": {"connections": 1000, "settle_s": 0.5, "idle_cpu_s": 0.5},
}


CHILDREN: set[subprocess.Popen[bytes]] = set()  # servers and load processes still running


def kill_children(signum: int = 0, frame: Any = None) -> None:
    """Stop every server and load process this harness started (on exit or a signal)."""
    for proc in list(CHILDREN):
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        CHILDREN.discard(proc)
    if signum:
        raise SystemExit(128 + signum)


def say(*parts: Any) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One server process, started fresh for one scenario run."""

    def __init__(
        self,
        target: str,
        log_dir: Path,
        label: str,
        retention: int | None,
        chat_args: list[str] | None = None,
        grace: float = 5.0,
        chat_env: dict[str, str] | None = None,
    ) -> None:
        self.grace = grace
        self.target = target
        self.port = free_port()
        self.log_path = log_dir / f"{label}-{target}.log"
        venv_bin = Path(sys.executable).parent
        if target == "chat":
            cmd = [
                str(venv_bin / "twistd"),
                "-n",
                "--pidfile=",
                "chat",
                "--listen",
                f"tcp:{self.port}:interface=127.0.0.1",
                "--store",
                "memory",
            ]
            if retention is not None:
                cmd += ["--retention", str(retention)]
            cmd += chat_args or []
        else:
            cmd = [
                sys.executable,
                "-m",
                "bench.baselines",
                "--mode",
                target,
                "--port",
                str(self.port),
            ]
        self.cmd = cmd
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=chat_env if target == "chat" else None,
        )
        CHILDREN.add(self.proc)
        self.wait_ready(30.0)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.target} exited with {self.proc.returncode}; see {self.log_path}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.target} did not listen within {timeout}s")

    def stop(self) -> float:
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        CHILDREN.discard(self.proc)
        return time.monotonic() - t0

    def log_problems(self) -> list[str]:
        """Errors the server logged: each traceback as "message: exception", and warnings.

        Twisted logs a traceback as the event's line, then the traceback's lines indented
        with a tab; the last of them names the exception.
        """
        lines = self.log_path.read_text(errors="replace").splitlines()
        problems: list[str] = []
        seen: set[str] = set()
        for i, line in enumerate(lines):
            if line.strip() == "Traceback (most recent call last):":
                j = i + 1
                while j < len(lines) and lines[j].startswith(("\t", " ")):
                    j += 1
                body = [x.strip() for x in lines[i + 1 : j] if x.strip()]
                exception = body[-1] if body else "?"
                event = lines[i - 1].split("] ", 1)[-1] if i else ""
                problem = f"{event}: {exception}"
            elif any(m in line for m in ("#critical]", "#error]", "#warn]", "Unhandled")):
                problem = line.split("] ", 1)[-1]
                if lines[min(i + 1, len(lines) - 1)].strip().startswith("Traceback"):
                    continue  # reported with its traceback
            else:
                continue
            problem = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", problem)
            if problem not in seen:
                seen.add(problem)
                problems.append(problem[:300])
        return problems[:10]


def run_load(
    server: Server, scenario: str, params: dict[str, Any], workers: int, timeout: float
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "bench.load",
        "--scenario",
        scenario,
        "--port",
        str(server.port),
        "--path",
        "/ws",
        "--server-pid",
        str(server.proc.pid),
        "--workers",
        str(workers),
        "--params",
        json.dumps(params),
    ]
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


def export_commit(rev: str, into: Path) -> tuple[str, dict[str, str]]:
    """Export the project at commit ``rev`` (``git archive``) and return (full hash, the
    environment that makes ``twistd chat`` run that code instead of the working tree)."""
    full = subprocess.run(
        ["git", "rev-parse", "--verify", rev + "^{commit}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    snap = into / f"chat-{full[:12]}"
    snap.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", full], cwd=ROOT, capture_output=True, timeout=60, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(snap)], input=archive, timeout=60, check=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(snap), str(snap / "twistd_plugin"), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    where = subprocess.run(
        [sys.executable, "-c", "import chat.plugin; print(chat.plugin.__file__)"],
        env=env,
        cwd=snap,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    if not where.startswith(str(snap)):
        raise RuntimeError(f"commit {full[:12]}: chat still imported from {where!r}")
    return full, env


def machine_busy(seconds: float = 1.0) -> float:
    """Percent of one core the whole machine used over ``seconds`` (200 = both cores busy)."""
    a = system_busy_seconds()
    time.sleep(seconds)
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
        time.sleep(2)
        busy = machine_busy()
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
    repeat = 1 if scenario in ("stalled", "idle") else max(1, args.repeat)
    runs = [one_run(target, scenario, label, params, args, log_dir) for _ in range(repeat)]
    if repeat == 1:
        return runs[0]
    ok = [r for r in runs if r.get("ok")] or runs
    best = min(ok, key=lambda r: r.get("others_cpu_pct") or 0.0)
    keys = ("deliveries_per_s", "acks_per_s", "latency_ms", "others_cpu_pct", "ok")
    best["runs"] = [{k: r.get(k) for k in keys if k in r} for r in runs]
    return best


def one_run(
    target: str,
    scenario: str,
    label: str,
    params: dict[str, Any],
    args: argparse.Namespace,
    log_dir: Path,
) -> dict[str, Any]:
    busy = wait_quiet(args.quiet_pct, args.quiet_wait) if args.quiet_wait > 0 else machine_busy()
    say(f"{label} on {target} ...")
    retention = params.get("retention") if target == "chat" else None
    server = Server(
        target,
        log_dir,
        label,
        retention,
        args.chat_arg,
        grace=2.0 if args.quick else 5.0,
        chat_env=args.chat_env,
    )
    try:
        result = run_load(server, scenario, params, args.workers, args.scenario_timeout)
    finally:
        if server.proc.poll() is None:
            server.stop()
    result["machine_busy_before_pct"] = round(busy, 1)
    brief = {
        k: result.get(k)
        for k in (
            "ok",
            "error",
            "deliveries_per_s",
            "complete",
            "latency_ms",
            "acks_per_s",
            "rss_growth_total_kib",
            "catchup_items_per_s",
            "rss_per_connection_bytes",
            "server_cpu_pct",
            "load_cpu_pct",
            "others_cpu_pct",
        )
        if result.get(k) is not None
    }
    say(f"  {label} {target}: {json.dumps(brief)}")
    return result


def machine() -> dict[str, Any]:
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

    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **versions,
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE),
        "git_commit": commit + ("+uncommitted changes in chat/" if dirty else ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the chat server benchmarks.")
    parser.add_argument("--quick", action="store_true", help="small sizes (about 2 minutes)")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="load worker processes holding the bulk subscribers (default 1; "
        "the machine has 2 cores and the server needs one)",
    )
    parser.add_argument("--subscribers", help="fan-out sizes, e.g. 100,1000,5000")
    parser.add_argument("--duration", type=float, help="seconds of publishing per run")
    parser.add_argument("--stalled-items", type=int)
    parser.add_argument("--idle-connections", type=int)
    parser.add_argument("--ingest-publishers", type=int)
    parser.add_argument(
        "--latency-rate",
        type=float,
        help="publishes/s for the latency scenario (default: half the max "
        "measured by fanout at 1000 subscribers, per target)",
    )
    parser.add_argument("--retention", type=int, help="chat server --retention (default: its own)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SCENARIO.KEY=JSON",
        help="override any parameter, e.g. fanout.window=128",
    )
    parser.add_argument("--out", help="results JSON path")
    parser.add_argument("--plot", help="PNG path")
    parser.add_argument("--log-dir", help="server logs (default: a temporary directory)")
    parser.add_argument("--scenario-timeout", type=float, default=900.0)
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="before each run, wait up to this many seconds for the machine to "
        "be quiet (default: 60, --quick: 0)",
    )
    parser.add_argument(
        "--quiet-pct",
        type=float,
        default=25.0,
        help="'quiet' means other processes use less than this %% of a core",
    )
    parser.add_argument(
        "--quiet-budget",
        type=float,
        default=240.0,
        help="at most this many seconds of waiting for quiet in all",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each fan-out, latency and ingest measurement this many times and keep the "
        "run least disturbed by other processes (for shared machines)",
    )
    parser.add_argument(
        "--chat-commit",
        metavar="REV",
        help="benchmark the chat server of this commit (exported with git archive) instead "
        "of the working tree, e.g. --chat-commit HEAD",
    )
    parser.add_argument(
        "--chat-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for 'twistd chat' (repeatable), e.g. --chat-arg=--retention=20000",
    )
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, kill_children)
    signal.signal(signal.SIGINT, kill_children)
    atexit.register(kill_children)
    nofile = raise_nofile()
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 30.0
    QUIET_BUDGET["left"] = args.quiet_budget
    params = copy.deepcopy(FULL)
    if args.quick:
        for name, over in QUICK_OVERRIDES.items():
            params[name].update(over)
    if args.subscribers:
        params["fanout"]["subscribers"] = [int(x) for x in args.subscribers.split(",")]
    if args.duration:
        for name in ("fanout", "latency", "ingest"):
            params[name]["duration"] = args.duration
    if args.stalled_items:
        params["stalled"]["items"] = args.stalled_items
        params["stalled"]["checkpoint"] = max(1, args.stalled_items // 10)
    if args.idle_connections:
        params["idle"]["connections"] = args.idle_connections
    if args.ingest_publishers:
        params["ingest"]["publishers"] = args.ingest_publishers
    for item in args.set:
        key, _, value = item.partition("=")
        scenario, _, name = key.partition(".")
        params[scenario][name] = json.loads(value)
    retention = args.retention if args.retention else 10_000  # the chat server's default
    params["stalled"]["retention"] = retention
    if args.retention:
        for name in SCENARIOS:
            params[name]["retention"] = args.retention
    need = params["idle"]["connections"] + 100
    if "idle" in args.scenarios and nofile < need:
        say(f"open-files limit {nofile} < {need}: lowering idle connections")
        params["idle"]["connections"] = nofile - 200

    targets = [t for t in args.targets.split(",") if t]
    scenarios = [s for s in args.scenarios.split(",") if s]
    for t in targets:
        if t not in TARGETS:
            parser.error(f"unknown target {t}")
    for s in scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s}")
    suffix = "-quick" if args.quick else ""
    out = Path(args.out) if args.out else RESULTS / f"results{suffix}.json"
    plot_path = Path(args.plot) if args.plot else RESULTS / f"benchmarks{suffix}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="chat-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    say(f"server logs in {log_dir}")
    args.chat_env = None
    chat_source = "working tree (as installed), " + machine()["git_commit"]
    if args.chat_commit:
        full, args.chat_env = export_commit(args.chat_commit, log_dir)
        chat_source = f"commit {full[:12]} (git archive)"
    say(f"chat server: {chat_source}")

    t_start = time.time()
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, "-m", "bench.run", *sys.argv[1:]]),
        "quick": args.quick,
        "machine": machine(),
        "workers": args.workers,
        "chat_source": chat_source,
        "chat_args": args.chat_arg,
        "params": params,
        "results": {},
    }
    results = report["results"]

    def save() -> None:
        report["elapsed_s"] = round(time.time() - t_start, 1)
        out.write_text(json.dumps(report, indent=1) + "\n")

    if "fanout" in scenarios:
        results["fanout"] = {}
        for n in params["fanout"]["subscribers"]:
            p = {**params["fanout"], "subscribers": n}
            results["fanout"][str(n)] = {
                t: one(t, "fanout", f"fanout-{n}", p, args, log_dir) for t in targets
            }
            save()
    if "latency" in scenarios:
        results["latency"] = {}
        lp = params["latency"]
        for t in targets:
            rate = args.latency_rate
            if rate is None:
                base = results.get("fanout", {}).get(str(lp["subscribers"]), {}).get(t, {})
                max_deliveries = base.get("deliveries_per_s")
                if not max_deliveries:
                    say(f"  latency on {t}: measuring the maximum first")
                    base = one(t, "fanout", f"latency-max-{lp['subscribers']}", lp, args, log_dir)
                    max_deliveries = base.get("deliveries_per_s") or 0
                rate = round(lp["fraction"] * max_deliveries / lp["subscribers"], 1)
            if rate <= 0:
                results["latency"][t] = {"ok": False, "error": "no maximum rate to halve"}
                continue
            results["latency"][t] = one(
                t, "latency", "latency", {**lp, "rate": rate}, args, log_dir
            )
            save()
    for name in ("ingest", "stalled", "idle"):
        if name in scenarios:
            results[name] = {t: one(t, name, name, params[name], args, log_dir) for t in targets}
            save()
        if name == "stalled" and "stalled" in scenarios:
            long_run = results["stalled"].get("chat") or {}
            if long_run.get("stalled_closed_by_server") and not long_run.get("caught_up"):
                # The chat server dropped the stalled subscriber: one that reads nothing cannot
                # answer the keepalive ping (--ping-interval 20, --ping-timeout 10). Run it
                # again with pings off, an operator option, so that memory, catch-up and the
                # gap item are measured over the whole stall all the same.
                say("  the stalled subscriber was dropped: again with --ping-interval 0")
                no_ping = argparse.Namespace(**vars(args))
                no_ping.chat_arg = [*args.chat_arg, "--ping-interval", "0"]
                results["stalled_no_ping"] = {
                    "chat": one(
                        "chat", "stalled", "stalled-no-ping", params["stalled"], no_ping, log_dir
                    )
                }
                save()
    save()
    try:
        from bench.plot import plot

        plot(report, plot_path)
        report["plot"] = (
            str(plot_path.relative_to(ROOT)) if plot_path.is_relative_to(ROOT) else str(plot_path)
        )
        save()
        say(f"plot: {plot_path}")
    except Exception as exc:
        say(f"no plot: {type(exc).__name__}: {exc}")
    say(f"results: {out} ({report['elapsed_s']}s)")
    from bench.summary import summary

    print(summary(report))


if __name__ == "__main__":
    main()
