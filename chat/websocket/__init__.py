"""The WebSocket adapter: the ONLY package of the project that imports Autobahn.

- :mod:`~chat.websocket.server` — one Autobahn server connection bound to one
  :class:`~chat.connection.ChatConnection`, the ``/ws`` resource;
- :mod:`~chat.websocket.client` — the client side the Python library (:mod:`chat.client`)
  uses, so the library never imports the server;
- :mod:`~chat.websocket._autobahn` — every Autobahn attribute the server touches outside
  Autobahn's documented API (the receive fast path, the frame writer), named in one module.

Frames going out never pass through Autobahn's ``sendMessage``: the producers build them
(:func:`chat.protocol.frames.next_frame`) and write many at once through the connection's
writer, which writes nothing once the connection stopped being open.

This ``__init__`` imports nothing, so importing the client does not import the server.
"""
