"""The client library: :func:`connect`, :class:`ChatClient`, :class:`Stream`.

Flow control is the protocol's own: a stream opened with a ``window`` is granted that much
credit, and the library grants more (``request_n``) as the caller consumes items, so the
items waiting client-side never exceed the window. :meth:`Stream.pause` stops granting;
the server then stops sending and keeps its cursor, and :meth:`Stream.resume` goes on.

Protocol 1.1 sessions outlive their connections (the server's *linger* time), so two things
here exist for the sake of the next connection rather than this one:

- :meth:`ChatClient.login` remembers ``session_id``: a later connection passes it as
  ``resume`` and carries on the same session (memberships kept, nobody sees a leave).
- :meth:`ChatClient.send` gives every message a ``client_id``: a message whose answer was lost
  with the connection is sent again with the same id and the server stores it only once.

A client that is done should :meth:`~ChatClient.logout`, or its name stays held for the linger
time; when the reactor shuts down (``react`` ending, SIGTERM), each open client logs out and
closes by itself, and its streams end as if completed instead of failing with
:class:`ConnectionLost` (requests in flight are left unanswered): our own shutdown is not an
error.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Any

from autobahn.exception import Disconnected
from autobahn.twisted.websocket import connectWS
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger

from chat.websocket.client import ClientFactory, ClientLink

REFUSED_FRAME_CODES = frozenset({"bad_frame", "duplicate_id"})
SHUTDOWN_GRACE = 2.0  # seconds the reactor's shutdown waits for a logout, then for the close


def new_client_id() -> str:
    """A fresh ``client_id``: 32 hex digits of a random UUID (122 random bits).

    Unique without coordination (no counter to persist across restarts), and within the
    protocol's 1-64 characters of ``A-Z a-z 0-9 _ . : -``.
    """
    return uuid.uuid4().hex


class ChatError(Exception):
    """The server answered with an ``error`` frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionLost(ChatError):
    """The connection closed while this request or stream was open."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__("connection_lost", f"closed with {code}: {reason}".strip())
        self.close_code = code
        self.reason = reason


class SendInterrupted(ConnectionLost):
    """A ``message`` got no answer because the connection closed: it may or may not be stored.

    Send it again, on this or a later connection, with the same ``client_id``
    (``client.send(..., client_id=error.client_id)``, or ``client.resend(error.data)``):
    the server stores it at most once and answers ``"duplicate": true`` if it already had it.
    ``sent`` says whether the frame had been written at all.
    """

    def __init__(self, lost: ConnectionLost, data: dict[str, Any], *, sent: bool) -> None:
        super().__init__(lost.close_code, lost.reason)
        self.data = data
        self.client_id: str = data["client_id"]
        self.sent = sent


class _End:
    """Marks the end of a stream in its queue."""


_END = _End()


class Stream:
    """Items of one ``stream`` or ``channel`` interaction, in order.

    ``await stream.next()`` gives the next item, or raises :class:`StopAsyncIteration` at
    ``complete``; ``async for item in stream`` does the same. :meth:`collect` gathers all items
    of a finite stream. :meth:`when_done` fires when the interaction ends (with ``None``, or
    fails with the :class:`ChatError` that ended it).
    """

    def __init__(self, client: ChatClient, frame_id: int, route: str, window: int | None) -> None:
        self.client = client
        self.id = frame_id
        self.route = route
        self.window = window
        self.paused = False
        self.received = 0  # items delivered so far
        self._due = 0  # consumed items not yet granted back as credit
        self._queue: deque[Any] = deque()
        self._waiting: deque[Deferred[Any]] = deque()
        self._ended: BaseException | _End | None = None
        self._done_waiters: list[Deferred[None]] = []

    @property
    def ended(self) -> bool:
        return self._ended is not None

    def when_done(self) -> Deferred[None]:
        """Fires with ``None`` at ``complete`` or cancel; fails with the error that ended it."""
        d: Deferred[None] = Deferred()
        if self._ended is None:
            self._done_waiters.append(d)
        elif isinstance(self._ended, BaseException):
            d.errback(self._ended)
        else:
            d.callback(None)
        return d

    # Consuming

    def next(self) -> Deferred[Any]:
        """The next item; fails with StopAsyncIteration after ``complete``."""
        if self._queue:
            return succeed(self._take())
        if self._ended is not None:
            return self._end_result()
        waiter: Deferred[Any] = Deferred()
        self._waiting.append(waiter)
        return waiter

    def __aiter__(self) -> Stream:
        return self

    def __anext__(self) -> Deferred[Any]:
        return self.next()

    def collect(self) -> Deferred[list[Any]]:
        """Every item until ``complete``."""

        async def gather() -> list[Any]:
            return [item async for item in self]

        return ensureDeferred(gather())

    def _take(self) -> Any:
        item = self._queue.popleft()
        self._consumed(1)
        return item

    def _end_result(self) -> Deferred[Any]:
        ended = self._ended
        if isinstance(ended, BaseException):
            d: Deferred[Any] = Deferred()
            d.errback(ended)
            return d
        d = Deferred()
        d.errback(StopAsyncIteration())
        return d

    # Flow control

    def pause(self) -> None:
        """Stop granting credit: the server stops once what it was granted is spent."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._grant()

    def cancel(self) -> None:
        """Stop the interaction now; items already in flight are dropped."""
        if self._ended is None:
            self.client._send({"type": "cancel", "id": self.id})
            self._finish(_END)

    def _consumed(self, n: int) -> None:
        self._due += n
        self._grant()

    def _grant(self) -> None:
        if self.window is None or self.paused or self._ended is not None:
            return
        if self._due and self._due * 2 >= self.window:
            self.client._send({"type": "request_n", "id": self.id, "n": self._due})
            self._due = 0

    # From the client

    def _item(self, data: Any) -> None:
        self.received += 1
        if self._waiting:
            self._consumed(1)
            self._waiting.popleft().callback(data)
        else:
            self._queue.append(data)

    def _finish(self, end: BaseException | _End) -> None:
        if self._ended is not None:
            return
        self._ended = end
        self.client._streams.pop(self.id, None)
        while self._waiting:
            self._end_result().chainDeferred(self._waiting.popleft())
        waiters, self._done_waiters = self._done_waiters, []
        for waiter in waiters:
            if isinstance(end, BaseException):
                waiter.errback(end)
            else:
                waiter.callback(None)


class StatisticsHandle(Stream):
    """The ``statistics`` channel: change what and how often while it runs."""

    def set_ids(self, ids: Iterable[str]) -> None:
        self.client._send({"type": "next", "id": self.id, "data": {"ids": list(ids)}})

    def set_period(self, seconds: float) -> None:
        self.client._send({"type": "next", "id": self.id, "data": {"period_seconds": seconds}})


class ChatClient:
    """One connection to the server. Create it with :func:`connect`.

    After :meth:`login` it knows ``username``, ``session_id``, ``epoch`` and ``resumed``. It
    keeps the messages sent on it whose answer has not come yet in :attr:`unacknowledged`
    (``client_id`` → the ``message`` data), which stay there when the connection drops: they
    are what a new connection should send again, with the same ids.
    """

    log = Logger()

    def __init__(self, reactor: Any = None, *, logout_on_shutdown: bool = True) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.logout_on_shutdown = logout_on_shutdown
        self.link: ClientLink | None = None
        self.username: str | None = None
        self.session_id: str | None = None
        self.epoch: str | None = None
        self.resumed = False
        self.logged_out = False  # this connection sent ``logout`` and it was answered
        self.shutting_down = False  # the reactor is stopping: nothing fails, nothing retries
        self.unacknowledged: dict[str, dict[str, Any]] = {}
        self._next_id = 1
        self._requests: dict[int, Deferred[Any]] = {}
        self._streams: dict[int, Stream] = {}
        self._shutdown_trigger: Any = None
        self._gone = False  # the connection has closed (set before ``closed`` fires)
        self.protocol_errors: list[dict[str, Any]] = []  # errors with id null (bad_frame)
        self.closed: Deferred[tuple[int | None, str]] = Deferred()

    @property
    def transport(self) -> Any:
        """The TCP transport, e.g. to ``pauseProducing()`` (stop reading) in tests."""
        assert self.link is not None
        return self.link.transport

    @property
    def connected(self) -> bool:
        return self.link is not None and not self._gone

    # Requests

    def request(self, route: str, data: Any = None) -> Deferred[Any]:
        """Send a ``request``; fires with the response's ``data`` or fails with ChatError.

        Raises :class:`ConnectionLost` at once when the connection is already closed (during
        our own shutdown the request is left unanswered instead).
        """
        frame_id = self._new_id()
        frame: dict[str, Any] = {"type": "request", "id": frame_id, "route": route}
        if data is not None:
            frame["data"] = data
        self._send(frame)
        d: Deferred[Any] = Deferred()
        self._requests[frame_id] = d
        return d

    def login(
        self, username: str, *, resume: str | None = None, token: str | None = None
    ) -> Deferred[dict[str, Any]]:
        """Log in; fires with ``{"username", "session_id", "epoch", "resumed"}``.

        ``resume``: the ``session_id`` of an earlier connection's session. If that session
        still lives, this connection is attached to it (``resumed`` true: its channels are
        still joined, nothing was appended); if it ended, this is a new session (``resumed``
        false: join again). ``token``: for a server with token authentication (a valid token
        also attaches to the user's live session). The answer's fields are kept on the client.
        """
        data: dict[str, Any] = {"username": username}
        if resume is not None:
            data["resume"] = resume
        if token is not None:
            data["token"] = token

        def logged_in(answer: dict[str, Any]) -> dict[str, Any]:
            self.username = answer["username"]
            self.session_id = answer["session_id"]
            self.epoch = answer["epoch"]
            self.resumed = bool(answer.get("resumed", False))
            self.logged_out = False
            return answer

        return self.request("login", data).addCallback(logged_in)

    def logout(self) -> Deferred[dict[str, Any]]:
        """Leave the session; when no other connection is attached to it, it ends at once.

        Ending it frees the username (a process that exits without this holds it for the
        server's linger time) and appends the ``leave`` items of its channels. The
        connection stays open and may log in again; its ``messages`` streams end with
        ``unauthenticated``.
        """

        if self.shutting_down:
            return succeed({})  # the shutdown logs out by itself (or already did)
        return self._logout()

    def _logout(self) -> Deferred[dict[str, Any]]:
        def logged_out(answer: dict[str, Any]) -> dict[str, Any]:
            self.logged_out = True
            self.username = self.session_id = None
            self.resumed = False
            return answer

        return self.request("logout").addCallback(logged_out)

    def join(self, channel: str) -> Deferred[Any]:
        return self.request("channel.join", {"channel": channel})

    def leave(self, channel: str) -> Deferred[Any]:
        return self.request("channel.leave", {"channel": channel})

    def send(
        self,
        channel: str | None = None,
        content: str = "",
        *,
        user: str | None = None,
        client_id: str | None = None,
    ) -> Deferred[dict[str, Any]]:
        """``send("general", "hi")`` to a channel, ``send(user="bob", content="hi")`` privately.

        Fires with ``{"channel", "seq", "ts", "duplicate", "client_id"}`` (the server's answer
        plus the ``client_id`` it was sent with). A ``client_id`` is generated unless given;
        give the one of an earlier attempt to retry it: the server then answers
        ``"duplicate": true`` with the original ``seq`` if it had stored it. Fails with
        :class:`SendInterrupted` (a :class:`ConnectionLost`, carrying ``client_id``) when the
        connection closed before the answer, and with :class:`ChatError` for a refusal.
        """
        if (channel is None) == (user is None):
            raise ValueError("give a channel or a user, not both")
        data: dict[str, Any] = {"channel": channel} if channel is not None else {"user": user}
        data["content"] = content
        data["client_id"] = client_id if client_id is not None else new_client_id()
        return self.resend(data)

    def resend(self, data: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """Send a ``message`` whose data is known, e.g. :attr:`SendInterrupted.data` or an
        entry of another connection's :attr:`unacknowledged`, keeping its ``client_id``."""
        client_id = data["client_id"]
        try:
            d = self.request("message", data)
        except ConnectionLost as lost:
            raise SendInterrupted(lost, data, sent=False) from None
        self.unacknowledged[client_id] = data

        def answered(answer: dict[str, Any]) -> dict[str, Any]:
            self.unacknowledged.pop(client_id, None)
            return {**answer, "client_id": client_id}

        def failed(reason: Any) -> Any:
            if reason.check(ConnectionLost):
                # Kept in ``unacknowledged``: stored or not, only a retry can tell.
                raise SendInterrupted(reason.value, data, sent=True)
            self.unacknowledged.pop(client_id, None)  # refused: a retry would be refused too
            return reason

        return d.addCallbacks(answered, failed)

    def read(self, channel: str | None, seq: int) -> Deferred[dict[str, Any]]:
        """Store the read position ``seq`` in ``channel``'s log (``None``: the inbox).

        Durable and shared by every device of the user; it never moves back, so sending a
        position late or twice is harmless. Fires with ``{"channel", "seq"}`` (the position
        now kept, which may be larger than ``seq``).
        """
        return self.request("read", {"channel": channel, "seq": seq})

    # Streams

    def stream(
        self,
        route: str,
        data: Any = None,
        *,
        window: int | None = None,
        kind: str = "stream",
        stream_class: type[Stream] = Stream,
    ) -> Stream:
        """Open a ``stream`` (or ``channel``) interaction; ``window`` bounds the credit."""
        frame_id = self._new_id()
        stream = stream_class(self, frame_id, route, window)
        frame: dict[str, Any] = {"type": kind, "id": frame_id, "route": route}
        if data is not None:
            frame["data"] = data
        if window is not None:
            frame["credit"] = window
        self._send(frame)
        if self.shutting_down and self._gone:
            stream._finish(_END)  # opened by code that runs on during our shutdown: empty
        else:
            self._streams[frame_id] = stream
        return stream

    def channels(self) -> Deferred[list[dict[str, Any]]]:
        """``[{"channel", "users"}, ...]`` sorted by name."""
        return self.stream("channels").collect()

    def users(self, channel: str) -> Deferred[list[str]]:
        """The members' names of ``channel``, sorted (:meth:`members` says who is online)."""
        return self.members(channel).addCallback(lambda found: [m["username"] for m in found])

    def members(self, channel: str) -> Deferred[list[dict[str, Any]]]:
        """``[{"username", "online"}, ...]``, sorted: ``online`` is false for a member whose
        session lingers with no connection (it will get what it missed when it resumes)."""
        return self.stream("channel.users", {"channel": channel}).collect()

    def conversations(self) -> Deferred[list[dict[str, Any]]]:
        """``[{"channel", "last_seq", "read_seq", "unread"}, ...]``: one per channel of the
        session, by name, then the inbox (``"channel": None``). ``unread`` counts messages by
        others after the read position: what a client shows as a badge at login."""
        return self.stream("conversations").collect()

    def history(
        self,
        channel: str | None = None,
        *,
        user: str | None = None,
        before: int | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> Deferred[list[dict[str, Any]]]:
        """Stored items of a channel, or of one's inbox, oldest first.

        ``user`` (without ``channel``): only the private messages exchanged with that user
        (both directions, since the sender keeps a copy). ``before``/``after`` are exclusive
        bounds on ``seq``; at most ``limit`` items (the server's default 100): the newest,
        or with ``after`` the oldest after it.
        """
        query = {
            "channel": channel,
            "user": user,
            "before": before,
            "after": after,
            "limit": limit,
        }
        data = {key: value for key, value in query.items() if value is not None}
        return self.stream("history", data).collect()

    def messages(
        self,
        since: dict[str, int] | None = None,
        epoch: str | None = None,
        *,
        window: int | None = 1000,
    ) -> Stream:
        """The live feed: every item of one's channels and inbox, never completing.

        ``since``: the last seq seen per log (a channel name, or ``"@"`` for the inbox); the
        feed starts after it. ``epoch``: the ``epoch`` those positions were seen in; if the
        server's store changed, it ignores them.
        """
        data: dict[str, Any] = {}
        if since is not None:
            data["since"] = since
        if epoch is not None:
            data["epoch"] = epoch
        return self.stream("messages", data or None, window=window)

    def send_statistics(self, memory_usage: int) -> None:
        """Report this client's memory use (fire-and-forget)."""
        self._send({"type": "fire", "route": "statistics", "data": {"memory_usage": memory_usage}})

    def statistics(
        self, ids: Iterable[str] | None = None, period: float | None = None
    ) -> StatisticsHandle:
        """Subscribe to the server's statistics; change them through the handle."""
        data: dict[str, Any] = {}
        if ids is not None:
            data["ids"] = list(ids)
        if period is not None:
            data["period_seconds"] = period
        handle = self.stream(
            "statistics", data or None, kind="channel", stream_class=StatisticsHandle
        )
        assert isinstance(handle, StatisticsHandle)
        return handle

    def close(self) -> Deferred[tuple[int | None, str]]:
        """Close the connection (the session lingers unless it was logged out)."""
        if self.link is not None and not self._gone:
            self.link.close()
        return self.closed

    # Wire

    def _new_id(self) -> int:
        while self._next_id in self._requests or self._next_id in self._streams:
            self._next_id += 1
        frame_id = self._next_id
        self._next_id += 1
        return frame_id

    def _send(self, frame: dict[str, Any]) -> None:
        if self.link is None or self._gone:
            if self.shutting_down:
                return  # the program is being stopped: what it still asks is left unanswered
            raise ConnectionLost(None, "not connected")
        try:
            self.link.send(json.dumps(frame, separators=(",", ":")).encode())
        except Disconnected:  # closing: our close frame went out, the connection is not gone yet
            if self.shutting_down:
                return
            raise ConnectionLost(None, "the connection is closing") from None

    def _received(self, payload: bytes) -> None:
        frame = json.loads(payload)
        kind, frame_id = frame.get("type"), frame.get("id")
        if kind == "next":
            stream = self._streams.get(frame_id)
            if stream is not None:
                stream._item(frame.get("data"))
        elif kind == "response":
            request = self._requests.pop(frame_id, None)
            if request is not None:
                request.callback(frame.get("data"))
        elif kind == "complete":
            stream = self._streams.get(frame_id)
            if stream is not None:
                stream._finish(_END)
        elif kind == "error":
            error = ChatError(frame["error"]["code"], frame["error"]["message"])
            if error.code in REFUSED_FRAME_CODES:
                # About a frame the server refused; an interaction open on that id goes on.
                self.protocol_errors.append(frame)
                self.log.warn("server refused a frame: {code}: {message}", **frame["error"])
                return
            request = self._requests.pop(frame_id, None)
            stream = self._streams.get(frame_id)
            if request is not None:
                request.errback(error)
            elif stream is not None:
                # Our own logout at shutdown ends the feeds: for their readers, they just end.
                stream._finish(_END if self.shutting_down else error)
            else:
                self.protocol_errors.append(frame)

    def _lost(self, code: int | None, reason: str) -> None:
        self._gone = True  # before any callback below runs code that might send
        self._forget_shutdown()
        requests, self._requests = self._requests, {}
        streams, self._streams = list(self._streams.values()), {}
        if self.shutting_down:
            # The process is ending by its own will. Failing what waits would raise
            # ConnectionLost into a program that is being stopped (a traceback from ``react``):
            # streams end as if completed (an ``async for`` just ends, and the code after it,
            # a ``finally``, runs), requests in flight are left unanswered.
            for stream in streams:
                stream._finish(_END)
        else:
            error = ConnectionLost(code, reason)
            for request in requests.values():
                request.errback(error)
            for stream in streams:
                stream._finish(error)
        if not self.closed.called:
            self.closed.callback((code, reason))

    # Our own shutdown

    def _opened(self, link: ClientLink) -> None:
        self.link = link
        self._shutdown_trigger = self.reactor.addSystemEventTrigger(
            "before", "shutdown", self._shutdown
        )

    def _forget_shutdown(self) -> None:
        trigger, self._shutdown_trigger = self._shutdown_trigger, None
        if trigger is not None and not self.shutting_down:
            self.reactor.removeSystemEventTrigger(trigger)

    def _shutdown(self) -> Deferred[None] | None:
        """The reactor is stopping: log out (freeing the name at once) and close politely."""
        if self.closed.called:
            return None
        self.shutting_down = True

        async def leave() -> None:
            if self.logout_on_shutdown and self.session_id is not None:
                with contextlib.suppress(Exception):  # best effort: the server may be gone
                    await self._logout().addTimeout(SHUTDOWN_GRACE, self.reactor)
            closed = self.close()
            if not closed.called:
                with contextlib.suppress(Exception):  # a server that does not answer the close
                    await closed.addTimeout(SHUTDOWN_GRACE, self.reactor)

        return ensureDeferred(leave())


def connect(
    url: str,
    *,
    timeout: float = 10,
    tls: Any = None,
    logout_on_shutdown: bool = True,
    reactor: Any = None,
) -> Deferred[ChatClient]:
    """Open a connection to ``url`` (``ws://`` or ``wss://host:port/ws``); fires with a client.

    ``timeout`` bounds the whole opening, TCP connection and WebSocket handshake together:
    a server that accepts and never answers fails it with :class:`TimeoutError` after
    ``timeout`` seconds (not after Autobahn's own whole-second handshake timer).

    ``logout_on_shutdown``: when the reactor stops, log out before closing (the default),
    so the name is free at once. Pass ``False`` for a program that keeps its ``session_id``
    somewhere to resume it after a restart.

    For ``wss://`` with a private CA or a self-signed certificate, pass
    ``tls=optionsForClientTLS("host", trustRoot=Certificate.loadPEM(pem))``.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    client = ChatClient(reactor, logout_on_shutdown=logout_on_shutdown)
    factory = ClientFactory(url, client._received, client._lost)
    factory.reactor = reactor  # connectWS connects with the factory's reactor
    # Our deadline below covers the handshake; Autobahn's own timer (whole seconds, 5 by
    # default) would otherwise decide instead of ``timeout``.
    factory.setProtocolOptions(openHandshakeTimeout=0)
    connector = connectWS(factory, contextFactory=tls, timeout=timeout)
    ready: Deferred[ClientLink] = factory.ready

    def too_late() -> None:
        if ready.called:
            return
        ready.errback(TimeoutError(f"no WebSocket handshake from {url} within {timeout:g} s"))
        if getattr(connector, "state", None) == "connected":
            connector.transport.abortConnection()  # no close handshake with a silent peer
        else:
            connector.disconnect()  # still connecting: stop trying

    timer = reactor.callLater(timeout, too_late)

    def settled(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        return result

    def opened(link: ClientLink) -> ChatClient:
        client._opened(link)
        return client

    return ready.addBoth(settled).addCallback(opened)
