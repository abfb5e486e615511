"""The chat domain: sessions, channels, membership, statistics, and the routes over them.

- :mod:`~chat.service.chat` — :class:`ChatService`, the state of one server;
- :mod:`~chat.service.validation` — checks of route data, with messages a developer can act on;
- :mod:`~chat.service.router` — the decorator-based router per interaction model;
- :mod:`~chat.service.routes` — every route of PROTOCOL.md.
"""
