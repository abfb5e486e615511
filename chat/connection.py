"""One client connection: the protocol core, the router and the producers, without sockets.

The WebSocket adapter (:mod:`chat.websocket`, the only code that knows Autobahn) creates a
:class:`ChatConnection` when a WebSocket opens, hands it every text message, and tells it when
the connection is lost. Everything between — parsing, interaction bookkeeping, dispatch to
routes, and the outbound producers — happens here and below, so it can be tested with a fake
transport and a :class:`twisted.internet.task.Clock`.

Frames are processed strictly in the order they arrive. A route that must do I/O before its
decision (a login's claim) *holds* the connection: later frames wait in :attr:`backlog`, and
reading from the socket pauses, until it is decided. A route that reads what earlier requests
wrote (``after_writes``) waits for those writes the same way. Once the server decides to close
a connection it processes nothing more from it, and the close frame is the last thing written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chat.logs import LogThrottle
from chat.producers.outbound import FlushScheduler, Outbound
from chat.protocol import interactions as ev
from chat.protocol.closes import LOGIN_TIMEOUT, Disconnect
from chat.protocol.errors import ErrorCode, ProtocolError
from chat.protocol.interactions import Interaction, Interactions, Kind
from chat.service.chat import ChatService
from chat.service.context import Limits, RouteContext
from chat.service.router import FIRE, Route, Router
from chat.service.session import Login, LoginEvent, LoginState, Session
from chat.settings import Settings

LOGIN_HINT = 'log in first: send a "login" request with {"username": ...}'
FAILURE_BURST, FAILURE_RATE = 20, 1.0  # tracebacks of failed handlers: at once, per second


class Node:
    """What every connection of one server node shares."""

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
        # Handler failures are bugs, but a client can repeat the request that causes one.
        self.throttle = LogThrottle(clock, FAILURE_BURST, FAILURE_RATE, log=ChatConnection.log)
        self.pongs_excused = 0  # ping timeouts forgiven because a client was merely slow

    def count_error(self, code: ErrorCode) -> None:
        self.errors[code.value] += 1

    def close_all(self, disconnect: Disconnect, timeout: float) -> Deferred[None]:
        """Close every connection; fires once all are gone, or after ``timeout`` seconds."""
        for connection in list(self.connections):
            connection.close(disconnect)
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


BACKPRESSURE, HOLD = 1, 2  # why a connection stops reading (bits of ``paused_for``)
WriteFrames = Callable[[bytes], None]
SendClose = Callable[[Disconnect], None]


class ChatConnection:
    """The server side of one WebSocket connection."""

    __slots__ = (
        "__weakref__",
        "backlog",
        "closing",
        "ctx",
        "held",
        "interactions",
        "login_timer",
        "lost",
        "node",
        "outbound",
        "pause_reading",
        "paused_for",
        "peer",
        "pending_close",
        "processing",
        "resume_reading",
        "send_close",
        "transport",
    )
    log = Logger()

    def __init__(
        self,
        node: Node,
        write: WriteFrames,
        send_close: SendClose,
        pause_reading: Callable[[], None] = lambda: None,
        resume_reading: Callable[[], None] = lambda: None,
        transport: Any = None,
        peer: str = "",
    ) -> None:
        self.node = node
        self.transport = transport  # the transport beneath, for diagnostics only
        self.peer = peer
        self.send_close = send_close
        self.pause_reading = pause_reading
        self.resume_reading = resume_reading
        self.paused_for = 0  # why reading is paused: a set of the bits below
        settings = node.settings
        self.interactions = Interactions(
            max_open=settings.max_interactions, on_error=node.count_error
        )
        self.outbound = Outbound(
            self.interactions,
            write,
            node.scheduler,
            self._pause_for_backpressure,
            self._resume_after_backpressure,
        )
        self.ctx = RouteContext(
            service=node.service,
            settings=settings,
            clock=node.clock,
            outbound=self.outbound,
            login=Login(),
            limits=Limits(settings, node.clock),
            hold=self.hold,
            close=self.close,
            is_open=self._is_open,
            logged_in=self._stop_login_timer,
        )
        self.held = 0  # holds in force; frames wait in the backlog meanwhile
        self.backlog: list[bytes | str] = []
        self.processing = False
        self.pending_close: Disconnect | None = None
        self.closing = False
        self.lost = False
        node.connections.add(self)
        node.service.connection_count += 1
        self.login_timer: IDelayedCall | None = None
        if settings.login_timeout > 0:
            self.login_timer = node.clock.callLater(settings.login_timeout, self._login_too_late)

    @property
    def session(self) -> Session | None:
        """The session this connection is logged in to (diagnostics and tests)."""
        return self.ctx.login.session

    # Reading

    def text_received(self, text: bytes | str) -> None:
        """One WebSocket text message (UTF-8 already checked by the adapter)."""
        if self.closing:
            return  # the server decided to close: nothing more is processed
        if self.held:
            self.backlog.append(text)
            return
        self._process(text)

    def _process(self, text: bytes | str) -> None:
        self.processing = True
        try:
            self._handle(self.interactions.receive(text))
        finally:
            self.processing = False
        if self.pending_close is not None:
            disconnect, self.pending_close = self.pending_close, None
            self.close(disconnect)

    def _handle(self, event: ev.Event | ev.CloseConnection | None) -> None:
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
                    stream.wake()
            case ev.ClientNext(interaction, data):
                stream = self.outbound.stream_of(interaction)
                if stream is not None:
                    stream.receive(data)
            case ev.ClientCompleted():
                pass  # the client sends no more; our side of the channel goes on
            case ev.CloseConnection(disconnect):
                self.close(disconnect)

    # Holding later frames

    def hold(self, d: Deferred[Any]) -> None:
        """Process no later frame until ``d`` has fired (see the module docstring)."""
        if d.called:
            return
        self.held += 1
        self._pause(HOLD)

        def release(result: Any) -> Any:
            self.held -= 1
            if not self.held:
                self._drain()
            return result

        d.addBoth(release)

    def _drain(self) -> None:
        while self.backlog and not self.held and not self.closing:
            self._process(self.backlog.pop(0))
        if not self.held:
            self.backlog.clear()
            self._resume(HOLD)

    def _pause(self, reason: int) -> None:
        if not self.paused_for:
            self.pause_reading()
        self.paused_for |= reason

    def _resume(self, reason: int) -> None:
        if self.paused_for & reason:
            self.paused_for &= ~reason
            if not self.paused_for and not self.lost:
                self.resume_reading()

    def _pause_for_backpressure(self) -> None:
        self._pause(BACKPRESSURE)

    def _resume_after_backpressure(self) -> None:
        self._resume(BACKPRESSURE)

    def _is_open(self) -> bool:
        return not self.lost

    # Dispatch

    def _opened(self, interaction: Interaction, data: Any) -> None:
        route = self.node.router.find(interaction.kind, interaction.route)
        if route is None:
            message = self.node.router.unknown_message(interaction.kind, interaction.route)
            self._fail(interaction, ErrorCode.UNKNOWN_ROUTE, message)
            return
        if route.login and self.ctx.login.state is not LoginState.LOGGED_IN:
            self._fail(interaction, ErrorCode.UNAUTHENTICATED, LOGIN_HINT)
            return
        if route.after_writes:
            writes = self.ctx.writes_done()
            if writes is not None:
                writes.addCallback(lambda _: self._run(route, interaction, data))
                self.hold(writes)
                return
        self._run(route, interaction, data)

    def _run(self, route: Route, interaction: Interaction, data: Any) -> None:
        if not interaction.open:
            return  # cancelled while it waited, or the connection closed
        try:
            if interaction.kind is Kind.REQUEST:
                result = route.handler(self.ctx, data)
            else:
                self.outbound.attach(route.handler(self.ctx, interaction, data))
                return
        except ProtocolError as exc:
            self._fail(interaction, exc.code, exc.message)
            return
        except Exception:
            if self.node.throttle.allow("ws.route_failed"):
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
        route = self.node.router.find(FIRE, route_name)
        if route is None or (route.login and self.ctx.login.state is not LoginState.LOGGED_IN):
            return  # a fire is never answered, not even with an error
        try:
            route.handler(self.ctx, data)
        except ProtocolError:
            pass
        except Exception:
            if self.node.throttle.allow("ws.fire_failed"):
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
            if self.node.throttle.allow("ws.route_failed"):
                self.log.failure("route {route} failed", failure, route=interaction.route)
            self._fail(interaction, ErrorCode.INTERNAL, "the server failed to handle this")

    # Closing

    def close(self, disconnect: Disconnect) -> None:
        """Close with ``disconnect`` once the frame being processed is answered: what was
        queued is written, then the close frame; nothing more is read or written."""
        if self.closing or self.lost:
            return
        if self.processing:
            self.pending_close = self.pending_close or disconnect
            return
        self.closing = True
        self.backlog.clear()
        self.outbound.close_with(lambda: self.send_close(disconnect))

    def _stop_login_timer(self) -> None:
        if self.login_timer is not None and self.login_timer.active():
            self.login_timer.cancel()
        self.login_timer = None

    def _login_too_late(self) -> None:
        self.login_timer = None
        if self.ctx.login.state is LoginState.ANONYMOUS and not self.lost:
            self.close(LOGIN_TIMEOUT.because(f"{self.node.settings.login_timeout:g} s"))

    def connection_lost(self) -> None:
        """The WebSocket is closed: stop every stream; the session loses this connection."""
        if self.lost:
            return
        self.lost = True
        self.closing = True
        self.backlog.clear()
        self._stop_login_timer()
        self.outbound.close()
        service = self.node.service
        service.connection_count -= 1
        login = self.ctx.login
        session = login.session
        login.fire(LoginEvent.CLOSE)
        if session is not None:
            service.detach(self.ctx, session, logout=False)  # may append leave items...
        self.node.forget(self)  # ...before a shutdown waiting for the last connection goes on
