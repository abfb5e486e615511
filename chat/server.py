"""Build the server as a Twisted service: what ``twistd -n chat`` runs.

:func:`make_service` returns a ``MultiService`` with one ``StreamServerEndpointService`` per
``--listen`` endpoint, all serving one site over one :class:`~chat.connection.Node`. The backend
(store and presence) comes from :func:`chat.stores.backend.open_backend`; the server starts and
stops what it is given and never asks which backend it is.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chat.connection import Node
from chat.protocol.closes import SHUTDOWN
from chat.service.chat import ChatService
from chat.service.routes import router
from chat.settings import Settings
from chat.stores.backend import Backend, open_backend
from chat.web.endpoints import server_endpoint
from chat.web.site import make_site

CLOSE_GRACE = 2.0  # seconds connections get to finish the close handshake on shutdown

logger = Logger()


def make_node(settings: Settings, reactor: IReactorTime) -> tuple[Node, Backend]:
    """The node (service, router, connections) over the backend ``settings`` describe."""
    holder: list[ChatService] = []
    backend = open_backend(settings, reactor, lambda: holder[0].local_state())
    service = ChatService(backend.store, backend.presence, settings, reactor)
    holder.append(service)
    return Node(service, router, settings, reactor), backend


class ChatServerService(MultiService):
    """The whole server: the node, its backend and its listening endpoints."""

    def __init__(self, settings: Settings, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.settings = settings
        self.node, self.backend = make_node(settings, reactor)
        site = make_site(self.node)
        for description in settings.listen:
            endpoint = server_endpoint(reactor, description, settings.listen_backlog)
            StreamServerEndpointService(endpoint, site).setServiceParent(self)

    def startService(self) -> None:
        """Start the backend; listen once it can serve (Redis: connected and loaded)."""
        Service.startService(self)

        def ready(_: object) -> None:
            if self.running:
                for service in self:
                    service.startService()

        self.backend.start(self.node.service.announce).addCallback(ready)

    def stopService(self) -> Deferred[None]:
        """Stop listening, close every connection with 1001, end the sessions, close the store.

        Connections get up to :data:`CLOSE_GRACE` seconds for the close handshake; any still
        open then are dropped here, every session ends (its ``leave`` items are queued before
        the store closes), and the store commits everything queued before its ``close()``
        fires: SIGTERM loses nothing that was acknowledged or queued.
        """
        node = self.node
        stopped = maybeDeferred(super().stopService)
        stopped.addBoth(lambda _: node.close_all(SHUTDOWN, CLOSE_GRACE))

        def end_sessions(_: object) -> Deferred[None]:
            for connection in list(node.connections):
                connection.connection_lost()
            node.service.end_all()
            d: Deferred[None] = maybeDeferred(self.backend.stop)
            return d.addBoth(lambda _: node.service.store.close())

        return stopped.addBoth(end_sessions)


def make_service(settings: Settings) -> ChatServerService:
    return ChatServerService(settings)
