"""Who is logged in and who is in which channel: the seam between one node and a cluster.

:class:`~chat.service.chat.ChatService` keeps its own sessions (the avatars of this node's
connections) and asks a :class:`Presence` the questions whose answer spans every node: may this
username log in, who is in this channel, how many users are logged in. :class:`LocalPresence`
answers for this process alone (the memory and SQLite stores);
:class:`chat.service.presence_redis.RedisPresence` answers for every node sharing a Redis.

Only ``claim`` is asynchronous (a cluster must agree atomically on who holds a username); the
rest answer from memory so that listings and statistics never wait on the network.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred, succeed


class Presence(Protocol):
    def claim(self, username: str, session_id: str) -> Deferred[bool]:
        """Take ``username`` for a new session; False when a live session holds it."""

    def release(self, username: str, session_id: str) -> None:
        """The session ended: free ``username`` (only if this session still holds it)."""

    def joined(self, channel: str, username: str) -> None:
        """``username`` is now a member of ``channel``."""

    def left(self, channel: str, username: str) -> None:
        """``username`` is no longer a member of ``channel``."""

    def users_in(self, channel: str) -> list[str]:
        """The members of ``channel``, sorted by code point."""

    def member_count(self, channel: str) -> int:
        """How many members ``channel`` has."""

    def user_count(self) -> int:
        """How many users are logged in."""


class LocalPresence:
    """Presence within this process: today's single-node behaviour."""

    def __init__(self) -> None:
        self.sessions: dict[str, str] = {}  # username -> session id
        self.members: dict[str, set[str]] = {}

    def claim(self, username: str, session_id: str) -> Deferred[bool]:
        if username in self.sessions:
            return succeed(False)
        self.sessions[username] = session_id
        return succeed(True)

    def release(self, username: str, session_id: str) -> None:
        if self.sessions.get(username) == session_id:
            del self.sessions[username]

    def joined(self, channel: str, username: str) -> None:
        self.members.setdefault(channel, set()).add(username)

    def left(self, channel: str, username: str) -> None:
        self.members.get(channel, set()).discard(username)

    def users_in(self, channel: str) -> list[str]:
        return sorted(self.members.get(channel, ()))

    def member_count(self, channel: str) -> int:
        return len(self.members.get(channel, ()))

    def user_count(self) -> int:
        return len(self.sessions)
