"""Real ``redis-server`` processes for the tests, on free ports (never the one on 6379).

:func:`shared_redis_url` starts one server per test session, lazily (the contract suite's
backend factory calls it); :class:`RedisServer` runs a server a test owns, which it may stop
and start again on the same port and directory (``appendonly`` for the restart tests).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port

REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    """One redis-server on ``port`` keeping its files in ``directory``."""

    def __init__(self, directory: Path, appendonly: bool = False, port: int | None = None) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if REDIS_SERVER is None:
            pytest.skip("redis-server is not installed (.ci/run installs it)")
        command = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)  # polling a port that is not open yet; no event to wait on

    def stop(self, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill() if kill else proc.terminate()
            proc.wait(10)

    def cli(self, *args: str) -> str:
        """Run ``redis-cli`` against this server; its output."""
        cli = shutil.which("redis-cli") or "redis-cli"
        command = [cli, "-p", str(self.port), *args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout


_shared: RedisServer | None = None


def shared_redis_url() -> str:
    """The URL of the session's shared redis-server, started on first use."""
    global _shared
    if _shared is None:
        directory = Path(tempfile.mkdtemp(prefix="chat-redis-"))
        _shared = RedisServer(directory).start()

        def stop() -> None:
            if _shared is not None:
                _shared.stop()
            shutil.rmtree(directory, ignore_errors=True)

        atexit.register(stop)
    return _shared.url


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (appendonly), stopped afterwards."""
    server = RedisServer(tmp_path, appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()


def redis_available() -> bool:
    return REDIS_SERVER is not None or os.environ.get("CI") == "true"
