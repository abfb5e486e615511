"""The load process: drives one server over raw sockets and prints one JSON result.

Run by :mod:`bench.run` as ``python -m bench.load --scenario NAME --port PORT --server-pid PID
--params JSON``; it prints ``RESULT {...}`` on stdout, then waits for stdin to close (so the
harness can stop the server before thousands of sockets close at once).

Why this is cheap enough not to be the bottleneck:

- no reactor, no Autobahn: non-blocking sockets on one ``epoll`` per process, the WebSocket
  handshake written by hand (:mod:`bench.wsproto`);
- bulk subscribers never parse anything while measuring: they ``recv_into`` one shared buffer
  and count the marker ``"kind":"message"`` with ``bytearray.count`` (C speed). The marker
  occurs exactly once per delivered channel message, because inside a JSON string a quote is
  always escaped, so it cannot occur in ``content``; a marker split across two reads is
  counted from the 15 bytes kept from the previous read;
- bulk subscribers live in ``--workers`` separate processes; the coordinator process keeps the
  publisher(s) and a few *probe* subscribers, which parse every frame they get to check that
  items arrive in order without holes and to measure publish-to-deliver latency (the
  publish time is written into each message's ``content``).

Every loop is bounded by a deadline; setup waits raise :class:`Timeout` with a status line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import select
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from bench.procstat import (
    cpu_seconds,
    irq_seconds,
    own_cpu_seconds,
    raise_nofile,
    rss_kib,
    system_busy_seconds,
)
from bench.wsproto import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    FrameReader,
    check_handshake,
    handshake_request,
    masked_frame,
    new_key,
)

MSG_MARK = b'"kind":"message"'
RESP_MARK = b'"type":"response"'
ERR_MARK = b'"type":"error"'
EDGE = len(MSG_MARK) - 1  # bytes kept from the end of a read to catch a split MSG_MARK
KEEP = max(len(RESP_MARK), len(ERR_MARK)) - 1

BUF = bytearray(1 << 18)  # one receive buffer per process: the loop is single-threaded
BUFVIEW = memoryview(BUF)


def count_in_read(mark: bytes, tail: bytes, n: int) -> int:
    """Occurrences of ``mark`` ending in the ``n`` bytes just read into BUF.

    ``tail`` holds (at least) the last ``len(mark) - 1`` bytes before them, so a mark split
    across two reads is counted exactly once: in the read where it ends.
    """
    k = len(mark) - 1
    return BUF.count(mark, 0, n) + (tail[-k:] + bytes(BUFVIEW[: min(n, k)])).count(mark)


def next_tail(tail: bytes, n: int) -> bytes:
    return (tail + bytes(BUFVIEW[max(0, n - KEEP) : n]))[-KEEP:]


EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
TS_DIGITS = 19
ITEM_BYTES = 150  # target size of one stored item's JSON (with a 6-digit seq)
CONNECT_CONCURRENCY = 100  # connections connecting or handshaking at once


class Timeout(Exception):
    """A bounded wait ran out."""


class ServerError(Exception):
    """The server answered a setup request with an error, or closed a connection."""


def log(*parts: Any) -> None:
    print(f"[load {os.getpid()}]", *parts, file=sys.stderr, flush=True)


# --- the event loop -------------------------------------------------------------------


class Loop:
    """``epoll`` with one callable per file descriptor."""

    def __init__(self) -> None:
        self.ep = select.epoll()
        self.handlers: dict[int, Callable[[int], None]] = {}

    def add(self, fd: int, handler: Callable[[int], None], mask: int) -> None:
        self.handlers[fd] = handler
        self.ep.register(fd, mask)

    def modify(self, fd: int, mask: int) -> None:
        self.ep.modify(fd, mask)

    def remove(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            self.ep.unregister(fd)

    def poll(self, timeout: float) -> int:
        events = self.ep.poll(timeout)
        handlers = self.handlers
        for fd, ev in events:
            handler = handlers.get(fd)
            if handler is not None:
                handler(ev)
        return len(events)

    def run_until(self, done: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise Timeout(f"timed out after {timeout:.0f}s waiting for {what()}")
            self.poll(0.02)


class Tally:
    """Progress of a group of connections through their setup steps."""

    def __init__(self) -> None:
        self.opened = 0
        self.answered: dict[int, int] = {}
        self.closed = 0
        self.failures: list[str] = []

    def check(self) -> None:
        if self.failures:
            raise ServerError(f"{len(self.failures)} setup failures, first: {self.failures[0]}")


# --- one client connection -------------------------------------------------------------


class Conn:
    """One WebSocket client connection; its read handler changes with the phase."""

    __slots__ = (
        "answers",
        "closed",
        "count",
        "errors",
        "fd",
        "hbuf",
        "idx",
        "items",
        "keep_items",
        "key",
        "login_on_open",
        "loop",
        "name",
        "outbuf",
        "ping_partial",
        "pings",
        "reader",
        "sock",
        "state",
        "tail",
        "tally",
        "target",
    )

    def __init__(
        self, loop: Loop, target: tuple[str, int, str], name: str, tally: Tally, idx: int = 0
    ) -> None:
        self.loop = loop
        self.target = target
        self.name = name
        self.tally = tally
        self.idx = idx
        self.sock: socket.socket | None = None
        self.fd = -1
        self.state = "new"
        self.hbuf = b""
        self.outbuf = b""
        self.key = new_key()
        self.reader = FrameReader()
        self.answers: dict[int, Any] = {}
        self.items: list[Any] = []
        self.keep_items = False
        self.count = 0
        self.errors = 0
        self.tail = b""
        self.closed = False
        self.login_on_open = False
        self.ping_partial = b""
        self.pings = 0

    # connecting

    def start(self, rcvbuf: int | None = None) -> None:
        sock = self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.fd = sock.fileno()
        sock.connect_ex((self.target[0], self.target[1]))
        self.state = "connecting"
        self.loop.add(self.fd, self.on_event, EPOLLOUT)

    def on_event(self, ev: int) -> None:
        if ev & EPOLLOUT:
            self.on_writable()
        if ev & ~EPOLLOUT and not self.closed:
            self.on_readable()

    def on_writable(self) -> None:
        assert self.sock is not None
        if self.state == "connecting":
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(f"connect failed: {os.strerror(err)}")
                return
            self.state = "handshake"
            host, port, path = self.target
            self.outbuf = handshake_request(host, port, path, self.key)
        self.flush_out()

    def flush_out(self) -> None:
        assert self.sock is not None
        if self.outbuf:
            try:
                sent = self.sock.send(self.outbuf)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self.fail(f"send failed: {exc}")
                return
            self.outbuf = self.outbuf[sent:]
        if self.fd in self.loop.handlers:
            self.loop.modify(self.fd, EPOLLIN | (EPOLLOUT if self.outbuf else 0))

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        if self.outbuf:
            self.outbuf += data
            return
        assert self.sock is not None
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.fail(f"send failed: {exc}")
            return
        if sent < len(data):
            self.outbuf = data[sent:]
            if self.fd in self.loop.handlers:
                self.loop.modify(self.fd, EPOLLIN | EPOLLOUT)

    def request(self, fid: int, route: str, data: Any = None, kind: str = "request") -> None:
        frame: dict[str, Any] = {"type": kind, "id": fid, "route": route}
        if data is not None:
            frame["data"] = data
        self.send(masked_frame(json.dumps(frame, separators=(",", ":")).encode()))

    # reading during setup: parse everything

    def on_readable(self) -> None:
        assert self.sock is not None
        try:
            n = self.sock.recv_into(BUF)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(f"recv failed: {exc}")
            return
        if n == 0:
            self.fail("the server closed the connection")
            return
        data = bytes(BUFVIEW[:n])
        if self.state == "handshake":
            self.hbuf += data
            end = self.hbuf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.hbuf) > 16384:
                    self.fail("handshake response too long")
                return
            try:
                check_handshake(self.hbuf[:end], self.key)
            except Exception as exc:
                self.fail(str(exc))
                return
            data = self.hbuf[end + 4 :]
            self.hbuf = b""
            if self.login_on_open:  # at once: the server may close idle unauthenticated ones
                self.request(1, "login", {"username": self.name})
            self.state = "open"
            self.tally.opened += 1
        if data:
            self.frames(self.reader.feed(data))

    def frames(self, frames: list[tuple[int, bytes]]) -> None:
        for opcode, payload in frames:
            if opcode == OP_CLOSE:
                self.fail(f"server sent close {payload[:2].hex()} {payload[2:80]!r}")
                return
            if opcode == OP_PING:
                self.send(masked_frame(payload, OP_PONG))
                continue
            if opcode != 1:
                continue
            frame = json.loads(payload)
            kind = frame.get("type")
            if kind in ("response", "error", "complete"):
                fid = frame.get("id")
                self.answers[fid] = frame
                self.tally.answered[fid] = self.tally.answered.get(fid, 0) + 1
                if kind == "error":
                    self.tally.failures.append(f"{self.name}: {frame.get('error')}")
            elif kind == "next" and self.keep_items:
                self.items.append(frame)

    def fail(self, why: str) -> None:
        if not self.closed:
            self.closed = True
            self.tally.closed += 1
            if self.state != "counting":
                self.tally.failures.append(f"{self.name}: {why}")
            self.loop.remove(self.fd)
            if self.sock is not None:
                self.sock.close()

    def answer(self, fid: int) -> Any:
        frame = self.answers.get(fid)
        if frame is None or frame.get("type") == "error":
            raise ServerError(f"{self.name}: no answer to request {fid}: {frame}")
        return frame.get("data")

    # measuring: count markers without parsing

    def answer_pings(self, n: int, prev: bytes) -> None:
        """Answer the server's pings found in the ``n`` bytes just read into BUF.

        Counting handlers do not walk frame headers, so a ping is recognised as the byte 0x89
        right after a ``}`` (every JSON frame ends with one; inside JSON text and in our
        frames' length fields 0x89 never follows ``}``), with a length under 126, followed by
        another frame header or the end of the read. ``prev`` holds the bytes read before.
        Called only when BUF holds a 0x89 or a ping was split across reads: rare.
        """
        start = 0
        if self.ping_partial:
            part = self.ping_partial + bytes(BUFVIEW[: min(n, 130)])
            self.ping_partial = b""
            if len(part) < 2 or len(part) < 2 + part[1]:
                self.ping_partial = part if len(part) < 130 else b""
                return
            length = part[1]
            if length <= 125:
                self.pong(part[2 : 2 + length])
                start = max(0, 2 + length - (len(part) - min(n, 130)))
        j = BUF.find(b"\x89", start, n)
        while j >= 0:
            before = BUF[j - 1] if j > 0 else (prev[-1] if prev else 0x7D)
            if before == 0x7D:
                if j + 2 > n:
                    self.ping_partial = bytes(BUFVIEW[j:n])
                    return
                length = BUF[j + 1]
                after = j + 2 + length
                if length <= 125:
                    if after > n:
                        self.ping_partial = bytes(BUFVIEW[j:n])
                        return
                    if after == n or BUF[after] in (0x81, 0x88, 0x89, 0x8A):
                        self.pong(bytes(BUFVIEW[j + 2 : after]))
                        j = BUF.find(b"\x89", after, n)
                        continue
            j = BUF.find(b"\x89", j + 1, n)

    def pong(self, payload: bytes) -> None:
        self.pings += 1
        self.send(masked_frame(payload, OP_PONG))

    def ack_handler(self, on_acks: Callable[[int, int], None]) -> Callable[[int], None]:
        """A read handler for publishers: counts responses and errors, answers pings.

        ``on_acks(responses, errors)`` is called after every read that found any.
        """
        sock = self.sock
        assert sock is not None
        self.state = "counting"
        self.tail = b""
        leftover = bytes(self.reader.buf)
        self.reader.buf.clear()
        early = leftover.count(RESP_MARK), leftover.count(ERR_MARK)

        def handler(ev: int) -> None:
            if ev & EPOLLOUT:
                self.flush_out()
            try:
                n = sock.recv_into(BUF)
            except BlockingIOError:
                return
            except OSError:
                n = 0
            if n == 0:
                self.fail("publisher closed by the server")
                return
            tail = self.tail
            got = count_in_read(RESP_MARK, tail, n)
            bad = count_in_read(ERR_MARK, tail, n)
            if self.ping_partial or BUF.find(b"\x89", 0, n) >= 0:
                self.answer_pings(n, tail)
            self.tail = next_tail(tail, n)
            if got or bad:
                on_acks(got, bad)

        if early[0] or early[1]:
            on_acks(*early)
        return handler

    def count_with(self, counts: list[int]) -> Callable[[int], None]:
        """A read handler counting delivered channel messages into ``counts[self.idx]``."""
        sock = self.sock
        assert sock is not None
        idx = self.idx
        self.state = "counting"
        self.tail = b""
        # Anything the setup reader still holds is counted now.
        counts[idx] += bytes(self.reader.buf).count(MSG_MARK)
        self.reader.buf.clear()

        def handler(ev: int) -> None:
            if ev & EPOLLOUT:
                self.flush_out()
            try:
                n = sock.recv_into(BUF)
            except BlockingIOError:
                return
            except OSError:
                n = 0
            if n == 0:
                self.fail("closed while counting")
                return
            if self.ping_partial or BUF.find(b"\x89", 0, n) >= 0:
                self.answer_pings(n, self.tail)
            if n < 64:
                chunk = self.tail + bytes(BUFVIEW[:n])
                counts[idx] += chunk.count(MSG_MARK)
                self.tail = chunk[-EDGE:]
            else:
                counts[idx] += BUF.count(MSG_MARK, 0, n) + (
                    self.tail + bytes(BUFVIEW[:EDGE])
                ).count(MSG_MARK)
                self.tail = bytes(BUFVIEW[n - EDGE : n])

        return handler


def open_all(
    loop: Loop,
    conns: list[Conn],
    tally: Tally,
    timeout: float,
    rcvbuf: int | None = None,
    concurrency: int = CONNECT_CONCURRENCY,
    login: bool = True,
) -> None:
    """Connect and handshake every connection, at most ``concurrency`` at a time.

    With ``login``, each sends its ``login`` request (id 1) as soon as it is open, and this
    returns once every one is answered.
    """
    for c in conns:
        c.login_on_open = login
    logged_in = tally.answered.get(1, 0)
    waiting = deque(conns)
    base = tally.opened
    deadline = time.monotonic() + timeout
    while tally.opened - base < len(conns):
        tally.check()
        in_flight = len(conns) - len(waiting) - (tally.opened - base)
        while waiting and in_flight < concurrency:
            waiting.popleft().start(rcvbuf)
            in_flight += 1
        if time.monotonic() > deadline:
            raise Timeout(f"opening: {tally.opened - base}/{len(conns)} open after {timeout}s")
        loop.poll(0.02)
    tally.check()
    while login and tally.answered.get(1, 0) - logged_in < len(conns):
        tally.check()
        if time.monotonic() > deadline:
            raise Timeout(
                f"logins: {tally.answered.get(1, 0) - logged_in}/{len(conns)} "
                f"answered after {timeout}s"
            )
        loop.poll(0.02)
    tally.check()


def ask_all(
    loop: Loop,
    conns: list[Conn],
    tally: Tally,
    fid: int,
    build: Callable[[Conn], None],
    timeout: float,
    batch: int = 500,
) -> None:
    """Send one request per connection (``build`` sends it) and wait for all the answers.

    Requests go out in batches of ``batch`` so thousands of answers are not all in flight.
    """
    base = tally.answered.get(fid, 0)
    deadline = time.monotonic() + timeout
    sent = 0
    while True:
        tally.check()
        done = tally.answered.get(fid, 0) - base
        if done >= len(conns):
            return
        while sent < len(conns) and sent - done < batch:
            build(conns[sent])
            sent += 1
        if time.monotonic() > deadline:
            raise Timeout(f"answers to id {fid}: {done}/{len(conns)} after {timeout}s")
        loop.poll(0.02)


# --- payloads -------------------------------------------------------------------------


def content_length(channel: str, sender: str) -> int:
    """Length of ``content`` that makes a stored item about ITEM_BYTES bytes long."""
    skeleton = json.dumps(
        {
            "kind": "message",
            "channel": channel,
            "from": sender,
            "content": "",
            "seq": 100000,
            "ts": 1763780000000,
        },
        separators=(",", ":"),
    )
    return max(TS_DIGITS + 2, ITEM_BYTES - len(skeleton))


def timed_content(length: int) -> bytes:
    """``T`` + the send time (monotonic ns, fixed width) + filler: ``length`` bytes."""
    return b"T%019d " % time.monotonic_ns() + b"x" * (length - TS_DIGITS - 2)


def message_request(fid: int, channel: str, content: bytes) -> bytes:
    return masked_frame(
        b'{"type":"request","id":%d,"route":"message","data":{"channel":"%s","content":"%s"}}'
        % (fid, channel.encode(), content)
    )


def fanout_window(p: dict[str, Any], n_subs: int) -> int:
    """Messages the publisher may be ahead of the slowest subscriber.

    ``"auto"`` keeps about ``in_flight`` deliveries under way whatever the subscriber count
    (between 16 and 1000 messages, well under the chat server's retention of 10,000), so
    the server always has work queued while no server buffers more than that.
    """
    if p["window"] != "auto":
        return int(p["window"])
    return max(16, min(1000, int(p["in_flight"]) // max(1, n_subs)))


# --- worker processes (bulk subscribers, ingest publishers, idle connections) ------------


class Worker:
    """One worker process: obeys commands from the coordinator over a pipe."""

    def __init__(self, wid: int, pipe: Connection, shared: Any, target: tuple[str, int, str]):
        self.wid = wid
        self.pipe = pipe
        self.shared = shared  # RawArray: [min count, total count] per worker
        self.target = target
        self.loop = Loop()
        self.tally = Tally()
        self.conns: list[Conn] = []
        self.counts: list[int] = []
        self.counting = False
        self.exit = False
        self.cpu0 = 0.0
        self.wall0 = 0.0
        self.loop.add(pipe.fileno(), self.on_command, EPOLLIN)

    def run(self) -> None:
        last_share = 0.0
        while not self.exit:
            self.loop.poll(0.001 if self.counting else 0.05)
            if self.counting:
                now = time.monotonic()
                if now - last_share >= 0.001:
                    last_share = now
                    counts = self.counts
                    self.shared[2 * self.wid] = min(counts) if counts else 1 << 62
                    self.shared[2 * self.wid + 1] = sum(counts)

    def on_command(self, ev: int) -> None:
        try:
            name, args = self.pipe.recv()
        except EOFError:
            self.exit = True
            return
        try:
            reply = getattr(self, "cmd_" + name)(**args)
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        if reply is not None:
            self.pipe.send(reply)

    def cmd_subscribers(self, names: list[str], channel: str, timeout: float) -> dict[str, Any]:
        """Connect, log in and join ``channel``: no feed yet, so no join storm."""
        t0 = time.monotonic()
        self.conns = [
            Conn(self.loop, self.target, name, self.tally, i) for i, name in enumerate(names)
        ]
        self.counts = [0] * len(self.conns)
        open_all(self.loop, self.conns, self.tally, timeout)
        ask_all(
            self.loop,
            self.conns,
            self.tally,
            3,
            lambda c: c.request(3, "channel.join", {"channel": channel}),
            timeout,
        )
        seqs = [c.answer(3)["seq"] for c in self.conns]
        return {"max_seq": max(seqs, default=0), "setup_s": time.monotonic() - t0}

    def cmd_feeds(self, channel: str, since: int, epoch: str, timeout: float) -> dict[str, Any]:
        """Open ``messages`` from ``since`` + 1, then a round trip to know it is open."""
        data = {"since": {channel: since}, "epoch": epoch}

        def build(c: Conn) -> None:
            c.request(2, "messages", data, kind="stream")
            c.request(4, "channel.join", {"channel": channel})

        ask_all(self.loop, self.conns, self.tally, 4, build, timeout)
        return {}

    def cmd_count(self) -> dict[str, Any]:
        for c in self.conns:
            if not c.closed:
                self.loop.handlers[c.fd] = c.count_with(self.counts)
        self.counting = True
        self.shared[2 * self.wid] = min(self.counts) if self.counts else 1 << 62
        self.shared[2 * self.wid + 1] = sum(self.counts)
        self.cpu0 = own_cpu_seconds()
        self.wall0 = time.monotonic()
        return {}

    def cmd_report(self) -> dict[str, Any]:
        counts = self.counts
        return {
            "cpu_s": own_cpu_seconds() - self.cpu0,
            "wall_s": time.monotonic() - self.wall0,
            "min": min(counts, default=0),
            "max": max(counts, default=0),
            "total": sum(counts),
            "closed": self.tally.closed,
            "connections": len(self.conns),
        }

    def cmd_publishers(
        self, names: list[str], channel: str, window: int, timeout: float
    ) -> dict[str, Any]:
        """Ingest: connect publishers, log in, join; pre-build a ring of masked requests."""
        self.conns = [
            Conn(self.loop, self.target, name, self.tally, i) for i, name in enumerate(names)
        ]
        open_all(self.loop, self.conns, self.tally, timeout)
        ask_all(
            self.loop,
            self.conns,
            self.tally,
            3,
            lambda c: c.request(3, "channel.join", {"channel": channel}),
            timeout,
        )
        self.ingest_window = window
        self.ingest_channel = channel
        return {}

    def cmd_ingest(self, duration: float, drain_timeout: float) -> dict[str, Any]:
        acks, errors, cpu, wall, late = run_ingest(
            self.loop,
            self.conns,
            self.ingest_channel,
            self.ingest_window,
            duration,
            drain_timeout,
        )
        return {
            "acks": acks,
            "errors": errors,
            "cpu_s": cpu,
            "wall_s": wall,
            "late_acks": late,
            "closed": self.tally.closed,
        }

    def cmd_idle(self, names: list[str], timeout: float) -> dict[str, Any]:
        """Idle: connect, log in, open ``messages``, round trip (``channels`` completes)."""
        t0 = time.monotonic()
        conns = [Conn(self.loop, self.target, name, self.tally, i) for i, name in enumerate(names)]
        self.conns.extend(conns)
        open_all(self.loop, conns, self.tally, timeout)

        def build(c: Conn) -> None:
            c.request(2, "messages", kind="stream")
            c.request(3, "channels", kind="stream")

        ask_all(self.loop, conns, self.tally, 3, build, timeout)
        return {"setup_s": time.monotonic() - t0, "closed": self.tally.closed}

    def cmd_status(self) -> dict[str, Any]:
        return {"closed": self.tally.closed, "connections": len(self.conns)}

    def cmd_exit(self) -> None:
        self.exit = True
        self.pipe.send({})


def worker_main(wid: int, pipe: Connection, shared: Any, target: tuple[str, int, str]) -> None:
    raise_nofile()
    try:
        Worker(wid, pipe, shared, target).run()
    except Exception:
        traceback.print_exc()
    os._exit(0)  # skip closing thousands of sockets one by one with the server still up


def run_ingest(
    loop: Loop,
    conns: list[Conn],
    channel: str,
    window: int,
    duration: float,
    drain_timeout: float,
) -> tuple[int, int, float, float, int]:
    """Each connection keeps ``window`` message requests in flight for ``duration`` seconds.

    Returns (acks within the duration, error answers, own CPU s, wall s, acks after it).
    Requests are pre-built and masked once (a ring of 4 * window ids, reused only long after
    their answer came: the server answers a connection's requests in order).
    """
    length = content_length(channel, conns[0].name if conns else "p")
    content = b"y" * length
    ring_size = 4 * window
    rings = []
    for _c in conns:
        rings.append([message_request(10 + k, channel, content) for k in range(ring_size)])
    acks = [0] * len(conns)
    errors = [0] * len(conns)
    position = [0] * len(conns)
    sending = [True]

    def sender(i: int, c: Conn, n: int) -> None:
        ring = rings[i]
        p = position[i]
        if p + n <= ring_size:
            data = b"".join(ring[p : p + n])
        else:
            data = b"".join(ring[p:] + ring[: p + n - ring_size])
        position[i] = (p + n) % ring_size
        c.send(data)

    def make_handler(i: int, c: Conn) -> Callable[[int], None]:
        def on_acks(got: int, bad: int) -> None:
            acks[i] += got
            errors[i] += bad
            if sending[0]:
                sender(i, c, got + bad)  # an error ends its request too

        return c.ack_handler(on_acks)

    for i, c in enumerate(conns):
        loop.handlers[c.fd] = make_handler(i, c)
    cpu0 = own_cpu_seconds()
    t0 = time.monotonic()
    for i, c in enumerate(conns):
        sender(i, c, window)
    end = t0 + duration
    while time.monotonic() < end:
        loop.poll(0.005)
    in_time = sum(acks)
    wall = time.monotonic() - t0
    cpu = own_cpu_seconds() - cpu0
    sending[0] = False
    expected = in_time + window * len([c for c in conns if not c.closed])
    deadline = time.monotonic() + drain_timeout
    while sum(acks) < expected and time.monotonic() < deadline:
        loop.poll(0.01)
    return in_time, sum(errors), cpu, wall, sum(acks) - in_time


# --- the coordinator ------------------------------------------------------------------


class Coordinator:
    """Publisher(s), probes and the workers of one scenario run."""

    def __init__(self, args: argparse.Namespace, params: dict[str, Any]) -> None:
        self.args = args
        self.params = params
        self.target = (args.host, args.port, args.path)
        self.server_pid: int = args.server_pid
        self.loop = Loop()
        self.tally = Tally()
        self.workers: list[tuple[multiprocessing.Process, Connection]] = []
        self.shared: Any = None

    # workers

    def start_workers(self, n: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self.shared = ctx.RawArray("q", 2 * max(n, 1))
        for wid in range(n):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main, args=(wid, theirs, self.shared, self.target), daemon=True
            )
            proc.start()
            theirs.close()
            self.workers.append((proc, mine))

    def tell(self, wid: int, name: str, **args: Any) -> None:
        self.workers[wid][1].send((name, args))

    def hear(self, wid: int, timeout: float) -> dict[str, Any]:
        pipe = self.workers[wid][1]
        deadline = time.monotonic() + timeout
        while not pipe.poll(0.02):
            self.loop.poll(0)  # keep our own sockets serviced meanwhile
            if time.monotonic() > deadline:
                raise Timeout(f"worker {wid} did not answer within {timeout:.0f}s")
            if not self.workers[wid][0].is_alive():
                raise RuntimeError(f"worker {wid} died")
        reply: dict[str, Any] = pipe.recv()
        if "error" in reply:
            raise RuntimeError(f"worker {wid}: {reply['error']}\n{reply.get('trace', '')}")
        return reply

    def all_workers(
        self,
        name: str,
        wait_s: float,
        /,
        per_worker: list[dict[str, Any]] | None = None,
        **args: Any,
    ) -> list[dict[str, Any]]:
        """Send command ``name`` to every worker; wait up to ``wait_s`` for each reply."""
        for wid in range(len(self.workers)):
            self.tell(wid, name, **(per_worker[wid] if per_worker else {}), **args)
        return [self.hear(wid, wait_s) for wid in range(len(self.workers))]

    def stop_workers(self) -> None:
        for _proc, pipe in self.workers:
            with contextlib.suppress(OSError):
                pipe.send(("exit", {}))
        for proc, _pipe in self.workers:
            proc.join(5)
            if proc.is_alive():
                proc.kill()

    def split(self, names: list[str]) -> list[list[str]]:
        k = len(self.workers)
        return [names[i::k] for i in range(k)]

    # helpers

    def connect(self, names: list[str], timeout: float, rcvbuf: int | None = None) -> list[Conn]:
        conns = [Conn(self.loop, self.target, n, self.tally, i) for i, n in enumerate(names)]
        open_all(self.loop, conns, self.tally, timeout, rcvbuf)
        return conns

    def server_cpu(self) -> float:
        return cpu_seconds(self.server_pid)

    def snapshot(self) -> dict[str, Any]:
        """CPU seconds used so far by the server, this process, the workers, the machine."""
        workers = []
        for proc, _pipe in self.workers:
            try:
                workers.append(cpu_seconds(proc.pid or 0))
            except OSError:
                workers.append(0.0)
        return {
            "t": time.monotonic(),
            "server": self.server_cpu(),
            "coordinator": own_cpu_seconds(),
            "workers": workers,
            "machine": system_busy_seconds(),
            "irq": irq_seconds(),
        }

    @staticmethod
    def cpu_between(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        """CPU use between two snapshots, in percent of one core.

        ``others_pct`` is what the rest of the machine used meanwhile (other people's
        processes): a busy machine makes every figure of that run lower.
        """
        wall = b["t"] - a["t"]
        if wall <= 0:
            return {}

        def pct(x: float) -> float:
            return round(100 * x / wall, 1)

        server = b["server"] - a["server"]
        coord = b["coordinator"] - a["coordinator"]
        workers = [y - x for x, y in zip(a["workers"], b["workers"], strict=True)]
        machine = b["machine"] - a["machine"]
        return {
            "wall_s": round(wall, 3),
            "server_pct": pct(server),
            "load_coordinator_pct": pct(coord),
            "load_workers_pct": [pct(w) for w in workers],
            "others_pct": pct(max(0.0, machine - server - coord - sum(workers))),
            "softirq_pct": pct(b["irq"] - a["irq"]),
        }

    def rss(self) -> int:
        return rss_kib(self.server_pid)

    # --- fan-out and latency --------------------------------------------------------

    def fanout_setup(self, n_subs: int, channel: str) -> tuple[Conn, list[Conn], dict[str, Any]]:
        p = self.params
        timeout = p["setup_timeout"]
        n_probes = min(p["probes"], n_subs)
        n_bulk = n_subs - n_probes
        t0 = time.monotonic()
        (publisher,) = self.connect(["p000000"], timeout)
        epoch = publisher.answer(1)["epoch"]
        ask_all(
            self.loop,
            [publisher],
            self.tally,
            3,
            lambda c: c.request(3, "channel.join", {"channel": channel}),
            timeout,
        )
        names = [f"s{i:06d}" for i in range(n_subs)]
        probe_names = names[:: max(1, n_subs // n_probes)][:n_probes] if n_probes else []
        probe_set = set(probe_names)
        bulk_names = [name for name in names if name not in probe_set]
        assert len(bulk_names) == n_bulk
        parts = self.split(bulk_names)
        for wid in range(len(self.workers)):
            self.tell(wid, "subscribers", names=parts[wid], channel=channel, timeout=timeout)
        probes = self.connect(probe_names, timeout)
        ask_all(
            self.loop,
            probes,
            self.tally,
            3,
            lambda c: c.request(3, "channel.join", {"channel": channel}),
            timeout,
        )
        seqs = [c.answer(3)["seq"] for c in probes] + [publisher.answer(3)["seq"]]
        for wid in range(len(self.workers)):
            seqs.append(self.hear(wid, timeout * 3)["max_seq"])
        since = max(seqs)
        joined_s = time.monotonic() - t0
        data = {"since": {channel: since}, "epoch": epoch}

        def open_feed(c: Conn) -> None:
            c.request(2, "messages", data, kind="stream")
            c.request(4, "channel.join", {"channel": channel})

        # Half the probes open their feed first, half last: they sample both ends of the
        # order in which the server serves its subscribers.
        half = len(probes) // 2 + len(probes) % 2
        ask_all(self.loop, probes[:half], self.tally, 4, open_feed, timeout)
        self.all_workers(
            "feeds", timeout * 3, channel=channel, since=since, epoch=epoch, timeout=timeout
        )
        ask_all(self.loop, probes[half:], self.tally, 4, open_feed, timeout)
        info = {
            "subscribers": n_subs,
            "probes": len(probes),
            "since_seq": since,
            "join_s": round(joined_s, 2),
            "setup_s": round(time.monotonic() - t0, 2),
        }
        return publisher, probes, info

    def probe_handlers(self, probes: list[Conn], counts: list[int], state: dict[str, Any]) -> None:
        """Probes parse every frame: seq order, holes, gaps and latency samples."""
        latencies: list[tuple[int, int]] = state.setdefault("latencies", [])
        problems: list[str] = state.setdefault("problems", [])
        for k, c in enumerate(probes):
            c.idx = k
            sock = c.sock
            assert sock is not None
            reader = c.reader
            c.state = "counting"
            last = [state["since"]]

            def handler(
                ev: int,
                c: Conn = c,
                sock: socket.socket = sock,
                reader: FrameReader = reader,
                last: list[int] = last,
            ) -> None:
                try:
                    n = sock.recv_into(BUF)
                except BlockingIOError:
                    return
                except OSError:
                    n = 0
                if n == 0:
                    c.fail("probe closed")
                    problems.append(f"{c.name}: connection closed")
                    return
                now = time.monotonic_ns()
                got = 0
                for opcode, payload in reader.feed(BUFVIEW[:n]):
                    if opcode != 1:
                        continue
                    if MSG_MARK in payload:
                        i = payload.index(b'"seq":') + 6
                        seq = int(payload[i : payload.index(b",", i)])
                        if seq != last[0] + 1 and len(problems) < 20:
                            problems.append(f"{c.name}: seq {seq} after {last[0]}")
                        last[0] = seq
                        j = payload.index(b'"content":"T') + 12
                        latencies.append((int(payload[j : j + TS_DIGITS]), now))
                        got += 1
                    elif b'"kind":"gap"' in payload and len(problems) < 20:
                        problems.append(f"{c.name}: gap {payload[:200]!r}")
                counts[c.idx] += got

            self.loop.handlers[c.fd] = handler

    def current_min(self, counts: list[int]) -> int:
        low = min(counts) if counts else 1 << 62
        shared = self.shared
        for wid in range(len(self.workers)):
            low = min(low, shared[2 * wid])
        return low

    def delivered_total(self, counts: list[int]) -> int:
        shared = self.shared
        return sum(counts) + sum(shared[2 * wid + 1] for wid in range(len(self.workers)))

    def publish_run(
        self,
        publisher: Conn,
        probes: list[Conn],
        channel: str,
        n_subs: int,
        since: int,
        rate: float | None,
    ) -> dict[str, Any]:
        """Publish for the configured duration: closed loop (window) or at a fixed rate."""
        p = self.params
        duration = p["duration"]
        warmup = p["warmup"]
        window = fanout_window(p, n_subs)
        max_lag = p["max_lag"]
        counts: list[int] = [0] * len(probes)
        state: dict[str, Any] = {"since": since}
        self.probe_handlers(probes, counts, state)
        acks = [0]

        def on_acks(got: int, bad: int) -> None:
            acks[0] += got
            publisher.errors += bad

        self.loop.handlers[publisher.fd] = publisher.ack_handler(on_acks)
        self.all_workers("count", 30)
        clen = content_length(channel, publisher.name)
        next_id = 10
        published = 0
        max_msgs = p["max_messages"]
        fell_behind = None
        max_seen_lag = 0
        snap0 = self.snapshot()
        t0 = snap0["t"]
        end = t0 + duration
        steady: dict[str, Any] = {}
        while True:
            now = time.monotonic()
            if now >= end or published >= max_msgs:
                break
            if "t" not in steady and now - t0 >= warmup:
                steady.update(snap=self.snapshot(), delivered=self.delivered_total(counts))
                steady["t"] = steady["snap"]["t"]
            low = self.current_min(counts)
            lag = published - low
            max_seen_lag = max(max_seen_lag, lag)
            if rate is None:
                want = window - lag
            else:
                if lag > max_lag:
                    fell_behind = f"subscribers {lag} messages behind at {now - t0:.1f}s"
                    break
                want = min(int((now - t0) * rate) - published, 1000)
            if want > 0:
                want = min(want, max_msgs - published)
                frames = []
                for _ in range(want):
                    frames.append(message_request(next_id, channel, timed_content(clen)))
                    next_id += 1
                publisher.send(b"".join(frames))
                published += want
            self.loop.poll(0.001)
        delivered_end = self.delivered_total(counts)
        snap_end = self.snapshot()
        t_end = snap_end["t"]
        cpu = self.cpu_between(steady.get("snap", snap0), snap_end)
        # drain: wait until every subscriber has every published message
        deadline = t_end + p["drain_timeout"]
        while self.current_min(counts) < published and time.monotonic() < deadline:
            self.loop.poll(0.005)
        t_drained = time.monotonic()
        reports = self.all_workers("report", 30)
        lows = [r["min"] for r in reports] + ([min(counts)] if counts else [])
        highs = [r["max"] for r in reports] + ([max(counts)] if counts else [])
        total = sum(r["total"] for r in reports) + sum(counts)
        closed = sum(r["closed"] for r in reports) + self.tally.closed
        t_steady = steady.get("t", t0)
        d_steady = t_end - t_steady
        result: dict[str, Any] = {
            "published": published,
            "acked": acks[0],
            "publisher_errors": publisher.errors,
            "delivered": total,
            "expected": published * n_subs,
            "complete": total == published * n_subs and min(lows, default=0) == published,
            "min_per_subscriber": min(lows, default=0),
            "max_per_subscriber": max(highs, default=0),
            "connections_closed": closed,
            "duration_s": round(t_end - t0, 3),
            "drain_s": round(t_drained - t_end, 3),
            # the figure reported: every delivery, from the first publish to the last
            # delivery of the drain (window fill and drain cancel out, see docs)
            "deliveries_per_s": round(total / (t_drained - t0)),
            # after the warm-up, until publishing stopped (bursty when the window is big)
            "deliveries_per_s_steady": round(
                (delivered_end - steady.get("delivered", 0)) / d_steady if d_steady > 0 else 0
            ),
            "publishes_per_s": round(published / (t_end - t0), 1),
            "server_cpu_pct": cpu.get("server_pct"),
            "load_cpu_pct": {
                "coordinator": cpu.get("load_coordinator_pct"),
                "workers": cpu.get("load_workers_pct"),
            },
            "others_cpu_pct": cpu.get("others_pct"),
            "softirq_cpu_pct": cpu.get("softirq_pct"),
            "max_lag_messages": max_seen_lag,
            "probe_problems": state["problems"][:20],
        }
        if fell_behind:
            result["fell_behind"] = fell_behind
        if rate is not None:
            t_warm = int((t0 + warmup) * 1e9)
            samples = sorted(
                (recv - sent) / 1e6 for sent, recv in state["latencies"] if sent >= t_warm
            )
            result["target_publishes_per_s"] = rate
            result["latency_samples"] = len(samples)
            if samples:

                def pct(q: float) -> float:
                    return round(samples[min(len(samples) - 1, int(q * len(samples)))], 3)

                result["latency_ms"] = {
                    "p50": pct(0.50),
                    "p90": pct(0.90),
                    "p99": pct(0.99),
                    "max": round(samples[-1], 3),
                }
        return result

    def scenario_fanout(self) -> dict[str, Any]:
        p = self.params
        channel = "bench"
        publisher, probes, info = self.fanout_setup(p["subscribers"], channel)
        result = self.publish_run(
            publisher, probes, channel, p["subscribers"], info["since_seq"], None
        )
        return {**info, **result, "window": fanout_window(p, p["subscribers"])}

    def scenario_latency(self) -> dict[str, Any]:
        p = self.params
        channel = "bench"
        publisher, probes, info = self.fanout_setup(p["subscribers"], channel)
        result = self.publish_run(
            publisher, probes, channel, p["subscribers"], info["since_seq"], p["rate"]
        )
        return {**info, **result}

    # --- ingest ---------------------------------------------------------------------

    def scenario_ingest(self) -> dict[str, Any]:
        p = self.params
        names = [f"i{i:06d}" for i in range(p["publishers"])]
        parts = self.split(names)
        t0 = time.monotonic()
        self.all_workers(
            "publishers",
            p["setup_timeout"] * 2,
            per_worker=[{"names": part} for part in parts],
            channel="ingest",
            window=p["window"],
            timeout=p["setup_timeout"],
        )
        setup_s = time.monotonic() - t0
        for wid in range(len(self.workers)):
            self.tell(wid, "ingest", duration=p["duration"], drain_timeout=p["drain_timeout"])
        snap0 = self.snapshot()
        time.sleep(p["duration"])
        cpu = self.cpu_between(snap0, self.snapshot())
        reports = [self.hear(wid, p["drain_timeout"] + 60) for wid in range(len(self.workers))]
        acks = sum(r["acks"] for r in reports)
        return {
            "publishers": p["publishers"],
            "window": p["window"],
            "setup_s": round(setup_s, 2),
            "duration_s": p["duration"],
            "acked": acks,
            "acks_per_s": round(acks / p["duration"]),
            "errors": sum(r["errors"] for r in reports),
            "late_acks": sum(r["late_acks"] for r in reports),
            "connections_closed": sum(r["closed"] for r in reports),
            "server_cpu_pct": cpu.get("server_pct"),
            "load_cpu_pct": {
                "coordinator": cpu.get("load_coordinator_pct"),
                "workers": cpu.get("load_workers_pct"),
            },
            "others_cpu_pct": cpu.get("others_pct"),
        }

    # --- stalled consumer -----------------------------------------------------------

    def scenario_stalled(self) -> dict[str, Any]:
        p = self.params
        channel = "stall"
        timeout = p["setup_timeout"]
        total_items = p["items"]
        checkpoint = p["checkpoint"]
        window = p["window"]
        samples: list[tuple[float, int, int]] = []  # (t, items acked, RSS KiB)

        (stalled,) = self.connect(["stalled"], timeout, rcvbuf=p["rcvbuf"])
        stalled.keep_items = True
        stalled.request(2, "messages", kind="stream")
        ask_all(
            self.loop,
            [stalled],
            self.tally,
            3,
            lambda c: c.request(3, "channel.join", {"channel": channel}),
            timeout,
        )
        join_seq = stalled.answer(3)["seq"]
        pre_items = list(stalled.items)  # items already parsed (its own join item)
        self.loop.remove(stalled.fd)  # stop reading: no more recv on this socket
        healthy = self.connect(["healthy"], timeout)
        healthy[0].request(2, "messages", kind="stream")
        ask_all(
            self.loop,
            healthy,
            self.tally,
            3,
            lambda c: c.request(3, "channel.join", {"channel": channel}),
            timeout,
        )
        publishers = self.connect([f"q{i:03d}" for i in range(p["publishers"])], timeout)
        ask_all(
            self.loop,
            publishers,
            self.tally,
            3,
            lambda c: c.request(3, "channel.join", {"channel": channel}),
            timeout,
        )
        healthy_counts = [0]
        healthy[0].idx = 0
        self.loop.handlers[healthy[0].fd] = healthy[0].count_with(healthy_counts)

        rss_before = self.rss()
        t0 = time.monotonic()
        samples.append((0.0, 0, rss_before))
        # publish total_items with the ingest machinery, but item by item bounded
        length = content_length(channel, "q000")
        content = b"z" * length
        ring_size = 4 * window
        rings = [
            [message_request(10 + k, channel, content) for k in range(ring_size)]
            for _ in publishers
        ]
        pos = [0] * len(publishers)
        acks = [0] * len(publishers)
        answered = [0] * len(publishers)  # acks and errors: requests no longer open
        sent_by = [0] * len(publishers)
        errors = [0]
        sent = [0]
        lag_limit = p["healthy_lag"]

        def top_up(i: int) -> None:
            """Keep ``window`` requests open on publisher ``i`` (the server allows 64)."""
            n = min(
                window - (sent_by[i] - answered[i]),
                total_items - sent[0],
                lag_limit - (sent[0] - healthy_counts[0]),
            )
            if n <= 0:
                return
            ring = rings[i]
            q = pos[i]
            data = (
                b"".join(ring[q : q + n])
                if q + n <= ring_size
                else b"".join(ring[q:] + ring[: q + n - ring_size])
            )
            pos[i] = (q + n) % ring_size
            sent[0] += n
            sent_by[i] += n
            publishers[i].send(data)

        def make_handler(i: int, c: Conn) -> Callable[[int], None]:
            def on_acks(got: int, bad: int) -> None:
                acks[i] += got
                errors[0] += bad
                answered[i] += got + bad
                top_up(i)

            return c.ack_handler(on_acks)

        for i, c in enumerate(publishers):
            self.loop.handlers[c.fd] = make_handler(i, c)
        snap0 = self.snapshot()
        next_sample = t0
        deadline = t0 + p["publish_timeout"]
        at_checkpoint: tuple[float, int] | None = None
        first_error = ""
        while True:
            acked = sum(acks)
            now = time.monotonic()
            if now >= next_sample:
                rss = self.rss()
                samples.append((now - t0, acked, rss))
                if at_checkpoint is None and acked >= checkpoint:
                    at_checkpoint = (now - t0, rss)
                next_sample = now + p["sample_every"]
            if sum(answered) >= total_items or now > deadline:
                break
            if errors[0] and not first_error:
                first_error = f"{errors[0]} error answers by {now - t0:.1f}s"
            if all(c.closed for c in publishers):
                break
            for i in range(len(publishers)):
                top_up(i)
            self.loop.poll(0.002)
        publish_s = time.monotonic() - t0
        cpu = self.cpu_between(snap0, self.snapshot())
        acked = sum(acks)
        rss_end = self.rss()
        samples.append((time.monotonic() - t0, acked, rss_end))
        # let the healthy subscriber finish, then ask for the channel's last seq
        drain_deadline = time.monotonic() + p["drain_timeout"]
        while healthy_counts[0] < acked and time.monotonic() < drain_deadline:
            self.loop.poll(0.01)
        probe = publishers[0]
        probe.state = "open"
        probe.reader = FrameReader()
        self.loop.handlers[probe.fd] = probe.on_event
        probe.tail = b""
        ask_all(
            self.loop,
            [probe],
            self.tally,
            5,
            lambda c: c.request(5, "channel.join", {"channel": channel}),
            timeout,
        )
        last_seq = probe.answer(5)["seq"]
        settle_end = time.monotonic() + 1.0
        while time.monotonic() < settle_end:
            self.loop.poll(0.1)
        rss_settled = self.rss()
        samples.append((time.monotonic() - t0, acked, rss_settled))

        # resume reading the stalled subscriber, as a normal client would
        assert stalled.sock is not None
        stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, p["resume_rcvbuf"])
        state = {
            "messages": 0,
            "gaps": [],
            "last": join_seq,
            "holes": [],
            "frames": 0,
            "done": False,
            "first_after_resume": None,
        }
        for frame in pre_items:
            data = frame.get("data", {})
            if data.get("kind") == "gap":
                state["gaps"].append(data)
            if isinstance(data.get("seq"), int):
                state["last"] = data["seq"]
        ssock = stalled.sock
        sreader = stalled.reader

        def on_stalled(ev: int) -> None:
            try:
                n = ssock.recv_into(BUF)
            except BlockingIOError:
                return
            except OSError as exc:
                state["closed_by_server"] = f"{type(exc).__name__}: {exc}"
                n = 0
            if n == 0:
                state.setdefault("closed_by_server", "connection closed (EOF)")
                stalled.fail("stalled subscriber closed")
                state["done"] = True
                return
            for opcode, payload in sreader.feed(BUFVIEW[:n]):
                if opcode == OP_PING:
                    stalled.pong(payload)
                    continue
                if opcode == OP_CLOSE:
                    state["closed_by_server"] = (
                        f"close frame {int.from_bytes(payload[:2], 'big')} {payload[2:100]!r}"
                    )
                    continue
                if opcode != 1:
                    continue
                state["frames"] += 1
                if MSG_MARK in payload:
                    i = payload.index(b'"seq":') + 6
                    seq = int(payload[i : payload.index(b",", i)])
                    state["messages"] += 1
                elif b'"kind":"gap"' in payload:
                    gap = json.loads(payload)["data"]
                    state["gaps"].append(gap)
                    if gap["first"] != state["last"] + 1 and len(state["holes"]) < 20:
                        state["holes"].append(f"gap {gap} after seq {state['last']}")
                    state["last"] = gap["last"]
                    continue
                elif b'"seq":' in payload:
                    i = payload.index(b'"seq":') + 6
                    end = payload.find(b",", i)
                    seq = int(payload[i : end if end > 0 else payload.index(b"}", i)])
                else:
                    continue
                if seq != state["last"] + 1 and len(state["holes"]) < 20:
                    state["holes"].append(f"seq {seq} after {state['last']}")
                state["last"] = seq
                if seq >= last_seq:
                    state["done"] = True

        stalled.state = "counting"
        self.loop.add(stalled.fd, on_stalled, EPOLLIN)
        t_resume = time.monotonic()
        catch_deadline = t_resume + p["catchup_timeout"]
        while not state["done"] and time.monotonic() < catch_deadline:
            self.loop.poll(0.01)
        catch_s = time.monotonic() - t_resume
        rss_after = self.rss()
        gaps = state["gaps"]
        expected_after_gap = None
        if gaps:
            expected_after_gap = last_seq - gaps[-1]["last"]
        retention = p.get("retention")
        return {
            "items": total_items,
            "acked": acked,
            "publish_errors": errors[0],
            "publishers": len(publishers),
            "publish_s": round(publish_s, 2),
            "publish_items_per_s": round(acked / publish_s),
            "server_cpu_pct": cpu.get("server_pct"),
            "load_cpu_pct": {"coordinator": cpu.get("load_coordinator_pct")},
            "others_cpu_pct": cpu.get("others_pct"),
            "healthy_received": healthy_counts[0],
            "rss_before_kib": rss_before,
            "rss_at_checkpoint_kib": at_checkpoint[1] if at_checkpoint else None,
            "checkpoint_items": checkpoint,
            "rss_end_kib": rss_end,
            "rss_settled_kib": rss_settled,
            "rss_growth_checkpoint_to_end_kib": rss_end - at_checkpoint[1]
            if at_checkpoint
            else None,
            "rss_growth_total_kib": rss_end - rss_before,
            "rss_after_catchup_kib": rss_after,
            "last_seq": last_seq,
            "caught_up": state["done"] and state["last"] >= last_seq,
            "catchup_s": round(catch_s, 3),
            "catchup_messages": state["messages"],
            "catchup_items_per_s": round(state["messages"] / catch_s) if catch_s > 0 else None,
            "gaps": gaps[:5],
            "gap_count": len(gaps),
            "messages_after_last_gap": expected_after_gap,
            "retention": retention,
            "order_problems": state["holes"],
            "stalled_closed_by_server": state.get("closed_by_server"),
            "first_publish_error": first_error or None,
            "publishers_closed": sum(1 for c in publishers if c.closed),
            "samples": [(round(t, 3), a, r) for t, a, r in samples],
        }

    # --- idle connections -----------------------------------------------------------

    def scenario_idle(self) -> dict[str, Any]:
        p = self.params
        n = p["connections"]
        names = [f"c{i:06d}" for i in range(n)]
        parts = self.split(names)
        time.sleep(p["settle_s"])
        rss_before = self.rss()
        t0 = time.monotonic()
        replies = self.all_workers(
            "idle",
            p["setup_timeout"] * 4,
            per_worker=[{"names": part} for part in parts],
            timeout=p["setup_timeout"] * 3,
        )
        setup_s = time.monotonic() - t0
        rss_peak = self.rss()
        time.sleep(p["settle_s"])
        snap0 = self.snapshot()
        time.sleep(p["idle_cpu_s"])
        cpu = self.cpu_between(snap0, self.snapshot())
        rss_after = self.rss()
        status = self.all_workers("status", 30)
        closed = sum(s["closed"] for s in status)
        return {
            "connections": n,
            "setup_s": round(setup_s, 2),
            "connections_per_s": round(n / setup_s),
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "rss_right_after_setup_kib": rss_peak,
            "rss_per_connection_bytes": round((rss_after - rss_before) * 1024 / n),
            "server_cpu_pct_idle": cpu.get("server_pct"),
            "others_cpu_pct": cpu.get("others_pct"),
            "connections_closed": closed,
            "worker_setup_s": [round(r["setup_s"], 2) for r in replies],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description="load process of the benchmark harness")
    parser.add_argument(
        "--scenario", required=True, choices=["fanout", "latency", "ingest", "stalled", "idle"]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ws")
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--params", default="{}", help="JSON object of scenario parameters")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost"):
        parser.error("the harness only loads 127.0.0.1")
    raise_nofile()
    params = json.loads(args.params)
    coordinator = Coordinator(args, params)
    coordinator.start_workers(args.workers)
    cpu0 = own_cpu_seconds()
    t0 = time.monotonic()
    try:
        result = getattr(coordinator, "scenario_" + args.scenario)()
        result["ok"] = True
    except (Timeout, ServerError, RuntimeError) as exc:
        log("scenario failed:", exc)
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result["load_process_cpu_s"] = round(own_cpu_seconds() - cpu0, 2)
    result["load_wall_s"] = round(time.monotonic() - t0, 2)
    print("RESULT " + json.dumps(result), flush=True)
    # Wait until the harness has stopped the server, then leave without closing sockets
    # one by one.
    with contextlib.suppress(KeyboardInterrupt):
        sys.stdin.read()
    coordinator.stop_workers()
    os._exit(0)


if __name__ == "__main__":
    main()
