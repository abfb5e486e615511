"""The directory every store keeps: which channels exist and which usernames have logged in.

Both are read on hot paths (``message`` checks ``has_channel``, private messages check
``knows_user``) and listed in pages (``channels``), so every backend holds them in memory — a
set for lookups, a sorted list for pages — and only *persists* additions its own way, through
:meth:`Directory.persist_name`. Channels are never removed, so the sorted list only grows by
insertion.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Literal

from twisted.internet.defer import Deferred, succeed

Table = Literal["channels", "users"]


class Directory:
    """Mixin implementing ILogStore's directory methods in memory."""

    _channels: set[str]
    _sorted_channels: list[str]
    _users: set[str]

    def load_directory(self, channels: Iterable[str] = (), users: Iterable[str] = ()) -> None:
        self._channels = set(channels)
        self._sorted_channels = sorted(self._channels)
        self._users = set(users)

    def persist_name(self, table: Table, name: str) -> None:
        """Store a new channel or username durably; in memory there is nothing to do."""

    def add_channel(self, channel: str) -> None:
        if self.learn_channel(channel):
            self.persist_name("channels", channel)

    def learn_channel(self, channel: str) -> bool:
        """Note a channel (created here, or heard of from another node); True if new."""
        if channel in self._channels:
            return False
        self._channels.add(channel)
        bisect.insort(self._sorted_channels, channel)
        return True

    def forget_directory(self) -> None:
        """The backing store was emptied (Redis lost its data)."""
        self.load_directory()

    def channels_after(self, after: str | None, limit: int) -> Sequence[str]:
        names = self._sorted_channels
        start = 0 if after is None else bisect.bisect_right(names, after)
        return names[start : start + limit]

    def has_channel(self, channel: str) -> bool:
        return channel in self._channels

    def channel_count(self) -> int:
        return len(self._channels)

    def remember_user(self, username: str) -> None:
        if username not in self._users:
            self._users.add(username)
            self.persist_name("users", username)

    def learn_user(self, username: str) -> None:
        self._users.add(username)

    def knows_user(self, username: str) -> bool:
        return username in self._users

    def find_user(self, username: str) -> Deferred[bool]:
        return succeed(username in self._users)
