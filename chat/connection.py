"""One client connection: the protocol core, the router and the producers, without sockets.

The WebSocket adapter (:mod:`chat.websocket`, the only code that knows Autobahn) creates a
:class:`ChatConnection` when a WebSocket opens, hands it every text message, and tells it when
the connection is lost. Everything between — parsing, interaction bookkeeping, dispatch to
routes, and the outbound producers — happens here and below, so it can be tested with a fake
transport and a :class:`twisted.internet.task.Clock`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chat.producers.outbound import FlushScheduler, Outbound
from chat.producers.stream import StreamProducer
from chat.protocol import interactions as ev
from chat.protocol.errors import CloseCode, ErrorCode, ProtocolError, RouteError
from chat.protocol.interactions import Interaction, Interactions, Kind
from chat.service.chat import ChatService, Session
from chat.service.ratelimit import TokenBucket
from chat.service.router import FIRE, Router
from chat.settings import Settings
from chat.stores.interface import ILogStore

LOGIN_HINT = 'log in first: send a "login" request with {"username": ...}'


class Hub:
    """What every connection of one server shares."""

    def __init__(
        self, service: ChatService, router: Router, settings: Settings, clock: IReactorTime
    ) -> None:
        self.service = service
        self.router = router
        self.settings = settings
        self.clock = clock
        self.scheduler = FlushScheduler(clock)
        self.connections: set[ChatConnection] = set()
        self.errors: Counter[str] = Counter()  # error frames sent, by code
        self.closes: Counter[int] = Counter()  # connections closed, by WebSocket close code
        self.when_empty: list[Deferred[None]] = []
        self.pongs_excused = 0  # ping timeouts forgiven because a client was merely slow

    def count_error(self, code: ErrorCode) -> None:
        self.errors[code.value] += 1

    def close_all(self, code: CloseCode, reason: str, timeout: float) -> Deferred[None]:
        """Close every connection; fires once all are gone, or after ``timeout`` seconds."""
        for connection in list(self.connections):
            connection.close(code, reason)
        if not self.connections:
            return succeed(None)
        emptied: Deferred[None] = Deferred()
        self.when_empty.append(emptied)
        return emptied.addTimeout(timeout, self.clock, onTimeoutCancel=lambda result, t: None)

    def forget(self, connection: ChatConnection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            waiters, self.when_empty = self.when_empty, []
            for waiter in waiters:
                if not waiter.called:
                    waiter.callback(None)

    def connections_from(self, peer: str) -> int:
        """Open connections from the address of ``peer`` (Autobahn's "tcp:HOST:PORT")."""
        host = peer_host(peer)
        return sum(1 for connection in self.connections if peer_host(connection.peer) == host)


def peer_host(peer: str) -> str:
    """The address part of a peer description such as ``tcp:127.0.0.1:5000``."""
    return peer.rsplit(":", 1)[0]


class ChatConnection:
    """The server side of one WebSocket connection."""

    __slots__ = (
        "__weakref__",
        "auth_failures",
        "close",
        "hub",
        "interactions",
        "login_timer",
        "lost",
        "message_bucket",
        "outbound",
        "peer",
        "session",
        "transport",
    )
    log = Logger()

    def __init__(
        self,
        hub: Hub,
        write: Callable[[bytes], None],
        close: Callable[[CloseCode, str], None],
        pause_reading: Callable[[], None] = lambda: None,
        resume_reading: Callable[[], None] = lambda: None,
        transport: Any = None,
        peer: str = "",
    ) -> None:
        self.hub = hub
        self.transport = transport  # the transport beneath, for diagnostics only
        self.peer = peer
        self.close = close
        self.session: Session | None = None
        self.interactions = Interactions(
            max_open=hub.settings.max_interactions, on_error=hub.count_error
        )
        self.outbound = Outbound(
            self.interactions, write, hub.scheduler, pause_reading, resume_reading
        )
        hub.connections.add(self)
        self.service.connection_count += 1
        self.lost = False
        settings = hub.settings
        self.message_bucket: TokenBucket | None = None  # made at the first message
        self.auth_failures = 0
        self.login_timer: IDelayedCall | None = None
        if settings.login_timeout > 0:
            self.login_timer = hub.clock.callLater(settings.login_timeout, self._login_too_late)

    # What every connection of the server shares, for routes and producers.

    @property
    def service(self) -> ChatService:
        return self.hub.service

    @property
    def store(self) -> ILogStore:
        return self.hub.service.store

    @property
    def settings(self) -> Settings:
        return self.hub.settings

    @property
    def clock(self) -> IReactorTime:
        return self.hub.clock

    @property
    def router(self) -> Router:
        return self.hub.router

    def login(self, username: str) -> Session:
        self.session = self.service.login(username)
        if self.login_timer is not None and self.login_timer.active():
            self.login_timer.cancel()
        self.login_timer = None
        return self.session

    def auth_failed(self) -> None:
        """A token login failed; too many close the connection once the error is sent."""
        self.auth_failures += 1
        if self.auth_failures >= self.settings.max_auth_failures:
            reason = f"{self.auth_failures} failed logins"
            self.outbound.when_flushed(lambda: self.close(CloseCode.POLICY_VIOLATION, reason))

    def _login_too_late(self) -> None:
        self.login_timer = None
        if self.session is None and not self.lost:
            seconds = self.settings.login_timeout
            self.close(CloseCode.POLICY_VIOLATION, f"no login within {seconds:g} s")

    def spend_message_token(self) -> None:
        """Charge one ``message`` to this connection's rate limit, or refuse it."""
        settings = self.settings
        if settings.message_rate <= 0:
            return
        bucket = self.message_bucket
        if bucket is None:
            now = self.clock.seconds()
            bucket = self.message_bucket = TokenBucket(
                settings.message_rate, settings.message_burst, now
            )
        if not bucket.take(self.clock.seconds()):
            raise RouteError(
                ErrorCode.RATE_LIMITED,
                f"more than {self.settings.message_rate:g} messages per second; "
                f"retry in {bucket.retry_after():.3f} s",
            )

    def text_received(self, text: bytes | str) -> None:
        """One WebSocket text message (UTF-8 already checked by the adapter)."""
        event = self.interactions.receive(text)
        match event:
            case None:
                pass
            case ev.Opened(interaction, data):
                self._opened(interaction, data)
            case ev.Fired(route, data):
                self._fired(route, data)
            case ev.Refused(frame):
                self.outbound.send(frame)
            case ev.Cancelled(interaction):
                self.outbound.cancel(interaction)
            case ev.CreditGranted(interaction):
                stream = self.outbound.stream_of(interaction)
                if stream is not None:
                    stream.credit_wakes()
            case ev.ClientNext(interaction, data):
                stream = self.outbound.stream_of(interaction)
                if stream is not None:
                    stream.receive(data)
            case ev.ClientCompleted():
                pass  # the client sends no more; our side of the channel goes on
            case ev.CloseConnection(code, reason):
                self.close(code, reason)

    def _opened(self, interaction: Interaction, data: Any) -> None:
        route = self.router.find(interaction.kind, interaction.route)
        if route is None:
            message = self.router.unknown_message(interaction.kind, interaction.route)
            self._fail(interaction, ErrorCode.UNKNOWN_ROUTE, message)
            return
        if route.login and self.session is None:
            self._fail(interaction, ErrorCode.UNAUTHENTICATED, LOGIN_HINT)
            return
        try:
            if interaction.kind is Kind.REQUEST:
                result = route.handler(self, data)
            else:
                self.outbound.attach(route.handler(self, interaction, data))
                return
        except ProtocolError as exc:
            self._fail(interaction, exc.code, exc.message)
            return
        except Exception:
            self.log.failure("route {route} failed", route=interaction.route)
            self._fail(interaction, ErrorCode.INTERNAL, "the server failed to handle this")
            return
        if isinstance(result, Deferred):
            result.addCallbacks(
                lambda answer: self._respond(interaction, answer),
                lambda failure: self._request_failed(interaction, failure),
            )
        else:
            self._respond(interaction, result)

    def _fired(self, route_name: str, data: Any) -> None:
        route = self.router.find(FIRE, route_name)
        if route is None or (route.login and self.session is None):
            return  # a fire is never answered, not even with an error
        try:
            route.handler(self, data)
        except ProtocolError:
            pass
        except Exception:
            self.log.failure("fire {route} failed", route=route_name)

    def _respond(self, interaction: Interaction, answer: Any) -> None:
        frame = self.interactions.respond(interaction, answer)
        if frame is not None:
            self.outbound.send(frame)

    def _fail(self, interaction: Interaction, code: ErrorCode, message: str) -> None:
        frame = self.interactions.fail(interaction, code, message)
        if frame is not None:
            self.outbound.send(frame)

    def _request_failed(self, interaction: Interaction, failure: Failure) -> None:
        if failure.check(ProtocolError):
            exc = failure.value
            assert isinstance(exc, ProtocolError)
            self._fail(interaction, exc.code, exc.message)
        else:
            self.log.failure("route {route} failed", failure, route=interaction.route)
            self._fail(interaction, ErrorCode.INTERNAL, "the server failed to handle this")

    def stream_failed(self, stream: StreamProducer, failure: Failure) -> None:
        """A stream's asynchronous source failed: log it and end the stream."""
        self.log.failure("stream {route} failed", failure, route=stream.interaction.route)
        stream.fail(ErrorCode.INTERNAL, "the server failed to read the store")

    def connection_lost(self) -> None:
        """The WebSocket is closed: stop every stream and end the session."""
        if self.lost:
            return
        self.lost = True
        if self.login_timer is not None and self.login_timer.active():
            self.login_timer.cancel()
        self.outbound.close()
        self.service.connection_count -= 1
        if self.session is not None:
            self.service.logout(self.session)  # appends the leave items...
        self.hub.forget(self)  # ...before a shutdown waiting for the last connection goes on
