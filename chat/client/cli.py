"""``chat-client``: an interactive terminal client and scriptable commands.

::

    chat-client ws://127.0.0.1:8080/ws --user alice [--channel general]   # interactive
    chat-client send --user bot --channel general "build passed"           # or TEXT '-' for stdin
    chat-client send --user bot --to alice "psst"
    chat-client tail --user reader --channel general [--since SEQ] [--json] [--count N]
    chat-client stats [--ids users messages] [--period 1] [--count 3] [--json]

The server URL is the first argument, or ``--url``; the default is ws://127.0.0.1:8080/ws.
Errors are one line on stderr; the exit codes are listed in ``chat-client --help``.

Every command that is done logs out, so its username is free at once for the next one (a
1.1 session would otherwise hold it for the server's linger time); one that was killed left
its ``session_id`` in a session file (see :mod:`._cli_session`), and the next command for the
same user and server resumes that session instead of being refused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from chat.client.api import ChatClient
from chat.client.api import connect as connect_client

from ._cli_common import (
    EXIT_CODES_HELP,
    OK,
    UNREACHABLE,
    USAGE,
    CliError,
    describe,
    error_line,
    format_item,
    format_statistics,
    quiet_logging,
    run,
    statistics_reporter,
    write_line,
)
from ._cli_session import SessionFile

DEFAULT_URL = "ws://127.0.0.1:8080/ws"
COMMANDS = ("send", "tail", "stats")
URL_SCHEMES = ("ws://", "wss://")
VALUE_OPTIONS = frozenset(
    {"--url", "--user", "-u", "--report-stats", "--timeout", "--token", "--session-file"}
)
DEFAULT_TIMEOUT = 10.0
USAGE_LINE = """chat-client [URL] {send,tail,stats} [OPTIONS] ...   (chat-client send --help)
       chat-client [URL] --user NAME [--channel CHANNEL] [OPTIONS]   (interactive)"""
COMMANDS_HELP = """commands:
  (none)  chat interactively: chat-client [URL] --user NAME [--channel CHANNEL]
  send    send one message to a channel or a user, then exit
  tail    print the live feed, one line per item
  stats   print the server's statistics every period (--period, default 2 s)"""


class Parser(argparse.ArgumentParser):
    """Usage errors exit with 1 (argparse's own default is 2, our "unreachable")."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def _common(parser: argparse.ArgumentParser, *, user_required: bool) -> None:
    parser.add_argument("--url", help=f"server WebSocket URL (default {DEFAULT_URL})")
    parser.add_argument(
        "--user",
        "-u",
        required=user_required and not os.environ.get("CHAT_USER"),
        default=os.environ.get("CHAT_USER"),
        help="username to log in as (default: $CHAT_USER)",
    )
    parser.add_argument(
        "--report-stats",
        type=float,
        metavar="SECONDS",
        help="send this process's memory use (RSS) to the server every SECONDS",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CHAT_TOKEN"),
        help="login token, for a server with --auth token (default: $CHAT_TOKEN)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"seconds to wait for the connection and the WebSocket handshake "
        f"(default: {DEFAULT_TIMEOUT:g})",
    )
    sessions = parser.add_mutually_exclusive_group()
    sessions.add_argument(
        "--session-file",
        metavar="PATH",
        help="where the session is kept so that a killed client resumes it "
        "(default: a file per user and server under $XDG_STATE_HOME/chat-client)",
    )
    sessions.add_argument(
        "--no-session-file",
        action="store_true",
        help="keep no session file: always start a new session",
    )
    parser.add_argument("--debug", action="store_true", help="log Twisted's events to stderr")


def build_parsers() -> dict[str, argparse.ArgumentParser]:
    formatter = argparse.RawDescriptionHelpFormatter
    interactive = Parser(
        prog="chat-client",
        usage=USAGE_LINE,
        description="Chat interactively, or run a command (chat-client send --help).\n\n"
        + COMMANDS_HELP,
        epilog=EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    interactive.add_argument("url_arg", nargs="?", metavar="URL", help="server WebSocket URL")
    _common(interactive, user_required=True)
    interactive.add_argument(
        "--channel", "-c", action="append", default=[], help="join CHANNEL at start (repeatable)"
    )

    send = Parser(
        prog="chat-client send",
        description="Send one message to a channel (--channel) or a user (--to), then exit.",
        epilog=EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    _common(send, user_required=True)
    target = send.add_mutually_exclusive_group(required=True)
    target.add_argument("--channel", "-c", help="channel to send to (joined first)")
    target.add_argument("--to", help="user to send to privately")
    send.add_argument("text", nargs="+", metavar="TEXT", help="words of the message; '-': stdin")

    tail = Parser(
        prog="chat-client tail",
        description="Print the items of the live feed, one per line, until interrupted.",
        epilog=EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    _common(tail, user_required=True)
    tail.add_argument("--channel", "-c", help="channel to join and follow (else: inbox only)")
    tail.add_argument("--since", type=int, metavar="SEQ", help="start after this seq")
    tail.add_argument("--json", action="store_true", help="print items as JSON lines")
    tail.add_argument("--count", type=int, metavar="N", help="exit after N items")
    tail.add_argument("--messages-only", action="store_true", help="skip join and leave items")

    stats = Parser(
        prog="chat-client stats",
        description="Print the server's statistics every period.",
        epilog=EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    _common(stats, user_required=False)
    stats.add_argument(
        "--ids",
        nargs="+",
        help="users channels connections messages memory (default: users channels)",
    )
    stats.add_argument(
        "--period",
        type=float,
        metavar="SECONDS",
        help="seconds between updates, 0.1-3600 (default: the server's, 2)",
    )
    stats.add_argument("--count", type=int, metavar="N", help="exit after N updates")
    stats.add_argument("--json", action="store_true", help="print updates as JSON lines")
    return {"interactive": interactive, "send": send, "tail": tail, "stats": stats}


def parse(argv: Sequence[str]) -> tuple[str, argparse.Namespace]:
    """``[URL] [COMMAND] [URL] OPTIONS...``: the mode and its options (``url`` resolved)."""
    tokens = list(argv)
    url: str | None = None
    mode = "interactive"
    index = 0
    while index < len(tokens):  # the leading positionals: URL and command, in either order
        token = tokens[index]
        if token == "--":
            break
        if token.startswith("-"):
            index += 2 if token in VALUE_OPTIONS else 1
        elif url is None and token.startswith(URL_SCHEMES):
            url = tokens.pop(index)
        elif mode == "interactive" and token in COMMANDS:
            mode = tokens.pop(index)
        else:
            break
    parsers = build_parsers()
    options = parsers[mode].parse_args(tokens)
    given = [u for u in (url, getattr(options, "url_arg", None), options.url) if u]
    if len(set(given)) > 1:
        parsers[mode].error("give the server URL once")
    options.url = given[0] if given else DEFAULT_URL
    if not options.url.startswith(URL_SCHEMES):
        parsers[mode].error(f"not a WebSocket URL: {options.url!r} (ws://HOST:PORT/ws)")
    if options.report_stats is not None and options.report_stats <= 0:
        parsers[mode].error("--report-stats must be positive")
    if getattr(options, "count", None) is not None and options.count < 1:
        parsers[mode].error("--count must be at least 1")
    return mode, options


def session_file(options: argparse.Namespace, username: str) -> SessionFile:
    return SessionFile.choose(options.url, username, options.session_file, options.no_session_file)


async def open_client(
    options: argparse.Namespace, username: str, *, keep_session: bool = True
) -> ChatClient:
    """Connect and log in, resuming the session a killed run of ours left (session file).

    The session's id is saved for the next run, and the file is removed again when this
    connection logs out (:func:`close`), so only a run that did not finish leaves one.
    """
    saved_in = session_file(options, username) if keep_session else None
    saved = saved_in.load() if saved_in is not None else None
    try:
        client = await connect_client(options.url, timeout=options.timeout)
    except Exception as error:
        code, _message = describe(error)
        if code == UNREACHABLE:
            raise CliError(code, f"server unreachable at {options.url}: {error}") from None
        raise
    try:
        await client.login(
            username,
            resume=saved.session_id if saved is not None else None,
            token=options.token,
        )
    except BaseException:
        client.close()
        raise
    if saved_in is not None:
        saved_in.follow(client)
    if options.report_stats:
        reporter = statistics_reporter(_reactor(), lambda: client, options.report_stats)
        client.closed.addBoth(lambda result: _stop(reporter, result))
    return client


def _stop(loop: LoopingCall, result: Any) -> Any:
    if loop.running:
        loop.stop()
    return result


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def close(client: ChatClient) -> None:
    """Log out (so the name is free at once), then close; a server that answers neither
    does not hold us."""
    if client.connected and client.session_id is not None:
        with contextlib.suppress(Exception):
            await client.logout().addTimeout(3, _reactor())
    closed = client.close()
    closed.addTimeout(3, _reactor())
    with contextlib.suppress(Exception):
        await closed


# Commands


async def send_command(options: argparse.Namespace) -> int:
    if options.text == ["-"]:
        text = sys.stdin.buffer.read().decode("utf-8", "replace").rstrip("\r\n")
    else:
        text = " ".join(options.text)
    if not text:
        raise CliError(USAGE, "nothing to send: the message is empty")
    client = await open_client(options, options.user)
    try:
        if options.channel is not None:
            await client.join(options.channel)
            await client.send(options.channel, text)
        else:
            await client.send(user=options.to, content=text)
    finally:
        await close(client)
    return OK


async def tail_command(options: argparse.Namespace) -> int:
    client = await open_client(options, options.user)
    try:
        return await _tail(client, options)
    finally:
        await close(client)


async def _tail(client: ChatClient, options: argparse.Namespace) -> int:
    since: dict[str, int] | None = None
    if options.since is not None:
        since = {options.channel or "@": options.since}
    if client.resumed and options.channel is not None and since is None:
        # A resumed session is already a member: its feed would start at its old join item
        # and print everything since. Start at the channel's end instead, as a new one would.
        joined = await client.join(options.channel)
        feed = client.messages(since={options.channel: joined["seq"]}, epoch=client.epoch)
    else:
        feed = client.messages(since=since, epoch=client.epoch if since else None)
        if options.channel is not None:
            await client.join(options.channel)
    printed = 0
    async for item in feed:
        if options.messages_only and item.get("kind") in ("join", "leave"):
            continue
        try:
            if options.json:
                write_line(json.dumps(item, ensure_ascii=False, separators=(",", ":")))
            else:
                write_line(format_item(item))
        except BrokenPipeError:
            return OK  # the reader went away (| head): done
        printed += 1
        if options.count is not None and printed >= options.count:
            break
    return OK


async def stats_command(options: argparse.Namespace) -> int:
    # Without --user, a name of its own (stats-PID) that no other run resumes.
    username = options.user or f"stats-{os.getpid()}"
    client = await open_client(options, username, keep_session=options.user is not None)
    handle = client.statistics(options.ids, options.period)
    printed = 0
    try:
        async for data in handle:
            try:
                if options.json:
                    write_line(json.dumps(data, separators=(",", ":")))
                else:
                    write_line(format_statistics(data))
            except BrokenPipeError:
                return OK
            printed += 1
            if options.count is not None and printed >= options.count:
                handle.cancel()
                break
    finally:
        await close(client)
    return OK


async def interactive_command(options: argparse.Namespace) -> int:
    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO

    from ._cli_interactive import InteractiveApp, Terminal

    terminal = Terminal()
    pending: list[str] = []  # lines printed before standard output is attached

    def out(line: str) -> None:
        if terminal.transport is None:
            pending.append(line)
        else:
            terminal.write(line)

    app = InteractiveApp(
        reactor,
        options.url,
        options.user,
        options.channel,
        out,
        options.report_stats,
        options.timeout,
        token=options.token,
        session_file=session_file(options, options.user),
    )
    try:
        await app.start()
    except Exception as error:
        if app.client is not None:  # logged in, then e.g. an initial join was refused
            await app.session.logout()
        elif describe(error)[0] == UNREACHABLE:
            raise CliError(UNREACHABLE, f"server unreachable at {options.url}: {error}") from None
        raise
    terminal.app = app
    StandardIO(terminal, reactor=reactor)
    for line in pending:
        terminal.write(line)
    code = await app.finished
    assert terminal.transport is not None
    terminal.transport.loseConnection()
    done: Deferred[None] = terminal.closed
    done.addTimeout(3, reactor)
    with contextlib.suppress(Exception):
        await done
    return code


COMMAND_RUNNERS = {
    "interactive": interactive_command,
    "send": send_command,
    "tail": tail_command,
    "stats": stats_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    """The console script; returns the exit code (``sys.exit(main())``)."""
    mode, options = parse(sys.argv[1:] if argv is None else argv)
    quiet_logging(options.debug)
    runner = COMMAND_RUNNERS[mode]

    async def command(reactor: Any) -> int:
        return await runner(options)

    return run(command)


if __name__ == "__main__":  # pragma: no cover
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        error_line("interrupted")
        sys.exit(130)
