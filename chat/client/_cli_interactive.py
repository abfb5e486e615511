"""The interactive client: a terminal (or pipe) session that survives reconnections.

Standard input is read by Twisted's :class:`~twisted.internet.stdio.StandardIO`, so the
reactor keeps receiving (and printing) messages while the user is in the middle of a line.
Lines are handled one at a time, in order: a command's answer is printed before the next
line runs, and at end of input everything typed has been sent before the client quits.
"""

from __future__ import annotations

import contextlib
import random
import shlex
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from chat.client.api import ChatClient, ChatError, ConnectionLost, StatisticsHandle, Stream
from chat.client.api import connect as connect_client

from ._cli_common import (
    clean,
    describe,
    format_item,
    format_statistics,
    statistics_reporter,
)

try:
    from twisted.internet.interfaces import IHalfCloseableProtocol
except ImportError:  # pragma: no cover
    IHalfCloseableProtocol = None  # type: ignore[assignment,misc]

INITIAL_DELAY = 1.0  # seconds before the first reconnection attempt
MAX_DELAY = 30.0
HISTORY_DEFAULT = 20
INBOX = "@"

HELP = """commands:
  TEXT                   send TEXT to the current channel
  /join CHANNEL          join CHANNEL and make it the current channel
  /leave [CHANNEL]       leave CHANNEL (default: the current one)
  /msg USER TEXT         send TEXT privately to USER
  /channels              list the channels and their member counts
  /users [CHANNEL]       list the members of CHANNEL (default: the current one)
  /history [N]           the last N items (default 20) of the current channel, or of your inbox
  /stats [IDS...] [SECS] subscribe to server statistics, or change ids/period (ids: users
                         channels connections messages memory); /stats off stops
  /quit                  leave (end of input does the same)
  /help                  this text"""


@attrs.define
class Recovery:
    """Counts what a reconnected feed delivers up to the positions it was missing."""

    targets: dict[str, int | None]  # log key -> last missed seq (None: join not answered yet)
    arrivals: list[tuple[str, int]] = attrs.Factory(list)  # (key, seq) of message items
    lost: int = 0  # items that retention removed (gaps)

    def finished(self, positions: dict[str, int]) -> bool:
        return all(
            target is not None and positions.get(key, 0) >= target
            for key, target in self.targets.items()
        )

    def summary(self) -> str:
        recovered = sum(
            1
            for key, seq in self.arrivals
            if (target := self.targets.get(key)) is not None and seq <= target
        )
        noun = "message" if recovered == 1 else "messages"
        text = f"reconnected — {recovered} missed {noun} recovered"
        if self.lost:
            text += f", {self.lost} no longer stored (gap)"
        return text


class InteractiveApp:
    """The session's logic, independent of where lines come from and go to."""

    def __init__(
        self,
        reactor: IReactorTime,
        url: str,
        username: str,
        channels: list[str],
        out: Callable[[str], None],
        report_every: float | None = None,
        timeout: float = 10,
    ) -> None:
        self.timeout = timeout
        self.reactor = reactor
        self.url = url
        self.username = username
        self.initial_channels = channels
        self.out = out
        self.report_every = report_every
        self.client: ChatClient | None = None
        self.epoch: str | None = None
        self.joined: list[str] = []
        self.current: str | None = None
        self.positions: dict[str, int] = {}
        self.recovery: Recovery | None = None
        self.stats: StatisticsHandle | None = None
        self.stats_request: tuple[list[str] | None, float | None] | None = None
        self.quitting = False
        self.delay = INITIAL_DELAY
        self._retry: IDelayedCall | None = None
        self._reporter: LoopingCall | None = None
        self._lines: Deferred[Any] = succeed(None)
        self.finished: Deferred[int] = Deferred()

    # Connecting

    async def start(self) -> None:
        """Connect, log in, open the feed and join the initial channels; errors propagate."""
        client = await connect_client(self.url, timeout=self.timeout)
        try:
            await client.login(self.username)
            await self._open(client, reconnecting=False)
        except BaseException:
            client.close()
            raise
        for channel in self.initial_channels:
            await self._join(channel)
        if self.report_every:
            self._reporter = statistics_reporter(
                self.reactor, lambda: self.client, self.report_every
            )
        where = f"#{self.current}" if self.current else "no channel (/join NAME)"
        self.out(f"connected as {self.username}, talking in {where}; /help for commands")

    async def _open(self, client: ChatClient, *, reconnecting: bool) -> None:
        if reconnecting and client.epoch != self.epoch:
            self.out("! the server's store changed (restart?): earlier messages are gone")
            self.positions.clear()
        self.epoch = client.epoch
        inbox = await client.history(limit=1)
        inbox_top = inbox[-1]["seq"] if inbox else 0
        recovery: Recovery | None = None
        if reconnecting:
            targets: dict[str, int | None] = {channel: None for channel in self.joined}
            if INBOX in self.positions:
                targets[INBOX] = inbox_top
            recovery = self.recovery = Recovery(targets)
        since = {INBOX: inbox_top, **self.positions}
        feed = client.messages(since=since, epoch=self.epoch)
        self.client = client
        ensureDeferred(self._consume(client, feed))
        if reconnecting:
            assert recovery is not None
            for channel in list(self.joined):
                answer = await client.join(channel)
                recovery.targets[channel] = answer["seq"]
            self._check_recovery()
            if self.stats_request is not None:
                self._start_stats(*self.stats_request)
        client.closed.addCallback(self._lost, client)

    def _lost(self, close: tuple[int | None, str], client: ChatClient) -> None:
        if client is not self.client or self.quitting:
            return
        self.client = None
        self.stats = None
        self.recovery = None
        code, reason = close
        self.out(f"! connection lost ({reason or code}); reconnecting in {self.delay:g}s")
        self._schedule()

    def _schedule(self) -> None:
        delay = self.delay * random.uniform(0.9, 1.1) if self.delay > INITIAL_DELAY else self.delay
        self._retry = self.reactor.callLater(delay, self._attempt)
        self.delay = min(self.delay * 2, MAX_DELAY)

    def _attempt(self) -> None:
        self._retry = None
        if self.quitting:
            return

        def failed(reason: Failure) -> None:
            if not self.quitting:
                message = describe(reason)[1]
                self.out(f"! reconnecting failed: {message}; next try in {self.delay:g}s")
                self._schedule()

        ensureDeferred(self._reconnect()).addErrback(failed)

    async def _reconnect(self) -> None:
        client = await connect_client(self.url, timeout=self.timeout)
        try:
            await client.login(self.username)
            await self._open(client, reconnecting=True)
        except BaseException:
            if self.client is client:
                self.client = None
            client.close()
            raise
        self.delay = INITIAL_DELAY

    # The feed

    async def _consume(self, client: ChatClient, feed: Stream) -> None:
        try:
            async for item in feed:
                if client is self.client:
                    self._item(item)
        except ChatError:
            pass  # the connection closed; _lost reconnects

    def _item(self, item: Any) -> None:
        if not isinstance(item, dict):
            return
        key = item.get("channel") or INBOX
        recovery = self.recovery
        if item.get("kind") == "gap":
            self.positions[key] = max(self.positions.get(key, 0), int(item.get("last", 0)))
            if recovery is not None:
                recovery.lost += int(item.get("last", 0)) - int(item.get("first", 0)) + 1
            self.out(format_item(item))
        else:
            seq = int(item.get("seq", 0))
            self.positions[key] = max(self.positions.get(key, 0), seq)
            own_rejoin = item.get("from") == self.username and item.get("kind") != "message"
            if recovery is not None and item.get("kind") == "message":
                recovery.arrivals.append((key, seq))
            if not (recovery is not None and own_rejoin):
                self.out(format_item(item))
        self._check_recovery()

    def _check_recovery(self) -> None:
        if self.recovery is not None and self.recovery.finished(self.positions):
            self.out(self.recovery.summary())
            self.recovery = None

    # Lines

    def line(self, text: str) -> None:
        """Handle one line of input after the previous ones."""
        self._lines.addCallback(lambda _: ensureDeferred(self._handle(text)))
        self._lines.addErrback(self._command_failed)

    def end_of_input(self) -> None:
        self._lines.addCallback(lambda _: ensureDeferred(self.quit()))

    def _command_failed(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ConnectionLost):
            self.out("! not connected: try again when reconnected")
        elif isinstance(value, ChatError):
            self.out(f"! {value.code}: {clean(value.message)}")
        else:
            self.out(f"! {describe(reason)[1]}")

    def _connected(self) -> ChatClient:
        if self.client is None:
            raise ConnectionLost(None, "not connected")
        return self.client

    async def _handle(self, text: str) -> None:
        text = text.rstrip("\r")
        if not text.strip():
            return
        if not text.startswith("/") or text.startswith("//"):
            await self._say(text[1:] if text.startswith("//") else text)
            return
        command, _, rest = text[1:].partition(" ")
        rest = rest.strip()
        handler = getattr(self, f"_cmd_{command.lower()}", None)
        if handler is None:
            self.out(f"! unknown command /{clean(command)}; /help lists them")
            return
        await handler(rest)

    async def _say(self, text: str) -> None:
        if self.current is None:
            self.out("! no current channel: /join NAME first, or /msg USER TEXT")
            return
        await self._connected().send(self.current, text)

    async def _join(self, channel: str) -> None:
        answer = await self._connected().join(channel)
        if channel not in self.joined:
            self.joined.append(channel)
        self.current = channel
        users = answer.get("users", "?")
        noun = "user" if users == 1 else "users"
        self.out(f"* now talking in #{clean(channel)} ({users} {noun})")

    async def _cmd_join(self, rest: str) -> None:
        if not rest:
            self.out("! usage: /join CHANNEL")
            return
        await self._join(rest)

    async def _cmd_leave(self, rest: str) -> None:
        channel = rest or self.current
        if channel is None:
            self.out("! usage: /leave CHANNEL")
            return
        await self._connected().leave(channel)
        if channel in self.joined:
            self.joined.remove(channel)
        if self.current == channel:
            self.current = self.joined[-1] if self.joined else None
        where = f"#{self.current}" if self.current else "no channel"
        self.out(f"* left #{clean(channel)}; now talking in {where}")

    async def _cmd_msg(self, rest: str) -> None:
        user, _, content = rest.partition(" ")
        if not user or not content.strip():
            self.out("! usage: /msg USER TEXT")
            return
        await self._connected().send(user=user, content=content)
        self.out(f"[private] {self.username} -> {clean(user)}: {clean(content)}")

    async def _cmd_channels(self, rest: str) -> None:
        listed = await self._connected().channels()
        if not listed:
            self.out("* no channels yet")
        for entry in listed:
            self.out(f"* #{clean(entry['channel'])} ({entry['users']} users)")

    async def _cmd_users(self, rest: str) -> None:
        channel = rest or self.current
        if channel is None:
            self.out("! usage: /users CHANNEL")
            return
        users = await self._connected().users(channel)
        self.out(f"* #{clean(channel)}: {', '.join(clean(u) for u in users) or '(nobody)'}")

    async def _cmd_history(self, rest: str) -> None:
        try:
            limit = int(rest) if rest else HISTORY_DEFAULT
        except ValueError:
            self.out("! usage: /history [N]")
            return
        items = await self._connected().history(self.current, limit=limit)
        where = f"#{self.current}" if self.current else "your inbox"
        self.out(f"* history of {where}: {len(items)} items")
        for item in items:
            self.out(format_item(item))

    async def _cmd_stats(self, rest: str) -> None:
        words = shlex.split(rest)
        if words == ["off"]:
            if self.stats is not None:
                self.stats.cancel()
            self.stats = None
            self.stats_request = None
            self.out("* statistics off")
            return
        ids = [word for word in words if not _is_number(word)] or None
        numbers = [float(word) for word in words if _is_number(word)]
        period = numbers[-1] if numbers else None
        self._connected()
        if self.stats is not None and not self.stats.ended:
            if ids is not None:
                self.stats.set_ids(ids)
            if period is not None:
                self.stats.set_period(period)
            old_ids, old_period = self.stats_request or (None, None)
            self.stats_request = (ids or old_ids, period or old_period)
            return
        self._start_stats(ids, period)

    def _start_stats(self, ids: list[str] | None, period: float | None) -> None:
        client = self._connected()
        handle = self.stats = client.statistics(ids, period)
        self.stats_request = (ids, period)

        async def show() -> None:
            try:
                async for data in handle:
                    self.out(f"stats: {format_statistics(data)}")
            except ConnectionLost:
                return
            except ChatError as error:
                self.out(f"! statistics: {error.code}: {clean(error.message)}")
            if self.stats is handle:
                self.stats = None
                self.stats_request = None

        ensureDeferred(show())

    async def _cmd_help(self, rest: str) -> None:
        for line in HELP.splitlines():
            self.out(line)

    async def _cmd_quit(self, rest: str) -> None:
        await self.quit()

    async def quit(self) -> None:
        if self.quitting:
            return
        self.quitting = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._reporter is not None and self._reporter.running:
            self._reporter.stop()
        client, self.client = self.client, None
        if client is not None:
            closed = client.close()
            closed.addTimeout(3, self.reactor)
            with contextlib.suppress(Exception):  # closing is best effort
                await closed
        if not self.finished.called:
            self.finished.callback(0)


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


@implementer(IHalfCloseableProtocol)
class Terminal(LineReceiver):
    """Standard input and output for an :class:`InteractiveApp`."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self) -> None:
        self.app: InteractiveApp | None = None
        self.closed: Deferred[None] = Deferred()

    def write(self, text: str) -> None:
        if self.transport is not None:
            self.transport.write(text.encode("utf-8", "replace") + b"\n")

    def lineReceived(self, line: bytes) -> None:
        if self.app is not None:
            self.app.line(line.decode("utf-8", "replace"))

    def lineLengthExceeded(self, line: bytes) -> None:
        self.write("! line too long; ignored")
        self.clearLineBuffer()

    def readConnectionLost(self) -> None:
        if self.app is not None:
            self.app.end_of_input()

    def writeConnectionLost(self) -> None:
        if self.app is not None:
            ensureDeferred(self.app.quit())

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.closed.called:
            self.closed.callback(None)
