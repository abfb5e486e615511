"""Build the server as a Twisted service: what ``twistd -n chat`` runs.

:func:`make_service` returns a ``MultiService`` with one ``StreamServerEndpointService`` per
``--listen`` endpoint, all serving one site over one :class:`~chat.connection.Hub`.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorTime

from chat.connection import Hub
from chat.service.chat import ChatService
from chat.service.routes import router
from chat.settings import Settings
from chat.stores.interface import ILogStore
from chat.stores.memory import MemoryLogStore
from chat.web.site import make_site


class UnknownStore(ValueError):
    """``--store`` names a backend this server does not have."""


def open_store(settings: Settings) -> ILogStore:
    if settings.store == "memory":
        return MemoryLogStore(retention=settings.retention)
    raise UnknownStore(f"unknown store {settings.store!r}; available: memory")


def make_hub(settings: Settings, reactor: IReactorTime) -> Hub:
    return Hub(ChatService(open_store(settings)), router, settings, reactor)


class ChatServerService(MultiService):
    """The whole server: the hub and its listening endpoints."""

    def __init__(self, settings: Settings, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.settings = settings
        self.hub = make_hub(settings, reactor)
        site = make_site(self.hub)
        for description in settings.listen:
            endpoint = serverFromString(reactor, description)
            StreamServerEndpointService(endpoint, site).setServiceParent(self)

    def stopService(self) -> Any:
        result = super().stopService()
        self.hub.service.store.close()
        return result


def make_service(settings: Settings) -> ChatServerService:
    return ChatServerService(settings)
