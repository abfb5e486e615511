"""``twistd chat`` as an operator meets it: every mistake is one clear line, start-up says where
it serves and with what, a Redis outage is logged once each way, and the README's two commands
work on a fresh clone (issue 16).

Every test runs the installed ``twistd`` (or the README's commands) as a subprocess on free
ports, in a directory of its own, and checks what an operator would see: the exit status, the
one line on standard error, the files left behind, the log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, server_log, twistd_path, twistd_server
from tests.redis_fixtures import RedisServer

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def run_twistd(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``twistd ARGS`` in ``cwd``; ``args`` include the twistd options and ``chat``."""
    return subprocess.run(
        [twistd_path(), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def the_one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed ``twistd chat`` printed; fails unless there is exactly one."""
    assert result.returncode == 1, result
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == "", "nothing on standard output (no --help, no log)"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("twistd chat: ")
    return lines[0]


def poll(
    condition: Callable[[], Any], seconds: float, what: str | Callable[[], str], every: float = 0.05
) -> Any:
    """Call ``condition`` until it returns something true, or fail after ``seconds`` saying
    ``what`` (or what ``what()`` says then) was waited for."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what if isinstance(what, str) else what()}")
        time.sleep(every)  # polling a process we cannot be notified by; the deadline bounds it


def http_get(url: str, timeout: float = 5, context: Any = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# 1. Port in use: one line, exit 1, nothing created.


@pytest.fixture(scope="module")
def taken_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A port another chat server already listens on (as in the issue: 8080 was taken)."""
    with twistd_server("--store", "memory", cwd=str(tmp_path_factory.mktemp("holder"))) as (
        _proc,
        port,
    ):
        yield port


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "twistd_options",
    [["-n"], ["-n", "--pidfile="], []],
    ids=["default-pidfile", "no-pidfile", "daemon"],
)
def test_port_in_use_is_one_line_and_creates_nothing(
    taken_port: int, twistd_options: list[str], tmp_path: Path
) -> None:
    listen = f"tcp:{taken_port}:interface=127.0.0.1"
    started = time.monotonic()
    try:
        result = run_twistd(*twistd_options, "chat", "--listen", listen, cwd=tmp_path)
    finally:
        pid_file = tmp_path / "twistd.pid"
        if pid_file.exists():  # a daemon that did start: do not leave it running
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    line = the_one_line(result)
    assert time.monotonic() - started < 15  # at once: it does not wait for anything
    assert f"--listen {listen}: cannot listen on 127.0.0.1 port {taken_port}" in line
    assert "already in use" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no twistd.pid, chat.db or log
    # and the server that has the port still serves
    assert http_get(f"http://127.0.0.1:{taken_port}/healthz")[0] == 200


@pytest.mark.timeout(60)
def test_a_store_that_cannot_be_opened_leaves_no_socket_file_behind(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_bytes(b"these are not the droids " * 100)
    sock = tmp_path / "chat.sock"
    result = run_twistd(
        "-n", "chat", "--listen", f"unix:{sock}", "--store", "sqlite:notes.db", cwd=tmp_path
    )
    line = the_one_line(result)
    assert "cannot open the SQLite store notes.db" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]  # no socket, no lock
    # so the next start with a good store works on the same socket path
    with twistd_server("--listen", f"unix:{sock}", "--store", "memory", cwd=str(tmp_path)):
        assert sock.exists()


# 2. and 3. Bad options: one line naming the option and what is allowed, never the --help.


def _case(args: list[str], *expected: str) -> Any:
    return pytest.param(args, list(expected), id=" ".join(args) if all(args) else repr(args))


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        _case(["--listen", "foo:8080"], "--listen foo:8080: unknown endpoint type", "tcp:PORT"),
        _case(["--listen", "tcp:notaport"], "--listen tcp:notaport: the port must be a number"),
        _case(["--listen", ""], "--listen : an endpoint is needed, e.g. tcp:8080"),
        _case(["--retention", "-5"], "--retention -5: must be a whole number of 1 or more"),
        _case(["--store", "bogus"], "--store bogus: unknown store", "sqlite:PATH", "redis://"),
        _case(["--sync", "maybe"], "--sync maybe: must be one of full, normal"),
        _case(["--session-linger", "soon"], "--session-linger soon: must be a number of seconds"),
        _case(["--retention-age", "forever"], "--retention-age forever: not a duration", "7d"),
        _case(["--auth", "token"], "--auth token needs --secret-file FILE", "16 bytes"),
        _case(["--no-such-option"], "--no-such-option not recognized", "--help"),
        _case(["--retention"], "--retention requires argument"),
    ],
)
def test_option_errors_are_one_line(args: list[str], expected: list[str], tmp_path: Path) -> None:
    line = the_one_line(run_twistd("-n", "chat", *args, cwd=tmp_path))
    for fragment in expected:
        assert fragment in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _secret_files(directory: Path) -> dict[str, tuple[Path, list[str]]]:
    missing = directory / "missing.key"
    unreadable = directory / "a-directory.key"  # root reads any file; nobody reads a directory
    unreadable.mkdir(mode=0o700)
    shared = directory / "shared.key"
    shared.write_bytes(b"s" * 32)
    shared.chmod(0o640)
    short = directory / "short.key"
    short.write_bytes(b"tiny")
    short.chmod(0o600)
    return {
        "missing": (missing, [f"--secret-file {missing}: cannot read", "No such file"]),
        "unreadable": (unreadable, [f"--secret-file {unreadable}: cannot read"]),
        "group-readable": (
            shared,
            ["may be read by other users (mode 0640)", f"chmod 600 {shared}"],
        ),
        "too-short": (short, ["shorter than 16 bytes"]),
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["missing", "unreadable", "group-readable", "too-short"])
def test_bad_secret_files_are_one_line(case: str, tmp_path: Path) -> None:
    path, expected = _secret_files(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_twistd("-n", "chat", "--auth", "token", "--secret-file", str(path), cwd=tmp_path)
    line = the_one_line(result)
    for fragment in expected:
        assert fragment in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# 4. The start-up lines.


def chat_lines(log: str) -> list[str]:
    """The start-up lines of the server (namespace chat.server), without timestamps."""
    return [
        line.split("] ", 1)[1]
        for line in log.splitlines()
        if "[chat.server#" in line and "] " in line
    ]


def wait_for_summary(proc: subprocess.Popen[Any]) -> list[str]:
    def summary() -> list[str] | None:
        lines = chat_lines(server_log(proc))
        return lines if any(line.startswith("store ") for line in lines) else None

    found: list[str] = poll(summary, 10, "the start-up summary line")
    return found


def websocket_login(url: str, **options: Any) -> dict[str, Any]:
    import websocket

    ws = websocket.create_connection(url, timeout=10, **options)
    try:
        ws.send(json.dumps({"type": "request", "id": 1, "route": "login",
                            "data": {"username": "operator"}}))  # fmt: skip
        while True:
            frame: dict[str, Any] = json.loads(ws.recv())
            if frame.get("id") == 1:
                return frame
    finally:
        ws.close()


@pytest.mark.timeout(60)
def test_startup_lines_give_each_listeners_urls_the_store_auth_and_sessions(
    tmp_path: Path,
) -> None:
    from tests.test_security import self_signed

    key, cert, _pem = self_signed(tmp_path)
    secret = tmp_path / "secret.key"
    secret.write_bytes(b"k" * 32)
    secret.chmod(0o600)
    sock = tmp_path / "chat.sock"
    (tmp_path / "data").mkdir()
    args = [
        "--listen", "tcp:0:interface=127.0.0.1",
        "--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        "--listen", f"unix:{sock}",
        "--store", "sqlite:data/chat.db",
        "--auth", "token", "--secret-file", str(secret),
        "--session-linger", "30", "--dedup-window", "90",
    ]  # fmt: skip
    with twistd_server(*args, cwd=str(tmp_path)) as (proc, port):
        lines = wait_for_summary(proc)
        listening = [line for line in lines if line.startswith("listening on ")]
        assert len(listening) == 4, lines  # one per --listen, said once
        assert listening[0] == (
            f"listening on tcp:{port}:interface=127.0.0.1: page http://127.0.0.1:{port}/, "
            f"WebSocket ws://127.0.0.1:{port}/ws"
        )
        # tcp:0 shows the port it got, and both URLs work
        (plain,) = re.findall(r"listening on tcp:0:interface=127\.0\.0\.1: page (\S+), "
                              r"WebSocket (\S+)$", "\n".join(listening), re.M)  # fmt: skip
        page, ws_url = plain
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", page) and ":0/" not in page
        assert http_get(page)[0] == 200
        assert websocket_login(ws_url)["type"] == "error"  # token auth: a bare name is refused
        # ssl: https and wss
        (tls,) = [line for line in listening if line.startswith("listening on ssl:")]
        secure_page, secure_ws = re.findall(r"page (\S+), WebSocket (\S+)$", tls)[0]
        assert secure_page.startswith("https://127.0.0.1:") and secure_ws.startswith("wss://")
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        assert http_get(secure_page + "healthz", context=context)[0] == 200
        # unix: the socket path
        (local,) = [line for line in listening if line.startswith("listening on unix:")]
        assert local.endswith(f"through the socket {sock}")
        (summary,) = [line for line in lines if line.startswith("store ")]
        assert summary.startswith("store sqlite data/chat.db (sync full, retention 100000")
        assert "auth token" in summary
        assert "session linger 30 s" in summary
        assert "dedup window 90 s" in summary
        assert not [line for line in lines if "beyond loopback" in line]  # all on loopback
        assert (tmp_path / "data" / "chat.db").exists()
        log = server_log(proc)
        assert "Starting factory" not in log and "Traceback" not in log


@pytest.mark.timeout(60)
def test_startup_lines_for_all_addresses_warn_about_the_origin_policy(tmp_path: Path) -> None:
    args = ["--listen", "tcp:0", "--store", "memory", "--session-linger", "0"]
    with twistd_server(*args, cwd=str(tmp_path)) as (proc, _port):
        lines = wait_for_summary(proc)
        (everywhere,) = [line for line in lines if line.startswith("listening on tcp:0 ")]
        page = re.findall(r"^listening on tcp:0 \(all addresses\): page (http://localhost:\d+/), "
                          r"WebSocket ws://localhost:\d+/ws$", everywhere)  # fmt: skip
        assert page, everywhere
        assert http_get(page[0].replace("localhost", "127.0.0.1"))[0] == 200
        (summary,) = [line for line in lines if line.startswith("store ")]
        assert summary.startswith("store memory (retention 10000 items per log); auth open")
        assert "session linger off" in summary
        warnings = [line for line in server_log(proc).splitlines() if "[chat.server#warn]" in line]
        assert len(warnings) == 1 and "listening beyond loopback (tcp:0)" in warnings[0]


# 5. Redis unreachable at start and during operation.


def redis_lines(log: str, kind: str, connection: str) -> list[str]:
    return [line for line in log.splitlines() if f"Redis {connection}: " in line and kind in line]


def health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        status, body = http_get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    except OSError:
        return 0, {}
    result: dict[str, Any] = json.loads(body)
    return status, result


def hold_outage(port: int, seconds: float) -> None:
    """Keep Redis away for ``seconds`` (several reconnection attempts), asking /healthz all
    along: it must say the store is unreachable the whole time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, body = health(port)
        assert status == 503 and "unreachable" in body.get("detail", ""), body
        time.sleep(0.2)  # the outage is the scenario: its length is what is tested


_attempts = iter(range(1_000_000))


def serves(ws_url: str, refusals: list[dict[str, Any]]) -> bool:
    """A login, a join and an acknowledged message all work (the store is back); a refusal is
    kept in ``refusals`` for the failure message."""
    import websocket

    username = f"ops{next(_attempts)}"  # a refused attempt's session lingers: a new name each
    ws = websocket.create_connection(ws_url, timeout=10)
    try:
        frames = [
            {"type": "request", "id": 1, "route": "login", "data": {"username": username}},
            {"type": "request", "id": 2, "route": "channel.join", "data": {"channel": "ops"}},
            {"type": "request", "id": 3, "route": "message",
             "data": {"channel": "ops", "content": "back"}},
        ]  # fmt: skip
        for frame in frames:
            ws.send(json.dumps(frame))
            while True:
                answer = json.loads(ws.recv())
                if answer.get("id") == frame["id"]:
                    break
            if answer["type"] != "response":
                refusals.append(answer)
                return False
        return True
    finally:
        ws.close()


def outage(proc: subprocess.Popen[Any], port: int, redis: RedisServer, number: int) -> None:
    """Redis is away (outage ``number``): it is logged once per connection, /healthz says so
    while it lasts; Redis comes back: logged once per connection, and the server serves."""

    def lines(kind: str) -> dict[str, list[str]]:
        log = server_log(proc)
        return {c: redis_lines(log, kind, c) for c in ("commands", "subscriber")}

    poll(lambda: all(len(n) == number for n in lines("unreachable").values()), 10, "outage lines")
    hold_outage(port, 3.0)
    redis.start()
    poll(lambda: health(port)[0] == 200, 15, "/healthz to say ok")
    refusals: list[dict[str, Any]] = []
    ws_url = f"ws://127.0.0.1:{port}/ws"
    poll(lambda: serves(ws_url, refusals), 15, lambda: f"it to serve: {refusals[-3:]}")
    down, back = lines("unreachable"), lines("connected again")
    for connection in ("commands", "subscriber"):
        assert (len(down[connection]), len(back[connection])) == (number, number), server_log(proc)
        attempts = int(re.findall(r"\((\d+) attempts\)", back[connection][-1])[0])
        assert attempts >= 3  # retried several times, logged once


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_redis_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    tmp_path: Path,
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    redis_port = free_port()
    redis = RedisServer(tmp_path, port=redis_port)
    args = ["--store", f"redis://127.0.0.1:{redis_port}/0"]
    with twistd_server(*args, cwd=str(tmp_path)) as (proc, port):
        try:
            outage(proc, port, redis, 1)  # Redis is not there at start
            redis.stop()
            outage(proc, port, redis, 2)  # Redis goes away while the server serves
        finally:
            redis.stop()
        log = server_log(proc)
        assert "Starting factory" not in log and "Stopping factory" not in log
        assert "Traceback" not in log


# 6. The README's two commands, each on a fresh clone.


def readme_commands() -> tuple[str, str]:
    """The run command and the test command of the README's "The two commands" section."""
    text = README.read_text()
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)\n```", section, re.S)
    assert len(blocks) == 2, blocks
    run, test = (block.strip() for block in blocks)
    assert "\n" not in run and "\n" not in test  # one command each
    return run, test


def fresh_clone(directory: Path) -> Path:
    """A ``git clone`` of this repository, with the working tree's uncommitted changes on top.

    In CI the working tree is a clean checkout, so this is exactly a fresh clone; while a
    change is being made it is the clone that committing the change would give (tracked and
    new files, deletions; nothing ignored, so no .venv, chat.db or ../shared).
    """
    clone = directory / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=60)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True, timeout=60,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source, target = ROOT / name, clone / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif not source.exists() and target.exists():
            target.unlink()
    return clone


def clean_environment() -> dict[str, str]:
    """The environment of a new shell: no virtualenv of ours on the PATH, no pytest state."""
    ours = str(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != ours]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "VIRTUAL_ENV", "PYTHON"))
    }
    env["PATH"] = os.pathsep.join(path)
    return env


def test_readme_has_two_one_line_commands() -> None:
    run, test = readme_commands()
    assert run.endswith("twistd -n chat")
    assert test == "scripts/test"
    ci = (ROOT / ".ci" / "run").read_text()
    calls = [line for line in ci.splitlines() if line and not line.startswith(("#", " "))]
    assert calls[-1] == test  # .ci/run ends by running exactly the README's test command


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_readme_run_command_works_on_a_fresh_clone(tmp_path: Path) -> None:
    run, _test = readme_commands()
    clone = fresh_clone(tmp_path)
    port = free_port()
    # The command as written, with only a free port added (8080 may be taken on this machine).
    command = f"{run} --listen tcp:{port}:interface=127.0.0.1"
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["bash", "-c", command], cwd=clone, env=clean_environment(),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        poll(
            lambda: proc.poll() is not None or health(port)[0] == 200,
            600,
            "the installed server to answer /healthz",
            every=0.5,
        )
        assert proc.poll() is None, log_path.read_text()[-3000:]
        assert health(port) == (200, {"status": "ok", "store": "sqlite:chat.db"})
        assert (clone / "chat.db").exists()
        os.killpg(proc.pid, signal.SIGTERM)
        # bash runs the last command of the list in its own process (exec), so this is twistd's
        # status; twistd re-raises SIGTERM after a clean shutdown.
        assert proc.wait(15) in (0, -signal.SIGTERM)
        poll(lambda: "Server Shut Down." in log_path.read_text(), 15, "twistd's last line")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert "Traceback" not in log_path.read_text()
    assert health(port)[0] == 0  # nothing listens any more


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_readme_test_command_works_on_a_fresh_clone(tmp_path: Path) -> None:
    _run, test = readme_commands()
    clone = fresh_clone(tmp_path)
    # The command as written, given one small test (the script passes its arguments to
    # pytest): the whole suite would run this test again, and take long.
    subset = "tests/test_plugin.py::test_help_documents_the_options"
    result = subprocess.run(
        ["bash", "-c", f"{test} {subset}"], cwd=clone, env=clean_environment(),
        capture_output=True, text=True, timeout=840,
    )  # fmt: skip
    output = "\n".join(
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "is ignored: it is neither a file nor a directory" not in line  # this machine's pip
    )
    assert result.returncode == 0, output[-5000:]
    assert "All checks passed!" in output  # ruff
    assert "Success: no issues found" in output  # mypy
    assert re.search(r"\b1 passed\b", output), output[-3000:]
    assert (clone / ".venv" / "bin" / "twistd").exists()
