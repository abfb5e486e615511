"""What a route handler may use: the :class:`RouteContext` of its connection.

A handler gets this small object, not the connection: the service, the settings, the clock,
the connection's login state and limits, a way to open a stream (the outbound its producers
write to), to close the connection, and the two ordering tools of PROTOCOL.md's in-order rule:

- :meth:`RouteContext.hold` — the decision this request makes needs I/O first (a login's
  claim, looking up an unknown user); no later frame of the connection is processed until the
  Deferred fires, so every later request sees its effect;
- :meth:`RouteContext.track` — this request wrote something (an append, a read position);
  requests that read what was written (routes registered with ``after_writes``) wait for every
  tracked write before them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from chat.protocol.closes import Disconnect
from chat.protocol.errors import ErrorCode, RouteError
from chat.service.ratelimit import TokenBucket
from chat.service.session import Login, Session
from chat.settings import Settings

if TYPE_CHECKING:
    from chat.producers.outbound import Outbound
    from chat.service.chat import ChatService

T = TypeVar("T")


class Limits:
    """The per-connection limits routes charge: token buckets, failed logins."""

    __slots__ = ("auth_failures", "buckets", "clock", "settings")

    def __init__(self, settings: Settings, clock: IReactorTime) -> None:
        self.settings = settings
        self.clock = clock
        self.buckets: dict[str, TokenBucket] = {}  # made at first use
        self.auth_failures = 0

    def spend(self, what: str, rate: float, burst: int) -> None:
        """Charge one ``what`` to its bucket, or refuse it with ``rate_limited``."""
        if rate <= 0:
            return
        now = self.clock.seconds()
        bucket = self.buckets.get(what)
        if bucket is None:
            bucket = self.buckets[what] = TokenBucket(rate, burst, now)
        if not bucket.take(now):
            raise RouteError(
                ErrorCode.RATE_LIMITED,
                f"more than {rate:g} {what} requests per second; "
                f"retry in {bucket.retry_after():.3f} s",
            )

    def message(self) -> None:
        self.spend("message", self.settings.message_rate, self.settings.message_burst)

    def membership(self) -> None:
        self.spend("channel.join/leave", self.settings.join_rate, self.settings.join_burst)


@attrs.define(eq=False)
class RouteContext:
    """One connection, as its route handlers see it."""

    service: ChatService
    settings: Settings
    clock: IReactorTime
    outbound: Outbound
    login: Login
    limits: Limits
    hold: Callable[[Deferred[Any]], None]
    close: Callable[[Disconnect], None]
    is_open: Callable[[], bool]
    logged_in: Callable[[], None]  # the connection's login timer stops
    writes: list[Deferred[Any]] = attrs.field(factory=list)  # tracked, not yet done
    feeds: list[Any] = attrs.field(factory=list)  # this connection's `messages` feeds

    @property
    def session(self) -> Session | None:
        return self.login.session

    def track(self, d: Deferred[T]) -> Deferred[T]:
        """Remember a write until it is done (see :meth:`writes_done`); returns ``d``."""
        if not d.called:
            self.writes.append(d)

            def done(result: Any) -> Any:
                if d in self.writes:
                    self.writes.remove(d)
                return result

            d.addBoth(done)
        return d

    def writes_done(self) -> Deferred[None] | None:
        """A Deferred firing once every tracked write is done; ``None`` when none is pending."""
        pending = [w for w in self.writes if not w.called]
        if not pending:
            return None
        done: Deferred[None] = Deferred()
        remaining = [len(pending)]

        def one(result: Any) -> Any:
            remaining[0] -= 1
            if remaining[0] == 0 and not done.called:
                done.callback(None)
            return result

        for write in pending:
            write.addBoth(one)
        return done
