"""A Markdown summary of a results file (printed at the end of ``bench.run``).

``python -m bench.summary RESULTS.json`` prints it again from a saved file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

NAMES = {
    "chat": "chat server",
    "autobahn": "(a) Autobahn sendMessage",
    "floor": "(b) floor",
    "bare": "(c) bare Autobahn",
}


def _n(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and value < 100:
        return f"{value:.3g}{unit}"
    return f"{round(value):,}{unit}"


def _cpu(r: dict[str, Any]) -> str:
    load = r.get("load_cpu_pct") or {}
    parts = []
    if "coordinator" in load:
        parts.append(f"{load['coordinator']:.0f}")
    parts += [f"{w:.0f}" for w in load.get("workers", [])]
    return "+".join(parts) + "%" if parts else "—"


def _refused(r: dict[str, Any]) -> str:
    """Publishes the server answered with an error (a rate limit, say): never silent."""
    errors = r.get("publisher_errors")
    return f" ({errors:,} publishes refused)" if errors else ""


def _noise(r: dict[str, Any]) -> str:
    """A warning when other processes used much CPU during the measurement."""
    others = r.get("others_cpu_pct")
    return f" ⚠ other processes {others:.0f}%" if others is not None and others > 25 else ""


def _fail(r: dict[str, Any]) -> str | None:
    if not r.get("ok"):
        return f"failed: {r.get('error', '?')[:120]}"
    return None


def summary(report: dict[str, Any]) -> str:
    res = report["results"]
    lines: list[str] = []
    targets = [t for t in NAMES if any(t in by for _s, by in _rows(res))]
    if "fanout" in res:
        fan = [t for t in targets if any(t in row for row in res["fanout"].values())]
        lines += [
            "### Fan-out (deliveries/s)",
            "",
            "| subscribers | " + " | ".join(NAMES[t] for t in fan) + " |",
            "|---|" + "---|" * len(fan),
        ]
        for n, row in sorted(res["fanout"].items(), key=lambda kv: int(kv[0])):
            cells = []
            for t in fan:
                r = row.get(t, {})
                cells.append(
                    _fail(r)
                    or (
                        f"{_n(r.get('deliveries_per_s'))}"
                        f"{'' if r.get('complete') else ' (INCOMPLETE)'}"
                        f"{_refused(r)}"
                        f" — server CPU {_n(r.get('server_cpu_pct'))}%, load CPU {_cpu(r)}"
                        f"{_noise(r)}"
                    )
                )
            lines.append(f"| {int(n):,} | " + " | ".join(cells) + " |")
        lines.append("")
    if "latency" in res:
        lines += _latency(res["latency"])
    if "ingest" in res:
        lines += [
            "### Ingest (acknowledged messages/s)",
            "",
            "| target | acks/s | errors | server CPU | load CPU |",
            "|---|---|---|---|---|",
        ]
        for t in targets:
            r = res["ingest"].get(t)
            if r is None:
                continue
            lines.append(
                f"| {NAMES[t]} | "
                + (
                    _fail(r)
                    or (
                        f"{_n(r.get('acks_per_s'))} | {r.get('errors')} | "
                        f"{_n(r.get('server_cpu_pct'))}% | {_cpu(r)}{_noise(r)}"
                    )
                )
                + " |"
            )
        sqlite = (res.get("ingest_sqlite") or {}).get("chat")
        if sqlite is not None:
            memory = (res["ingest"].get("chat") or {}).get("acks_per_s")
            ratio = (
                f" (÷ memory {sqlite['acks_per_s'] / memory:.2f})"
                if memory and sqlite.get("acks_per_s")
                else ""
            )
            lines.append(
                f"| {NAMES['chat']}, SQLite --sync full | "
                + (
                    _fail(sqlite)
                    or (
                        f"{_n(sqlite.get('acks_per_s'))}{ratio} | {sqlite.get('errors')} | "
                        f"{_n(sqlite.get('server_cpu_pct'))}% | {_cpu(sqlite)}{_noise(sqlite)}"
                    )
                )
                + " |"
            )
        lines.append("")
    if "stalled" in res:
        lines += [
            "### Stalled consumer",
            "",
            "| target | items | RSS growth checkpoint→end | total RSS growth | gap items |"
            " caught up | catch-up items | catch-up items/s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        rows = [(NAMES[t], res["stalled"].get(t)) for t in targets]
        if "stalled_no_ping" in res:
            rows.insert(
                1, (f"{NAMES['chat']}, --ping-interval 0", res["stalled_no_ping"].get("chat"))
            )
        for name, r in rows:
            if r is None:
                continue
            t = name
            if _fail(r):
                lines.append(f"| {t} | {_fail(r)} |||||||")
                continue
            growth = r.get("rss_growth_checkpoint_to_end_kib")
            dropped = r.get("stalled_closed_by_server")
            lines.append(
                f"| {t} | {_n(r.get('acked'))} | "
                f"{_n(growth / 1024 if growth is not None else None, ' MiB')} | "
                f"{_n(r['rss_growth_total_kib'] / 1024, ' MiB')} | {r.get('gap_count')} | "
                f"{r.get('caught_up')}{' (dropped: ' + dropped + ')' if dropped else ''} | "
                f"{_n(r.get('catchup_messages'))} | {_n(r.get('catchup_items_per_s'))} |"
            )
        lines.append("")
    if "idle" in res:
        lines += [
            "### Idle connections",
            "",
            "| target | connections | RSS before | RSS after | bytes/connection |"
            " idle server CPU |",
            "|---|---|---|---|---|---|",
        ]
        for t in targets:
            r = res["idle"].get(t)
            if r is None:
                continue
            lines.append(
                f"| {NAMES[t]} | "
                + (
                    _fail(r)
                    or (
                        f"{_n(r.get('connections'))} | {_n(r['rss_before_kib'] / 1024, ' MiB')} | "
                        f"{_n(r['rss_after_kib'] / 1024, ' MiB')} | "
                        f"{_n(r.get('rss_per_connection_bytes'))} | "
                        f"{_n(r.get('server_cpu_pct_idle'))}%"
                    )
                )
                + " |"
            )
        lines.append("")
    if "rooms" in res:
        lines += _rooms(res["rooms"])
    if "storm" in res:
        lines += _storm(res["storm"])
    if "catchup" in res:
        lines += _catchup(res["catchup"])
    problems = []
    for scenario, by in res.items():
        for key, r in _flat(scenario, by):
            for p in r.get("server_log_problems") or []:
                problems.append(f"- {key}: {p[:300]}")
            for p in (r.get("probe_problems") or [])[:3] + (r.get("order_problems") or [])[:3]:
                problems.append(f"- {key}: {p}")
    if problems:
        lines += ["### Problems seen", "", *problems[:40], ""]
    return "\n".join(lines)


NESTED = ("fanout", "latency", "rooms", "catchup")  # results[scenario][point][target]


def _rows(res: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(scenario, {target: result}) for every measured row."""
    out = []
    for scenario, by in res.items():
        if scenario in NESTED:
            out += [(scenario, row) for row in by.values()]
        else:
            out.append((scenario, by))
    return out


def _flat(scenario: str, by: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, result) of every run; tolerates the previous harness's flat latency results."""
    if scenario in NESTED and not any(t in NAMES for t in by):
        pairs = [(f"{scenario}-{n}/{t}", r) for n, row in by.items() for t, r in row.items()]
    else:
        pairs = [(f"{scenario}/{t}", r) for t, r in by.items()]
    return [(label, r) for label, r in pairs if isinstance(r, dict)]


def _ms(lat: dict[str, Any] | None, key: str) -> str:
    return _n((lat or {}).get(key))


def _latency(res: dict[str, Any]) -> list[str]:
    lines = [
        "### Latency against throughput (1,000 subscribers, probes spread over the fan-out order)",
        "",
        "| publishes/s | target | deliveries/s | p50 ms | p99 ms | server CPU |"
        " server µs/delivery | samples |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for point, row in res.items():
        for t, r in row.items():
            if t not in NAMES or not isinstance(r, dict):
                continue  # a results file of the previous harness (one rate per target)
            label = "saturation" if point == "saturation" else _n(float(point))
            if _fail(r):
                lines.append(f"| {label} | {NAMES[t]} | {_fail(r)} ||||||")
                continue
            lat = r.get("latency_ms")
            note = f" ({r['fell_behind']})" if r.get("fell_behind") else ""
            if point == "saturation":
                label = f"saturation: {_n(r.get('publishes_per_s'))}"
            lines.append(
                f"| {label}{note} | {NAMES[t]} | {_n(r.get('deliveries_per_s_steady'))} | "
                f"{_ms(lat, 'p50')} | {_ms(lat, 'p99')} | {_n(r.get('server_cpu_pct'))}% | "
                f"{_n(r.get('server_cpu_us_per_delivery'))} | {_n(r.get('latency_samples'))}"
                f"{_noise(r)} |"
            )
    return [*lines, ""]


def _rooms(res: dict[str, Any]) -> list[str]:
    lines = [
        "### Many rooms",
        "",
        "| target | deliveries/s | acks/s | publishes/s | deliveries/publish | complete |"
        " server CPU | at a third: publishes/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t, sat in res.get("saturation", {}).items():
        third = res.get("third", {}).get(t, {})
        if _fail(sat):
            lines.append(f"| {NAMES[t]} | {_fail(sat)} |||||||||")
            continue
        lat = third.get("latency_ms") if third.get("ok") else None
        lines.append(
            f"| {NAMES[t]} | {_n(sat.get('deliveries_per_s'))} | {_n(sat.get('acks_per_s'))} | "
            f"{_n(sat.get('publishes_per_s'))} | {_n(sat.get('deliveries_per_publish'))} | "
            f"{sat.get('complete')} | {_n(sat.get('server_cpu_pct'))}%{_noise(sat)} | "
            f"{_n(third.get('target_publishes_per_s'))} | {_ms(lat, 'p50')} | "
            f"{_ms(lat, 'p99')}{_noise(third)} |"
        )
    return [*lines, ""]


def _storm(res: dict[str, Any]) -> list[str]:
    lines = [
        "### Reconnect storm",
        "",
        "| target | clients | all logged in after | per client p50 / p99 | failed |"
        " listen overflows | SYN retransmits | server CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t, r in res.items():
        if _fail(r):
            lines.append(f"| {NAMES[t]} | {_fail(r)} |||||||")
            continue
        served = r.get("served_ms") or {}
        queue = r.get("listen_queue") or {}
        lines.append(
            f"| {NAMES[t]} | {_n(r.get('clients'))} | {_n(r.get('all_served_s'), ' s')} | "
            f"{_n(served.get('p50'))} / {_n(served.get('p99'))} ms | {r.get('failed')} | "
            f"{queue.get('ListenOverflows', '—')} | {queue.get('TCPSynRetrans', '—')} | "
            f"{_n(r.get('server_cpu_pct'))}%{_noise(r)} |"
        )
    return [*lines, ""]


def _catchup(res: dict[str, Any]) -> list[str]:
    lines = [
        "### Catch-up from seq 0",
        "",
        "| store, retention | posted/s | items received / expected | gaps seen (expected) |"
        " result | catch-up items/s |",
        "|---|---|---|---|---|---|",
    ]
    for key, row in res.items():
        r = row.get("chat", {})
        if _fail(r):
            lines.append(f"| {key} | {_fail(r)} |||||")
            continue
        gaps = ", ".join(f"{g['first']}..{g['last']}" for g in r.get("gaps") or []) or "none"
        more = r.get("gap_count", 0) - len(r.get("gaps") or [])
        gaps += f" (+{more} more)" if more > 0 else ""
        expected_gap = r.get("expected_gap")
        expected = f"{expected_gap[0]}..{expected_gap[1]}" if expected_gap else "none"
        if r.get("caught_up"):
            outcome = "caught up" + ("" if r.get("gap_as_expected") else ", gaps not as expected")
        else:
            outcome = r.get("stalled_after") or "did not finish"
            nudge = r.get("nudge")
            if nudge:
                outcome += f"; one more post released {nudge['items_after']} items"
        problems = len(r.get("order_problems") or [])
        outcome += f"; {problems} order problems" if problems else ""
        lines.append(
            f"| {key} | {_n(r.get('posts_per_s'))} | {_n(r.get('items_received'))} / "
            f"{_n(r.get('expected_items'))} | {gaps} ({expected}) | {outcome} | "
            f"{_n(r.get('catchup_items_per_s'))}{_noise(r)} |"
        )
    return [*lines, ""]


if __name__ == "__main__":
    print(summary(json.loads(Path(sys.argv[1]).read_text())))
