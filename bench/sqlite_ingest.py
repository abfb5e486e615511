"""SQLite ingest: acknowledged messages per second, ``--sync full`` vs ``--sync normal``.

Two measurements per sync mode, each on a fresh database file in a temporary folder:

- ``store``: :class:`chat.stores.sqlite.SqliteLogStore` alone, in this process: ``--inflight``
  appends outstanding at any time (a new one as each is acknowledged), for ``--seconds``.
  The ceiling of the store (group commit, writer thread, callbacks on the reactor).
- ``server``: ``twistd -n chat --store sqlite:... --sync ...`` as a subprocess, ``--clients``
  WebSocket clients of the project's library, each keeping ``--inflight`` ``message``
  requests outstanding; counts ``response`` frames (an acknowledgement means committed).
  The client side runs in this one Python process and may be the limit, so the same load is
  also run against ``--store memory`` for comparison; see docs/storage.md.

Usage: ``python bench/sqlite_ingest.py [--seconds 5] [--clients 8] [--inflight 32]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, task

from chat.client import ChatError, connect
from chat.stores.sqlite import SqliteLogStore

CONTENT = "x" * 100  # a typical short chat line


async def store_ingest(path: Path, sync: str, seconds: float, inflight: int) -> float:
    store = SqliteLogStore(path, sync=sync)
    acked = 0
    deadline = time.perf_counter() + seconds
    done: defer.Deferred[None] = defer.Deferred()
    running = inflight

    def one(_: Any = None) -> None:
        nonlocal acked, running
        if _ is not None:
            acked += 1
        if time.perf_counter() < deadline:
            d = store.append("#bench", {"kind": "message", "channel": "bench", "content": CONTENT})
            d.addCallback(one)
        else:
            running -= 1
            if running == 0:
                done.callback(None)

    started = time.perf_counter()
    for _ in range(inflight):
        one()
    await done
    elapsed = time.perf_counter() - started
    await store.close()
    return acked / elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def server_ingest(
    store: str, sync: str, seconds: float, clients: int, inflight: int
) -> float:
    port = free_port()
    twistd = str(Path(sys.executable).parent / "twistd")
    proc = subprocess.Popen(
        [
            twistd,
            "-n",
            "--pidfile=",
            "chat",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--store",
            store,
            "--sync",
            sync,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                await task.deferLater(reactor, 0.05, lambda: None)
        url = f"ws://127.0.0.1:{port}/ws"
        opened = []
        for i in range(clients):
            client = await connect(url)
            await client.login(f"bench{i}")
            await client.join("bench")
            opened.append(client)
        acked = 0
        deadline = time.perf_counter() + seconds

        async def sender(client: Any) -> None:
            nonlocal acked

            async def lane() -> None:
                nonlocal acked
                while time.perf_counter() < deadline:
                    try:
                        await client.send("bench", CONTENT)
                    except ChatError:
                        return
                    acked += 1

            await defer.gatherResults([defer.ensureDeferred(lane()) for _ in range(inflight)])

        started = time.perf_counter()
        await defer.gatherResults([defer.ensureDeferred(sender(c)) for c in opened])
        elapsed = time.perf_counter() - started
        for client in opened:
            await client.close()
        return acked / elapsed
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


async def main(reactor_: Any, options: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="sqlite-ingest-"))
    try:
        print(f"{'what':8} {'sync':7} {'acknowledged msg/s':>20}")
        for sync in ("normal", "full"):
            rate = await store_ingest(
                folder / f"store-{sync}.db",
                sync,
                options.seconds,
                options.inflight * options.clients,
            )
            print(f"{'store':8} {sync:7} {rate:20,.0f}", flush=True)
            rate = await server_ingest(
                f"sqlite:{folder / f'server-{sync}.db'}",
                sync,
                options.seconds,
                options.clients,
                options.inflight,
            )
            print(f"{'server':8} {sync:7} {rate:20,.0f}", flush=True)
        # The same load on --store memory: what the server and this client manage without disk.
        rate = await server_ingest(
            "memory", "full", options.seconds, options.clients, options.inflight
        )
        print(f"{'server':8} {'memory':7} {rate:20,.0f}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--inflight", type=int, default=32, help="requests outstanding per client")
    args = parser.parse_args()
    task.react(lambda r: defer.ensureDeferred(main(r, args)))
