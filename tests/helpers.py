"""Shared test helpers: waiting with timeouts, free ports, a server subprocess."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater

T = TypeVar("T")


def chat_service(store: Any, settings: Any = None, clock: Any = None) -> Any:
    """A ChatService over ``store`` with the in-process presence (for tests that build a
    server around a store of their own)."""
    from chat.service.chat import ChatService
    from chat.settings import Settings
    from chat.stores.presence import LocalPresence

    return ChatService(
        store, LocalPresence(), settings or Settings(store="memory"), clock or reactor
    )


WAIT = 10.0  # seconds any single awaited event may take before the test fails


def within(d: Deferred[T] | Coroutine[Any, Any, T], seconds: float = WAIT) -> Deferred[T]:
    """``d``, failing with TimeoutError after ``seconds``: every await in tests uses this."""
    return ensureDeferred(d).addTimeout(seconds, reactor)


async def until(condition: Callable[[], bool], seconds: float = WAIT, what: str = "") -> None:
    """Wait (yielding to the reactor) until ``condition()`` holds, or fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what or condition}")
        await deferLater(reactor, 0.005, lambda: None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def twistd_path() -> str:
    candidate = Path(sys.executable).parent / "twistd"
    return str(candidate) if candidate.exists() else (shutil.which("twistd") or "twistd")


def server_log(proc: subprocess.Popen[Any]) -> str:
    """Everything a server started by :func:`twistd_server` has logged so far."""
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


@contextmanager
def twistd_server(
    *args: str, timeout: float = 20, cwd: str | None = None, port: int | None = None
) -> Iterator[tuple[subprocess.Popen[Any], int]]:
    """Run ``twistd -n chat`` as users do, on ``port`` (a free one by default); yield
    (process, port).

    The server logs to a temporary file (a pipe nobody reads would fill up and block it);
    :func:`server_log` reads it.
    """
    port = port or free_port()
    command = [
        twistd_path(),
        "-n",
        "--pidfile=",
        "chat",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        *args,
    ]
    with tempfile.NamedTemporaryFile(prefix="twistd-", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd or tempfile.gettempdir(),  # where the default sqlite:chat.db is created
        )
    proc.log_path = log.name  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                output = server_log(proc)
                raise RuntimeError(f"twistd exited with {proc.returncode}: {output[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("twistd did not listen in time") from None
                time.sleep(0.05)  # polling a port that is not open yet; no event to wait on
        yield proc, port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(10)
        os.unlink(proc.log_path)  # type: ignore[attr-defined]
