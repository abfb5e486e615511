"""The errors of every store, in one tree.

::

    StoreError                  anything a store raises about itself
    ├── StoreOpenError          the store cannot be opened (bad file, not a chat store):
    │                           the server does not start; the message names the store
    ├── StoreUnavailable        the store cannot be reached now (Redis away, the store
    │   │                       closing); retrying shortly may work
    │   └── StoreClosed         the store was closed (shutdown)
    └── StoreWriteError         an append could not be committed (disk full, read-only file,
                                I/O error); nothing of it was stored

:func:`chat.service.errors.store_failure` maps these to the ``internal`` error a client sees,
each with its own message; nothing else does.
"""

from __future__ import annotations


class StoreError(Exception):
    """A store could not do what was asked; the message says why."""


class StoreOpenError(StoreError):
    """The store cannot be opened or is not a chat store; the message names it."""


class StoreUnavailable(StoreError, ConnectionError):
    """The store cannot be reached now (Redis away, a reply timed out)."""


class StoreClosed(StoreUnavailable):
    """The store is closing or closed."""


class StoreWriteError(StoreError):
    """An append could not be committed (disk full, read-only file, I/O error)."""
