"""The chat domain of one server node: sessions, channels, messages, read positions, counters.

After twisted.words' ``IChatService``: sessions (:mod:`chat.service.session`) are the avatars
of logged-in users, channels and inboxes are logs in the store. Every method decides its
effect on the session *when it is called* — membership, limits, who may post — and the store
then appends in call order; so a connection's requests take effect in the order they arrive
(PROTOCOL.md, Rules in detail), whatever the store's latency. The membership listeners of a
session (its ``messages`` feeds) are told of each join and leave once its item is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chat.protocol import items
from chat.protocol.errors import ErrorCode, RouteError
from chat.rss import resident_memory
from chat.service.errors import store_failure
from chat.service.session import Membership, Session, SessionState
from chat.settings import Settings
from chat.stores.interface import Appended, Dedup, ILogStore, IPresence, channel_log, inbox_log
from chat.stores.presence import LocalState

logger = Logger()

STATISTICS_FIELDS: Final = {
    "users": "user_count",
    "channels": "channel_count",
    "connections": "connection_count",
    "messages": "message_count",
    "memory": "memory_usage",
}


def _taken(username: str) -> RouteError:
    return RouteError(ErrorCode.USERNAME_TAKEN, f"{username!r} is logged in on another connection")


def _unknown_user(username: str) -> RouteError:
    return RouteError(ErrorCode.NOT_FOUND, f"no user {username!r} has ever logged in")


class ChatService:
    """Sessions, channels and counters over one log store and one presence."""

    def __init__(
        self,
        store: ILogStore,
        presence: IPresence,
        settings: Settings,
        clock: IReactorTime,
        memory: Callable[[], int] = resident_memory,
    ) -> None:
        self.store = store
        self.presence = presence
        self.settings = settings
        self.clock = clock
        self.memory = memory
        self.sessions: dict[str, Session] = {}  # this node's, by username
        self.connection_count = 0
        self.message_count = 0  # items appended to any log since start
        self._starting: list[Deferred[None]] | None = None  # logins waiting for the backend
        self.append_latency: Callable[[float], None] = lambda seconds: None  # set by metrics

    # Sessions

    def serve_when(self, started: Deferred[Any]) -> None:
        """Logins wait until ``started`` fires: the backend is connected and loaded (Redis).

        The site accepts connections at once; a login before the backend is ready waits
        (its connection holds later frames meanwhile) instead of being answered from an
        empty mirror — with no epoch, say.
        """
        self._starting = []  # until the chain of ``started`` has run (at once, if it has)

        def ready(result: Any) -> Any:
            waiting, self._starting = self._starting or [], None
            for waiter in waiting:
                waiter.callback(None)
            return result

        started.addBoth(ready)

    def login(
        self,
        connection: object,
        username: str,
        resume: str | None,
        token_valid: bool,
        still_open: Callable[[], bool],
    ) -> Deferred[tuple[Session, bool]]:
        """Attach ``connection`` to the live session of ``username`` when it may (``resume``
        names it, or a valid token proves the user), else start a new session.

        Fires with ``(session, resumed)``; fails with ``username_taken`` when a live session
        holds the name and this login may not attach, ``rate_limited`` when the session has
        its most connections.
        """
        if self._starting is not None:
            started: Deferred[None] = Deferred()
            self._starting.append(started)
            later: Deferred[tuple[Session, bool]] = Deferred()
            started.addCallback(
                lambda _: self.login(connection, username, resume, token_valid, still_open)
                .chainDeferred(later)
            )  # fmt: skip
            return later
        session = self.sessions.get(username)
        if session is not None and session.state is SessionState.CLAIMING:
            if not token_valid:
                return _failed(_taken(username))
            waited: Deferred[tuple[Session, bool]] = Deferred()
            session.claimed().addBoth(
                lambda _: self.login(connection, username, resume, token_valid, still_open)
                .chainDeferred(waited)
            )  # fmt: skip
            return waited
        if session is not None:
            if resume != session.session_id and not token_valid:
                return _failed(_taken(username))
            most = self.settings.max_connections_per_session
            if len(session.connections) >= most:
                return _failed(
                    RouteError(
                        ErrorCode.RATE_LIMITED,
                        f"{most} connections are attached to this session already; "
                        "close one to attach another",
                    )
                )
            was = session.state
            session.attach(connection)
            if was is SessionState.LINGERING:
                self.presence.set_online(username, True)
            return succeed((session, True))
        return self._new_session(connection, username, still_open)

    def _new_session(
        self, connection: object, username: str, still_open: Callable[[], bool]
    ) -> Deferred[tuple[Session, bool]]:
        session = Session(username, self.clock, self.settings.session_linger, self._ended)
        self.sessions[username] = session

        def claimed(ok: bool) -> tuple[Session, bool]:
            if not ok:
                session.claim_failed()
                raise _taken(username)
            session.claim_succeeded(connection)
            self.presence.set_online(username, True)
            self.store.remember_user(username)
            if not still_open():  # the connection closed while the claim was in flight
                self.detach(connection, session, logout=True)
                raise RouteError(ErrorCode.INTERNAL, "the connection closed during the login")
            return session, False

        def failed(failure: Failure) -> Failure:
            if session.state is SessionState.CLAIMING:
                session.claim_failed()
            return store_failure(failure)

        d = self.presence.claim(username, session.session_id)
        return d.addCallbacks(claimed, failed)

    def detach(self, connection: object, session: Session, logout: bool) -> None:
        """``connection`` leaves ``session`` (it closed, or logged out)."""
        if connection not in session.connections:
            return
        if session.detach(connection, logout) is SessionState.LINGERING:
            self.presence.set_online(session.username, False)

    def _ended(self, session: Session) -> None:
        """A session ended: free its name, and its user leaves every channel."""
        if self.sessions.get(session.username) is session:
            del self.sessions[session.username]
        self.presence.release(session.username, session.session_id)
        for channel in list(session.channels):
            self.leave(session, channel).addErrback(self._leave_failed, session, channel)

    @staticmethod
    def _leave_failed(failure: Failure, session: Session, channel: str) -> None:
        logger.failure(
            "could not record {user} leaving {channel}",
            failure,
            user=session.username,
            channel=channel,
        )

    def end_all(self) -> None:
        """Shutdown: every session ends now (its leave items are queued before the store
        closes)."""
        for session in list(self.sessions.values()):
            session.end()

    def local_state(self) -> LocalState:
        """This node's own sessions, memberships and online users (for a shared presence)."""
        live = [s for s in self.sessions.values() if s.live]
        return LocalState(
            {s.username: s.session_id for s in live},
            {(channel, s.username) for s in live for channel in s.channels},
            {s.username for s in live if s.connections},
        )

    # Channels

    def join(self, session: Session, channel: str) -> Deferred[dict[str, Any]]:
        membership = session.channels.get(channel)
        if membership is not None:  # a member already: answer with the last item
            last = self.store.last_seq
            return membership.stored().addCallback(
                lambda _: self._member_answer(channel, last(channel_log(channel)))
            )
        most = self.settings.max_channels_per_user
        if most and len(session.channels) >= most:
            raise RouteError(
                ErrorCode.FORBIDDEN, f"at most {most} channels per user; leave one to join another"
            )
        cap = self.settings.max_channels
        if cap and not self.store.has_channel(channel) and self.store.channel_count() >= cap:
            raise RouteError(
                ErrorCode.FORBIDDEN,
                f"the server has {cap} channels, its limit; join an existing channel",
            )
        membership = session.channels[channel] = Membership()
        self.presence.joined(channel, session.username)
        self.store.add_channel(channel)

        def stored(appended: Appended) -> dict[str, Any]:
            for listener in list(session.listeners):
                listener.joined(channel, appended.seq)
            answer = self._member_answer(channel, appended.seq)
            membership.set_stored(appended.seq)
            return answer

        def failed(failure: Failure) -> Failure:
            if session.channels.get(channel) is membership:
                del session.channels[channel]
                self.presence.left(channel, session.username)
            membership.set_stored(0)  # a join that waited for this one answers now
            return store_failure(failure)

        item = items.join_item(channel, session.username)
        return self._append(channel_log(channel), item).addCallbacks(stored, failed)

    def _member_answer(self, channel: str, seq: int) -> dict[str, Any]:
        return {"channel": channel, "seq": seq, "users": self.presence.member_count(channel)}

    def leave(self, session: Session, channel: str) -> Deferred[dict[str, Any]]:
        if session.channels.pop(channel, None) is None:
            return succeed({"channel": channel})
        self.presence.left(channel, session.username)

        def stored(appended: Appended) -> dict[str, Any]:
            for listener in list(session.listeners):
                listener.left(channel, appended.seq)
            return {"channel": channel}

        item = items.leave_item(channel, session.username)
        return self._append(channel_log(channel), item).addCallbacks(stored, store_failure)

    # Messages

    def post(
        self, session: Session, channel: str, content: str, client_id: str | None = None
    ) -> Deferred[dict[str, Any]]:
        if channel not in session.channels:
            if not self.store.has_channel(channel):
                reason = f"channel {channel!r} does not exist; join it to create it"
            else:
                reason = f"join channel {channel!r} before posting to it"
            raise RouteError(ErrorCode.FORBIDDEN, reason)
        item = items.channel_message(channel, session.username, content, client_id)
        dedup = Dedup(session.username, client_id) if client_id is not None else None
        return self._message(channel_log(channel), item, channel, dedup=dedup)

    def private_recipient_known(self, username: str) -> Deferred[None] | None:
        """``None`` when ``username`` is known here; else a Deferred that fails with
        ``not_found`` unless the store (shared by other nodes) knows it."""
        if self.store.knows_user(username):
            return None

        def found(known: bool) -> None:
            if not known:
                raise _unknown_user(username)

        return self.store.find_user(username).addCallbacks(found, store_failure)

    def send_private(
        self, session: Session, username: str, content: str, client_id: str | None = None
    ) -> Deferred[dict[str, Any]]:
        """Append to the sender's inbox and (unless it is the sender) the recipient's, as one
        append; answer with the sender's copy."""
        if not self.store.knows_user(username):
            raise _unknown_user(username)
        item = items.private_message(session.username, username, content, client_id)
        dedup = Dedup(session.username, client_id) if client_id is not None else None
        own, theirs = inbox_log(session.username), inbox_log(username)
        copy_to = theirs if theirs != own else None
        return self._message(own, item, None, copy_to=copy_to, dedup=dedup)

    def announce(self, channel: str, sender: str, content: str) -> Deferred[dict[str, Any]]:
        """A message from outside any session (HTTP publish API, Redis bridge).

        ``sender`` is not a username: callers use a form no username can take (``api:NAME``).
        """
        if not self.store.has_channel(channel):
            raise RouteError(ErrorCode.NOT_FOUND, f"channel {channel!r} does not exist")
        return self._message(
            channel_log(channel), items.channel_message(channel, sender, content), channel
        )

    def _message(
        self,
        log_key: str,
        item: items.Item,
        channel: str | None,
        copy_to: str | None = None,
        dedup: Dedup | None = None,
    ) -> Deferred[dict[str, Any]]:
        """Append a message; answer ``{"channel", "seq", "ts", "duplicate"}`` once stored."""

        def answer(appended: Appended) -> dict[str, Any]:
            return {
                "channel": channel,
                "seq": appended.seq,
                "ts": appended.ts,
                "duplicate": appended.duplicate,
            }

        d = self._append(log_key, item, copy_to, dedup)
        return d.addCallbacks(answer, store_failure)

    def _append(
        self,
        log_key: str,
        item: items.Item,
        copy_to: str | None = None,
        dedup: Dedup | None = None,
    ) -> Deferred[Appended]:
        """Every append goes through here: counted and timed for /metrics."""
        started = self.clock.seconds()

        def stored(appended: Appended) -> Appended:
            if not appended.duplicate:
                self.message_count += 1 if copy_to is None else 2
            self.append_latency(self.clock.seconds() - started)
            return appended

        return self.store.append(log_key, item, copy_to, dedup).addCallback(stored)

    # Read positions

    def read(self, session: Session, channel: str | None, seq: int) -> Deferred[dict[str, Any]]:
        """Raise the user's read position in a member channel (``None``: the inbox)."""
        if channel is None:
            log_key = inbox_log(session.username)
        elif channel in session.channels:
            log_key = channel_log(channel)
        else:
            raise RouteError(
                ErrorCode.FORBIDDEN, f"not a member of channel {channel!r}; join it first"
            )
        seq = min(seq, self.store.last_seq(log_key))
        d = self.store.save_read(session.username, log_key, seq)
        return d.addCallbacks(lambda stored: {"channel": channel, "seq": stored}, store_failure)

    def conversations(self, session: Session) -> list[tuple[str | None, str, int]]:
        """(channel, log, last seq) of each member channel sorted by name, then the inbox."""
        rows: list[tuple[str | None, str, int]] = []
        for channel in sorted(session.channels):
            log_key = channel_log(channel)
            rows.append((channel, log_key, self.store.last_seq(log_key)))
        inbox = inbox_log(session.username)
        rows.append((None, inbox, self.store.last_seq(inbox)))
        return rows

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


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(error)
    return d
