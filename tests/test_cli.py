"""``chat-client`` and the examples, run as users run them: subprocesses against ``twistd``.

Every wait reads the subprocess's output until an expected text appears, with a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import socket
import subprocess
import sys
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


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with twistd_server("--store", "memory") as (_, port):
        yield f"ws://127.0.0.1:{port}/ws"


def client_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "CHAT_USER"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


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

    def wait_eof(self, timeout: float = WAIT) -> str:
        with self.changed:
            if not self.changed.wait_for(lambda: self.eof, timeout):
                raise AssertionError(f"output did not end; so far:\n{self.text}")
            return self.text


class Client:
    """``python -m chat.client ARGS`` with stdin, and stdout+stderr, on pipes or on a pty."""

    def __init__(self, *args: str, use_pty: bool = False) -> None:
        command = [sys.executable, "-m", "chat.client", *args]
        if use_pty:
            master, slave = pty.openpty()
            self.proc = subprocess.Popen(
                command, stdin=slave, stdout=slave, stderr=slave, env=client_env()
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
                env=client_env(),
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


def interactive(clients: list[Client], url: str, *args: str, use_pty: bool = False) -> Client:
    client = Client(url, *args, use_pty=use_pty)
    clients.append(client)
    client.expect("connected as ")
    return client


def run_cli(*args: str, stdin: str | None = None, timeout: float = WAIT) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "chat.client", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=client_env(),
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
    bob.expect("[private] bob -> alice: psst")  # the sender's own copy, printed locally

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


def test_reconnects_and_recovers_missed_messages(url: str, clients: list[Client]) -> None:
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


def test_taken_username_exits_3(url: str, clients: list[Client]) -> None:
    interactive(clients, url, "--user", "holder")
    assert_one_line_error(run_cli(url, "--user", "holder"), 3, "username_taken")
    assert_one_line_error(run_cli(url, "send", "-u", "holder", "--to", "x", "hi"), 3, "taken")


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
