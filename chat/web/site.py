"""The HTTP side of the server: one :class:`~twisted.web.server.Site` per server.

``/`` serves the static browser page (``static/``), ``/ws`` is the WebSocket endpoint.
"""

from __future__ import annotations

from pathlib import Path

from twisted.web.server import Site
from twisted.web.static import File

from chat.connection import Hub
from chat.websocket import websocket_resource

STATIC = Path(__file__).parent / "static"


def make_site(hub: Hub) -> Site:
    root = File(str(STATIC))
    root.indexNames = ["index.html"]
    root.putChild(b"ws", websocket_resource(hub))
    site = Site(root)
    site.displayTracebacks = False
    return site
