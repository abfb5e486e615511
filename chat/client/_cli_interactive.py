"""The interactive client: a terminal (or pipe) session that survives reconnections.

Standard input is read by Twisted's :class:`~twisted.internet.stdio.StandardIO`, so the
reactor keeps receiving (and printing) messages while the user is in the middle of a line.
Lines are handled one at a time, in order: a command's answer is printed before the next
line runs, and at end of input everything typed has been sent before the client quits.

The connection is a :class:`~chat.client.reconnecting.ReconnectingClient`: after a drop it
resumes the session (nobody sees a leave or a join), prints what was missed, and sends again,
with the same ``client_id``, the lines that were typed while disconnected or whose answer was
lost, so each is stored exactly once. What was printed is marked read on the server (after a
short delay, in one ``read`` per log), so the next start, here or on another device, shows as
unread only what was never shown.
"""

from __future__ import annotations

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

from chat.client.api import ChatClient, ChatError, ConnectionLost, StatisticsHandle
from chat.client.reconnecting import INBOX, Connected, Observer, ReconnectingClient

from ._cli_common import (
    clean,
    describe,
    format_item,
    format_statistics,
    statistics_reporter,
)
from ._cli_session import SessionFile

try:
    from twisted.internet.interfaces import IHalfCloseableProtocol
except ImportError:  # pragma: no cover
    IHalfCloseableProtocol = None  # type: ignore[assignment,misc]

INITIAL_DELAY = 1.0  # seconds before the first reconnection attempt
MAX_DELAY = 30.0
HISTORY_DEFAULT = 20
UNREAD_SHOWN = 50  # unread private messages printed at start, at most (the newest)
READ_DELAY = 0.5  # seconds between printing an item and marking it read (one request per log)

HELP = """commands:
  TEXT                   send TEXT to the current channel (queued while disconnected)
  /join CHANNEL          join CHANNEL and make it the current channel
  /leave [CHANNEL]       leave CHANNEL (default: the current one)
  /msg USER TEXT         send TEXT privately to USER (queued while disconnected)
  /channels              list the channels and their member counts
  /users [CHANNEL]       list the members of CHANNEL (default: the current one)
  /history [N]           the last N items (default 20) of the current channel, or of your inbox
  /history @USER [N]     the last N private messages between you and USER
  /history #CHANNEL [N]  the last N items of CHANNEL
  /unread                unread messages per channel and in your inbox (read positions)
  /stats [IDS...] [SECS] subscribe to server statistics, or change ids/period (ids: users
                         channels connections messages memory); /stats off stops
  /quit                  log out and leave (end of input does the same)
  /help                  this text"""


@attrs.define
class Recovery:
    """Counts what a reconnected feed delivers up to the positions it was missing."""

    targets: dict[str, int | None]  # log key -> last missed seq (None: join not answered yet)
    rejoined: bool = False  # a new session: our own join items are noise, not news
    verb: str = "reconnected"
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
        text = f"{self.verb} — {recovered} missed {noun} recovered"
        if self.lost:
            text += f", {self.lost} no longer stored (gap)"
        return text


LOST = object()  # what :func:`_answer_or_loss` gives when the connection went first


class InteractiveApp(Observer):
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
        *,
        token: str | None = None,
        session_file: SessionFile | None = None,
    ) -> None:
        self.reactor = reactor
        self.username = username
        self.initial_channels = channels
        self.out = out
        self.report_every = report_every
        self.session_file = session_file
        saved = session_file.load() if session_file is not None else None
        self.session = ReconnectingClient(
            url,
            username,
            token=token,
            session_id=saved.session_id if saved is not None else None,
            epoch=saved.epoch if saved is not None else None,
            observer=self,
            timeout=timeout,
            reactor=reactor,
            initial_delay=INITIAL_DELAY,
            max_delay=MAX_DELAY,
        )
        self.current: str | None = None
        self.recovery: Recovery | None = None
        self.stats: StatisticsHandle | None = None
        self.stats_request: tuple[list[str] | None, float | None] | None = None
        self.quitting = False
        self._reporter: LoopingCall | None = None
        self._marks: dict[str, int] = {}  # read positions printed but not yet sent
        self._mark_timer: IDelayedCall | None = None
        self._lines: Deferred[Any] = succeed(None)
        self.finished: Deferred[int] = Deferred()
        # Registered before any connection's own shutdown trigger (which logs out), so the
        # last read positions go out ahead of the logout.
        reactor.addSystemEventTrigger(  # type: ignore[attr-defined]
            "before", "shutdown", self._send_marks
        )

    @property
    def client(self) -> ChatClient | None:
        """The current connection, None while disconnected."""
        return self.session.client

    @property
    def joined(self) -> list[str]:
        return self.session.channels

    # Connecting

    async def start(self) -> None:
        """Connect, log in (resuming a saved session), show unread private messages, open the
        feed and join the initial channels; errors propagate."""
        event = await self.session.start()
        for channel in self.initial_channels:
            await self._join(channel)
        if self.current is None and self.session.channels:
            self.current = self.session.channels[0]
        if self.report_every:
            self._reporter = statistics_reporter(
                self.reactor, lambda: self.session.client, self.report_every
            )
        where = f"#{self.current}" if self.current else "no channel (/join NAME)"
        how = " (session resumed)" if event.resumed else ""
        self.out(f"connected as {self.username}{how}, talking in {where}; /help for commands")

    async def connected(self, event: Connected) -> None:
        """Logged in, the feed not open yet: save the session, say what changed."""
        if self.session_file is not None:
            self.session_file.follow(event.client)
        if event.first:
            if event.resumed and self.session.channels:
                names = ", ".join(f"#{clean(c)}" for c in self.session.channels)
                self.out(f"* resumed your session in {names}")
                self.recovery = Recovery(event.targets, verb="resumed")
            await self._show_unread(event)
            return
        if event.epoch_changed:
            self.out("! the server's store changed (restart?): earlier messages are gone")
        self.recovery = Recovery(event.targets, rejoined=not event.resumed)

    async def _show_unread(self, event: Connected) -> None:
        inbox = event.inbox
        count, read, last = inbox["unread"], inbox["read_seq"], inbox["last_seq"]
        if count > 0:
            items = await event.client.history(limit=min(1000, last - read))
            unread = [
                item
                for item in items
                if item.get("kind") == "message"
                and item.get("seq", 0) > read
                and item.get("from") != self.username
            ]
            noun = "message" if count == 1 else "messages"
            older = (
                f" (the newest {UNREAD_SHOWN}; /history for more)" if count > UNREAD_SHOWN else ""
            )
            self.out(f"* {count} unread private {noun}{older}:")
            for item in unread[-UNREAD_SHOWN:]:
                self.out(format_item(item))
        if last > read:
            self._mark(INBOX, last)

    def ready(self, event: Connected) -> None:
        self._check_recovery()
        self._send_marks()
        if not event.first and self.stats_request is not None:
            self._start_stats(*self.stats_request)

    def lost(self, reason: tuple[int | None, str], delay: float) -> None:
        self.stats = None
        self.recovery = None
        code, text = reason
        self.out(f"! connection lost ({text or code}); reconnecting in {delay:g}s")

    def retry_failed(self, error: BaseException, delay: float) -> None:
        self.out(f"! reconnecting failed: {describe(error)[1]}; next try in {delay:g}s")

    # The feed

    def item(self, item: dict[str, Any]) -> None:
        key = item.get("channel") or INBOX
        recovery = self.recovery
        kind = item.get("kind")
        if kind == "gap":
            if recovery is not None:
                recovery.lost += int(item.get("last", 0)) - int(item.get("first", 0)) + 1
            self.out(format_item(item))
            self._mark(key, int(item.get("last", 0)))
        else:
            seq = int(item.get("seq", 0))
            if recovery is not None and kind == "message":
                recovery.arrivals.append((key, seq))
            own_rejoin = (
                recovery is not None
                and recovery.rejoined
                and item.get("from") == self.username
                and kind != "message"
            )
            if not own_rejoin:
                self.out(format_item(item))
            self._mark(key, seq)
        self._check_recovery()

    def _check_recovery(self) -> None:
        if self.recovery is not None and self.recovery.finished(self.session.positions):
            self.out(self.recovery.summary())
            self.recovery = None

    # Read positions

    def _mark(self, key: str, seq: int) -> None:
        """Remember that ``seq`` of log ``key`` was shown; sent after READ_DELAY."""
        if seq <= self._marks.get(key, 0):
            return
        self._marks[key] = seq
        if self._mark_timer is None or not self._mark_timer.active():
            self._mark_timer = self.reactor.callLater(READ_DELAY, self._send_marks)

    def _send_marks(self) -> None:
        if self._mark_timer is not None and self._mark_timer.active():
            self._mark_timer.cancel()
        self._mark_timer = None
        if self.session.client is None:
            return  # kept for the next connection (``ready`` sends them)
        marks, self._marks = self._marks, {}
        for key, seq in marks.items():
            d = self.session.read(None if key == INBOX else key, seq)
            d.addErrback(lambda _: None)  # a left channel (forbidden), a lost connection

    # Lines

    def line(self, text: str) -> None:
        """Handle one line of input after the previous ones."""
        self._lines.addCallback(lambda _: ensureDeferred(self._handle(text)))
        self._lines.addErrback(self._command_failed)

    def end_of_input(self) -> None:
        self._lines.addCallback(lambda _: ensureDeferred(self.quit(wait=True)))

    def _command_failed(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ConnectionLost):
            self.out("! not connected: try again when reconnected")
        elif isinstance(value, ChatError):
            self.out(f"! {value.code}: {clean(value.message)}")
        else:
            self.out(f"! {describe(reason)[1]}")

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
        await self._post(text, channel=self.current)

    async def _post(
        self, text: str, *, channel: str | None = None, user: str | None = None
    ) -> None:
        """Send, with a client_id: at once if connected, else when reconnected.

        Connected, the line waits for its answer (so an error is printed before the next
        line runs). If the connection drops first, or there is none, the message stays in the
        outbox and goes out again after the reconnection; its fate is printed then.
        """
        client = self.session.client
        sent = self.session.send(channel, text, user=user)
        if client is None:
            waiting = len(self.session.outbox)
            self.out(f"* not connected: queued, sent after reconnecting ({waiting} waiting)")
            sent.addErrback(self._late_failure)
            return
        if await _answer_or_loss(sent, client) is LOST:
            self.out("* connection lost before the answer: sent again after reconnecting")
            sent.addErrback(self._late_failure)

    def _late_failure(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ChatError) and not isinstance(value, ConnectionLost):
            self.out(f"! message not sent: {value.code}: {clean(value.message)}")
        else:
            self.out(f"! message not sent: {describe(reason)[1]}")

    async def _join(self, channel: str) -> None:
        answer = await self.session.join(channel)
        self.current = channel
        self.out(f"* now talking in #{clean(channel)} ({_users(answer.get('users', '?'))})")

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
        await self.session.leave(channel)
        if self.current == channel:
            self.current = self.joined[-1] if self.joined else None
        where = f"#{self.current}" if self.current else "no channel"
        self.out(f"* left #{clean(channel)}; now talking in {where}")

    async def _cmd_msg(self, rest: str) -> None:
        user, _, content = rest.partition(" ")
        if not user or not content.strip():
            self.out("! usage: /msg USER TEXT")
            return
        # No local echo: the server puts the sender's own copy in its inbox, and the feed
        # prints it (on every device of the session).
        await self._post(content, user=user)

    async def _cmd_channels(self, rest: str) -> None:
        listed = await self.session.connected_client().channels()
        if not listed:
            self.out("* no channels yet")
        for entry in listed:
            self.out(f"* #{clean(entry['channel'])} ({_users(entry['users'])})")

    async def _cmd_users(self, rest: str) -> None:
        channel = rest or self.current
        if channel is None:
            self.out("! usage: /users CHANNEL")
            return
        members = await self.session.connected_client().members(channel)
        names = [
            clean(m["username"]) + ("" if m.get("online", True) else " (away)") for m in members
        ]
        self.out(f"* #{clean(channel)}: {', '.join(names) or '(nobody)'}")

    async def _cmd_history(self, rest: str) -> None:
        words = rest.split()
        where = f"#{self.current}" if self.current else "your inbox"
        channel, user = self.current, None
        if words and words[0].startswith("@"):
            channel, user = None, words.pop(0)[1:]
            where = f"your messages with {clean(user)}"
        elif words and words[0].startswith("#"):
            channel = words.pop(0)[1:]
            where = f"#{clean(channel)}"
        try:
            limit = int(words[0]) if words else HISTORY_DEFAULT
        except ValueError:
            limit = 0
        if len(words) > 1 or limit < 1 or (user is not None and not user):
            self.out("! usage: /history [@USER | #CHANNEL] [N]")
            return
        client = self.session.connected_client()
        items = await client.history(channel, user=user, limit=limit)
        self.out(f"* history of {where}: {len(items)} item{'' if len(items) == 1 else 's'}")
        for item in items:
            self.out(format_item(item))

    async def _cmd_unread(self, rest: str) -> None:
        rows = await self.session.connected_client().conversations()
        for row in rows:
            where = f"#{clean(row['channel'])}" if row["channel"] is not None else "inbox"
            self.out(
                f"* {where}: {row['unread']} unread (read up to {row['read_seq']}"
                f" of {row['last_seq']})"
            )

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
        self.session.connected_client()
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
        client = self.session.connected_client()
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
        # A person who types /quit while the server is away does not want to wait for it.
        await self.quit(wait=self.session.client is not None)

    async def quit(self, *, wait: bool = False) -> None:
        """Log out and close. ``wait``: first let every queued message be acknowledged
        (end of input: what a pipe said is sent, even if the server has to come back first)."""
        if self.quitting:
            return
        self.quitting = True
        pending = len(self.session.outbox)
        if pending and wait:
            if self.session.client is None:
                self.out(f"* waiting to reconnect: {pending} queued messages to send first")
            await self.session.flushed()
        elif pending:
            self.out(f"! quitting with {pending} unsent messages")
        if self._reporter is not None and self._reporter.running:
            self._reporter.stop()
        self._send_marks()
        await self.session.logout()
        if not self.finished.called:
            self.finished.callback(0)


def _users(count: object) -> str:
    return f"{count} user" if count == 1 else f"{count} users"


def _answer_or_loss(sent: Deferred[Any], client: ChatClient) -> Deferred[Any]:
    """Fires with ``sent``'s result, or with :data:`LOST` if ``client`` closes first (then
    ``sent`` goes on, and its later result passes to whatever is added to it afterwards)."""
    waiter: Deferred[Any] = Deferred()

    def forward(result: Any) -> Any:
        if waiter.called:
            return result
        if isinstance(result, Failure):
            waiter.errback(result)
        else:
            waiter.callback(result)
        return None

    def closed(close: Any) -> Any:
        if not waiter.called:
            waiter.callback(LOST)
        return close

    sent.addBoth(forward)
    client.closed.addCallback(closed)
    return waiter


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
