"""The directory every store keeps: which channels exist and which usernames have logged in.

Both sets are small and read on hot paths (``message`` checks ``has_channel``, private
messages check ``knows_user``), so every backend holds them in memory and only *persists*
additions its own way, through :meth:`Directory.persist_name`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from twisted.internet.defer import Deferred, succeed

Table = Literal["channels", "users"]


class Directory:
    """Mixin implementing ILogStore's directory methods over two in-memory sets."""

    _channels: set[str]
    _users: set[str]

    def load_directory(self, channels: Iterable[str] = (), users: Iterable[str] = ()) -> None:
        self._channels = set(channels)
        self._users = set(users)

    def persist_name(self, table: Table, name: str) -> None:
        """Store a new channel or username durably; in memory there is nothing to do."""

    def add_channel(self, channel: str) -> None:
        if channel not in self._channels:
            self._channels.add(channel)
            self.persist_name("channels", channel)

    def channels(self) -> Sequence[str]:
        return sorted(self._channels)

    def has_channel(self, channel: str) -> bool:
        return channel in self._channels

    def channel_count(self) -> int:
        return len(self._channels)

    def remember_user(self, username: str) -> None:
        if username not in self._users:
            self._users.add(username)
            self.persist_name("users", username)

    def knows_user(self, username: str) -> bool:
        return username in self._users

    def find_user(self, username: str) -> Deferred[bool]:
        return succeed(username in self._users)
