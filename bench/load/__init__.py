"""The load process: drives one server over raw sockets and prints one JSON result.

Run by :mod:`bench.run` as ``python -m bench.load --scenario NAME --port PORT --server-pid PID
--params JSON``; it prints ``RESULT {...}`` on stdout, then waits for stdin to close (so the
harness can stop the server before thousands of sockets close at once).

Why it is cheap enough not to be the bottleneck: no reactor, no Autobahn (one ``epoll`` per
process, the handshake written by hand), and bulk subscribers never parse while measuring
(they count a marker, :mod:`bench.load.marks`). Every wait has a deadline.

Modules, bottom up:

- :mod:`~bench.load.framing` -- client-side WebSocket frames and handshake (RFC 6455);
- :mod:`~bench.load.loop` -- the ``epoll`` loop, :class:`~bench.load.loop.Timeout`;
- :mod:`~bench.load.marks` -- counting delivered items without parsing;
- :mod:`~bench.load.conn` -- one client connection; :mod:`~bench.load.setup` -- groups of them
  (connect, log in, join, open feeds); :mod:`~bench.load.burst` -- all at once (a storm);
- :mod:`~bench.load.payloads` -- timed message requests; :mod:`~bench.load.publishing` --
  pre-built request rings for closed-loop publishing;
- :mod:`~bench.load.probes`, :mod:`~bench.load.logcheck` -- subscribers that check order,
  gaps and latency;
- :mod:`~bench.load.worker` -- the forked processes holding the bulk of the connections;
  :mod:`~bench.load.coordinator` -- the main process, and the order subscribers are set up in;
- :mod:`~bench.load.scenarios` -- one module per scenario.
"""
