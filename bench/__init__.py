"""Benchmark harness of the chat server: ``python -m bench.run`` (see docs/benchmarks.md).

Modules:

- :mod:`bench.run` -- the one command: starts each server as users run it, drives it with a
  separate load process, writes ``bench/results/*.json`` and a PNG plot.
- :mod:`bench.load` -- the load process: raw non-blocking sockets doing the WebSocket handshake
  themselves; subscribers count delivered items with ``bytes.count`` (C speed), a few probe
  subscribers parse every frame to check order and measure latency.
- :mod:`bench.baselines` -- the two comparison servers speaking the same protocol subset:
  (a) Autobahn ``sendMessage`` per client, (b) pre-framed bytes, one coalesced
  ``transport.write`` per client.
- :mod:`bench.wsproto` -- client-side WebSocket framing (RFC 6455) for the load process.
- :mod:`bench.procstat` -- RSS and CPU time of a process from ``/proc``.
- :mod:`bench.plot` -- the PNG; :mod:`bench.summary` -- the Markdown tables.

``bench/results/`` is the default output (scratch, git-ignored); ``bench/report/`` keeps the
run that docs/benchmarks.md shows. ``bench/sqlite_ingest.py`` is a separate script (SQLite
store ingest, see docs/storage.md).
"""
