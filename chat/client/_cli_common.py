"""Shared pieces of the ``chat-client`` command: exit codes, errors, formatting, the runner."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet import error as twisted_errors
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogBeginner
from twisted.python.failure import Failure
from zope.interface import provider

from chat.client.api import ChatClient, ChatError
from chat.rss import resident_memory

# Exit codes (documented in docs/client.md and in ``chat-client --help``).
OK = 0
USAGE = 1  # bad arguments, an invalid name or URL (the server's ``invalid_data``)
UNREACHABLE = 2  # could not connect, or the connection was lost
REFUSED = 3  # username taken; forbidden, unauthenticated, rate limited
NOT_FOUND = 4  # no such user
SERVER_ERROR = 5  # any other error the server answered with
INTERRUPTED = 130  # SIGINT or SIGTERM

EXIT_CODES_HELP = """exit codes:
  0    ok
  1    usage: bad arguments, invalid name or URL
  2    server unreachable, or connection lost
  3    refused: username taken, forbidden, rate limited
  4    not found: no such user
  5    other server error
  130  interrupted (Ctrl-C, SIGTERM)"""

CODE_EXITS = {
    "invalid_data": USAGE,
    "connection_lost": UNREACHABLE,
    "username_taken": REFUSED,
    "forbidden": REFUSED,
    "unauthenticated": REFUSED,
    "rate_limited": REFUSED,
    "not_found": NOT_FOUND,
}


class CliError(Exception):
    """Ends the command with a one-line message on stderr and an exit code."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    TimeoutError,
    twisted_errors.ConnectError,
    twisted_errors.ConnectionLost,
    twisted_errors.ConnectionDone,
    twisted_errors.TimeoutError,
    twisted_errors.DNSLookupError,
)


def describe(reason: BaseException | Failure) -> tuple[int, str]:
    """The exit code and one-line message for an error that ends a command."""
    value = reason.value if isinstance(reason, Failure) else reason
    if isinstance(value, CliError):
        return value.exit_code, value.message
    if isinstance(value, ChatError):
        if value.code == "connection_lost":
            return UNREACHABLE, f"connection lost: {value.message}"
        return CODE_EXITS.get(value.code, SERVER_ERROR), f"{value.code}: {value.message}"
    if isinstance(value, UNREACHABLE_ERRORS):
        text = str(value).strip().rstrip(".") or type(value).__name__
        return UNREACHABLE, f"server unreachable: {text}"
    return SERVER_ERROR, f"unexpected error: {type(value).__name__}: {value}"


def error_line(message: str) -> None:
    sys.stderr.write(f"chat-client: {message}\n")
    sys.stderr.flush()


def write_line(line: str) -> None:
    """One line on stdout, UTF-8 whatever the locale, flushed (pipes, ``tail``)."""
    sys.stdout.buffer.write(line.encode("utf-8", "replace") + b"\n")
    sys.stdout.buffer.flush()


_CONTROL = {code: f"\\x{code:02x}" for code in range(32) if code != 9}
_CONTROL.update({10: "\\n", 13: "\\r", 27: "\\e", 127: "\\x7f"})


def clean(text: object) -> str:
    """Text safe to print on a terminal on one line: control characters escaped."""
    return str(text).translate(_CONTROL)


def format_item(item: Any) -> str:
    """One human-readable line for an item of the ``messages`` feed or of ``history``."""
    if not isinstance(item, dict):
        return clean(item)
    kind = item.get("kind")
    channel = item.get("channel")
    where = f"#{clean(channel)}" if channel is not None else "private"
    sender = clean(item.get("from", "?"))
    if kind == "message":
        content = clean(item.get("content", ""))
        if channel is None:
            return f"[private] {sender} -> {clean(item.get('to', '?'))}: {content}"
        return f"[{where}] {sender}: {content}"
    if kind in ("join", "leave"):
        return f"[{where}] * {sender} {'joined' if kind == 'join' else 'left'}"
    if kind == "gap":
        return f"[{where}] ! items {item.get('first')}-{item.get('last')} are no longer stored"
    return f"[{where}] {clean(item)}"


def format_statistics(data: Any) -> str:
    if isinstance(data, dict):
        return " ".join(f"{key}={clean(value)}" for key, value in sorted(data.items()))
    return clean(data)


def statistics_reporter(
    clock: IReactorTime, client: Callable[[], ChatClient | None], seconds: float
) -> LoopingCall:
    """Send this process's memory use as a ``statistics`` fire every ``seconds``."""

    def report() -> None:
        current = client()
        if current is not None:
            # Not connected right now: the next tick tries again.
            with contextlib.suppress(ChatError):
                current.send_statistics(resident_memory())

    loop = LoopingCall(report)
    loop.clock = clock
    loop.start(seconds, now=True)
    return loop


def quiet_logging(debug: bool) -> None:
    """Twisted's log goes to stderr only with ``--debug``; otherwise it is dropped."""

    @provider(ILogObserver)
    def observer(event: LogEvent) -> None:
        if debug:
            text = formatEvent(event)
            if "log_failure" in event:
                text = f"{text}\n{event['log_failure'].getTraceback()}"
            sys.stderr.write(f"[debug] {text}\n")

    globalLogBeginner.beginLoggingTo([observer], discardBuffer=True, redirectStandardIO=False)


def run(main: Callable[[Any], Coroutine[Any, Any, int | None]]) -> int:
    """Run ``main(reactor)`` in the reactor; the exit code it returns, or one for its error.

    Errors print one line on stderr, never a traceback. SIGINT and SIGTERM end with 130,
    after the reactor's shutdown has let each open connection log out (a couple of seconds
    at most: see :mod:`chat.client.api`), so the name is free at once; a second signal
    does not wait for that.
    """
    from twisted.internet import reactor

    core: IReactorCore = reactor
    outcome: list[int] = []
    signals: list[int] = []

    def finish(code: int) -> None:
        if not outcome:
            outcome.append(code)
        if core.running:
            core.stop()

    def interrupted(signum: int, frame: Any) -> None:
        signals.append(signum)
        if len(signals) > 1:
            os._exit(INTERRUPTED)
        reactor.callFromThread(finish, INTERRUPTED)  # type: ignore[attr-defined]

    def start() -> None:
        d = ensureDeferred(main(reactor))

        def done(result: int | None) -> None:
            finish(result or OK)

        def failed(reason: Failure) -> None:
            if outcome:
                return  # interrupted: the shutdown's own errors are no news
            code, message = describe(reason)
            error_line(message)
            finish(code)

        d.addCallbacks(done, failed)

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    core.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]
    return outcome[0] if outcome else INTERRUPTED
