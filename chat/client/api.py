"""The client library: :func:`connect`, :class:`ChatClient`, :class:`Stream`.

Flow control is the protocol's own: a stream opened with a ``window`` is granted that much
credit, and the library grants more (``request_n``) as the caller consumes items, so the
items waiting client-side never exceed the window. :meth:`Stream.pause` stops granting;
the server then stops sending and keeps its cursor, and :meth:`Stream.resume` goes on.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger

from chat.websocket.client import ClientLink
from chat.websocket.client import connect as open_link

REFUSED_FRAME_CODES = frozenset({"bad_frame", "duplicate_id"})


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
    """One connection to the server. Create it with :func:`connect`."""

    log = Logger()

    def __init__(self) -> None:
        self.link: ClientLink | None = None
        self.username: str | None = None
        self.session_id: str | None = None
        self.epoch: str | None = None
        self._next_id = 1
        self._requests: dict[int, Deferred[Any]] = {}
        self._streams: dict[int, Stream] = {}
        self.protocol_errors: list[dict[str, Any]] = []  # errors with id null (bad_frame)
        self.closed: Deferred[tuple[int | None, str]] = Deferred()

    @property
    def transport(self) -> Any:
        """The TCP transport, e.g. to ``pauseProducing()`` (stop reading) in tests."""
        assert self.link is not None
        return self.link.transport

    # Requests

    def request(self, route: str, data: Any = None) -> Deferred[Any]:
        """Send a ``request``; fires with the response's ``data`` or fails with ChatError."""
        frame_id = self._new_id()
        d: Deferred[Any] = Deferred()
        self._requests[frame_id] = d
        frame: dict[str, Any] = {"type": "request", "id": frame_id, "route": route}
        if data is not None:
            frame["data"] = data
        self._send(frame)
        return d

    def login(self, username: str) -> Deferred[dict[str, Any]]:
        """Log in; remembers ``username``, ``session_id`` and ``epoch`` on the client."""

        def logged_in(answer: dict[str, Any]) -> dict[str, Any]:
            self.username = answer["username"]
            self.session_id = answer["session_id"]
            self.epoch = answer["epoch"]
            return answer

        return self.request("login", {"username": username}).addCallback(logged_in)

    def join(self, channel: str) -> Deferred[Any]:
        return self.request("channel.join", {"channel": channel})

    def leave(self, channel: str) -> Deferred[Any]:
        return self.request("channel.leave", {"channel": channel})

    def send(
        self, channel: str | None = None, content: str = "", *, user: str | None = None
    ) -> Deferred[Any]:
        """``send("general", "hi")`` to a channel, ``send(user="bob", content="hi")`` privately."""
        if (channel is None) == (user is None):
            raise ValueError("give a channel or a user, not both")
        target = {"channel": channel} if channel is not None else {"user": user}
        return self.request("message", {**target, "content": content})

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
        self._streams[frame_id] = stream
        frame: dict[str, Any] = {"type": kind, "id": frame_id, "route": route}
        if data is not None:
            frame["data"] = data
        if window is not None:
            frame["credit"] = window
        self._send(frame)
        return stream

    def channels(self) -> Deferred[list[dict[str, Any]]]:
        """``[{"channel", "users"}, ...]`` sorted by name."""
        return self.stream("channels").collect()

    def users(self, channel: str) -> Deferred[list[str]]:
        """The members of ``channel``, sorted."""
        items = self.stream("channel.users", {"channel": channel}).collect()
        return items.addCallback(lambda found: [item["username"] for item in found])

    def history(
        self,
        channel: str | None = None,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> Deferred[list[dict[str, Any]]]:
        """Stored items of a channel (or of one's inbox), oldest first."""
        query = {"channel": channel, "before": before, "after": after, "limit": limit}
        data = {key: value for key, value in query.items() if value is not None}
        return self.stream("history", data).collect()

    def messages(
        self,
        since: dict[str, int] | None = None,
        epoch: str | None = None,
        *,
        window: int | None = 1000,
    ) -> Stream:
        """The live feed: every item of one's channels and inbox, never completing."""
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
        if self.link is not None and not self.closed.called:
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
        if self.link is None or self.closed.called:
            raise ConnectionLost(None, "not connected")
        self.link.send(json.dumps(frame, separators=(",", ":")).encode())

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
                stream._finish(error)
            else:
                self.protocol_errors.append(frame)

    def _lost(self, code: int | None, reason: str) -> None:
        error = ConnectionLost(code, reason)
        requests, self._requests = self._requests, {}
        for request in requests.values():
            request.errback(error)
        for stream in list(self._streams.values()):
            stream._finish(error)
        if not self.closed.called:
            self.closed.callback((code, reason))


def connect(url: str, *, timeout: float = 10, tls: Any = None) -> Deferred[ChatClient]:
    """Open a connection to ``url`` (``ws://`` or ``wss://host:port/ws``); fires with a client.

    For ``wss://`` with a private CA or a self-signed certificate, pass
    ``tls=optionsForClientTLS("host", trustRoot=Certificate.loadPEM(pem))``.
    """
    client = ChatClient()

    def opened(link: ClientLink) -> ChatClient:
        client.link = link
        return client

    return open_link(url, client._received, client._lost, timeout, tls).addCallback(opened)
