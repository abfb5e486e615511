"""Store failures as the errors a client sees, in one place.

PROTOCOL.md has one code for a server-side failure, ``internal``; its message tells the client
(and the person reading its log) what happened and whether retrying makes sense. Only failures
of the store tree (:mod:`chat.stores.errors`) are mapped here; anything else is a bug, logged
with its traceback by the connection and answered with a plain ``internal``.
"""

from __future__ import annotations

from twisted.python.failure import Failure

from chat.protocol.errors import ErrorCode, RouteError
from chat.stores.errors import StoreClosed, StoreError, StoreUnavailable, StoreWriteError


def store_message(error: BaseException) -> str:
    if isinstance(error, StoreClosed):
        return "the server is shutting down; retry on another connection"
    if isinstance(error, StoreUnavailable):
        return f"the message store is unreachable ({error}); retry shortly"
    if isinstance(error, StoreWriteError):
        return f"the message store could not store it ({error}); nothing was stored"
    return f"the message store failed ({error})"


def store_failure(failure: Failure) -> Failure:
    """A store's failure as ``internal`` with a message saying what happened; others as is."""
    if failure.check(StoreError) and failure.value is not None:
        return Failure(RouteError(ErrorCode.INTERNAL, store_message(failure.value)))
    return failure
