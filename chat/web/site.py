"""The HTTP side of the server: one :class:`ChatSite` per server, behind its connection limits.

``/`` serves the static browser page (``static/``), ``/ws`` is the WebSocket endpoint,
``/metrics`` the Prometheus metrics, ``/healthz`` the health check, and ``/api/publish`` the
HTTP publish API (when an API key is configured).

What one HTTP connection may cost, and what bounds the whole (docs/operations.md, "HTTP
limits and the resource model of HTTP"): :mod:`chat.web.connections` counts connections at
accept; :mod:`chat.web.channel` bounds each request's head and body in time and size, and
keeps bodies in memory, never on disk.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

from prometheus_client.twisted import MetricsResource
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site
from twisted.web.static import File

from chat.connection import Node
from chat.logs import LogThrottle
from chat.metrics import make_registry
from chat.settings import Settings
from chat.web.channel import LimitedChannel, LimitedRequest
from chat.web.connections import ConnectionLimits
from chat.web.health import HealthResource
from chat.web.publish import PublishResource
from chat.websocket.server import websocket_resource

STATIC = Path(__file__).parent / "static"
# Log lines clients can cause: refusals and failures, and the access log (one line per request).
REFUSAL_BURST, REFUSAL_RATE = 20, 1.0  # lines at once, lines per second, per kind of line
ACCESS_BURST, ACCESS_RATE = 100, 20.0

log = Logger(namespace="chat.web")


class StaticFiles(File):
    """The browser page's files; a path segment no file can have is a plain 404.

    twisted.web's :class:`~twisted.web.static.File` answers a NUL byte in a segment with a 500
    (``os.stat`` raises) and logs a traceback for a segment that is not UTF-8.
    """

    def getChild(self, path: bytes, request: Request) -> IResource:
        if b"\x00" in path or not _is_utf8(path):
            child: IResource = self.childNotFound
            return child
        found: IResource = super().getChild(path, request)
        return found


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class ChatSite(Site):
    """The site: every connection a :class:`~chat.web.channel.LimitedChannel`.

    HTTP/1.1 only: twisted.web would switch a TLS connection that negotiated ``h2`` to its
    HTTP/2 channel, which has none of these limits; our ``ssl:`` endpoints offer no ALPN, so
    ``h2`` is never negotiated, and the channel is used directly.
    """

    protocol = LimitedChannel  # type: ignore[assignment]
    requestFactory = LimitedRequest
    displayTracebacks = False

    def __init__(self, root: IResource, node: Node) -> None:
        # timeout=None: Twisted's idle timer, which every byte resets, is what let a client
        # sending one byte a second keep a connection; the channel's deadlines replace it.
        super().__init__(root, timeout=None, reactor=node.clock)
        self.node = node
        self.throttle = LogThrottle(node.clock, REFUSAL_BURST, REFUSAL_RATE, log=log)
        self.access_throttle = LogThrottle(node.clock, ACCESS_BURST, ACCESS_RATE, log=log)

    @property
    def settings(self) -> Settings:
        return self.node.settings

    def getContentFile(self, length: int | None) -> BytesIO:
        """Where a request body goes: memory, never a temporary file.

        The channel has already refused any body over its route's limit
        (``--max-body-size`` at most), so this holds no more than that.
        """
        return BytesIO()

    def log(self, request: Any) -> None:
        """One access-log line per request, through a throttle: clients choose how many."""
        if self.access_throttle.allow("http.access"):
            super().log(request)

    def stopFactory(self) -> None:
        super().stopFactory()
        self.throttle.flush()
        self.access_throttle.flush()


def make_site(node: Node) -> ConnectionLimits:
    """The site of ``node``, behind its connection limits: the factory to listen with."""
    root = StaticFiles(str(STATIC))
    root.indexNames = ["index.html"]
    root.putChild(b"ws", websocket_resource(node))
    root.putChild(b"metrics", MetricsResource(registry=make_registry(node)))
    root.putChild(b"healthz", HealthResource(node))
    if node.settings.api_keys:
        api = Resource()
        api.putChild(b"publish", PublishResource(node))
        root.putChild(b"api", api)
    return ConnectionLimits(ChatSite(root, node))
