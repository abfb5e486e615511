"""The state of one chat server: who is logged in, who is in which channel, what was counted.

Sessions are the avatars of logged-in connections (after twisted.words): a :class:`Session`
owns its channel memberships and the ``messages`` feeds open on its connection, and ends when
the connection closes, leaving every channel it was in. Channels and inboxes are logs in the
store; this module appends ``join``/``leave``/``message`` items to them and tells the session's
feeds where their channel segments start and end.
"""

from __future__ import annotations

import os
import resource
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from chat.producers.feed import FeedStream
from chat.protocol.errors import ErrorCode, RouteError
from chat.stores.interface import ILogStore, LogItem, channel_log, inbox_log

log = Logger()

STATISTICS_FIELDS: Final = {
    "users": "user_count",
    "channels": "channel_count",
    "connections": "connection_count",
    "messages": "message_count",
    "memory": "memory_usage",
}


def resident_memory() -> int:
    """This process's resident set size in bytes (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Session:
    """One logged-in connection's user."""

    def __init__(self, username: str) -> None:
        self.username = username
        self.session_id = uuid.uuid4().hex
        self.channels: dict[str, int] = {}  # channel -> seq of this session's join item
        self.pending: dict[str, Deferred[Any]] = {}  # channel -> join/leave in flight
        self.feeds: set[FeedStream] = set()
        self.client_memory: int | None = None
        self.ended = False


class ChatService:
    """Sessions, channels and counters over one log store."""

    def __init__(self, store: ILogStore, memory: Callable[[], int] = resident_memory) -> None:
        self.store = store
        self.memory = memory
        self.sessions: dict[str, Session] = {}
        self.members: dict[str, dict[str, Session]] = {}
        self.connection_count = 0
        self.message_count = 0  # items appended to any log since start
        self.append_latency: Callable[[float], None] = lambda seconds: None  # set by metrics

    # Sessions

    def login(self, username: str) -> Session:
        if username in self.sessions:
            raise RouteError(
                ErrorCode.USERNAME_TAKEN, f"{username!r} is logged in on another connection"
            )
        session = self.sessions[username] = Session(username)
        self.store.remember_user(username)
        return session

    def logout(self, session: Session) -> None:
        """The session's connection closed: leave every channel, free the username."""
        if session.ended:
            return
        session.ended = True
        session.feeds.clear()
        if self.sessions.get(session.username) is session:
            del self.sessions[session.username]
        for channel in list(session.channels):
            self.leave(session, channel).addErrback(self._leave_failed, session, channel)

    @staticmethod
    def _leave_failed(failure: Failure, session: Session, channel: str) -> None:
        log.failure(
            "could not record {user} leaving {channel}",
            failure,
            user=session.username,
            channel=channel,
        )

    # Channels

    def users_in(self, channel: str) -> list[str]:
        return sorted(self.members.get(channel, ()))

    def join(self, session: Session, channel: str) -> Deferred[dict[str, Any]]:
        return self._after_pending(session, channel, self._join)

    def leave(self, session: Session, channel: str) -> Deferred[dict[str, Any]]:
        return self._after_pending(session, channel, self._leave)

    def _after_pending(
        self,
        session: Session,
        channel: str,
        action: Callable[[Session, str], Deferred[dict[str, Any]]],
    ) -> Deferred[dict[str, Any]]:
        """Run joins and leaves of one session and channel one after the other."""
        previous = session.pending.get(channel)
        if previous is None:
            d = action(session, channel)
        else:
            d = Deferred()
            previous.addBoth(lambda _: action(session, channel).chainDeferred(d))
        if not d.called:
            session.pending[channel] = d

            def done(result: Any) -> Any:
                if session.pending.get(channel) is d:
                    del session.pending[channel]
                return result

            d.addBoth(done)
        return d

    def _join(self, session: Session, channel: str) -> Deferred[dict[str, Any]]:
        log = channel_log(channel)
        if channel in session.channels:
            answer = {
                "channel": channel,
                "seq": self.store.last_seq(log),
                "users": len(self.members.get(channel, ())),
            }
            return succeed(answer)
        self.store.add_channel(channel)

        def joined(item: LogItem) -> dict[str, Any]:
            if session.ended:  # the connection closed while the join was in flight
                self._append(log, {"kind": "leave", "channel": channel, "from": session.username})
            else:
                session.channels[channel] = item.seq
                self.members.setdefault(channel, {})[session.username] = session
                for feed in list(session.feeds):
                    feed.follow(channel, item.seq)
            users = len(self.members.get(channel, ()))
            return {"channel": channel, "seq": item.seq, "users": users}

        fields = {"kind": "join", "channel": channel, "from": session.username}
        return self._append(log, fields).addCallback(joined)

    def _leave(self, session: Session, channel: str) -> Deferred[dict[str, Any]]:
        if channel not in session.channels:
            return succeed({"channel": channel})
        del session.channels[channel]
        members = self.members.get(channel, {})
        if members.get(session.username) is session:
            del members[session.username]

        def left(item: LogItem) -> dict[str, Any]:
            for feed in list(session.feeds):
                feed.unfollow(channel, item.seq)
            return {"channel": channel}

        fields = {"kind": "leave", "channel": channel, "from": session.username}
        return self._append(channel_log(channel), fields).addCallback(left)

    # Messages

    def post(self, session: Session, channel: str, content: str) -> Deferred[dict[str, Any]]:
        if channel not in session.channels:
            if not self.store.has_channel(channel):
                reason = f"channel {channel!r} does not exist; join it to create it"
            else:
                reason = f"join channel {channel!r} before posting to it"
            raise RouteError(ErrorCode.FORBIDDEN, reason)
        fields = {"kind": "message", "channel": channel, "from": session.username}
        fields["content"] = content
        return self._append(channel_log(channel), fields).addCallback(
            lambda item: {"channel": channel, "seq": item.seq, "ts": item.ts}
        )

    def send_private(
        self, session: Session, username: str, content: str
    ) -> Deferred[dict[str, Any]]:
        if not self.store.knows_user(username):
            raise RouteError(ErrorCode.NOT_FOUND, f"no user {username!r} has ever logged in")
        fields = {
            "kind": "message",
            "channel": None,
            "from": session.username,
            "to": username,
            "content": content,
        }
        return self._append(inbox_log(username), fields).addCallback(
            lambda item: {"channel": None, "seq": item.seq, "ts": item.ts}
        )

    def announce(self, channel: str, sender: str, content: str) -> Deferred[dict[str, Any]]:
        """A message from outside any session (HTTP publish API, Redis bridge).

        ``sender`` is not a username: callers use a form no username can take (``api:NAME``).
        """
        if not self.store.has_channel(channel):
            raise RouteError(ErrorCode.NOT_FOUND, f"channel {channel!r} does not exist")
        fields = {"kind": "message", "channel": channel, "from": sender, "content": content}
        return self._append(channel_log(channel), fields).addCallback(
            lambda item: {"channel": channel, "seq": item.seq, "ts": item.ts}
        )

    def _append(self, log: str, fields: dict[str, Any]) -> Deferred[LogItem]:
        """Every append goes through here: counted, and timed for /metrics."""
        started = time.perf_counter()

        def counted(item: LogItem) -> LogItem:
            self.message_count += 1
            self.append_latency(time.perf_counter() - started)
            return item

        return self.store.append(log, fields).addCallback(counted)

    # Statistics

    def statistics(self, ids: Sequence[str]) -> dict[str, int]:
        values = {
            "users": lambda: len(self.sessions),
            "channels": self.store.channel_count,
            "connections": lambda: self.connection_count,
            "messages": lambda: self.message_count,
            "memory": self.memory,
        }
        return {STATISTICS_FIELDS[i]: values[i]() for i in ids}
