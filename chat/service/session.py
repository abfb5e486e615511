"""The login and session lifecycle, as one state machine written as data (after h11's _state).

Theory of operation
-------------------

Two things have a state. A *connection* is anonymous until a ``login`` succeeds, and anonymous
again after ``logout``; while a login's claim is in flight it is ``LOGGING_IN``. A *session* is
one logged-in user (PROTOCOL.md, Sessions): it is ``CLAIMING`` while its username is claimed
(on one node that is immediate; over Redis it is a round trip), ``LIVE`` while at least one
connection is attached, ``LINGERING`` when its last connection went away (for the linger time,
so that a reload, a network change or another tab can resume it), and ``ENDED`` for good —
then its user leaves every channel.

Every change is an event, and the tables below are the whole of the rules: an event that is
not in a table for the current state is a bug, and raises :class:`LifecycleError`. Which event
happens is decided by the caller from the facts (a detach of the last connection with a
linger time is ``LINGER``; without one, or a logout of the last connection, is ``END``)::

    session:   CLAIMING --CLAIMED--> LIVE --LINGER--> LINGERING --ATTACH--> LIVE
                   |                  | ^                |
                   REFUSED            | ATTACH, DETACH   EXPIRE
                   v                  v                  v
                 ENDED <----END------ +---------------> ENDED

    connection: ANONYMOUS --LOGIN--> LOGGING_IN --LOGGED_IN--> LOGGED_IN --LOGOUT--> ANONYMOUS
                               LOGGING_IN --FAILED--> ANONYMOUS;  any --CLOSE--> CLOSED

A session holds its memberships (channel -> :class:`Membership`) and the membership listeners
of every attached connection (their ``messages`` feeds); the service appends the ``join`` and
``leave`` items and tells the listeners.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from chat.service.interfaces import IMembershipListener


class LifecycleError(RuntimeError):
    """An event happened in a state that does not allow it: a bug in the caller."""


class SessionState(StrEnum):
    CLAIMING = "claiming"
    LIVE = "live"
    LINGERING = "lingering"
    ENDED = "ended"


class SessionEvent(StrEnum):
    CLAIMED = "claimed"  # the username is ours; the first connection is attached
    REFUSED = "refused"  # another node holds the username, or the claim failed
    ATTACH = "attach"  # one more connection (login with resume, or a valid token)
    DETACH = "detach"  # a connection went away or logged out; others stay attached
    LINGER = "linger"  # the last connection went away; the session waits to be resumed
    EXPIRE = "expire"  # nobody resumed it within the linger time
    END = "end"  # the last connection logged out (or left with no linger), or shutdown


SESSION_TRANSITIONS: Final[dict[tuple[SessionState, SessionEvent], SessionState]] = {
    (SessionState.CLAIMING, SessionEvent.CLAIMED): SessionState.LIVE,
    (SessionState.CLAIMING, SessionEvent.REFUSED): SessionState.ENDED,
    (SessionState.CLAIMING, SessionEvent.END): SessionState.ENDED,
    (SessionState.LIVE, SessionEvent.ATTACH): SessionState.LIVE,
    (SessionState.LIVE, SessionEvent.DETACH): SessionState.LIVE,
    (SessionState.LIVE, SessionEvent.LINGER): SessionState.LINGERING,
    (SessionState.LIVE, SessionEvent.END): SessionState.ENDED,
    (SessionState.LINGERING, SessionEvent.ATTACH): SessionState.LIVE,
    (SessionState.LINGERING, SessionEvent.EXPIRE): SessionState.ENDED,
    (SessionState.LINGERING, SessionEvent.END): SessionState.ENDED,
}


class LoginState(StrEnum):
    ANONYMOUS = "anonymous"
    LOGGING_IN = "logging in"
    LOGGED_IN = "logged in"
    CLOSED = "closed"


class LoginEvent(StrEnum):
    LOGIN = "login"
    LOGGED_IN = "logged in"
    FAILED = "failed"
    LOGOUT = "logout"
    CLOSE = "close"


LOGIN_TRANSITIONS: Final[dict[tuple[LoginState, LoginEvent], LoginState]] = {
    (LoginState.ANONYMOUS, LoginEvent.LOGIN): LoginState.LOGGING_IN,
    (LoginState.LOGGING_IN, LoginEvent.LOGGED_IN): LoginState.LOGGED_IN,
    (LoginState.LOGGING_IN, LoginEvent.FAILED): LoginState.ANONYMOUS,
    (LoginState.LOGGED_IN, LoginEvent.LOGOUT): LoginState.ANONYMOUS,
    (LoginState.ANONYMOUS, LoginEvent.CLOSE): LoginState.CLOSED,
    (LoginState.LOGGING_IN, LoginEvent.CLOSE): LoginState.CLOSED,
    (LoginState.LOGGED_IN, LoginEvent.CLOSE): LoginState.CLOSED,
}


def _next(table: dict[tuple[Any, Any], Any], state: Any, event: Any) -> Any:
    try:
        return table[(state, event)]
    except KeyError:
        raise LifecycleError(f"{event} is not allowed while {state}") from None


def new_session_id() -> str:
    """A session's secret: 128 bits from the operating system's CSPRNG, as hex."""
    return secrets.token_hex(16)


class Membership:
    """One membership of a session: the seq of its join item, 0 until that item is stored."""

    __slots__ = ("seq", "waiters")

    def __init__(self) -> None:
        self.seq = 0
        self.waiters: list[Deferred[None]] | None = None  # answers waiting for the join item

    def stored(self) -> Deferred[None]:
        """Fires once the join item is stored (at once if it is)."""
        d: Deferred[None] = Deferred()
        if self.seq:
            d.callback(None)
        else:
            if self.waiters is None:
                self.waiters = []
            self.waiters.append(d)
        return d

    def set_stored(self, seq: int) -> None:
        self.seq = seq
        waiters, self.waiters = self.waiters, None
        for waiter in waiters or ():
            waiter.callback(None)


class Session:
    """One logged-in user, shared by the connections attached to it."""

    def __init__(
        self,
        username: str,
        clock: IReactorTime,
        linger: float,
        on_end: Callable[[Session], None],
    ) -> None:
        self.username = username
        self.session_id = new_session_id()
        self.state = SessionState.CLAIMING
        self.clock = clock
        self.linger = linger
        self.on_end = on_end
        self.connections: list[object] = []  # the attached connections (opaque here)
        self.channels: dict[str, Membership] = {}
        self.listeners: list[IMembershipListener] = []  # feeds of every attached connection
        self.client_memory: int | None = None  # the last `statistics` fire
        self._claimed: list[Deferred[None]] | None = None  # waiting for CLAIMING to end
        self.timer: IDelayedCall | None = None

    def __repr__(self) -> str:
        return f"<Session {self.username} {self.state}, {len(self.connections)} connections>"

    def claimed(self) -> Deferred[None]:
        """Fires when the username's claim is decided (at once if it was)."""
        d: Deferred[None] = Deferred()
        if self.state is not SessionState.CLAIMING:
            d.callback(None)
        else:
            if self._claimed is None:
                self._claimed = []
            self._claimed.append(d)
        return d

    @property
    def live(self) -> bool:
        return self.state in (SessionState.LIVE, SessionState.LINGERING)

    def fire(self, event: SessionEvent) -> SessionState:
        """Move to the state ``event`` leads to from here (or raise LifecycleError)."""
        before = self.state
        self.state = _next(SESSION_TRANSITIONS, before, event)
        if before is SessionState.CLAIMING and self._claimed is not None:
            waiting, self._claimed = self._claimed, None
            for waiter in waiting:
                waiter.callback(None)
        if self.state is not SessionState.LINGERING:
            self._stop_timer()
        if self.state is SessionState.ENDED and before is not SessionState.ENDED:
            self.listeners.clear()
            self.on_end(self)
        return self.state

    # What the service calls

    def claim_succeeded(self, connection: object) -> None:
        self.connections.append(connection)
        self.fire(SessionEvent.CLAIMED)

    def claim_failed(self) -> None:
        self.fire(SessionEvent.REFUSED)

    def attach(self, connection: object) -> None:
        self.fire(SessionEvent.ATTACH)
        self.connections.append(connection)

    def detach(self, connection: object, logout: bool) -> SessionState:
        """``connection`` went away (or logged out): the session stays, lingers, or ends."""
        if connection in self.connections:
            self.connections.remove(connection)
        if self.connections:
            return self.fire(SessionEvent.DETACH)
        if logout or self.linger <= 0:
            return self.fire(SessionEvent.END)
        state = self.fire(SessionEvent.LINGER)
        self.timer = self.clock.callLater(self.linger, self._expire)
        return state

    def end(self) -> None:
        """End now, whatever the state (shutdown, a node's death)."""
        if self.state is not SessionState.ENDED:
            self.fire(SessionEvent.END)

    def _expire(self) -> None:
        self.timer = None
        if self.state is SessionState.LINGERING:
            self.fire(SessionEvent.EXPIRE)

    def _stop_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class Login:
    """The login state of one connection."""

    __slots__ = ("session", "state")

    def __init__(self) -> None:
        self.state = LoginState.ANONYMOUS
        self.session: Session | None = None

    def fire(self, event: LoginEvent, session: Session | None = None) -> LoginState:
        self.state = _next(LOGIN_TRANSITIONS, self.state, event)
        self.session = session if self.state is LoginState.LOGGED_IN else None
        return self.state
