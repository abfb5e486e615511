"""The comparison servers, speaking the subset of PROTOCOL.md the benchmarks use.

Run as ``python -m bench.baselines --mode autobahn|floor|bare --port PORT [--backlog 1024]``.

- ``autobahn`` (baseline a, "what most code does"): for each member with an open feed,
  build that client's ``next`` frame and call ``sendMessage``. No backpressure: a client that
  does not read makes the transport buffer grow.
- ``floor`` (baseline b): the ``next`` frame is built and WebSocket-framed once per distinct
  stream id and appended to each recipient's pending list; once per reactor turn every
  connection with pending frames gets ONE ``transport.write`` of all of them. Also without
  backpressure. The least Python work a Twisted server can do per delivery, with any number
  of channels and private messages.
- ``bare``: a plain Autobahn server that negotiates the same subprotocol, answers ``login``
  and the ``messages`` / ``channels`` streams and keeps nothing: the reference for what a
  WebSocket connection costs by itself (idle memory, reconnect storm).

``autobahn`` and ``floor`` answer ``login``, ``messages``, ``channel.join``, ``message`` (to a
channel or a user) and ``channels``; they keep no log and no history: items go to the open
feeds, live, and nowhere else (so ``since`` is moot). An item's JSON is encoded once per
append with the chat server's compact shape and codec (orjson), so frames have the same size.
They read client frames through the same receive fast path as the chat server
(:mod:`bench.baselines.fastpath`), so that every comparison is about delivery. All listen
with the same backlog as the chat server (1024).

Modules: :mod:`~bench.baselines.codec`, :mod:`~bench.baselines.fastpath`,
:mod:`~bench.baselines.hub` (channels, inboxes, the two delivery modes),
:mod:`~bench.baselines.protocol` (the routes), :mod:`~bench.baselines.bare`.
"""
