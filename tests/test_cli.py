"""``chat-client`` and the examples, run as users run them: subprocesses against ``twistd``.

Every wait reads the subprocess's output until an expected text appears, with a timeout.
The module's server keeps protocol 1.1's default of sessions that linger 120 s after their
last connection; tests of the 1.0 behaviour (a session ends with its connection) use a server
started with ``--session-linger 0``. Session files go to a temporary ``$XDG_STATE_HOME``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, twistd_server

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
WAIT = 15.0  # seconds any single expected output may take
INSTALLED = Path(sys.executable).parent / "chat-client"  # the console script of the project
STATE = tempfile.mkdtemp(prefix="chat-client-state-")  # $XDG_STATE_HOME: the session files


def teardown_module() -> None:
    shutil.rmtree(STATE, ignore_errors=True)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with twistd_server("--store", "memory") as (_, port):
        yield f"ws://127.0.0.1:{port}/ws"


@pytest.fixture(scope="module")
def url_1_0() -> Iterator[str]:
    """A server with the protocol 1.0 behaviour: a session ends when its connection does."""
    with twistd_server("--store", "memory", "--session-linger", "0") as (_, port):
        yield f"ws://127.0.0.1:{port}/ws"


def client_env(state: str = STATE) -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items() if key not in ("CHAT_USER", "CHAT_TOKEN")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["XDG_STATE_HOME"] = state
    return env


def client_command(*args: str) -> list[str]:
    """The installed ``chat-client`` (``python -m chat.client`` where it is not installed)."""
    if INSTALLED.exists():
        return [str(INSTALLED), *args]
    return [sys.executable, "-m", "chat.client", *args]


class Output:
    """Everything a file descriptor yields, collected by a thread; ``expect`` waits for text."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""
        self.position = 0  # expect() searches after the previous match
        self.eof = False
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # a pty's master reads EIO once the child is gone
                chunk = b""
            with self.changed:
                if not chunk:
                    self.eof = True
                else:
                    self.text += chunk.decode("utf-8", "replace")
                self.changed.notify_all()
            if not chunk:
                return

    def expect(self, wanted: str, timeout: float = WAIT) -> str:
        """Wait for ``wanted`` after the last match; return the text up to and including it."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = self.text.find(wanted, self.position)
                if found >= 0:
                    end = found + len(wanted)
                    seen, self.position = self.text[self.position : end], end
                    return seen
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.eof:
                    raise AssertionError(
                        f"{wanted!r} did not appear ({'eof' if self.eof else 'timeout'}); "
                        f"output so far:\n{self.text}"
                    )
                self.changed.wait(remaining)

    def expect_all(self, *wanted: str, timeout: float = WAIT) -> None:
        """Wait until every one of ``wanted`` appeared after the last match, in any order."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                ends = [self.text.find(w, self.position) for w in wanted]
                if all(end >= 0 for end in ends):
                    self.position = max(e + len(w) for e, w in zip(ends, wanted, strict=True))
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.eof:
                    missing = [w for w, end in zip(wanted, ends, strict=True) if end < 0]
                    raise AssertionError(f"{missing!r} did not appear; output so far:\n{self.text}")
                self.changed.wait(remaining)

    def mark(self) -> int:
        """The current length of the output, to look at what came after it later."""
        with self.changed:
            return len(self.text)

    def since(self, mark: int) -> str:
        with self.changed:
            return self.text[mark:]

    def wait_eof(self, timeout: float = WAIT) -> str:
        with self.changed:
            if not self.changed.wait_for(lambda: self.eof, timeout):
                raise AssertionError(f"output did not end; so far:\n{self.text}")
            return self.text


class Client:
    """``python -m chat.client ARGS`` with stdin, and stdout+stderr, on pipes or on a pty."""

    def __init__(self, *args: str, use_pty: bool = False, state: str = STATE) -> None:
        command = client_command(*args)
        if use_pty:
            master, slave = pty.openpty()
            self.proc = subprocess.Popen(
                command, stdin=slave, stdout=slave, stderr=slave, env=client_env(state)
            )
            os.close(slave)
            self.input_fd = master
            self.output = Output(master)
        else:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=client_env(state),
            )
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.input_fd = self.proc.stdin.fileno()
            self.output = Output(self.proc.stdout.fileno())

    def write(self, text: str) -> None:
        os.write(self.input_fd, text.encode())

    def expect(self, wanted: str, timeout: float = WAIT) -> str:
        return self.output.expect(wanted, timeout)

    def close_input(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()

    def wait(self, timeout: float = WAIT) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    started: list[Client] = []
    yield started
    for client in started:
        client.stop()


def interactive(
    clients: list[Client], url: str, *args: str, use_pty: bool = False, state: str = STATE
) -> Client:
    client = Client(url, *args, use_pty=use_pty, state=state)
    clients.append(client)
    client.expect("connected as ")
    return client


def run_cli(*args: str, stdin: str | None = None, timeout: float = WAIT, state: str = STATE) -> Any:
    return subprocess.run(
        client_command(*args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=client_env(state),
    )


# The interactive client


def test_two_clients_converse_and_commands_work(url: str, clients: list[Client]) -> None:
    alice = interactive(clients, url, "--user", "alice", "--channel", "general")
    alice.expect("[#general] * alice joined")
    bob = interactive(clients, url, "--user", "bob", "-c", "general")
    alice.expect("[#general] * bob joined")

    alice.write("hello bob\n")
    bob.expect("[#general] alice: hello bob")
    bob.write("hi alice\n")
    alice.expect("[#general] bob: hi alice")

    bob.write("/msg alice psst\n")
    alice.expect("[private] bob -> alice: psst")
    bob.expect("[private] bob -> alice: psst")  # the sender's own copy, from its inbox
    alice.write("/history @bob\n")
    alice.expect("* history of your messages with bob: 1 item")
    alice.expect("[private] bob -> alice: psst")

    alice.write("/users\n")
    alice.expect("* #general: alice, bob")
    alice.write("/channels\n")
    alice.expect("* #general (2 users)")
    alice.write("/history 2\n")
    alice.expect("* history of #general: 2 items")
    alice.expect("[#general] alice: hello bob")
    alice.expect("[#general] bob: hi alice")

    bob.write("/msg nobody-at-all hi\n")
    bob.expect("! not_found: ")
    bob.write("/frobnicate\n")
    bob.expect("! unknown command /frobnicate")
    bob.write("/help\n")
    bob.expect("/msg USER TEXT")

    alice.write("/stats users 0.2\n")
    alice.expect("stats: user_count=")
    alice.write("/stats channels messages\n")
    alice.expect("stats: channel_count=")
    alice.write("/stats off\n")
    alice.expect("* statistics off")

    alice.write("/join side\n")
    alice.expect("* now talking in #side (1 user)")
    alice.write("/leave\n")
    alice.expect("* left #side; now talking in #general")

    bob.write("/leave general\n")
    bob.expect("* left #general; now talking in no channel")
    alice.expect("[#general] * bob left")
    bob.write("anyone?\n")
    bob.expect("! no current channel")

    alice.write("/quit\n")
    assert alice.wait() == 0
    bob.close_input()  # end of input quits too
    assert bob.wait() == 0
    assert "Traceback" not in alice.output.text + bob.output.text


def test_a_message_arrives_while_the_other_side_is_typing(url: str, clients: list[Client]) -> None:
    # On a pseudo-terminal, as a person at a keyboard would run it.
    carol = interactive(clients, url, "--user", "carol", "-c", "typing", use_pty=True)
    dave = interactive(clients, url, "--user", "dave", "-c", "typing", use_pty=True)
    carol.expect("[#typing] * dave joined")

    dave.write("half a sen")  # no newline yet: dave is in the middle of a line
    carol.write("are you there?\n")
    dave.expect("[#typing] carol: are you there?")  # printed while dave's line is unfinished
    dave.write("tence\n")
    carol.expect("[#typing] dave: half a sentence")

    carol.write("/quit\n")
    dave.write("/quit\n")
    assert carol.wait() == 0
    assert dave.wait() == 0


def test_reconnects_and_recovers_missed_messages_when_sessions_end_with_connections(
    url_1_0: str, clients: list[Client]
) -> None:
    # Protocol 1.0 behaviour (--session-linger 0): the drop ends frank's session, so he is
    # seen leaving, logs in anew, joins again and gets what he missed from his positions.
    url = url_1_0
    port = int(url.split(":")[2].split("/")[0])
    with Proxy(port) as proxy:
        erin = interactive(clients, url, "--user", "erin", "-c", "reco")
        frank = interactive(
            clients, f"ws://127.0.0.1:{proxy.port}/ws", "--user", "frank", "-c", "reco"
        )
        erin.expect("[#reco] * frank joined")
        erin.write("before\n")
        frank.expect("[#reco] erin: before")

        proxy.cut()
        frank.expect("! connection lost")
        erin.expect("[#reco] * frank left")  # the server saw frank go
        erin.write("missed one\n")
        erin.write("missed two\n")
        erin.expect("[#reco] erin: missed two")
        proxy.reopen()

        frank.expect("[#reco] erin: missed one")
        frank.expect("[#reco] erin: missed two")
        frank.expect("reconnected — 2 missed messages recovered")
        erin.write("after\n")
        frank.expect("[#reco] erin: after")
        frank.write("/quit\n")
        assert frank.wait() == 0
        erin.write("/quit\n")
        assert erin.wait() == 0


class Proxy:
    """A TCP relay that can cut its connections and refuse new ones until reopened."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.blocked = False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            if self.blocked:
                downstream.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.sockets += [downstream, upstream]
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.blocked = True
        with self.lock:
            cut, self.sockets = self.sockets, []
        for s in cut:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def reopen(self) -> None:
        self.blocked = False


# Scriptable commands


def test_send_then_tail_json_round_trip(url: str) -> None:
    tail = Client(
        url,
        "tail",
        "--user",
        "reader",
        "-c",
        "pipes",
        "--since",
        "0",
        "--json",
        "--messages-only",
        "--count",
        "2",
    )
    try:
        sent = run_cli(url, "send", "--user", "bot", "--channel", "pipes", "first", "words")
        assert (sent.returncode, sent.stderr) == (0, "")
        piped = run_cli("send", url, "-u", "bot", "-c", "pipes", "-", stdin="from a pipe ✓\n")
        assert (piped.returncode, piped.stderr) == (0, "")
        assert tail.wait() == 0
        lines = tail.output.wait_eof().splitlines()
    finally:
        tail.stop()
    items = [json.loads(line) for line in lines]
    assert [(i["kind"], i["channel"], i["from"], i["content"]) for i in items] == [
        ("message", "pipes", "bot", "first words"),
        ("message", "pipes", "bot", "from a pipe ✓"),
    ]
    assert items[0]["seq"] < items[1]["seq"]


def test_tail_prints_readable_lines_and_private_messages(url: str) -> None:
    tail = Client("--url", url, "tail", "-u", "gina", "--since", "0", "--count", "1")
    try:
        # gina must have logged in before a private message to her is accepted.
        deadline = time.monotonic() + WAIT
        while (sent := run_cli(url, "send", "-u", "hal", "--to", "gina", "hey")).returncode == 4:
            assert time.monotonic() < deadline, "tail never logged in"
        assert sent.returncode == 0, sent.stderr
        assert tail.wait() == 0
        assert tail.output.wait_eof().strip() == "[private] hal -> gina: hey"
    finally:
        tail.stop()


def test_stats_command(url: str) -> None:
    result = run_cli(
        url,
        "stats",
        "--ids",
        "users",
        "messages",
        "--period",
        "0.1",
        "--count",
        "3",
        "--json",
        "--report-stats",
        "0.1",
    )
    assert result.returncode == 0, result.stderr
    updates = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(updates) == 3
    assert all(set(update) == {"user_count", "message_count"} for update in updates)
    assert all(update["user_count"] >= 1 for update in updates)


# Exit codes and one-line errors


def assert_one_line_error(result: Any, code: int, text: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert text in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_unreachable_server_exits_2() -> None:
    nowhere = f"ws://127.0.0.1:{free_port()}/ws"
    assert_one_line_error(run_cli(nowhere, "--user", "x"), 2, "server unreachable")
    assert_one_line_error(run_cli(nowhere, "send", "-u", "x", "-c", "a", "hi"), 2, "unreachable")
    assert_one_line_error(run_cli(nowhere, "stats"), 2, "server unreachable")


def test_taken_username_exits_3(url: str, clients: list[Client], tmp_path: Path) -> None:
    interactive(clients, url, "--user", "holder")
    # Someone else, elsewhere: not the holder's session file, so nothing to resume.
    elsewhere = str(tmp_path)
    assert_one_line_error(run_cli(url, "--user", "holder", state=elsewhere), 3, "username_taken")
    taken = run_cli(url, "send", "-u", "holder", "--to", "x", "hi", state=elsewhere)
    assert_one_line_error(taken, 3, "taken")
    # The same user on the same machine (its session file) attaches to the live session.
    assert run_cli(url, "send", "-u", "holder", "--to", "holder", "me too").returncode == 0


def test_unknown_user_exits_4(url: str) -> None:
    result = run_cli(url, "send", "--user", "ivan", "--to", "never-logged-in", "hi")
    assert_one_line_error(result, 4, "not_found")


def test_usage_errors_exit_1(url: str) -> None:
    assert run_cli(url, "send", "-c", "general", "hi").returncode == 1  # no --user
    assert run_cli(url, "tail", "--user", "x", "--count", "0").returncode == 1
    assert run_cli("http://example.com", "--user", "x").returncode == 1
    assert_one_line_error(run_cli(url, "send", "-u", "bad name", "-c", "a", "x"), 1, "invalid_data")


def test_help_lists_the_exit_codes() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "exit codes:" in result.stdout and "unreachable" in result.stdout
    script = Path(sys.executable).parent / "chat-client"
    if script.exists():  # the console script of an installed project
        result = subprocess.run(
            [str(script), "send", "--help"], capture_output=True, text=True, timeout=WAIT
        )
        assert result.returncode == 0 and "--to" in result.stdout


# The examples


@pytest.mark.parametrize("name", ["conversation.py", "statistics.py"])
def test_example_runs_and_exits_0(url: str, name: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), url],
        capture_output=True,
        text=True,
        timeout=30,
        env=client_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_echo_bot_answers_and_exits_after_count(url: str, clients: list[Client]) -> None:
    bot = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "echo_bot.py"), url, "--channel", "bots", "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=client_env(),
    )
    try:
        assert bot.stdout is not None
        output = Output(bot.stdout.fileno())
        output.expect("listening in #bots")
        jane = interactive(clients, url, "--user", "jane", "-c", "bots")
        jane.write("ping\n")
        jane.expect("[#bots] echo-bot: jane said: ping")
        jane.write("pong\n")
        jane.expect("[#bots] echo-bot: jane said: pong")
        assert bot.wait(WAIT) == 0
        output.expect("answered jane (2/2)")
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.wait(10)
        if bot.stdout is not None:
            bot.stdout.close()


# Protocol 1.1: sessions that outlive connections, exactly-once sending, read positions


def test_a_dropped_connection_resumes_the_session_without_leave_or_join(
    url: str, clients: list[Client]
) -> None:
    port = int(url.split(":")[2].split("/")[0])
    with Proxy(port) as proxy:
        erin = interactive(clients, url, "--user", "erin2", "-c", "reco2")
        frank = interactive(
            clients, f"ws://127.0.0.1:{proxy.port}/ws", "--user", "frank2", "-c", "reco2"
        )
        erin.expect("[#reco2] * frank2 joined")
        erin.write("before\n")
        frank.expect("[#reco2] erin2: before")
        cut = erin.output.mark()

        proxy.cut()
        frank.expect("! connection lost")
        erin.write("missed one\n")
        erin.write("missed two\n")
        erin.expect("[#reco2] erin2: missed two")
        frank.write("from the tunnel\n")  # typed while disconnected: queued
        frank.expect("* not connected: queued")
        proxy.reopen()

        frank.expect("[#reco2] erin2: missed one")
        frank.expect("[#reco2] erin2: missed two")
        frank.expect("reconnected — 2 missed messages recovered")
        erin.expect("[#reco2] frank2: from the tunnel")
        erin.write("after\n")
        frank.expect("[#reco2] erin2: after")
        seen_by_erin = erin.output.since(cut)
        assert "frank2 left" not in seen_by_erin and "frank2 joined" not in seen_by_erin
        assert seen_by_erin.count("frank2: from the tunnel") == 1
        assert "frank2 joined" not in frank.output.since(0).split("reconnected")[1]
        frank.write("/quit\n")
        assert frank.wait() == 0
        erin.expect("[#reco2] * frank2 left")  # quitting logs out: the session ends now
        erin.write("/quit\n")
        assert erin.wait() == 0


def test_send_twice_in_a_row_with_the_same_user(url: str) -> None:
    # Without a session file to resume: the first run must have logged out.
    for text in ("first run", "second run"):
        sent = run_cli(url, "send", "-u", "cron", "-c", "jobs", "--no-session-file", text)
        assert (sent.returncode, sent.stderr) == (0, "")
    tail = run_cli(
        url, "tail", "-u", "auditor", "-c", "jobs", "--since", "0", "--json", "--count", "4"
    )
    assert tail.returncode == 0, tail.stderr
    items = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [(i["kind"], i["from"], i.get("content")) for i in items] == [
        ("join", "cron", None),
        ("message", "cron", "first run"),
        ("leave", "cron", None),  # the logout ended the session at once
        ("join", "cron", None),
    ]


def test_an_interrupted_tail_logs_out_and_frees_its_name(url: str) -> None:
    tail = Client(url, "tail", "-u", "watcher", "-c", "watch", "--no-session-file")
    try:
        tail.expect("[#watch] * watcher joined")
        tail.proc.send_signal(signal.SIGTERM)
        assert tail.wait() == 130
        assert "Traceback" not in tail.output.wait_eof()
    finally:
        tail.stop()
    again = run_cli(url, "send", "-u", "watcher", "-c", "watch", "--no-session-file", "back")
    assert (again.returncode, again.stderr) == (0, "")


def test_a_killed_interactive_client_resumes_its_session(url: str, clients: list[Client]) -> None:
    kim = interactive(clients, url, "--user", "kim", "-c", "den")
    lee = interactive(clients, url, "--user", "lee", "-c", "den")
    kim.expect("[#den] * lee joined")
    kim.proc.kill()  # no logout: the session lingers, its id is in kim's session file
    kim.wait()
    killed = lee.output.mark()

    deadline = time.monotonic() + WAIT
    while True:  # the server sees the dropped connection a moment later
        lee.write("/users\n")
        lee.expect("* #den: ")
        if "kim (away)" in lee.expect("\n"):
            break
        assert time.monotonic() < deadline, lee.output.text
    lee.write("while you were away\n")
    lee.expect("[#den] lee: while you were away")

    again = Client(url, "--user", "kim")  # no --channel: the session still has #den
    clients.append(again)
    again.expect("* resumed your session in #den")
    again.output.expect_all(
        "connected as kim (session resumed), talking in #den",
        "[#den] lee: while you were away",
        "resumed — 1 missed message recovered",
    )
    lee.write("welcome back\n")
    again.expect("[#den] lee: welcome back")
    after = lee.output.since(killed)
    assert "kim left" not in after and "kim joined" not in after
    again.write("/quit\n")
    assert again.wait() == 0
    lee.expect("[#den] * kim left")


def test_unread_private_messages_are_shown_at_start_then_marked_read(
    url: str, clients: list[Client]
) -> None:
    noted = run_cli(url, "send", "-u", "ola", "--to", "ola", "a note to myself")
    assert noted.returncode == 0, noted.stderr
    for text in ("are you there?", "call me"):
        sent = run_cli(url, "send", "-u", "nia", "--to", "ola", text)
        assert sent.returncode == 0, sent.stderr

    ola = Client(url, "--user", "ola")
    clients.append(ola)
    ola.expect("* 2 unread private messages:")
    ola.expect("[private] nia -> ola: are you there?")
    ola.expect("[private] nia -> ola: call me")
    ola.expect("connected as ola")
    assert "note to myself" not in ola.output.text  # one's own messages are never unread
    ola.write("/unread\n")
    ola.expect("* inbox: 0 unread")
    ola.close_input()
    assert ola.wait() == 0

    later = interactive(clients, url, "--user", "ola")
    later.write("/quit\n")
    assert later.wait() == 0
    assert "unread" not in later.output.text  # shown once, so read


def start_on(port: int, workdir: str) -> Any:
    """``twistd`` on SQLite in ``workdir``, also listening on the fixed ``port``."""
    return twistd_server(
        "--store",
        "sqlite:chat.db",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        cwd=workdir,
    )


def test_lines_typed_while_the_server_is_down_are_sent_exactly_once(
    clients: list[Client], tmp_path: Path
) -> None:
    port = free_port()
    address = f"ws://127.0.0.1:{port}/ws"
    with start_on(port, str(tmp_path)) as (server, _):
        mia = interactive(clients, address, "--user", "mia", "-c", "ops")
        mia.write("before the crash\n")
        mia.expect("[#ops] mia: before the crash")
        os.killpg(server.pid, signal.SIGKILL)  # no goodbye, no session kept
        server.wait(10)
        mia.expect("! connection lost")
        mia.write("typed while down 1\n")
        mia.expect("* not connected: queued")
        mia.write("typed while down 2\n")
        mia.expect("* not connected: queued")

    with start_on(port, str(tmp_path)):  # the same file, the same port
        mia.expect("reconnected — ")
        mia.output.expect_all("[#ops] mia: typed while down 1", "[#ops] mia: typed while down 2")
        mia.write("after\n")
        mia.expect("[#ops] mia: after")
        tail = run_cli(
            address,
            *("tail", "-u", "audit", "-c", "ops", "--since", "0"),
            *("--json", "--messages-only", "--count", "4"),
        )
        assert tail.returncode == 0, tail.stderr
        stored = [json.loads(line)["content"] for line in tail.stdout.splitlines()]
        assert stored == ["before the crash", "typed while down 1", "typed while down 2", "after"]
        assert mia.output.text.count("mia: typed while down 1") == 1
        mia.write("/quit\n")
        assert mia.wait() == 0


# What an operator sees (issue 16)


def test_help_shows_the_commands_and_the_defaults() -> None:
    result = subprocess.run(client_command("--help"), capture_output=True, text=True, timeout=WAIT)
    assert result.returncode == 0 and result.stderr == ""
    usage = result.stdout.split("\n\n")[0]
    assert usage.startswith("usage: chat-client") and "{send,tail,stats}" in usage
    words = " ".join(result.stdout.split())  # as read, whatever the wrapping
    assert (
        "--timeout SECONDS seconds to wait for the connection and the WebSocket handshake "
        "(default: 10)" in words
    )
    assert "--period, default 2 s" in words  # the stats command, in the list of commands
    stats = subprocess.run(
        client_command("stats", "--help"), capture_output=True, text=True, timeout=WAIT
    )
    assert stats.returncode == 0
    words = " ".join(stats.stdout.split())
    assert "--period SECONDS seconds between updates, 0.1-3600 (default: the server's, 2)" in words
    assert "(default: 10)" in words


def test_timeout_bounds_the_wait_for_a_listener_that_never_answers() -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never answers
    try:
        address = f"ws://127.0.0.1:{silent.getsockname()[1]}/ws"
        started = time.monotonic()
        subprocess.run(client_command("--help"), capture_output=True, timeout=WAIT)
        startup = time.monotonic() - started  # what starting the program costs on this machine
        started = time.monotonic()
        result = run_cli(address, "send", "-u", "x", "-c", "a", "hi", "--timeout", "2")
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert_one_line_error(result, 2, "server unreachable")
    assert "within 2 s" in result.stderr
    assert 2.0 <= elapsed < startup + 2.0 + 1.0, (elapsed, startup)


def readme_example(url: str) -> str:
    """The code of README.md's "A Python client", on our server and with a name of its own."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A Python client", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'connect("ws://127.0.0.1:8080/ws")' in code and 'login("alice")' in code
    return code.replace("ws://127.0.0.1:8080/ws", url).replace('"alice"', '"readme-alice"')


def test_the_readme_example_stops_quietly_on_sigterm(url: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(readme_example(url))
    for _ in range(2):  # the second run finds the name free: the first logged out
        example = subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=client_env(),
        )
        try:
            assert example.stdout is not None and example.stderr is not None
            output = Output(example.stdout.fileno())
            output.expect("'kind': 'message'")  # it is in its feed loop
            example.send_signal(signal.SIGTERM)
            assert example.wait(WAIT) == 0
            errors = example.stderr.read().decode()
        finally:
            if example.poll() is None:
                example.kill()
                example.wait(10)
            for stream in (example.stdout, example.stderr):
                if stream is not None:
                    stream.close()
        assert errors == "", errors
    assert "Traceback" not in output.text


def test_channels_says_1_user(url: str, clients: list[Client]) -> None:
    solo = interactive(clients, url, "--user", "solo", "-c", "solitude")
    solo.write("/channels\n")
    solo.expect("* #solitude (1 user)")
    solo.write("/quit\n")
    assert solo.wait() == 0


def test_the_python_blocks_of_docs_client_md_run_as_written(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "client.md").read_text()
    blocks = text.split("```python\n")[1:]
    blocks = [block.split("```", 1)[0] for block in blocks]
    assert len(blocks) == 4
    with twistd_server("--store", "memory") as (_, port):
        address = f"ws://127.0.0.1:{port}/ws"

        def run_block(index: int) -> str:
            script = tmp_path / f"block{index}.py"
            script.write_text(blocks[index].replace("ws://127.0.0.1:8080/ws", address))
            result = subprocess.run(
                [sys.executable, str(script)],
                capture_output=True,
                text=True,
                timeout=30,
                env=client_env(),
            )
            assert (result.returncode, result.stderr) == (0, ""), (index, result)
            return result.stdout

        first = run_block(0)
        assert "'duplicate': False" in first and "'kind': 'message'" in first
        assert "new" in run_block(1)
        run_block(2)  # dora's first login: now messages to her are accepted
        sent = run_cli(address, "send", "-u", "nia", "--to", "dora", "where are you?")
        assert sent.returncode == 0, sent.stderr
        assert run_block(2) == "nia: where are you?\n"
        assert run_block(2) == ""  # read now
        assert "connected, resumed: False" in run_block(3)
