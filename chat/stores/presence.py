"""Presence in memory: who holds which username, who is in which channel, who is online.

:class:`PresenceView` is the read side every presence shares: the answers listings and
statistics need, from memory, with each channel's members kept sorted so that
``channel.users`` pages through them. :class:`LocalPresence` is that view as the whole truth,
for one process (the memory and SQLite backends);
:class:`chat.stores.redis.presence.RedisPresence` keeps the same view as a mirror of what every
node sharing a Redis holds.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import NamedTuple

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from chat.stores.interface import IPresence


class LocalState(NamedTuple):
    """What one node itself holds: what a shared presence writes back after an outage."""

    sessions: dict[str, str]  # username -> session id
    members: set[tuple[str, str]]  # (channel, username)
    online: set[str]


class PresenceView:
    """The read side of a presence, answered from memory."""

    def __init__(self) -> None:
        self.sessions: dict[str, str] = {}  # username -> session id ("" when heard of)
        self.online: set[str] = set()
        self.members: dict[str, list[str]] = {}  # channel -> sorted usernames

    def add_member(self, channel: str, username: str) -> None:
        names = self.members.setdefault(channel, [])
        index = bisect.bisect_left(names, username)
        if index == len(names) or names[index] != username:
            names.insert(index, username)

    def remove_member(self, channel: str, username: str) -> None:
        names = self.members.get(channel)
        if names is None:
            return
        index = bisect.bisect_left(names, username)
        if index < len(names) and names[index] == username:
            del names[index]
        if not names:
            del self.members[channel]

    def replace(
        self, sessions: dict[str, str], members: dict[str, set[str]], online: set[str]
    ) -> None:
        """The whole view at once (a shared presence reloaded it)."""
        self.sessions = sessions
        self.online = online
        self.members = {channel: sorted(names) for channel, names in members.items() if names}

    def members_after(self, channel: str, after: str | None, limit: int) -> Sequence[str]:
        names = self.members.get(channel, [])
        start = 0 if after is None else bisect.bisect_right(names, after)
        return names[start : start + limit]

    def is_online(self, username: str) -> bool:
        return username in self.online

    def member_count(self, channel: str) -> int:
        return len(self.members.get(channel, ()))

    def user_count(self) -> int:
        return len(self.sessions)


Journal = Callable[[str, str, bool], None]  # (channel, username, joined)


@implementer(IPresence)
class LocalPresence(PresenceView):
    """Presence within this process.

    ``journal`` is told of every membership change (the SQLite store writes them down, so the
    memberships of a run that was killed can be ended at the next start).
    """

    def __init__(self, journal: Journal | None = None) -> None:
        super().__init__()
        self.journal = journal

    def start(self) -> Deferred[None]:
        return succeed(None)

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def claim(self, username: str, session_id: str) -> Deferred[bool]:
        if username in self.sessions:
            return succeed(False)
        self.sessions[username] = session_id
        return succeed(True)

    def release(self, username: str, session_id: str) -> None:
        if self.sessions.get(username) == session_id:
            del self.sessions[username]
            self.online.discard(username)

    def set_online(self, username: str, online: bool) -> None:
        if online:
            self.online.add(username)
        else:
            self.online.discard(username)

    def joined(self, channel: str, username: str) -> None:
        self.add_member(channel, username)
        if self.journal is not None:
            self.journal(channel, username, True)

    def left(self, channel: str, username: str) -> None:
        self.remove_member(channel, username)
        if self.journal is not None:
            self.journal(channel, username, False)
