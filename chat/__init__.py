"""A real-time chat and pub/sub server on Twisted and Autobahn.

Layers, from the wire inwards (each a package of its own):

- :mod:`chat.protocol` — the wire protocol without I/O: frames in, events and bytes out;
- :mod:`chat.websocket` — the one module that imports Autobahn;
- :mod:`chat.connection` — binds one WebSocket connection to the core, router and producers;
- :mod:`chat.service` — the chat domain: sessions, channels, routes;
- :mod:`chat.stores` — log stores behind one interface;
- :mod:`chat.producers` — every outbound stream, each an ``IPushProducer``;
- :mod:`chat.web` — the ``twisted.web`` site; :mod:`chat.server` builds the service for twistd.
"""

__version__ = "0.1.0"
