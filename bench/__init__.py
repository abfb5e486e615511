"""Benchmark harness of the chat server: ``python -m bench.run`` (see docs/benchmarks.md).

Modules:

- :mod:`bench.run` -- the one command: options, the order of scenarios, the results file,
  the plot and the summary; :mod:`bench.params` -- every scenario's sizes and servers;
- :mod:`bench.runner` -- one measurement: a fresh server (and store), one load process,
  ``--repeat``, how busy the machine was; :mod:`bench.servers` -- starting and stopping the
  servers and a private ``redis-server``;
- :mod:`bench.load` -- the load process (a package: event loop, connections, workers, one
  module per scenario): raw non-blocking sockets doing the WebSocket handshake themselves;
  subscribers count delivered items with ``bytes.count`` (C speed), a few probe subscribers
  parse every frame to check order and measure latency;
- :mod:`bench.baselines` -- the comparison servers speaking the same protocol subset:
  (a) Autobahn ``sendMessage`` per client, (b) the floor: pre-framed bytes, one coalesced
  ``transport.write`` per client, (c) a bare Autobahn server;
- :mod:`bench.procstat` -- RSS, CPU time and listen-queue counters from ``/proc``;
- :mod:`bench.plot` -- the PNG; :mod:`bench.summary` -- the Markdown tables.

``bench/results/`` is the default output (scratch, git-ignored); ``bench/report/`` keeps the
runs that docs/benchmarks.md shows. ``bench/redis_fanout.py`` (two nodes on Redis) and
``bench/sqlite_ingest.py`` (SQLite store ingest, see docs/storage.md) are separate scripts.
"""
