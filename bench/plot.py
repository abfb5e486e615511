"""The PNG of a results file: throughput vs subscribers, and memory of the stalled consumer.

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


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    results = report["results"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
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
        a.legend(fontsize=8)
        a.set_ylim(bottom=0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    plot(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
