"""Every scenario's parameters (the full run's sizes, and ``--quick``'s), and which servers
each scenario runs against.

``--set SCENARIO.KEY=JSON`` overrides any entry of :data:`FULL`.
"""

from __future__ import annotations

from typing import Any

TARGETS = ("chat", "autobahn", "floor", "bare")
SCENARIOS = ("fanout", "latency", "ingest", "stalled", "idle", "rooms", "storm", "catchup")
STORES = ("memory", "sqlite", "redis")

# The servers a scenario can run against, and those it runs against unless --targets says.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "fanout": ("chat", "autobahn", "floor"),
    "latency": ("chat", "autobahn", "floor"),
    "ingest": ("chat", "autobahn", "floor"),
    "stalled": ("chat", "autobahn", "floor"),
    "idle": ("chat", "autobahn", "floor", "bare"),
    "rooms": ("chat", "autobahn", "floor"),
    "storm": ("chat", "autobahn", "floor", "bare"),
    "catchup": ("chat",),  # the baselines keep no log
}
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    **SUPPORTED,
    # (a) sendMessage cannot sustain 400 publishes/s to 1,000 subscribers (85,000/s at best)
    "latency": ("chat", "floor"),
    "rooms": ("chat", "floor"),
    "storm": ("chat", "bare"),
}
# Measurements worth repeating under --repeat (noise-sensitive and short).
REPEATABLE = ("fanout", "latency", "ingest", "rooms", "storm")

# Every server listens with this backlog (the chat server's default); a measurement's
# "listen_backlog" parameter overrides it for every server of that measurement alike.
LISTEN_BACKLOG = 1024

# retention per store, passed explicitly so the expected gap is known (the server's defaults)
RETENTION = {"memory": 10_000, "sqlite": 100_000, "redis": 10_000}

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
        "rates": [10, 25, 50, 100, 200, 400],  # publishes/s; plus the saturation point
        "duration": 10.0,
        "warmup": 1.0,
        "window": "auto",  # the saturation point: closed loop, as "fanout"
        "in_flight": 200_000,
        "probes": 16,  # spread evenly over the fan-out order
        "max_messages": 2_000_000,
        "max_lag": 5000,  # stop (and say so) if subscribers fall this far behind
        "drain_timeout": 30.0,
        "setup_timeout": 60.0,
    },
    "ingest": {
        "publishers": 100,
        "window": 10,  # requests in flight per publisher
        "chat_stores": ["memory", "sqlite"],  # the chat server again on SQLite (--sync full)
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
    "rooms": {
        "connections": 5000,  # users: publishers + receivers
        "publishers": 200,  # members of their channels, no feed; 8 requests open each
        "channels": 500,
        "per_user": 5,  # distinct channels per user
        "zipf_s": 1.0,  # channel of rank r drawn with probability ~ 1 / r^s
        "private_fraction": 0.1,
        "window": 8,
        "in_flight": 200_000,  # deliveries under way at most (closed loop)
        "third": 1 / 3,  # the latency run publishes at this fraction of the saturation rate
        "probes": 16,
        "seed": 15,
        "duration": 10.0,
        "warmup": 2.0,
        "drain_timeout": 30.0,
        "setup_timeout": 120.0,
    },
    "storm": {
        "clients": 5000,
        "timeout": 120.0,
        "listen_backlog": LISTEN_BACKLOG,  # every server's; try a deeper one with --set
    },
    "catchup": {
        "stores": list(STORES),
        "items": 30_000,
        "content_chars": 300,  # issue 11's reproduction: long lines cut disk batches short
        "window": 32,
        "retention_variant": 20_000,  # run again with this retention (one gap expected)
        "stall_s": 5.0,  # no item for this long: stalled
        "post_timeout": 300.0,
        "catchup_timeout": 300.0,
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
    "rooms": {
        "connections": 1000,
        "publishers": 50,
        "channels": 100,
        "duration": 3.0,
        "warmup": 1.0,
    },
    "storm": {"clients": 1000},
    "catchup": {"stall_s": 3.0},
}
