"""One client connection of the load process, and the tally of a group of them.

A :class:`Conn` parses every frame while it is being set up (handshake, login, joins: a few
frames each), then gets a *counting* read handler for the measurement (:meth:`Conn.count_with`,
:meth:`Conn.ack_handler`) that parses nothing; see :mod:`bench.load.marks`. Counting handlers
still answer the server's WebSocket pings, or a keepalive would drop a busy subscriber.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from bench.load.framing import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    FrameReader,
    check_handshake,
    handshake_request,
    masked_frame,
    new_key,
)
from bench.load.loop import EPOLLIN, EPOLLOUT, Loop, ServerError
from bench.load.marks import (
    BUF,
    BUFVIEW,
    EDGE,
    ERR_MARK,
    MSG_MARK,
    RESP_MARK,
    count_in_read,
    next_tail,
)


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


class Conn:
    """One WebSocket client connection; its read handler changes with the phase."""

    __slots__ = (
        "answers",
        "channels",
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
        "t_login",
        "t_start",
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
        self.channels: list[str] = []  # channels this connection joins during setup
        self.t_start = 0.0  # when it started connecting
        self.t_login = 0.0  # when its login was answered

    # connecting

    def start(self, rcvbuf: int | None = None) -> None:
        sock = self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.fd = sock.fileno()
        self.t_start = time.monotonic()
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
        """Send one opening frame (setup only: built with :mod:`json`, not pre-built)."""
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
                if fid == 1:
                    self.t_login = time.monotonic()
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
        """The ``data`` of the answer to request ``fid``; :class:`ServerError` if none."""
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
