"""A session kept across dropped connections: :class:`ReconnectingClient`.

Theory of operation. A protocol 1.1 session outlives its connection for the server's linger
time, so after a drop this client does, on a new connection:

1. ``login`` with ``resume`` = the last ``session_id``. If the session still lives
   (``resumed``), its channels are still joined and nobody saw it leave; else it is a new
   session (the linger time passed, or the server restarted) and the channels are joined again.
2. ``conversations``: which channels the session is in (the truth after a resume) and the
   last ``seq`` of each log now, i.e. how far the feed must get to have caught up.
3. ``messages`` with ``since`` = the last ``seq`` seen per log and the ``epoch`` it was seen
   in: the feed delivers exactly what was missed (or a ``gap`` for what retention removed).
4. Every message still in the :attr:`~ReconnectingClient.outbox` is sent again, in order,
   with its own ``client_id``: one whose answer was lost with the connection is stored once
   (the server answers ``duplicate``), one never sent is sent now. Requests of a connection
   take effect in order, so a message sent after this flush is stored after them.

Nothing is retried blindly but messages: joins, leaves and listings need a connection and fail
with :class:`~chat.client.api.ConnectionLost` while there is none.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from chat.client.api import (
    ChatClient,
    ChatError,
    ConnectionLost,
    SendInterrupted,
    Stream,
    connect,
    new_client_id,
)

INBOX = "@"  # the inbox's key in ``since`` and in positions


@attrs.define
class Connected:
    """What one (re)connection found, given to the :class:`Observer`'s hooks.

    ``targets``: per log key (channel, or ``"@"``), the last ``seq`` that existed when the
    connection was made; the feed has caught up when its positions reach them. For channels
    joined again (not ``resumed``) it is ``None`` until the join is answered.
    """

    client: ChatClient
    login: dict[str, Any]
    conversations: list[dict[str, Any]]
    first: bool  # the first connection of this ReconnectingClient
    resumed: bool  # the session lived on: channels kept, nothing appended
    epoch_changed: bool  # the server's store is another one: the positions were dropped
    targets: dict[str, int | None]

    @property
    def inbox(self) -> dict[str, Any]:
        """The inbox row of ``conversations``: ``last_seq``, ``read_seq``, ``unread``."""
        for row in self.conversations:
            if row.get("channel") is None:
                return row
        return {"channel": None, "last_seq": 0, "read_seq": 0, "unread": 0}


class Observer:
    """The hooks of a :class:`ReconnectingClient`; override the ones you need."""

    def item(self, item: dict[str, Any]) -> None:
        """An item of the feed (positions are already updated)."""

    def connected(self, event: Connected) -> Awaitable[None] | None:
        """Logged in, before the feed opens: e.g. show unread messages (``event.inbox``),
        save ``event.client.session_id``. May return an awaitable; the feed waits for it."""
        return None

    def ready(self, event: Connected) -> None:
        """The feed is open, channels joined again if needed, the outbox sent again."""

    def lost(self, reason: tuple[int | None, str], delay: float) -> None:
        """The connection dropped; the next attempt is in ``delay`` seconds."""

    def retry_failed(self, error: BaseException, delay: float) -> None:
        """A reconnection attempt failed; the next is in ``delay`` seconds."""


@attrs.define(eq=False)
class Outgoing:
    """A message of the outbox: its data (with ``client_id``) and who waits for its answer."""

    data: dict[str, Any]
    done: Deferred[dict[str, Any]] = attrs.field(factory=Deferred)


class ReconnectingClient:
    """One user's session over successive connections; see the module's docstring.

    ::

        session = ReconnectingClient("ws://127.0.0.1:8080/ws", "alice", observer=MyObserver())
        await session.start()            # the first connection; its errors are raised
        await session.join("general")
        await session.send("general", "hi")   # queued while disconnected, stored once
        await session.logout()

    ``session_id``/``epoch``/``positions`` may come from a previous process (saved
    somewhere), so a restarted program resumes its session and catches up.
    """

    def __init__(
        self,
        url: str,
        username: str,
        *,
        token: str | None = None,
        session_id: str | None = None,
        epoch: str | None = None,
        positions: dict[str, int] | None = None,
        observer: Observer | None = None,
        timeout: float = 10,
        tls: Any = None,
        reactor: Any = None,
        initial_delay: float = 1.0,
        max_delay: float = 30.0,
        logout_on_shutdown: bool = True,
        window: int | None = 1000,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.url = url
        self.username = username
        self.token = token
        self.session_id = session_id
        self.epoch = epoch
        self.positions: dict[str, int] = dict(positions or {})
        self.observer = observer or Observer()
        self.timeout = timeout
        self.tls = tls
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.logout_on_shutdown = logout_on_shutdown
        self.window = window
        self.channels: list[str] = []  # joined, in order; joined again if the session ended
        self.outbox: dict[str, Outgoing] = {}  # client_id -> message not yet acknowledged
        self.client: ChatClient | None = None  # set once a connection is ready
        self.stopped = False
        self.delay = initial_delay
        self._retry: IDelayedCall | None = None
        self._flushed: list[Deferred[None]] = []

    # The connection

    async def start(self) -> Connected:
        """Make the first connection; its errors (unreachable, name taken) are raised."""
        return await self._connect(first=True)

    async def _connect(self, *, first: bool) -> Connected:
        client = await connect(
            self.url,
            timeout=self.timeout,
            tls=self.tls,
            logout_on_shutdown=self.logout_on_shutdown,
            reactor=self.reactor,
        )
        try:
            return await self._open(client, first=first)
        except BaseException:
            if self.client is client:
                self.client = None
            client.close()
            raise

    async def _open(self, client: ChatClient, *, first: bool) -> Connected:
        answer = await client.login(self.username, resume=self.session_id, token=self.token)
        epoch_changed = self.epoch is not None and answer["epoch"] != self.epoch
        if epoch_changed:
            self.positions.clear()  # seqs of another store's logs mean nothing here
        self.epoch = answer["epoch"]
        self.session_id = answer["session_id"]
        resumed = bool(answer.get("resumed"))
        rows = await client.conversations()
        members = [row["channel"] for row in rows if row.get("channel") is not None]
        targets: dict[str, int | None] = {}
        since = dict(self.positions)
        if resumed:
            # The server's memberships are the truth: a join or leave may have been cut off.
            self.channels = [c for c in self.channels if c in members] + [
                c for c in members if c not in self.channels
            ]
            for row in rows:
                key = row["channel"] if row.get("channel") is not None else INBOX
                targets[key] = row["last_seq"]
                if key not in since and key != INBOX and row["read_seq"] > 0:
                    # A restarted program has no positions: start after what was read.
                    since[key] = self.positions[key] = row["read_seq"]
        else:
            targets = {channel: None for channel in self.channels}
        event = Connected(client, answer, rows, first, resumed, epoch_changed, targets)
        inbox_top = event.inbox["last_seq"]
        event.targets[INBOX] = inbox_top
        await maybeDeferred(self.observer.connected, event)
        since.setdefault(INBOX, self.positions.get(INBOX, inbox_top))
        self.positions.setdefault(INBOX, since[INBOX])
        feed = client.messages(since=since, epoch=self.epoch, window=self.window)
        ensureDeferred(self._consume(feed))
        if not resumed:
            for channel in list(self.channels):
                joined = await client.join(channel)
                event.targets[channel] = joined["seq"]
        if self.stopped:
            raise ConnectionLost(None, "stopped while connecting")
        self.client = client
        self.delay = self.initial_delay
        for outgoing in list(self.outbox.values()):
            self._transmit(outgoing, client)
        client.closed.addCallback(self._lost, client)
        self.observer.ready(event)
        return event

    def _lost(self, close: tuple[int | None, str], client: ChatClient) -> None:
        if client is not self.client:
            return
        self.client = None
        if self.stopped or client.shutting_down:
            return
        self.observer.lost(close, self.delay)
        self._schedule()

    def _schedule(self) -> None:
        delay = self.delay
        if delay > self.initial_delay:
            delay *= random.uniform(0.9, 1.1)  # jitter, not a secret
        self._retry = self.reactor.callLater(delay, self._attempt)
        self.delay = min(self.delay * 2, self.max_delay)

    def _attempt(self) -> None:
        self._retry = None
        if self.stopped:
            return

        def failed(reason: Failure) -> None:
            if not self.stopped:
                error = reason.value
                assert error is not None
                self.observer.retry_failed(error, self.delay)
                self._schedule()

        ensureDeferred(self._connect(first=False)).addErrback(failed)

    async def _consume(self, feed: Stream) -> None:
        try:
            async for item in feed:
                if isinstance(item, dict):
                    self._advance(item)
                    self.observer.item(item)
        except ChatError:
            pass  # the connection closed (or logged out); _lost reconnects

    def _advance(self, item: dict[str, Any]) -> None:
        key = item.get("channel") or INBOX
        seq = item.get("last") if item.get("kind") == "gap" else item.get("seq")
        if isinstance(seq, int):
            self.positions[key] = max(self.positions.get(key, 0), seq)

    # Messages

    def send(
        self,
        channel: str | None = None,
        content: str = "",
        *,
        user: str | None = None,
        client_id: str | None = None,
    ) -> Deferred[dict[str, Any]]:
        """Send a message now, or as soon as connected; fires with the server's answer
        (plus ``client_id``) once acknowledged, on whichever connection that happens.

        Fails only for a refusal (:class:`ChatError`), or with :class:`SendInterrupted` if
        the client is logged out or closed before the answer.
        """
        if (channel is None) == (user is None):
            raise ValueError("give a channel or a user, not both")
        data: dict[str, Any] = {"channel": channel} if channel is not None else {"user": user}
        data["content"] = content
        data["client_id"] = client_id if client_id is not None else new_client_id()
        if self.stopped:
            lost = ConnectionLost(None, "the client was closed")
            return _failed(SendInterrupted(lost, data, sent=False))
        outgoing = Outgoing(data)
        self.outbox[data["client_id"]] = outgoing
        if self.client is not None:
            self._transmit(outgoing, self.client)
        return outgoing.done

    def _transmit(self, outgoing: Outgoing, client: ChatClient) -> None:
        client_id = outgoing.data["client_id"]
        try:
            d = client.resend(outgoing.data)
        except SendInterrupted:
            return  # stays in the outbox for the next connection

        def answered(answer: dict[str, Any]) -> None:
            if self.outbox.pop(client_id, None) is not None:
                outgoing.done.callback(answer)
            self._check_flushed()

        def failed(reason: Failure) -> None:
            if reason.check(ConnectionLost):
                return  # stays in the outbox; the next connection sends it again
            if self.outbox.pop(client_id, None) is not None:
                outgoing.done.errback(reason)
            self._check_flushed()

        d.addCallbacks(answered, failed)

    def flushed(self) -> Deferred[None]:
        """Fires once the outbox is empty (every message acknowledged or refused)."""
        if not self.outbox:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._flushed.append(d)
        return d

    def _check_flushed(self) -> None:
        if not self.outbox:
            waiting, self._flushed = self._flushed, []
            for d in waiting:
                d.callback(None)

    # Other requests: they need a connection

    def connected_client(self) -> ChatClient:
        """The current connection; raises :class:`ConnectionLost` while there is none."""
        if self.client is None:
            raise ConnectionLost(None, "not connected")
        return self.client

    async def join(self, channel: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.connected_client().join(channel)
        if channel not in self.channels:
            self.channels.append(channel)
        return answer

    async def leave(self, channel: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.connected_client().leave(channel)
        if channel in self.channels:
            self.channels.remove(channel)
        return answer

    def read(self, channel: str | None, seq: int) -> Deferred[dict[str, Any] | None]:
        """Move the read position if connected; a later position covers a skipped one."""
        if self.client is None:
            return succeed(None)
        d: Deferred[Any] = self.client.read(channel, seq)
        return d.addErrback(lambda reason: reason.trap(ConnectionLost) and None)

    # The end

    async def logout(self, timeout: float = 3) -> None:
        """End this connection's part of the session (and the session, if it was the last),
        then close. Messages still in the outbox fail with :class:`SendInterrupted`."""
        client = self._stop()
        if client is not None:
            with contextlib.suppress(Exception):  # best effort: the session lingers, then ends
                await client.logout().addTimeout(timeout, self.reactor)
            await _close(client, timeout, self.reactor)

    async def close(self, timeout: float = 3) -> None:
        """Close without logging out: the session lingers and ``session_id`` resumes it."""
        client = self._stop()
        if client is not None:
            await _close(client, timeout, self.reactor)

    def _stop(self) -> ChatClient | None:
        self.stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        client, self.client = self.client, None
        outbox, self.outbox = self.outbox, {}
        lost = ConnectionLost(None, "the client was closed before the answer")
        for outgoing in outbox.values():
            outgoing.done.errback(SendInterrupted(lost, outgoing.data, sent=True))
        self._check_flushed()
        return client


def _failed(error: BaseException) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(error)
    return d


async def _close(client: ChatClient, timeout: float, reactor: Any) -> None:
    closed = client.close()
    if not closed.called:
        with contextlib.suppress(Exception):  # a server that does not answer the close
            await closed.addTimeout(timeout, reactor)
