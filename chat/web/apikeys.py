"""The publish API's Bearer keys, checked the same way by the channel and by the resource."""

from __future__ import annotations

import hmac
from collections.abc import Sequence


def bearer_authorized(header: bytes | None, keys: Sequence[str]) -> bool:
    """Whether an ``Authorization`` header carries one of ``keys`` as its Bearer token.

    Compared as bytes: ``hmac.compare_digest`` refuses ``str`` with non-ASCII characters (a
    TypeError, which was a 500), and a header may hold any byte. Every key is compared, so
    the time taken does not tell which one nearly matched.
    """
    scheme, _, key = (header or b"").partition(b" ")
    key = key.strip()
    if scheme.lower() != b"bearer" or not key:
        return False
    matches = [hmac.compare_digest(key, good.encode()) for good in keys]
    return any(matches)
