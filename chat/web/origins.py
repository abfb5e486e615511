"""Which browser origins may open a WebSocket (checked at the handshake; refused with 403).

Without ``--allowed-origin``, only pages served by this very host (``Origin`` names the same
host and port as the request's ``Host``) and clients that send no ``Origin`` at all (scripts,
native apps) are accepted. With it, an origin must match one of the patterns, where ``*``
stands for any run of characters within the host, e.g. ``https://*.example.com``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from urllib.parse import urlsplit


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
