"""Hostile WebSocket clients, and what they cost a running server (issue 12, findings 1, 2, 6).

Each attack starts its own ``twistd -n chat`` in a scratch directory (the default store,
``sqlite:chat.db``, unless said), samples the server's RSS before, at its peak and after, and
prints one JSON object::

    python bench/attacks/ws_attacks.py listings   # 10,000 channels, 3 x 63 `channels` streams
    python bench/attacks/ws_attacks.py history    # 1,000 items of 16 KiB on disk, 3 x 63 `history`
    python bench/attacks/ws_attacks.py churn      # join/leave as fast as allowed, 10 s
    python bench/attacks/ws_attacks.py items      # memory store: 8 x 10,000 items of 203 B

``--code DIR`` runs another checkout's ``chat/`` (e.g. ``git archive 84b5a6d chat
twistd_plugin | tar -x -C /tmp/old-chat``) to measure before and after on one machine. Every
stream is opened with ``credit: 1`` and never granted more: the client holds them open and reads
nothing more, the worst a client can do to a listing. Standard library only; 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MiB = 1 << 20
HERE = Path(__file__).resolve().parent
VENV = Path(os.environ.get("VENV", HERE.parent.parent / ".venv"))


class Ws:
    """A minimal RFC 6455 client: masked text frames out, frames in."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        )  # fmt: skip
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(4096)
        self.buf = head.split(b"\r\n\r\n", 1)[1]
        self.next_id = 1

    @staticmethod
    def frame(payload: bytes, opcode: int = 0x1) -> bytes:
        mask = os.urandom(4)
        n = len(payload)
        first = 0x80 | opcode
        if n < 126:
            header = struct.pack("!BB", first, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", first, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, n)
        key = (mask * (n // 4 + 1))[:n]  # XOR as one big integer: fast in pure Python
        masked = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
            n, "little"
        )
        return header + mask + masked

    def send_all(self, frames: list[dict[str, Any]]) -> None:
        self.sock.sendall(b"".join(self.frame(json.dumps(f).encode()) for f in frames))

    def recv(self) -> dict[str, Any]:
        while True:
            while len(self.buf) < 2:
                self.buf += self.sock.recv(65536)
            n, off = self.buf[1] & 0x7F, 2
            if n == 126:
                n, off = struct.unpack("!H", self.buf[2:4])[0], 4
            elif n == 127:
                n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
            while len(self.buf) < off + n:
                self.buf += self.sock.recv(65536)
            opcode = self.buf[0] & 0x0F
            payload, self.buf = self.buf[off : off + n], self.buf[off + n :]
            if opcode == 0x1:
                return json.loads(payload)  # type: ignore[no-any-return]
            if opcode == 0x9:  # answer pings, as every real client does
                self.sock.sendall(self.frame(payload, 0xA))
            if opcode == 0x8:
                raise ConnectionError(f"closed: {payload[:2].hex()} {payload[2:]!r}")

    def request(self, route: str, data: Any = None) -> dict[str, Any]:
        self.next_id += 1
        fid = self.next_id
        frame: dict[str, Any] = {"type": "request", "id": fid, "route": route}
        if data is not None:
            frame["data"] = data
        self.send_all([frame])
        while True:
            answer = self.recv()
            if answer.get("id") == fid and answer["type"] in ("response", "error"):
                return answer


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Server:
    def __init__(self, code: str | None, *options: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="attack-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = dict(os.environ)
        if code:
            env["PYTHONPATH"] = f"{code}:{code}/twistd_plugin"
        command = [str(VENV / "bin" / "twistd"), "-n", "--pidfile=", "chat",
                   "--listen", f"tcp:{self.port}:interface=127.0.0.1", *options]  # fmt: skip
        self.log = open(Path(self.dir) / "log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(command, cwd=self.dir, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError((Path(self.dir) / "log").read_text()[-2000:]) from None
                time.sleep(0.1)  # the port is not open yet
        time.sleep(1)  # start-up allocations settle before the "before" sample

    def rss(self) -> int:
        return rss(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()
        problems = [line for line in (Path(self.dir) / "log").read_text().splitlines()
                    if "Traceback" in line or "Error" in line or "error" in line]  # fmt: skip
        if problems:
            print("server log:", *problems[:20], sep="\n", file=sys.stderr)


def login(port: int, name: str) -> Ws:
    ws = Ws(port)
    answer = ws.request("login", {"username": name})
    assert answer["type"] == "response", answer
    return ws


def hold_streams(port: int, connections: int, frames: list[dict[str, Any]], who: str) -> list[Ws]:
    """``connections`` clients each opening ``frames`` (streams with credit 1), reading the
    first item of each, then nothing more."""
    clients = []
    for c in range(connections):
        ws = login(port, f"{who}{c}")
        ws.send_all(frames)
        for _ in frames:
            ws.recv()
        clients.append(ws)
    return clients


def attack_listings(code: str | None, options: list[str]) -> dict[str, Any]:
    server = Server(code, *options)
    try:
        setup = login(server.port, "setup")
        frames = []
        for n in range(10_000):
            channel = f"c{n:05d}"
            frames += [
                {"type": "request", "id": 2 * n + 10, "route": "channel.join",
                 "data": {"channel": channel}},
                {"type": "request", "id": 2 * n + 11, "route": "channel.leave",
                 "data": {"channel": channel}},
            ]  # fmt: skip
        for start in range(0, len(frames), 60):
            chunk = frames[start : start + 60]
            setup.send_all(chunk)
            for _ in chunk:
                setup.recv()
        before = server.rss()
        started = time.monotonic()
        streams = [{"type": "stream", "id": 100 + i, "route": "channels", "credit": 1}
                   for i in range(63)]  # fmt: skip
        clients = hold_streams(server.port, 3, streams, "lister")
        peak = server.rss()
        return {"attack": "listings", "channels": 10_000, "streams": 3 * 63,
                "seconds": round(time.monotonic() - started, 2),
                "rss_mb": {"before": round(before / MiB, 1), "holding": round(peak / MiB, 1)},
                "per_stream_kb": round((peak - before) / (3 * 63) / 1024, 1),
                "clients": len(clients)}  # fmt: skip
    finally:
        server.stop()


def attack_history(code: str | None, options: list[str]) -> dict[str, Any]:
    server = Server(code, *options)
    try:
        poster = login(server.port, "poster")
        poster.request("channel.join", {"channel": "big"})
        content = "\U0001f600" * 4096  # 4,096 characters, 16 KiB of UTF-8
        # 2,000 items: the older 1,000 are past the SQLite store's memory cache, read from disk
        for start in range(0, 2000, 50):
            poster.send_all(
                [{"type": "request", "id": 1000 + start + i, "route": "message",
                  "data": {"channel": "big", "content": content}} for i in range(50)]
            )  # fmt: skip
            for _ in range(50):
                poster.recv()
        before = server.rss()
        streams = [{"type": "stream", "id": 100 + i, "route": "history", "credit": 1,
                    "data": {"channel": "big", "limit": 1000, "before": 1002}}
                   for i in range(63)]  # fmt: skip
        clients = hold_streams(server.port, 3, streams, "reader")
        peak = server.rss()
        return {"attack": "history", "items": 1000, "from": "disk", "item_kib": 16,
                "streams": 3 * 63,
                "rss_mb": {"before": round(before / MiB, 1), "holding": round(peak / MiB, 1)},
                "per_stream_kb": round((peak - before) / (3 * 63) / 1024, 1),
                "clients": len(clients)}  # fmt: skip
    finally:
        server.stop()


def attack_churn(code: str | None, options: list[str]) -> dict[str, Any]:
    server = Server(code, "--message-rate", "100", *options)
    try:
        ws = login(server.port, "churner")
        before = server.rss()
        started = time.monotonic()
        answers: dict[str, int] = {}
        fid = 10
        while time.monotonic() - started < 10:
            frames = []
            for _ in range(30):
                for route in ("channel.join", "channel.leave"):
                    fid += 1
                    frames.append({"type": "request", "id": fid, "route": route,
                                   "data": {"channel": "churn"}})  # fmt: skip
            ws.send_all(frames)
            for _ in frames:
                answer = ws.recv()
                key = answer["type"] if answer["type"] == "response" else answer["error"]["code"]
                answers[key] = answers.get(key, 0) + 1
        seconds = time.monotonic() - started
        return {"attack": "churn", "seconds": round(seconds, 1), "answers": answers,
                "items_appended_per_s": round(answers.get("response", 0) / seconds),
                "rss_mb": {"before": round(before / MiB, 1),
                           "after": round(server.rss() / MiB, 1)}}  # fmt: skip
    finally:
        server.stop()


def attack_items(code: str | None, options: list[str]) -> dict[str, Any]:
    server = Server(code, "--store", "memory", "--message-rate", "0", *options)
    try:
        ws = login(server.port, "filler")
        channels = [f"m{n}" for n in range(8)]
        for channel in channels:
            ws.request("channel.join", {"channel": channel})
        before = server.rss()
        content = "x" * 130  # an item's JSON is then 203 bytes
        fid = 100
        for channel in channels:
            for _start in range(0, 10_000, 50):
                frames = []
                for _ in range(50):
                    fid += 1
                    frames.append({"type": "request", "id": fid, "route": "message",
                                   "data": {"channel": channel, "content": content}})  # fmt: skip
                ws.send_all(frames)
                for _ in frames:
                    ws.recv()
        after = server.rss()
        return {"attack": "items", "items": 80_000, "json_bytes": 203,
                "rss_mb": {"before": round(before / MiB, 1), "after": round(after / MiB, 1)},
                "bytes_per_item": round((after - before) / 80_000)}  # fmt: skip
    finally:
        server.stop()


ATTACKS = {
    "listings": attack_listings,
    "history": attack_history,
    "churn": attack_churn,
    "items": attack_items,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("attack", choices=sorted(ATTACKS))
    parser.add_argument("--code", help="a checkout whose chat/ the server runs")
    parser.add_argument("options", nargs="*", help="more twistd chat options (after --)")
    args = parser.parse_args()
    print(json.dumps(ATTACKS[args.attack](args.code, args.options)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
