"""The PNG of a results file: fan-out throughput, the latency-versus-throughput curve, and
the memory of the stalled consumer.

``python -m bench.plot RESULTS.json OUT.png`` redraws it from a saved results file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

LABELS = {
    "chat": "chat server",
    "autobahn": "(a) Autobahn sendMessage per client",
    "floor": "(b) floor: pre-framed, one write per client",
}
COLORS = {"chat": "tab:blue", "autobahn": "tab:red", "floor": "tab:gray"}


def latency_curve(ax: Any, latency: dict[str, Any]) -> None:
    """p50 (solid) and p99 (dashed) against the delivery rate reached, per target.

    The last point of each line is the saturation point (closed loop), drawn hollow.
    """
    for target in LABELS:
        points = []
        for key, row in latency.items():
            r = row.get(target)
            if not r or not r.get("ok") or not r.get("latency_ms"):
                continue
            rate = r.get("deliveries_per_s_steady") or r.get("deliveries_per_s")
            points.append((key == "saturation", rate, r["latency_ms"], r.get("publishes_per_s")))
        if not points:
            continue
        points.sort(key=lambda x: (x[0], x[1]))
        xs = [x[1] for x in points]
        color = COLORS[target]
        ax.plot(xs, [x[2]["p50"] for x in points], "o-", color=color, label=f"{LABELS[target]} p50")
        ax.plot(xs, [x[2]["p99"] for x in points], "s--", color=color, alpha=0.7, label="p99")
        sat = [x for x in points if x[0]]
        for x in sat:
            ax.annotate(
                f"saturation\n{x[3]:,.0f}/s",
                (x[1], x[2]["p99"]),
                fontsize=7,
                color=color,
                textcoords="offset points",
                xytext=(-30, 8),
            )
    import matplotlib.ticker

    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.xaxis.set_major_formatter(plain)
    ax.set_xlabel("deliveries / s reached (publishes/s times 1,000 subscribers)")
    ax.set_ylabel("publish → deliver latency (ms)")
    ax.set_title("Latency against throughput, 1,000 subscribers")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_lines():
        ax.legend(fontsize=7)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    results = report["results"]
    fig, grid = plt.subplots(2, 2, figsize=(15, 10))
    axes = [grid[0][0], grid[1][0], grid[1][1]]
    latency_curve(grid[0][1], results.get("latency", {}))
    m = report.get("machine", {})
    fig.suptitle(
        f"chat server benchmarks{' (--quick)' if report.get('quick') else ''} — "
        f"{m.get('cpus')} CPUs {m.get('cpu', '')}, Python {m.get('python')}, "
        f"Twisted {m.get('twisted')}, Autobahn {m.get('autobahn')}",
        fontsize=10,
    )

    ax = axes[0]
    fanout = results.get("fanout", {})
    sizes = sorted(int(n) for n in fanout)
    for target in LABELS:
        xs, ys = [], []
        for n in sizes:
            r = fanout[str(n)].get(target)
            if r and r.get("ok") and r.get("deliveries_per_s"):
                xs.append(n)
                ys.append(r["deliveries_per_s"])
        if xs:
            ax.plot(xs, ys, "o-", label=LABELS[target], color=COLORS[target])
    if sizes:
        ax.axhline(1_000_000, color="green", ls=":", lw=1, label="target 1,000,000/s")
    ax.set_xscale("log")
    if sizes:
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{n:,}" for n in sizes])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.yaxis.set_major_formatter(
        matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v / 1e6:g} M" if v else "0")
    )
    ax.set_xlabel("subscribers (1 publisher, 1 channel)")
    ax.set_ylabel("deliveries / s")
    ax.set_title("Fan-out throughput")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_lines():
        ax.legend(fontsize=8)
    ax.set_ylim(bottom=0)

    stalled = results.get("stalled", {})
    runs = [(stalled.get(t), LABELS[t], COLORS[t], "-") for t in LABELS]
    no_ping = results.get("stalled_no_ping", {}).get("chat")
    runs.insert(1, (no_ping, "chat server, --ping-interval 0", "tab:cyan", "--"))
    ax_t, ax_i = axes[1], axes[2]
    for r, label, color, style in runs:
        if not r or not r.get("samples"):
            continue
        samples = r["samples"]
        ts = [s[0] for s in samples]
        items = [s[1] for s in samples]
        rss = [s[2] / 1024 for s in samples]
        if r.get("stalled_closed_by_server"):
            label += " (stalled subscriber dropped)"
        ax_t.plot(ts, rss, style, label=label, color=color)
        ax_i.plot(items, rss, style, label=label, color=color)
    n_items = report.get("params", {}).get("stalled", {}).get("items")
    ax_t.set_title(
        f"Stalled consumer: server RSS while {n_items:,} items are published"
        if n_items
        else "Stalled consumer: server RSS"
    )
    ax_t.set_xlabel("seconds since publishing started")
    ax_t.set_ylabel("server RSS (MiB)")
    ax_i.set_title("... the same against items published")
    ax_i.set_xlabel("items published (acknowledged)")
    ax_i.set_ylabel("server RSS (MiB)")
    for a in (ax_t, ax_i):
        a.grid(True, alpha=0.3)
        if a.get_lines():
            a.legend(fontsize=8)
        a.set_ylim(bottom=0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    plot(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
