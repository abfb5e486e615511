"""The processes the harness starts: servers (chat or a baseline), Redis; and their cleanup.

Every server is started fresh for one measurement, exactly as users start it, on 127.0.0.1
only, and stopped afterwards; :data:`CHILDREN` holds whatever is still running so that an
exit or a signal stops it (:func:`kill_children`). Every wait here has a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.params import LISTEN_BACKLOG

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

CHILDREN: set[subprocess.Popen[bytes]] = set()  # servers and load processes still running


def kill_children(signum: int = 0, frame: Any = None) -> None:
    """Stop every server and load process this harness started (on exit or a signal)."""
    for proc in list(CHILDREN):
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        CHILDREN.discard(proc)
    if signum:
        raise SystemExit(128 + signum)


def say(*parts: Any) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float, what: str) -> None:
    """Return once ``port`` accepts a connection; raise if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # polling a port that is not open yet: there is no event to wait on
    raise RuntimeError(f"{what} did not listen within {timeout}s")


class Redis:
    """A private ``redis-server``: free port, no RDB, no AOF, fresh for each run."""

    def __init__(self, log_dir: Path, label: str) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"{label}-redis.log"
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no"]
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        try:
            self.proc = subprocess.Popen(
                cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        except OSError:  # no redis-server installed
            self.log.close()
            raise
        CHILDREN.add(self.proc)
        try:
            wait_listening(self.proc, self.port, 10, f"redis-server (see {self.log_path})")
        except RuntimeError:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        CHILDREN.discard(self.proc)


def chat_command(
    port: int, store: str, retention: int | None, extra: list[str], backlog: int = LISTEN_BACKLOG
) -> list[str]:
    """``twistd -n chat`` as users run it, on 127.0.0.1, with the harness's listen backlog.

    The backlog goes into the endpoint string (``backlog=``, Twisted's own syntax), which any
    commit of the server accepts, so ``--chat-commit`` of an older tree listens the same way.

    ``--message-rate 0``: the per-connection message rate limit is off, as the baselines have
    none. One publisher connection of the fan-out scenario sends more than the default
    20,000 messages/s; refused messages would make the run measure the limit, not delivery.
    """
    cmd = [str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=", "chat"]
    cmd += ["--listen", f"tcp:{port}:interface=127.0.0.1:backlog={backlog}"]
    cmd += ["--store", store, "--message-rate", "0"]
    if retention is not None:
        cmd += ["--retention", str(retention)]
    return cmd + extra


class Server:
    """One server process, started fresh for one scenario run."""

    def __init__(
        self,
        target: str,
        log_dir: Path,
        label: str,
        retention: int | None,
        chat_args: list[str] | None = None,
        grace: float = 5.0,
        chat_env: dict[str, str] | None = None,
        store: str = "memory",
        backlog: int = LISTEN_BACKLOG,
    ) -> None:
        self.grace = grace
        self.target = target
        self.port = free_port()
        self.log_path = log_dir / f"{label}-{target}.log"
        if target == "chat":
            cmd = chat_command(self.port, store, retention, chat_args or [], backlog)
        else:
            cmd = [sys.executable, "-m", "bench.baselines", "--mode", target]
            cmd += ["--port", str(self.port), "--backlog", str(backlog)]
        self.cmd = cmd
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=chat_env if target == "chat" else None,
        )
        CHILDREN.add(self.proc)
        try:
            wait_listening(self.proc, self.port, 30.0, f"{target} (see {self.log_path})")
        except RuntimeError:
            self.stop()  # do not leave a half-started server running behind the next run
            raise

    def stop(self) -> float:
        """SIGTERM, then SIGKILL after the grace period; returns how long it took."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        CHILDREN.discard(self.proc)
        return time.monotonic() - t0

    def log_problems(self) -> list[str]:
        """Errors the server logged: each traceback as "message: exception", and warnings.

        Twisted logs a traceback as the event's line, then the traceback's lines indented
        with a tab; the last of them names the exception.
        """
        lines = self.log_path.read_text(errors="replace").splitlines()
        problems: list[str] = []
        seen: set[str] = set()
        for i, line in enumerate(lines):
            if line.strip() == "Traceback (most recent call last):":
                j = i + 1
                while j < len(lines) and lines[j].startswith(("\t", " ")):
                    j += 1
                body = [x.strip() for x in lines[i + 1 : j] if x.strip()]
                exception = body[-1] if body else "?"
                event = lines[i - 1].split("] ", 1)[-1] if i else ""
                problem = f"{event}: {exception}"
            elif any(m in line for m in ("#critical]", "#error]", "#warn]", "Unhandled")):
                problem = line.split("] ", 1)[-1]
                if lines[min(i + 1, len(lines) - 1)].strip().startswith("Traceback"):
                    continue  # reported with its traceback
            else:
                continue
            problem = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", problem)
            if problem not in seen:
                seen.add(problem)
                problems.append(problem[:300])
        return problems[:10]


def export_commit(rev: str, into: Path) -> tuple[str, dict[str, str]]:
    """Export the project at commit ``rev`` (``git archive``) and return (full hash, the
    environment that makes ``twistd chat`` run that code instead of the working tree)."""
    full = subprocess.run(
        ["git", "rev-parse", "--verify", rev + "^{commit}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    snap = into / f"chat-{full[:12]}"
    snap.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", full], cwd=ROOT, capture_output=True, timeout=60, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(snap)], input=archive, timeout=60, check=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(snap), str(snap / "twistd_plugin"), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    where = subprocess.run(
        [sys.executable, "-c", "import chat.plugin; print(chat.plugin.__file__)"],
        env=env,
        cwd=snap,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    if not where.startswith(str(snap)):
        raise RuntimeError(f"commit {full[:12]}: chat still imported from {where!r}")
    return full, env
