"""Which hosts a request may name, and which browser origins may open a WebSocket.

Origins (checked at the handshake; refused with 403): without ``--allowed-origin``, only pages
served by this very host (``Origin`` names the same host and port as the request's ``Host``)
and clients that send no ``Origin`` at all (scripts, native apps) are accepted. With it, an
origin must match one of the patterns, where ``*`` stands for any run of characters within
the host, e.g. ``https://*.example.com``.

The default compares ``Origin`` with ``Host``, and a DNS-rebinding page controls both: its
name resolves to this server, so the browser sends ``Host: evil.example`` and ``Origin:
http://evil.example``, which agree. ``--allowed-host`` closes that hole: when hosts are named,
every HTTP request (the WebSocket handshake included) whose ``Host`` is not one of them is
refused with 421 (:func:`host_allowed`, checked by :class:`chat.web.channel.LimitedRequest`).
:func:`origin_policy_warnings` says when a server is exposed without either.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from functools import lru_cache
from urllib.parse import urlsplit

from chat.settings import Settings
from chat.web.endpoints import endpoint_type

LOOPBACK_NAMES = frozenset({"localhost"})


@lru_cache(maxsize=64)
def _pattern(pattern: str) -> re.Pattern[str]:
    parts = (re.escape(part) for part in pattern.lower().split("*"))
    return re.compile("[^/]*".join(parts))


def origin_allowed(origin: str | None, host: str | None, allowed: Sequence[str]) -> bool:
    """Whether a handshake with this ``Origin`` (``None`` when absent) may proceed."""
    if origin is None:
        return True
    origin = origin.strip().lower()
    if allowed:
        return any(_pattern(p).fullmatch(origin) for p in allowed)
    if origin == "null" or not host:
        return False
    netloc = urlsplit(origin).netloc
    return netloc == host.strip().lower()


def split_host(host: str) -> tuple[str, str | None]:
    """``"Example.com:8080"`` -> ``("example.com", "8080")``; IPv6 literals keep brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        literal, _, rest = host.partition("]")
        return literal + "]", rest[1:] if rest.startswith(":") else None
    name, colon, port = host.rpartition(":")
    return (name, port) if colon else (host, None)


def host_allowed(host: str | None, allowed: Sequence[str]) -> bool:
    """Whether a request with this ``Host`` (``None`` when absent) may be served.

    With no allowed hosts, any. Otherwise ``Host`` must name one of them: an entry without a
    port allows that host on any port, ``host:port`` only that port. A request without
    ``Host`` (HTTP/1.0) names none, so it is refused.
    """
    if not allowed:
        return True
    if not host:
        return False
    name, port = split_host(host)
    for entry in allowed:
        allowed_name, allowed_port = split_host(entry)
        if name == allowed_name and (allowed_port is None or allowed_port == port):
            return True
    return False


def _endpoint_fields(description: str) -> tuple[list[str], dict[str, str]]:
    """Positional and keyword fields of an endpoint string (``\\:`` escapes a colon)."""
    fields = [f.replace("\\:", ":") for f in re.split(r"(?<!\\):", description.strip())]
    positional = [f for f in fields[1:] if "=" not in f]
    keywords = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
    return positional, keywords


def listens_beyond_loopback(description: str) -> bool:
    """Whether a ``--listen`` endpoint may be reached from other machines.

    ``unix:`` sockets and TCP endpoints bound to a loopback address (``127.0.0.0/8``,
    ``::1``, ``localhost``) may not; every other endpoint, one without ``interface=`` (all
    addresses) or of a type this does not know, may.
    """
    kind = endpoint_type(description)
    if kind == "unix":
        return False
    if kind not in ("tcp", "tcp6", "ssl"):
        return True
    _, keywords = _endpoint_fields(description)
    interface = keywords.get("interface", "").strip().strip("[]").lower()
    if not interface:
        return True
    if interface in LOOPBACK_NAMES:
        return False
    try:
        return not ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return True  # a host name: it may resolve to anything


def origin_policy_warnings(settings: Settings) -> list[str]:
    """One line per exposure worth a warning at start-up (none when all is well).

    A server reachable beyond loopback with the default origin policy (no
    ``--allowed-origin``) and no ``--allowed-host`` accepts WebSockets from any page whose
    name resolves to it, which is what a DNS-rebinding attack arranges.
    """
    if settings.allowed_origins or settings.allowed_hosts:
        return []
    exposed = [d for d in settings.listen if listens_beyond_loopback(d)]
    if not exposed:
        return []
    return [
        f"listening beyond loopback ({', '.join(exposed)}) with the default origin policy and "
        "no --allowed-host: a DNS-rebinding page can open WebSockets as its visitors; name "
        "the host clients use with --allowed-host (e.g. --allowed-host chat.example.com) or "
        "the pages allowed with --allowed-origin"
    ]
