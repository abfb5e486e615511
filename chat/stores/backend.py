"""Backends assembled in one place: ``--store`` description -> store, presence, lifecycle.

Adding a backend is one entry in :data:`BACKENDS`: a name, how to recognise its description,
and an ``open`` function that returns a :class:`Backend` (docs/architecture.md has the recipe).
The server starts and stops what it is given and never asks which backend it has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed

from chat.stores.interface import ILogStore

STORES = "memory, sqlite:PATH, redis://HOST:PORT/DB"


def _none() -> Deferred[None]:
    return succeed(None)


@attrs.define
class Backend:
    """What the server runs on: a log store, a presence, and how to start and stop them.

    ``start`` fires once the backend is ready to serve (Redis: connected and loaded);
    ``stop`` runs after every session ended and before ``store.close()``.
    ``local_state`` is set by the server: a callable giving this node's own sessions and
    memberships, which a shared presence writes back after an outage.
    """

    store: ILogStore
    presence: Any
    start: Callable[[], Deferred[Any]] = _none
    stop: Callable[[], Deferred[Any]] = _none
    description: str = ""  # for the start-up line: which store, where


def sqlite_path(description: str) -> str | None:
    """The file of a ``sqlite`` or ``sqlite:PATH`` store description, else None."""
    if description == "sqlite":
        return "chat.db"
    if description.startswith("sqlite:") and len(description) > len("sqlite:"):
        return description[len("sqlite:") :]
    return None


def check_store_description(description: str) -> None:
    """Raise ValueError saying what is wrong with a ``--store`` description."""
    if description.startswith("redis:"):
        from chat.stores.redis import parse_url

        parse_url(description)
        return
    if description != "memory" and sqlite_path(description) is None:
        raise ValueError(f"unknown store; available: {STORES}")
