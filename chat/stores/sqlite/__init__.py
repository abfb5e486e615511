"""The SQLite store (the durable default): :class:`SqliteLogStore` over one WAL-mode file.

:mod:`~chat.stores.sqlite.store` is the reactor side, :mod:`~chat.stores.sqlite.writer` the
writer thread (group commit, dedup, read positions, trimming), :mod:`~chat.stores.sqlite._threads`
the worker threads each owning one connection.
"""

from chat.stores.sqlite.store import DEFAULT_CACHE, DEFAULT_RETENTION, SqliteLogStore
from chat.stores.sqlite.writer import with_seq

__all__ = ["DEFAULT_CACHE", "DEFAULT_RETENTION", "SqliteLogStore", "with_seq"]
