"""The HTTP side of the server: one :class:`~twisted.web.server.Site` per server.

``/`` serves the static browser page (``static/``), ``/ws`` is the WebSocket endpoint,
``/metrics`` the Prometheus metrics, ``/healthz`` the health check, and ``/api/publish`` the
HTTP publish API (when an API key is configured).
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client.twisted import MetricsResource
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import File

from chat.connection import Node
from chat.metrics import make_registry
from chat.web.health import HealthResource
from chat.web.publish import PublishResource
from chat.websocket.server import websocket_resource

STATIC = Path(__file__).parent / "static"


def make_site(node: Node) -> Site:
    root = File(str(STATIC))
    root.indexNames = ["index.html"]
    root.putChild(b"ws", websocket_resource(node))
    root.putChild(b"metrics", MetricsResource(registry=make_registry(node)))
    root.putChild(b"healthz", HealthResource(node))
    if node.settings.api_keys:
        api = Resource()
        api.putChild(b"publish", PublishResource(node))
        root.putChild(b"api", api)
    site = Site(root)
    site.displayTracebacks = False
    return site
