"""Every outbound stream of the server, each a Twisted ``IPushProducer``.

- :mod:`~chat.producers.outbound` — the ONE producer registered with a connection's transport:
  it fans pause/resume out to that connection's streams and writes what they have ready,
  round-robin, coalesced into few ``transport.write`` calls;
- :mod:`~chat.producers.stream` — the base of a stream producer (credit, pause, wake);
- :mod:`~chat.producers.feed` — the ``messages`` feed: cursors over many logs;
- :mod:`~chat.producers.listing` — finite lists (``channels``, ``channel.users``, ``history``);
- :mod:`~chat.producers.statistics` — the ``statistics`` channel's ticker.
"""
