"""Backends assembled in one place: ``--store`` description -> store, presence, lifecycle.

Adding a backend is one entry in :data:`BACKENDS`: a name, how to recognise its description,
and an ``open`` function that returns a :class:`Backend` (docs/architecture.md has the recipe).
The server starts and stops what it is given and never asks which backend it has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from chat.settings import Settings
from chat.stores.interface import ILogStore, IPresence
from chat.stores.presence import LocalState

STORES = "memory, sqlite:PATH, redis://HOST:PORT/DB"


Announce = Callable[[str, str, str], Deferred[Any]]  # (channel, sender, content): a message


@attrs.define
class Backend:
    """What the server runs on: a log store, a presence, and how to start and stop them.

    ``start(announce)`` connects and loads (Redis) and starts whatever feeds messages in from
    outside (the Redis PUBLISH bridge, which appends through ``announce``); it fires once the
    backend can serve. ``stop`` runs after every session ended, before ``store.close()``.
    """

    store: ILogStore
    presence: IPresence
    start: Callable[[Announce], Deferred[Any]]
    stop: Callable[[], Deferred[Any]]
    description: str  # for the start-up line: which store, where


LocalStateOf = Callable[[], LocalState]


def sqlite_path(description: str) -> str | None:
    """The file of a ``sqlite`` or ``sqlite:PATH`` store description, else None."""
    if description == "sqlite":
        return "chat.db"
    if description.startswith("sqlite:") and len(description) > len("sqlite:"):
        return description[len("sqlite:") :]
    return None


def _local(store: ILogStore, description: str) -> Backend:
    """A store of this process alone, with the in-process presence."""
    from chat.stores.presence import LocalPresence

    presence = LocalPresence()
    return Backend(store, presence, lambda announce: store.start(), presence.stop, description)


def open_memory(settings: Settings, reactor: Any, local_state: LocalStateOf) -> Backend:
    from chat.stores.memory import DEFAULT_RETENTION, MemoryLogStore

    retention = settings.retention or DEFAULT_RETENTION
    store = MemoryLogStore(retention=retention, dedup_window=settings.dedup_window)
    return _local(store, f"memory (retention {retention} items per log)")


def open_sqlite(settings: Settings, reactor: Any, local_state: LocalStateOf) -> Backend:
    from chat.stores.sqlite import DEFAULT_CACHE, DEFAULT_RETENTION, SqliteLogStore

    path = sqlite_path(settings.store)
    assert path is not None
    retention = settings.retention or DEFAULT_RETENTION
    store = SqliteLogStore(
        path,
        retention=retention,
        retention_age=settings.retention_age,
        sync=settings.sync,
        cache=settings.cache or DEFAULT_CACHE,
        reactor=reactor,
        dedup_window=settings.dedup_window,
    )
    from chat.stores.presence import LocalPresence

    presence = LocalPresence(journal=store.record_membership)

    def start(announce: Announce) -> Deferred[Any]:
        return store.start().addCallback(lambda _: store.end_left_over_memberships())

    description = f"sqlite {path} (sync {settings.sync}, retention {retention} items per log)"
    return Backend(store, presence, start, presence.stop, description)


def open_redis(settings: Settings, reactor: Any, local_state: LocalStateOf) -> Backend:
    from chat.stores.redis import DEFAULT_CACHE, DEFAULT_RETENTION, RedisLogStore
    from chat.stores.redis.bridge import start_bridge
    from chat.stores.redis.presence import RedisPresence

    retention = settings.retention or DEFAULT_RETENTION
    store = RedisLogStore(
        settings.store,
        prefix=settings.redis_prefix,
        retention=retention,
        cache=settings.cache or DEFAULT_CACHE,
        reactor=reactor,
        dedup_window=settings.dedup_window,
    )
    presence = RedisPresence(store, lease=settings.redis_lease, local_state=local_state)

    def start(announce: Announce) -> Deferred[Any]:
        start_bridge(
            announce, store, presence, settings.redis_publish_prefix, settings.max_content_length
        )
        return store.start().addCallback(lambda _: presence.start())

    description = (
        f"redis {settings.store} (prefix {settings.redis_prefix!r}, retention {retention})"
    )
    return Backend(store, presence, start, presence.stop, description)


@attrs.frozen
class BackendType:
    """One kind of backend: how ``--store`` names it, and how to open it."""

    name: str
    matches: Callable[[str], bool]
    check: Callable[[str], None]
    open: Callable[[Settings, Any, LocalStateOf], Backend]


def _check_redis(description: str) -> None:
    from chat.stores.redis import parse_url

    parse_url(description)


BACKENDS: tuple[BackendType, ...] = (
    BackendType("memory", lambda d: d == "memory", lambda d: None, open_memory),
    BackendType("sqlite", lambda d: sqlite_path(d) is not None, lambda d: None, open_sqlite),
    BackendType("redis", lambda d: d.startswith("redis:"), _check_redis, open_redis),
)


def backend_type(description: str) -> BackendType:
    for kind in BACKENDS:
        if kind.matches(description):
            return kind
    raise ValueError(f"unknown store; available: {STORES}")


def check_store_description(description: str) -> None:
    """Raise ValueError saying what is wrong with a ``--store`` description."""
    backend_type(description).check(description)


def open_backend(
    settings: Settings,
    reactor: Any = None,
    local_state: LocalStateOf = lambda: LocalState({}, set(), set()),
) -> Backend:
    """The backend ``settings.store`` describes (StoreOpenError names a store that cannot be
    opened). ``local_state`` gives this node's own sessions, which a shared presence writes
    back after an outage."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    return backend_type(settings.store).open(settings, reactor, local_state)
