"""Build the server as a Twisted service: what ``twistd -n chat`` runs.

:func:`make_service` returns a ``MultiService`` with one ``StreamServerEndpointService`` per
``--listen`` endpoint, all serving one site over one :class:`~chat.connection.Hub`.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime

from chat.connection import Hub
from chat.protocol.errors import CloseCode
from chat.service.chat import ChatService
from chat.service.routes import router
from chat.settings import Settings
from chat.stores.backend import sqlite_path
from chat.stores.interface import ILogStore
from chat.stores.memory import DEFAULT_RETENTION as MEMORY_RETENTION
from chat.stores.memory import MemoryLogStore
from chat.web.endpoints import server_endpoint
from chat.web.site import make_site

CLOSE_GRACE = 2.0  # seconds connections get to finish the close handshake on shutdown


def open_store(settings: Settings) -> ILogStore:
    """The store ``settings.store`` describes; raises StoreOpenError naming a bad file."""
    if settings.store.startswith("redis:"):
        from chat.stores.redis import DEFAULT_CACHE as REDIS_CACHE
        from chat.stores.redis import DEFAULT_RETENTION as REDIS_RETENTION
        from chat.stores.redis import RedisLogStore

        return RedisLogStore(
            settings.store,
            prefix=settings.redis_prefix,
            retention=settings.retention or REDIS_RETENTION,
            cache=settings.cache or REDIS_CACHE,
        )
    path = sqlite_path(settings.store)
    if path is None:
        return MemoryLogStore(retention=settings.retention or MEMORY_RETENTION)
    from chat.stores.sqlite import DEFAULT_CACHE, DEFAULT_RETENTION, SqliteLogStore

    return SqliteLogStore(
        path,
        retention=settings.retention or DEFAULT_RETENTION,
        retention_age=settings.retention_age,
        sync=settings.sync,
        cache=settings.cache or DEFAULT_CACHE,
    )


def make_hub(settings: Settings, reactor: IReactorTime) -> Hub:
    store = open_store(settings)
    presence = None
    from chat.stores.redis import RedisLogStore

    if isinstance(store, RedisLogStore):
        from chat.service.presence_redis import RedisPresence, start_bridge

        presence = RedisPresence(store, lease=settings.redis_lease)
    service = ChatService(store, presence=presence)
    if presence is not None:
        assert isinstance(store, RedisLogStore)
        presence.service = service
        start_bridge(
            service, store, presence, settings.redis_publish_prefix, settings.max_content_length
        )
    return Hub(service, router, settings, reactor)


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
            endpoint = server_endpoint(reactor, description, settings.listen_backlog)
            StreamServerEndpointService(endpoint, site).setServiceParent(self)

    def startService(self) -> None:
        """Start listening; with a Redis store, only once this node has loaded its state."""
        from chat.service.presence_redis import RedisPresence
        from chat.stores.redis import RedisLogStore

        store = self.hub.service.store
        presence = self.hub.service.presence
        if not isinstance(store, RedisLogStore):
            super().startService()
            return
        Service.startService(self)

        def ready(_: object) -> None:
            if isinstance(presence, RedisPresence):
                presence.start()
            if self.running:
                for service in self:
                    service.startService()

        store.start().addCallback(ready)

    def stopService(self) -> Deferred[None]:
        """Stop listening, close every connection with 1001, then let the store close.

        Connections get up to :data:`CLOSE_GRACE` seconds for the close handshake; any still
        open then have their sessions ended here (rather than when the reactor drops the
        sockets later), so their ``leave`` items are queued before the store closes, and the
        store commits everything queued before its ``close()`` fires: SIGTERM loses nothing
        that was acknowledged or queued, and the whole stop takes well under 5 seconds.
        """
        hub = self.hub
        stopped = maybeDeferred(super().stopService)
        stopped.addBoth(
            lambda _: hub.close_all(CloseCode.GOING_AWAY, "server shutting down", CLOSE_GRACE)
        )

        def end_sessions(_: object) -> Deferred[None]:
            for connection in list(hub.connections):
                connection.connection_lost()
            presence = hub.service.presence
            stop = getattr(presence, "stop", None)
            if stop is None:
                return hub.service.store.close()
            # Redis: let the leave items be appended, then give up the node's lease.
            d: Deferred[None] = maybeDeferred(stop)
            return d.addBoth(lambda _: hub.service.store.close())

        return stopped.addBoth(end_sessions)


def make_service(settings: Settings) -> ChatServerService:
    return ChatServerService(settings)
