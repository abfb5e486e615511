"""The benchmark harness: ``.venv/bin/python -m bench.run [--quick]`` (see docs/benchmarks.md).

For every scenario and every target it starts a FRESH server process, drives it with a
separate load process (:mod:`bench.load`), stops the server, and records the figures.

Targets (:mod:`bench.params` says which scenario runs against which):

- ``chat``: the project's server exactly as users run it,
  ``twistd -n --pidfile= chat --listen tcp:PORT:interface=127.0.0.1:backlog=1024 --store memory``
  (the catch-up scenario also on SQLite and on a private Redis);
- ``autobahn``: baseline (a), Autobahn ``sendMessage`` per client (:mod:`bench.baselines`);
- ``floor``: baseline (b), pre-framed bytes, one coalesced ``transport.write`` per client;
- ``bare``: a plain Autobahn server that only negotiates and logs in (idle, storm).

Everything listens and connects on 127.0.0.1 only. Every wait has a deadline. Results go to
``bench/results/results.json`` and ``bench/results/benchmarks.png`` (``--quick``:
``results-quick.json`` / ``benchmarks-quick.png``), server logs to ``--log-dir``.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import json
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.params import (
    DEFAULT_TARGETS,
    FULL,
    QUICK_OVERRIDES,
    RETENTION,
    SCENARIOS,
    SUPPORTED,
    TARGETS,
)
from bench.procstat import raise_nofile
from bench.runner import QUIET_BUDGET, machine, one
from bench.servers import RESULTS, ROOT, export_commit, kill_children, say


class Run:
    """One invocation: its options, parameters, results file and the scenario steps."""

    def __init__(self, args: argparse.Namespace, params: dict[str, dict[str, Any]]) -> None:
        self.args = args
        self.params = params
        self.log_dir = (
            Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="chat-bench-"))
        )
        self.results: dict[str, Any] = {}
        self.t_start = time.time()
        suffix = "-quick" if args.quick else ""
        self.out = Path(args.out) if args.out else RESULTS / f"results{suffix}.json"
        self.plot_path = Path(args.plot) if args.plot else RESULTS / f"benchmarks{suffix}.png"
        self.report: dict[str, Any] = {}

    def targets(self, scenario: str) -> list[str]:
        """``--targets`` (or the scenario's default) among the servers it supports."""
        wanted = self.args.targets.split(",") if self.args.targets else DEFAULT_TARGETS[scenario]
        return [t for t in wanted if t in SUPPORTED[scenario]]

    def one(self, target: str, scenario: str, label: str, params: dict[str, Any]) -> dict[str, Any]:
        return one(target, scenario, label, params, self.args, self.log_dir)

    def save(self) -> None:
        self.report["elapsed_s"] = round(time.time() - self.t_start, 1)
        self.out.write_text(json.dumps(self.report, indent=1) + "\n")

    # the scenarios, in the order a full run takes them

    def fanout(self) -> None:
        res = self.results["fanout"] = {}
        for n in self.params["fanout"]["subscribers"]:
            p = {**self.params["fanout"], "subscribers": n}
            res[str(n)] = {
                t: self.one(t, "fanout", f"fanout-{n}", p) for t in self.targets("fanout")
            }
            self.save()

    def latency(self) -> None:
        """The latency curve: one run per fixed rate and target, then the saturation point."""
        lp = self.params["latency"]
        res = self.results["latency"] = {}
        for rate in [*lp["rates"], None]:
            key = "saturation" if rate is None else str(rate)
            p = {**lp, "rate": rate}
            res[key] = {
                t: self.one(t, "latency", f"latency-{key}", p) for t in self.targets("latency")
            }
            self.save()

    def simple(self, name: str) -> None:
        self.results[name] = {
            t: self.one(t, name, name, self.params[name]) for t in self.targets(name)
        }
        self.save()

    def ingest(self) -> None:
        """Every target on memory; then the chat server on SQLite (``--sync full``, its default,
        passed explicitly), on a fresh file: the store's cost per append against memory's."""
        self.simple("ingest")
        if "chat" in self.targets("ingest") and "sqlite" in self.params["ingest"]["chat_stores"]:
            saved = self.args.chat_arg
            self.args.chat_arg = [*saved, "--sync", "full"]
            try:
                p = {**self.params["ingest"], "store": "sqlite"}
                self.results["ingest_sqlite"] = {
                    "chat": self.one("chat", "ingest", "ingest-sqlite", p)
                }
            finally:
                self.args.chat_arg = saved
            self.save()

    def idle(self) -> None:
        self.simple("idle")

    def storm(self) -> None:
        self.simple("storm")

    def stalled(self) -> None:
        self.simple("stalled")
        long_run = self.results["stalled"].get("chat") or {}
        if long_run.get("stalled_closed_by_server") and not long_run.get("caught_up"):
            # The chat server dropped the stalled subscriber (a keepalive ping it could not
            # answer): again with pings off, so memory, catch-up and the gap item are
            # measured over the whole stall all the same.
            say("  the stalled subscriber was dropped: again with --ping-interval 0")
            saved = self.args.chat_arg
            self.args.chat_arg = [*saved, "--ping-interval", "0"]
            try:
                self.results["stalled_no_ping"] = {
                    "chat": self.one("chat", "stalled", "stalled-no-ping", self.params["stalled"])
                }
            finally:
                self.args.chat_arg = saved
            self.save()

    def rooms(self) -> None:
        """Saturation first; then latency at a third of the publish rate it reached."""
        rp = self.params["rooms"]
        res = self.results["rooms"] = {"saturation": {}, "third": {}}
        for t in self.targets("rooms"):
            sat = res["saturation"][t] = self.one(
                t, "rooms", "rooms-saturation", {**rp, "rate": None}
            )
            self.save()
            rate = round(rp["third"] * (sat.get("publishes_per_s") or 0), 1)
            if not sat.get("ok") or rate <= 0:
                res["third"][t] = {"ok": False, "error": "no saturation rate to take a third of"}
                continue
            res["third"][t] = self.one(t, "rooms", "rooms-third", {**rp, "rate": rate})
            self.save()

    def catchup(self) -> None:
        """Each store with its default retention, then each with the retention variant."""
        cp = self.params["catchup"]
        res = self.results["catchup"] = {}
        variants = [(s, RETENTION[s]) for s in cp["stores"]]
        if cp.get("retention_variant"):
            variants += [(s, cp["retention_variant"]) for s in cp["stores"]]
        for store, retention in variants:
            key = f"{store}-retention-{retention}"
            p = {**cp, "store": store, "retention": retention}
            res[key] = {
                t: self.one(t, "catchup", f"catchup-{key}", p) for t in self.targets("catchup")
            }
            self.save()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the chat server benchmarks.")
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument(
        "--targets",
        help=f"servers to run, among {','.join(TARGETS)} (default: each scenario's own)",
    )
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
    parser.add_argument("--latency-rates", help="publishes/s of the latency curve, e.g. 10,50,200")
    parser.add_argument("--storm-clients", type=int)
    parser.add_argument("--stores", help="catch-up stores, e.g. memory,sqlite,redis")
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
        "be quiet (default: 30, --quick: 0)",
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
        help="run each fan-out, latency, ingest, rooms and storm measurement this many times "
        "and keep the run least disturbed by other processes (for shared machines)",
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
        help="extra argument for 'twistd chat' (repeatable), e.g. --chat-arg=--ping-interval=0",
    )
    args = parser.parse_args()
    for s in args.scenarios.split(","):
        if s and s not in SCENARIOS:
            parser.error(f"unknown scenario {s}")
    for t in (args.targets or "").split(","):
        if t and t not in TARGETS:
            parser.error(f"unknown target {t}")
    return args


def build_params(args: argparse.Namespace, nofile: int) -> dict[str, dict[str, Any]]:
    """:data:`bench.params.FULL`, with ``--quick`` and every size option applied."""
    params = copy.deepcopy(FULL)
    if args.quick:
        for name, over in QUICK_OVERRIDES.items():
            params[name].update(over)
    if args.subscribers:
        params["fanout"]["subscribers"] = [int(x) for x in args.subscribers.split(",")]
    if args.duration:
        for name in ("fanout", "latency", "ingest", "rooms"):
            params[name]["duration"] = args.duration
    if args.stalled_items:
        params["stalled"]["items"] = args.stalled_items
        params["stalled"]["checkpoint"] = max(1, args.stalled_items // 10)
    if args.idle_connections:
        params["idle"]["connections"] = args.idle_connections
    if args.ingest_publishers:
        params["ingest"]["publishers"] = args.ingest_publishers
    if args.latency_rates:
        params["latency"]["rates"] = [float(x) for x in args.latency_rates.split(",")]
    if args.storm_clients:
        params["storm"]["clients"] = args.storm_clients
    if args.stores:
        params["catchup"]["stores"] = args.stores.split(",")
    for item in args.set:
        key, _, value = item.partition("=")
        scenario, _, name = key.partition(".")
        params[scenario][name] = json.loads(value)
    params["stalled"]["retention"] = args.retention or 10_000  # the memory store's default
    if args.retention:
        for name in SCENARIOS:
            if name != "catchup":  # catch-up names its retentions per store
                params[name]["retention"] = args.retention
    for name, key in (("idle", "connections"), ("storm", "clients")):
        if name in args.scenarios and nofile < params[name][key] + 200:
            say(f"open-files limit {nofile} too low for {name}: lowering {key}")
            params[name][key] = nofile - 200
    return params


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, kill_children)
    signal.signal(signal.SIGINT, kill_children)
    atexit.register(kill_children)
    nofile = raise_nofile()
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 30.0
    QUIET_BUDGET["left"] = args.quiet_budget
    run = Run(args, build_params(args, nofile))
    run.out.parent.mkdir(parents=True, exist_ok=True)
    run.log_dir.mkdir(parents=True, exist_ok=True)
    say(f"server logs in {run.log_dir}")
    args.chat_env = None
    chat_source = "working tree (as installed), " + machine()["git_commit"]
    if args.chat_commit:
        full, args.chat_env = export_commit(args.chat_commit, run.log_dir)
        chat_source = f"commit {full[:12]} (git archive)"
    say(f"chat server: {chat_source}")
    run.report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, "-m", "bench.run", *sys.argv[1:]]),
        "quick": args.quick,
        "machine": machine(),
        "workers": args.workers,
        "chat_source": chat_source,
        "chat_args": args.chat_arg,
        "params": run.params,
        "results": run.results,
    }
    steps: dict[str, Callable[[], None]] = {s: getattr(run, s) for s in SCENARIOS}
    wanted = [s for s in args.scenarios.split(",") if s]
    for scenario in SCENARIOS:  # always in the same order, whatever --scenarios says
        if scenario in wanted:
            steps[scenario]()
    run.save()
    try:
        from bench.plot import plot

        plot(run.report, run.plot_path)
        path = run.plot_path
        run.report["plot"] = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        run.save()
        say(f"plot: {run.plot_path}")
    except Exception as exc:
        say(f"no plot: {type(exc).__name__}: {exc}")
    say(f"results: {run.out} ({run.report['elapsed_s']}s)")
    from bench.summary import summary

    print(summary(run.report))


if __name__ == "__main__":
    main()
