"""Listening endpoints: ``--listen`` descriptions checked up front, with a deep listen queue.

Twisted's endpoint strings (``tcp:8080:interface=127.0.0.1``, ``ssl:8443:...``,
``unix:/run/chat.sock``) are parsed by :func:`twisted.internet.endpoints.serverFromString`;
this module only checks a description before anything is started (so a typo is one clear line,
not a traceback) and adds ``backlog=`` when the description names none: Twisted's default of 50
overflows when a thousand clients reconnect at once after a restart.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint

BACKLOG_TYPES = frozenset({"tcp", "tcp6", "ssl", "unix"})


def endpoint_type(description: str) -> str:
    return description.split(":", 1)[0].strip().lower()


def check_endpoint_description(description: str) -> None:
    """Raise ValueError saying what is wrong with a server endpoint description."""
    if not description.strip():
        raise ValueError("an endpoint is needed, e.g. tcp:8080")
    try:
        serverFromString(None, description)
    except ValueError as exc:
        text = str(exc)
        if text.startswith("Unknown endpoint type"):
            kind = endpoint_type(description)
            raise ValueError(
                f"unknown endpoint type {kind!r}; use tcp:PORT, tcp6:PORT, ssl:PORT:privateKey="
                "KEY:certKey=CERT or unix:PATH"
            ) from None
        if "invalid literal for int()" in text:
            raise ValueError(
                "the port must be a number, e.g. tcp:8080 or tcp:8080:interface=127.0.0.1"
            ) from None
        raise ValueError(f"not a valid endpoint: {text}") from None
    except (OSError, KeyError, TypeError, ImportError) as exc:
        raise ValueError(f"not a valid endpoint: {exc}") from None


def with_backlog(description: str, backlog: int) -> str:
    """``description`` with ``backlog=`` added when its type takes one and it names none."""
    if endpoint_type(description) in BACKLOG_TYPES and "backlog=" not in description:
        return f"{description}:backlog={backlog}"
    return description


def server_endpoint(reactor: Any, description: str, backlog: int) -> IStreamServerEndpoint:
    endpoint: IStreamServerEndpoint = serverFromString(reactor, with_backlog(description, backlog))
    return endpoint
