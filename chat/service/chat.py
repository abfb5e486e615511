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
from typing import Any, Final, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from chat.producers.feed import FeedStream
from chat.protocol.errors import ErrorCode, RouteError
from chat.service.presence import LocalPresence, Presence
from chat.stores.interface import ILogStore, LogItem, channel_log, inbox_log

log = Logger()
T = TypeVar("T")


def _item(item: LogItem) -> LogItem:
    return item


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
        self.feeds: list[FeedStream] = []  # open `messages` feeds; usually one
        self.client_memory: int | None = None
        self.ended = False


class ChatService:
    """Sessions, channels and counters over one log store."""

    def __init__(
        self,
        store: ILogStore,
        memory: Callable[[], int] = resident_memory,
        presence: Presence | None = None,
    ) -> None:
        self.store = store
        self.memory = memory
        # Who is logged in and in which channel on every node; sessions and members below are
        # this node's own.
        self.presence: Presence = presence if presence is not None else LocalPresence()
        self.sessions: dict[str, Session] = {}
        self.claims: dict[str, str] = {}  # username -> session id, while the claim runs
        self.members: dict[str, dict[str, Session]] = {}
        self.connection_count = 0
        self.message_count = 0  # items appended to any log since start
        self.append_latency: Callable[[float], None] = lambda seconds: None  # set by metrics

    # Sessions

    def claim(self, username: str) -> Deferred[None]:
        """Reserve ``username`` on every node for a login; then call :meth:`login`.

        Fails with ``username_taken`` when a live session (on any node) holds it. With the
        in-process presence it fires at once.
        """
        if username in self.sessions or username in self.claims:
            return fail(_taken(username))
        session_id = self.claims[username] = uuid.uuid4().hex

        def claimed(ok: bool) -> None:
            if not ok:
                self.claims.pop(username, None)
                raise _taken(username)

        def failed(failure: Failure) -> Failure:
            self.claims.pop(username, None)
            return _unreachable(failure)

        return self.presence.claim(username, session_id).addCallbacks(claimed, failed)

    def unclaim(self, username: str) -> None:
        """A claimed username will not log in after all (its connection closed)."""
        session_id = self.claims.pop(username, None)
        if session_id is not None:
            self.presence.release(username, session_id)

    def login(self, username: str) -> Session:
        """The session of a claimed ``username`` (claims it here if nobody did)."""
        if username in self.sessions:
            raise _taken(username)
        session = Session(username)
        session_id = self.claims.pop(username, None)
        if session_id is not None:
            session.session_id = session_id
        else:
            claimed = self.presence.claim(username, session.session_id)
            if not (claimed.called and _result(claimed)):
                raise _taken(username)  # only the in-process presence answers at once
        self.sessions[username] = session
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
            self.presence.release(session.username, session.session_id)
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
        return self.presence.users_in(channel)

    def member_count(self, channel: str) -> int:
        return self.presence.member_count(channel)

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
                "users": self.presence.member_count(channel),
            }
            return succeed(answer)
        self.store.add_channel(channel)

        def joined(item: LogItem) -> dict[str, Any]:
            if session.ended:  # the connection closed while the join was in flight
                fields = {"kind": "leave", "channel": channel, "from": session.username}
                self._append(log, fields, _item).addErrback(
                    self._leave_failed, session, channel
                )
            else:
                session.channels[channel] = item.seq
                self.members.setdefault(channel, {})[session.username] = session
                self.presence.joined(channel, session.username)
                for feed in list(session.feeds):
                    feed.follow(channel, item.seq)
            users = self.presence.member_count(channel)
            return {"channel": channel, "seq": item.seq, "users": users}

        fields = {"kind": "join", "channel": channel, "from": session.username}
        return self._append(log, fields, joined)

    def _leave(self, session: Session, channel: str) -> Deferred[dict[str, Any]]:
        if channel not in session.channels:
            return succeed({"channel": channel})
        del session.channels[channel]
        members = self.members.get(channel, {})
        if members.get(session.username) is session:
            del members[session.username]
            self.presence.left(channel, session.username)

        def left(item: LogItem) -> dict[str, Any]:
            for feed in list(session.feeds):
                feed.unfollow(channel, item.seq)
            return {"channel": channel}

        fields = {"kind": "leave", "channel": channel, "from": session.username}
        return self._append(channel_log(channel), fields, left)

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
        return self._message(channel_log(channel), fields, channel)

    def send_private(
        self, session: Session, username: str, content: str
    ) -> Deferred[dict[str, Any]]:
        if not self.store.knows_user(username):
            # A store shared by several nodes may know more than this node has heard yet.

            def found(known: bool) -> Deferred[dict[str, Any]]:
                if not known:
                    raise _unknown_user(username)
                return self.send_private(session, username, content)

            return self.store.find_user(username).addCallbacks(found, _unreachable)
        fields = {
            "kind": "message",
            "channel": None,
            "from": session.username,
            "to": username,
            "content": content,
        }
        return self._message(inbox_log(username), fields, None)

    def announce(self, channel: str, sender: str, content: str) -> Deferred[dict[str, Any]]:
        """A message from outside any session (HTTP publish API, Redis bridge).

        ``sender`` is not a username: callers use a form no username can take (``api:NAME``).
        """
        if not self.store.has_channel(channel):
            raise RouteError(ErrorCode.NOT_FOUND, f"channel {channel!r} does not exist")
        fields = {"kind": "message", "channel": channel, "from": sender, "content": content}
        return self._message(channel_log(channel), fields, channel)

    def _message(
        self, log: str, fields: dict[str, Any], channel: str | None
    ) -> Deferred[dict[str, Any]]:
        """Append a message; answer ``{"channel", "seq", "ts"}`` once it is stored."""
        return self._append(
            log, fields, lambda item: {"channel": channel, "seq": item.seq, "ts": item.ts}
        )

    def _append(
        self, log: str, fields: dict[str, Any], answer: Callable[[LogItem], T]
    ) -> Deferred[T]:
        """Every append goes through here: counted, timed for /metrics, then answered.

        One callback does all three, so a ``message`` costs a single Deferred hop here.
        """
        started = time.perf_counter()

        def stored(item: LogItem) -> T:
            self.message_count += 1
            self.append_latency(time.perf_counter() - started)
            return answer(item)

        return self.store.append(log, fields).addCallbacks(stored, _unreachable)

    # Statistics

    def statistics(self, ids: Sequence[str]) -> dict[str, int]:
        values = {
            "users": self.presence.user_count,
            "channels": self.store.channel_count,
            "connections": lambda: self.connection_count,
            "messages": lambda: self.message_count,
            "memory": self.memory,
        }
        return {STATISTICS_FIELDS[i]: values[i]() for i in ids}


def _unreachable(failure: Failure) -> Failure:
    """A store that cannot be reached now (Redis away): ``internal``, saying so plainly."""
    if failure.check(ConnectionError):
        message = f"the message store is unreachable ({failure.value}); retry shortly"
        return Failure(RouteError(ErrorCode.INTERNAL, message))
    return failure


def _unknown_user(username: str) -> RouteError:
    return RouteError(ErrorCode.NOT_FOUND, f"no user {username!r} has ever logged in")


def _taken(username: str) -> RouteError:
    return RouteError(ErrorCode.USERNAME_TAKEN, f"{username!r} is logged in on another connection")


def _result(d: Deferred[bool]) -> bool:
    """The result of a Deferred that has fired (errors count as False)."""
    box: list[bool] = []
    d.addCallbacks(box.append, lambda _: box.append(False))
    return bool(box and box[0])
