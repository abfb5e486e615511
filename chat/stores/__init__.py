"""Log stores: every channel and inbox is an append-only log with gapless per-log seqs.

:mod:`chat.stores.interface` is the one contract; backends implement it and all pass the same
contract suite (tests/test_store_contract.py). Today: :mod:`chat.stores.memory`.
"""

from chat.stores.interface import ILogStore, LogItem, channel_log, inbox_log

__all__ = ["ILogStore", "LogItem", "channel_log", "inbox_log"]
