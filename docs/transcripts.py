"""Capture the transcripts in docs/protocol.md from real servers, and check the document.

::

    .venv/bin/python docs/transcripts.py                 # print every transcript
    .venv/bin/python docs/transcripts.py reload login    # print only these (all are captured)
    .venv/bin/python docs/transcripts.py --check         # compare with docs/protocol.md
    .venv/bin/python docs/transcripts.py --clients       # run only the clients of section 12
    .venv/bin/python docs/transcripts.py --json          # {name: [lines]}, for tools
    .venv/bin/python docs/transcripts.py --raw           # ids, epochs, tokens unshortened

Each group of scenarios starts its own ``twistd -n chat --store memory`` (or SQLite) with the
options it needs, on a free port of 127.0.0.1, and stops it at the end. A scenario prints
its frames as sent (``→``) and received (``←``) on each connection, labelled ``A``, ``B``, …
where several take part, in the order the script read them: after each step the script
reads what the connections involved have been sent, one connection after the other.
Session ids, epochs and token signatures are shortened to four characters and ``…``; long
client frames are abbreviated where the scenario says so; everything else, ``ts`` included,
is what went over the wire.

In docs/protocol.md each transcript is the fenced block after a line
``<!-- transcript: NAME -->``. ``--check`` captures every scenario again and compares each
with its block, ignoring what changes from run to run (``ts``, shortened ids, token expiry
and signatures, memory figures, the seconds of a "retry in", and the interleaving of
different interactions, which PROTOCOL.md leaves open); then it runs the clients of section 12
(each fenced block after ``<!-- client: NAME -->``) against fresh servers: the Python one, and
with Node (a global ``WebSocket``) the two JavaScript ones, the 1.1 one through a dropped
connection and a reload. It exits 1 if a transcript differs, is missing from the document or
names no scenario, or a client does not work. A full run takes about a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import websocket

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "protocol.md"
BIN = Path(sys.executable).parent
QUIET = 0.25  # seconds without a frame after which a connection has been sent everything
MISSING = object()

RAW = False  # --raw: do not shorten ids
BLOCKS: dict[str, list[str]] = {}  # scenario name -> its lines
_current: list[str] | None = None


# Output


def shorten(text: str) -> str:
    """Session ids and epochs (32 hex digits) and token signatures, cut to 4 characters."""
    if RAW:
        return text
    text = re.sub(r"\b([0-9a-f]{4})[0-9a-f]{28}\b", r"\1…", text)
    return re.sub(
        r"(v[12]\.[A-Za-z0-9_-]+\.\d+\.)([A-Za-z0-9_-]{4})[A-Za-z0-9_-]{8,}", r"\1\2…", text
    )


def emit(line: str) -> None:
    if _current is not None:
        _current.append(shorten(line))


def note(text: str) -> None:
    """A line in a transcript that is not a frame: what happened meanwhile."""
    emit(f"   ({text})")


@contextlib.contextmanager
def block(name: str) -> Iterator[None]:
    """Collect the lines of one transcript."""
    global _current
    assert name not in BLOCKS, name
    _current = []
    try:
        yield
    finally:
        BLOCKS[name] = _current
        _current = None


def compact(frame: Any) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


# Servers


class Server:
    """``twistd -n chat`` with some options, on a free port."""

    def __init__(self, *options: str, store: str = "memory") -> None:
        self.options = options
        self.store = store
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.process: subprocess.Popen[bytes] | None = None
        # the server's log, shown if it does not start; closed when the object goes
        self.log = tempfile.TemporaryFile()  # noqa: SIM115

    def start(self) -> Server:
        self.process = subprocess.Popen(
            [
                str(BIN / "twistd"),
                "-n",
                "--pidfile=",
                "chat",
                "--store",
                self.store,
                "--listen",
                f"tcp:{self.port}:interface=127.0.0.1",
                *self.options,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.log.seek(0)
                    tail = self.log.read().decode(errors="replace")[-3000:]
                    raise RuntimeError(
                        f"the server {self.options} did not start:\n{tail}"
                    ) from None
                time.sleep(0.1)  # the port is not open yet

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Connections


class Closed(Exception):
    pass


class Tap:
    """A connection that prints what it sends and receives, labelled."""

    def __init__(self, server: Server, label: str = "", show: bool = True) -> None:
        self.ws = websocket.create_connection(server.url, timeout=5, subprotocols=["chat.v1.json"])
        self.label = label
        self.show = show
        self.closed: tuple[int, str] | None = None

    @contextlib.contextmanager
    def hidden(self) -> Iterator[Tap]:
        """Steps that are not part of the transcript (setting the scene)."""
        show, self.show = self.show, False
        try:
            yield self
        finally:
            self.show = show

    def line(self, arrow: str, text: str) -> None:
        if self.show:
            emit(f"{self.label}{arrow} {text}")

    # Sending

    def send(self, frame: Any, shown: str | None = None) -> None:
        text = json.dumps(frame, ensure_ascii=False)
        self.line("→", shown or compact(frame))
        self.ws.send(text)

    def send_text(self, text: str | bytes, shown: str | None = None) -> None:
        """A text message that need not be JSON (or UTF-8)."""
        self.line("→", shown or (text if isinstance(text, str) else repr(text)))
        self.ws.send(text, websocket.ABNF.OPCODE_TEXT)

    def write(self, data: bytes) -> None:
        """Raw bytes on the socket (frames websocket-client would not send)."""
        assert self.ws.sock is not None
        self.ws.sock.sendall(data)

    def send_together(self, frames: list[Any], shown: dict[int, str] | None = None) -> None:
        """Several frames in one write (one TCP segment); a ``str`` is sent as it is."""
        texts = [f if isinstance(f, str) else json.dumps(f) for f in frames]
        for index, frame in enumerate(frames):
            self.line(
                "→",
                (shown or {}).get(index) or (frame if isinstance(frame, str) else compact(frame)),
            )
        wire = b"".join(
            websocket.ABNF.create_frame(text, websocket.ABNF.OPCODE_TEXT).format() for text in texts
        )
        self.write(wire)

    def request(self, id: int, route: str, data: Any = MISSING, **extra: Any) -> dict[str, Any]:
        """Send a request and read up to its answer (and whatever comes before it)."""
        frame: dict[str, Any] = {"type": "request", "id": id, "route": route}
        if data is not MISSING:
            frame["data"] = data
        frame.update(extra)
        self.send(frame)
        return self.until(lambda f: f.get("id") == id and f["type"] in ("response", "error"))

    def stream(
        self,
        id: int,
        route: str,
        data: Any = MISSING,
        credit: int | None = None,
        kind: str = "stream",
    ) -> None:
        frame: dict[str, Any] = {"type": kind, "id": id, "route": route}
        if data is not MISSING:
            frame["data"] = data
        if credit is not None:
            frame["credit"] = credit
        self.send(frame)

    def listing(self, id: int, route: str, data: Any = MISSING) -> list[dict[str, Any]]:
        """Open a finite stream and read it to its end."""
        self.stream(id, route, data)
        frames = []
        while True:
            frame = self.recv()
            if frame.get("id") == id:
                frames.append(frame)
                if frame["type"] in ("complete", "error"):
                    return frames

    # Receiving

    def recv(self, timeout: float = 5) -> dict[str, Any]:
        if self.closed is not None:
            raise Closed(self.closed)
        self.ws.settimeout(timeout)
        try:
            opcode, payload = self.ws.recv_data_frame()
        except websocket.WebSocketConnectionClosedException:
            self.closed = (1006, "")
            self.line("←", "(the connection is closed, without a close frame)")
            raise Closed(self.closed) from None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            data = payload.data
            code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
            self.closed = (code, data[2:].decode())
            self.line("←", f"close {code} {json.dumps(self.closed[1], ensure_ascii=False)}")
            raise Closed(self.closed)
        frame: dict[str, Any] = json.loads(payload.data)
        self.line("←", compact(frame))
        return frame

    def until(self, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            frame = self.recv()
            if done(frame):
                return frame

    def take(self, n: int) -> list[dict[str, Any]]:
        return [self.recv() for _ in range(n)]

    def drain(self, seconds: float = QUIET) -> list[dict[str, Any]]:
        """Read until nothing comes for ``seconds``."""
        frames = []
        deadline = time.monotonic() + 10  # a periodic stream never goes quiet
        with contextlib.suppress(websocket.WebSocketTimeoutException, Closed):
            while time.monotonic() < deadline:
                frames.append(self.recv(seconds))
        return frames

    def nothing(self, seconds: float = QUIET) -> None:
        """Assert that nothing comes (a fire is not answered, a cancel ends a stream)."""
        frames = self.drain(seconds)
        assert not frames, frames

    def expect_close(self) -> tuple[int, str]:
        with contextlib.suppress(Closed):
            while True:
                self.recv()
        assert self.closed is not None
        return self.closed

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()


def login(tap: Tap, username: str, id: int = 1, **fields: Any) -> dict[str, Any]:
    """A login, checked; returns the response's data."""
    answer = tap.request(id, "login", {"username": username, **fields})
    assert answer["type"] == "response", answer
    return answer["data"]  # type: ignore[no-any-return]


def ok(answer: dict[str, Any]) -> dict[str, Any]:
    assert answer["type"] == "response", answer
    return answer["data"]  # type: ignore[no-any-return]


def error(answer: dict[str, Any], code: str) -> None:
    assert answer["type"] == "error" and answer["error"]["code"] == code, answer


def wait_until(check: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


# Scenarios: one function per server; each captures its blocks in document order.

GROUPS: list[Callable[[], None]] = []


def group(function: Callable[[], None]) -> Callable[[], None]:
    GROUPS.append(function)
    return function


@group
def main_server() -> None:
    """The default options: PROTOCOL.md's example, frames, routes, sessions, rules."""
    with Server() as server:
        example(server)
        frames(server)
        routes(server)
        since_rejoin(server)
        rules(server)


@group
def sessions_server() -> None:
    """The default options, a fresh server: sessions, client_id, read positions, order."""
    with Server() as server:
        sessions(server)
        idempotent(server)
        read_positions(server)
        in_order(server)


def example(server: Server) -> None:
    tap = Tap(server)
    with block("example"):
        tap.request(1, "login", {"username": "alice"})
        tap.stream(2, "messages")
        tap.request(3, "channel.join", {"channel": "general"})
        tap.drain()
        tap.request(4, "message", {"channel": "general", "content": "hello"})
        tap.drain()
        tap.stream(5, "statistics", {"ids": ["users"], "period_seconds": 1}, kind="channel")
        tap.recv()
        tap.send({"type": "cancel", "id": 5})
        tap.nothing(1.2)
    tap.close()


def frames(server: Server) -> None:
    hist = Tap(server)
    with hist.hidden():
        login(hist, "hist")
        ok(hist.request(2, "channel.join", {"channel": "hchan"}))
        for n in range(2, 12):
            ok(hist.request(2 + n, "message", {"channel": "hchan", "content": f"m{n}"}))
    with block("credit"):
        hist.stream(30, "history", {"channel": "hchan", "limit": 5}, credit=2)
        hist.take(2)
        hist.nothing()
        hist.send({"type": "request_n", "id": 30, "n": 2})
        hist.take(2)
        hist.nothing()
        hist.send({"type": "request_n", "id": 30, "n": 1})
        hist.take(2)
        hist.send({"type": "request_n", "id": 30, "n": 5})
        hist.nothing()
    with block("cancel"):
        hist.stream(31, "history", {"channel": "hchan"}, credit=1)
        hist.recv()
        hist.send({"type": "cancel", "id": 31})
        hist.send({"type": "request_n", "id": 31, "n": 5})
        hist.send({"type": "cancel", "id": 999})
        hist.nothing()
    with block("malformed"):
        for text in (
            "hello",
            "[1,2]",
            '{"id":1}',
            '{"type":"bogus","id":12}',
            '{"type":"request","route":"channels"}',
            '{"type":"request","id":0,"route":"x"}',
            '{"type":"request","id":9007199254740992,"route":"x"}',
            '{"type":"request","id":"7","route":"x"}',
            '{"type":"request","id":15}',
            '{"type":"stream","id":16,"route":"channels","credit":0}',
            '{"type":"request_n","id":20,"n":0}',
            '{"type":"cancel"}',
        ):
            hist.send_text(text)
            hist.recv()
    # history examples on the same channel (section 3)
    with block("history"):
        hist.listing(20, "history", {"channel": "hchan", "limit": 3})
        hist.listing(21, "history", {"channel": "hchan", "before": 4})
        hist.listing(22, "history", {"channel": "hchan", "after": 8, "limit": 2})
        hist.listing(23, "history", {"channel": "hchan", "after": 3, "before": 6})
        hist.listing(24, "history", {"channel": "nosuch"})
    hist2 = Tap(server)
    with hist2.hidden():
        login(hist2, "hist2")
        ok(hist2.request(2, "message", {"user": "hist", "content": "dm1"}))
        ok(hist2.request(3, "message", {"user": "hist", "content": "dm2"}))
    with hist.hidden():
        ok(hist.request(40, "message", {"user": "hist2", "content": "dm3"}))
        ok(hist.request(41, "message", {"user": "hist", "content": "note"}))
    with block("history-inbox"):
        hist.listing(32, "history")
        hist.listing(33, "history", {"user": "hist2"})
        hist.listing(34, "history", {"user": "hist2", "limit": 1})
    with block("history-errors"):
        for id_, data in (
            (26, {"channel": "hchan", "limit": 0}),
            (26, {"channel": "hchan", "limit": 1001}),
            (26, {"channel": "hchan", "before": 0}),
            (26, {"channel": "hchan", "after": -1}),
            (26, "hchan"),
            (26, {"channel": "hchan", "user": "hist2"}),
            (26, {"user": "no one"}),
        ):
            hist.listing(id_, "history", data)
    with block("feed-after-join"):
        hist.stream(34, "messages", credit=1)
        hist.recv()
        hist.send({"type": "request_n", "id": 34, "n": 1})
        hist.recv()
        hist.nothing()
    hist.close()
    hist2.close()


def routes(server: Server) -> None:
    with block("login"):
        a = Tap(server)
        a.request(1, "login", {"username": "anna"})
    with block("login-errors"):
        c = Tap(server, "C")
        c.request(3, "login")
        c.request(3, "login", {})
        c.request(3, "login", {"username": 7})
        c.request(3, "login", {"username": "bob smith"})
        c.request(3, "login", {"username": "bob", "resume": 5})
        c.request(3, "login", {"username": "bob", "extra": 1}, whatever=True)
        c.request(4, "login", {"username": "bob"})
        d = Tap(server, "D")
        d.request(1, "login", {"username": "bob"})
        c.close()
        note("C closes its connection: bob's session lingers")
        time.sleep(0.3)
        d.request(2, "login", {"username": "bob"})
    d.close()
    a.close()
    with block("unauthenticated"):
        e = Tap(server)
        e.request(1, "channel.join", {"channel": "general"})
        e.request(2, "logout")
    e.close()

    # alice2 and bob2 in "rooms"
    a, b = Tap(server, "A"), Tap(server, "B")
    with a.hidden(), b.hidden():
        login(a, "alice2")
        a.stream(2, "messages")
        login(b, "bob2")
        b.stream(2, "messages")
    with block("join"):
        a.request(3, "channel.join", {"channel": "rooms"})
        a.drain()
        a.request(4, "channel.join", {"channel": "rooms"})
        b.request(3, "channel.join", {"channel": "rooms"})
        b.drain()
        a.drain()
    with block("message"):
        b.request(4, "message", {"channel": "rooms", "content": "hi all"})
        b.drain()
        a.drain()
        b.request(5, "message", {"user": "alice2", "content": "psst"})
        b.drain()
        a.drain()
    with block("message-self"):
        a.request(5, "message", {"user": "alice2", "content": "note to self"})
        a.drain()
    with block("message-errors"):
        for data in (
            {"channel": "nowhere", "content": "x"},
            {"channel": "general", "content": "x"},
            {"user": "nobody", "content": "x"},
            {"channel": "rooms", "user": "alice2", "content": "x"},
            {"content": "x"},
            {"channel": "rooms", "content": ""},
            {"channel": "rooms", "content": 5},
        ):
            a.request(6, "message", data)
        long = {
            "type": "request",
            "id": 6,
            "route": "message",
            "data": {"channel": "rooms", "content": "é" * 4097},
        }
        a.send(long, shown=compact(long).replace("é" * 4097, "éééé…(4097 times)"))
        a.recv()
        a.request(6, "message", {"channel": "room s", "content": "x"})
        a.request(6, "message", {"channel": "rooms", "content": "x", "client_id": ""})
        a.request(6, "message", {"channel": "rooms", "content": "x", "client_id": "tab 1/7"})
        a.request(6, "message", {"channel": "rooms", "content": "x", "client_id": "x" * 65})
        a.request(6, "message", {"channel": "rooms", "content": "x", "client_id": 7})
    a.drain()
    b.drain()
    with block("join-errors"):
        a.request(7, "channel.join", {})
        a.request(7, "channel.join", {"channel": ""})
        a.request(7, "channel.join")
    with block("leave"):
        b.request(10, "channel.leave", {"channel": "rooms"})
        b.drain()
        a.drain()
        b.request(11, "channel.leave", {"channel": "rooms"})
        b.request(11, "channel.leave", {"channel": "neverexisted"})
    with b.hidden():
        ok(b.request(12, "channel.join", {"channel": "rooms"}))
        b.drain()
    a.drain()
    with block("channels"):
        a.listing(8, "channels")
    with block("channel-users"):
        a.listing(9, "channel.users", {"channel": "rooms"})
        a.listing(9, "channel.users", {"channel": "nosuch"})
        a.listing(9, "channel.users")
    with block("messages-errors"):
        bad: tuple[Any, ...] = (
            {"since": [1]},
            {"since": {"bad key": 1}},
            {"since": {"general": -1}},
            {"epoch": 5},
            7,
        )
        for data in bad:
            a.listing(6, "messages", data)
    with block("statistics-fire"):
        a.send({"type": "fire", "route": "statistics", "data": {"memory_usage": 123456}})
        a.send({"type": "fire", "route": "statistics", "data": {"memory_usage": -1}})
        a.nothing()
    a.close()
    b.close()


def since_rejoin(server: Server) -> None:
    dora, carl = Tap(server, "D"), Tap(server, "C")
    with dora.hidden(), carl.hidden():
        login(dora, "dora")
        ok(dora.request(2, "channel.join", {"channel": "lobby"}))
        ok(dora.request(3, "message", {"channel": "lobby", "content": "before carl"}))
        login(carl, "carl")
    with block("since-rejoin"):
        carl.stream(2, "messages", {"since": {"lobby": 0}})
        carl.request(3, "channel.join", {"channel": "lobby"})
        carl.drain()
        carl.request(4, "channel.leave", {"channel": "lobby"})
        carl.drain()
        with dora.hidden():
            ok(dora.request(4, "message", {"channel": "lobby", "content": "while carl is out"}))
        note('dora posts "while carl is out" as seq 5: not delivered to carl')
        carl.drain()
        carl.request(5, "channel.join", {"channel": "lobby"})
        carl.drain()
    dora.close()
    carl.close()


def sessions(server: Server) -> None:
    bob = Tap(server, "B")
    with bob.hidden():
        login(bob, "bob")
        bob.stream(2, "messages")
        ok(bob.request(3, "channel.join", {"channel": "general"}))
        bob.drain()
    one = Tap(server, "A1")
    with one.hidden():
        answer = login(one, "alice")
        sid, epoch = answer["session_id"], answer["epoch"]
        one.stream(2, "messages")
        ok(one.request(3, "channel.join", {"channel": "general"}))
        one.drain()
    bob.drain(0.1)
    bob.show = False
    bob.drain()
    bob.show = True
    with block("attach"):
        two = Tap(server, "A2")
        two.request(1, "login", {"username": "alice", "resume": sid})
        two.stream(2, "messages")
        two.request(3, "message", {"channel": "general", "content": "from the second tab"})
        two.drain()
        one.drain()
        bob.drain()
        two.request(4, "channel.join", {"channel": "random"})
        two.drain()
        one.drain()
    with block("online"):
        bob.listing(4, "channel.users", {"channel": "general"})
    with block("reload"):
        two.close()
        one.close()
        note("A2 was closed; now A1's page reloads: its connection closes, the session lingers")
        time.sleep(0.3)
        bob.listing(5, "channel.users", {"channel": "general"})
        bob.request(6, "message", {"channel": "general", "content": "while you reload"})
        bob.drain()
        one = Tap(server, "A1")
        one.request(1, "login", {"username": "alice", "resume": sid})
        one.send(
            {
                "type": "stream",
                "id": 2,
                "route": "messages",
                "data": {"since": {"general": 3, "random": 1, "@": 0}, "epoch": epoch},
            }
        )
        one.drain()
        bob.drain()
        note("B was sent nothing: no leave, no join")
        bob.listing(7, "channel.users", {"channel": "general"})
    with block("resume-refused"):
        x = Tap(server, "C")
        x.request(1, "login", {"username": "alice", "resume": "0" * 32})
        x.request(2, "login", {"username": "carla", "resume": sid})
    with block("logout"):
        two = Tap(server, "A2")
        login(two, "alice", resume=sid)
        two.stream(2, "messages", {"since": {"general": 4, "random": 1}})
        two.nothing()
        two.request(3, "logout")
        two.request(4, "channel.leave", {"channel": "general"})
        one.drain()
        bob.drain()
        note("B was sent nothing: A1 is still attached")
        one.request(3, "logout")
        bob.drain()
        two.request(5, "login", {"username": "alice", "resume": sid})
    with block("logout-errors"):
        lou = Tap(server)
        with lou.hidden():
            login(lou, "lou")
        lou.request(2, "logout", {"everything": True})
    for tap in (one, two, x, bob, lou):
        tap.close()


def idempotent(server: Server) -> None:
    bob = Tap(server, "B")
    with bob.hidden():
        login(bob, "ben")
        bob.stream(2, "messages", {"since": {"general": 999}})
        ok(bob.request(3, "channel.join", {"channel": "general"}))
        bob.drain()
    one = Tap(server, "A")
    with one.hidden():
        sid = login(one, "amy")["session_id"]
        ok(one.request(3, "channel.join", {"channel": "general"}))
        one.drain()
    bob.show = False
    bob.drain()
    bob.show = True
    with block("retry"):
        one.send(
            {
                "type": "request",
                "id": 4,
                "route": "message",
                "data": {"channel": "general", "content": "on my way", "client_id": "web:7f3a:1"},
            }
        )
        one.close()
        note("A's connection drops before the response arrives")
        bob.drain()
        one = Tap(server, "A")
        one.request(1, "login", {"username": "amy", "resume": sid})
        one.request(
            2, "message", {"channel": "general", "content": "on my way", "client_id": "web:7f3a:1"}
        )
        bob.drain()
        note("B was sent nothing more: the message is stored once")
    with block("retry-rules"):
        one.request(
            3, "message", {"channel": "general", "content": "changed", "client_id": "web:7f3a:1"}
        )
        one.request(4, "message", {"user": "ben", "content": "psst", "client_id": "web:7f3a:1"})
        one.request(5, "message", {"user": "ben", "content": "psst", "client_id": "web:7f3a:1"})
        one.request(
            6, "message", {"channel": "general", "content": "again", "client_id": "web:7f3a:2"}
        )
        bob.drain()
    with bob.hidden():
        bob.request(20, "message", {"user": "amy", "content": "see you"})
        bob.drain()
    one.drain()
    one.close()
    bob.close()


def read_positions(server: Server) -> None:
    dora = Tap(server)
    erik = Tap(server, "E")
    with dora.hidden(), erik.hidden():
        login(dora, "dora")
        login(erik, "erik")
        ok(dora.request(2, "channel.join", {"channel": "books"}))
        ok(erik.request(2, "channel.join", {"channel": "books"}))
        for n, (who, text) in enumerate(
            [(erik, "new here?"), (dora, "hi erik"), (erik, "any tips"), (erik, "for sci-fi")]
        ):
            ok(who.request(10 + n, "message", {"channel": "books", "content": text}))
        ok(erik.request(20, "message", {"user": "dora", "content": "a question"}))
        ok(dora.request(21, "message", {"user": "erik", "content": "ask"}))
        ok(erik.request(22, "message", {"user": "dora", "content": "Dune?"}))
        ok(dora.request(3, "channel.join", {"channel": "films"}))
    with block("read"):
        dora.request(30, "read", {"channel": "books", "seq": 3})
        dora.request(31, "read", {"channel": "books", "seq": 2})
        dora.request(32, "read", {"channel": None, "seq": 1})
        dora.request(33, "read", {"channel": "films", "seq": 999})
        dora.listing(34, "conversations")
    with block("read-errors"):
        dora.request(35, "read", {"channel": "music", "seq": 1})
        dora.request(35, "read", {"seq": 1})
        dora.request(35, "read", {"channel": "books"})
        dora.request(35, "read", {"channel": "books", "seq": -1})
        dora.request(35, "read", {"channel": "books", "seq": "3"})
        dora.request(35, "read", {"channel": "bad name", "seq": 1})
    dora.close()
    erik.close()


def in_order(server: Server) -> None:
    with block("in-order"):
        pipe = Tap(server)
        pipe.send_together(
            [
                {"type": "request", "id": 1, "route": "login", "data": {"username": "carol"}},
                {"type": "request", "id": 2, "route": "channel.join", "data": {"channel": "news"}},
                {
                    "type": "request",
                    "id": 3,
                    "route": "message",
                    "data": {"channel": "news", "content": "right after the join"},
                },
                {"type": "request", "id": 4, "route": "channel.leave", "data": {"channel": "news"}},
                {
                    "type": "request",
                    "id": 5,
                    "route": "message",
                    "data": {"channel": "news", "content": "right after the leave"},
                },
            ]
        )
        pipe.take(5)
        pipe.nothing()
    with block("in-order-reads"):
        pipe.send_together(
            [
                {"type": "request", "id": 6, "route": "channel.join", "data": {"channel": "news"}},
                {
                    "type": "request",
                    "id": 7,
                    "route": "message",
                    "data": {"channel": "news", "content": "and back"},
                },
                {
                    "type": "request",
                    "id": 8,
                    "route": "read",
                    "data": {"channel": "news", "seq": 5},
                },
                {"type": "stream", "id": 9, "route": "conversations"},
                {
                    "type": "stream",
                    "id": 10,
                    "route": "history",
                    "data": {"channel": "news", "after": 4},
                },
            ]
        )
        pipe.until(lambda f: f.get("id") == 10 and f["type"] == "complete")
        pipe.drain()
    pipe.close()


def rules(server: Server) -> None:
    carol = Tap(server)
    with carol.hidden():
        login(carol, "carol")
    with block("refused-frame"):
        carol.stream(2, "messages")
        carol.stream(2, "nope")
        carol.recv()
        carol.send({"type": "stream", "id": 2, "route": "channels", "credit": 0})
        carol.recv()
        carol.request(3, "channel.join", {"channel": "dup"})
        carol.drain()
    with block("cancel-request"):
        carol.send_together(
            [
                {
                    "type": "request",
                    "id": 30,
                    "route": "message",
                    "data": {"channel": "dup", "content": "sent anyway"},
                },
                {"type": "cancel", "id": 30},
            ]
        )
        carol.drain()
    with block("server-only-type"):
        carol.send_text('{"type":"response","id":13,"data":{}}')
        carol.recv()
    with block("not-json"):
        carol.send_text('{"type":"request","id":21,"route":"x","data":NaN}')
        carol.recv()
        carol.send_text("[" * 30000 + "]" * 30000, shown="[[[[[[[[…]]]]]]]]      (30,000 levels)")
        carol.recv()
        carol.send_text(
            '{"type":"request","id":22,"route":"message","data":{"channel":"dup","content":"\\ud800"}}'
        )
        carol.recv()
    carol.close()
    dave = Tap(server)
    with dave.hidden():
        login(dave, "dave")
    with block("error-examples"):
        dave.stream(2, "messages")
        dave.request(2, "channel.join", {"channel": "dup"})
        dave.request(23, "channels")
        dave.request(9007199254740991, "nope")
        note("ids 100…162 hold 63 open statistics channels; with the feed on id 2 that makes 64")
        with dave.hidden():
            for id_ in range(100, 163):
                dave.stream(id_, "statistics", {"period_seconds": 3600}, kind="channel")
                dave.recv()
        dave.request(200, "channel.join", {"channel": "dup"})
        dave.send({"type": "cancel", "id": 100})
        dave.request(201, "channel.join", {"channel": "dup"})
        dave.drain()
    with dave.hidden():
        dave.stream(100, "statistics", {"period_seconds": 3600}, kind="channel")
        dave.recv()
    with block("limit-order"):
        dave.request(100, "nope")
        dave.request(201, "nope")
        dave.send({"type": "request", "id": 201})
        dave.recv()
    dave.close()


@group
def statistics_server() -> None:
    """A fresh server: the statistics channel and what it counts."""
    with Server() as server:
        a, b = Tap(server), Tap(server, "B")
        with a.hidden(), b.hidden():
            login(a, "ann")
            login(b, "ben")
            for n, channel in enumerate(["lobby", "news", "dev"]):
                ok(a.request(10 + n, "channel.join", {"channel": channel}))
            ok(b.request(10, "channel.join", {"channel": "lobby"}))
            ok(b.request(11, "message", {"channel": "lobby", "content": "hi"}))
        with block("statistics"):
            a.stream(6, "statistics", kind="channel")
            a.take(2)
            a.send({"type": "cancel", "id": 6})
            a.stream(5, "statistics", {"ids": ["users"], "period_seconds": 1}, kind="channel")
            a.take(2)
            a.send(
                {
                    "type": "next",
                    "id": 5,
                    "data": {
                        "ids": ["connections", "users", "messages", "channels", "memory", "users"]
                    },
                }
            )
            a.recv()
            a.send({"type": "next", "id": 5, "data": {"period_seconds": 0.5}})
            a.take(2)
            a.send({"type": "complete", "id": 5})
            a.recv()
            a.send({"type": "cancel", "id": 5})
            a.nothing(0.7)
        with block("statistics-credit"):
            a.stream(
                14,
                "statistics",
                {"ids": ["messages"], "period_seconds": 0.2},
                credit=1,
                kind="channel",
            )
            a.recv()
            with b.hidden():
                ok(b.request(12, "message", {"channel": "lobby", "content": "one more"}))
            a.nothing(0.7)
            a.send({"type": "request_n", "id": 14, "n": 1})
            a.recv()
            a.send({"type": "cancel", "id": 14})
            a.nothing()
        with block("statistics-sessions"):
            a.stream(
                15,
                "statistics",
                {"ids": ["users", "connections"], "period_seconds": 3600},
                kind="channel",
            )
            a.recv()
            c = Tap(server, "C")
            c.request(1, "login", {"username": "cleo"})
            a.send({"type": "next", "id": 15, "data": {"period_seconds": 3600}})
            a.recv()
            c.close()
            note("C closes its connection; cleo's session lingers")
            time.sleep(0.3)
            a.send({"type": "next", "id": 15, "data": {"period_seconds": 3600}})
            a.recv()
            a.send({"type": "cancel", "id": 15})
        with block("statistics-errors"):
            a.stream(6, "statistics", kind="channel")
            a.recv()
            a.send({"type": "next", "id": 6, "data": {"foo": 1}})
            a.recv()
            for id_, data in (
                (7, {"ids": ["bogus"]}),
                (8, {"period_seconds": 0.05}),
                (9, {"ids": []}),
                (11, {"period_seconds": "1"}),
            ):
                a.stream(id_, "statistics", data, kind="channel")
                a.recv()
            a.stream(13, "statistics", {"ids": ["users"]}, kind="channel")
            a.recv()
            a.send({"type": "next", "id": 13, "data": {"period_seconds": 9999}})
            a.recv()
            a.stream(16, "statistics")
            a.recv()
        a.close()
        b.close()


@group
def linger_zero_server() -> None:
    """--retention 5 --session-linger 0: sessions end with their connection (1.0)."""
    with Server("--retention", "5", "--session-linger", "0") as server:
        with block("login-linger-0"):
            c, d = Tap(server, "C"), Tap(server, "D")
            c.request(1, "login", {"username": "bob"})
            d.request(1, "login", {"username": "bob"})
            c.close()
            note("C closes its connection")
            time.sleep(0.3)
            d.request(2, "login", {"username": "bob"})
        d.close()
        alice, bob = Tap(server, "A"), Tap(server, "B")
        with alice.hidden(), bob.hidden():
            login(bob, "bob", 1)
            bob.stream(2, "messages")
            ok(bob.request(3, "channel.join", {"channel": "general"}))
            answer = login(alice, "alice")
            epoch, sid = answer["epoch"], answer["session_id"]
            alice.stream(2, "messages")
            ok(alice.request(3, "channel.join", {"channel": "general"}))
            alice.drain()
            bob.drain()
        with block("session-ends"):
            alice.close()
            note("A closes its connection")
            bob.drain()
        with bob.hidden():
            for n in range(4, 12):
                ok(bob.request(10 + n, "message", {"channel": "general", "content": f"b{n}"}))
            ok(bob.request(30, "message", {"user": "alice", "content": "dm while away"}))
            bob.drain()
        with block("reconnect"):
            alice = Tap(server, "A")
            alice.request(1, "login", {"username": "alice", "resume": sid})
            alice.stream(2, "messages", {"since": {"general": 3, "@": 0}, "epoch": epoch})
            alice.drain()
            alice.request(3, "channel.join", {"channel": "general"})
            alice.drain()
        with block("reconnect-other-epoch"):
            alice.stream(4, "messages", {"since": {"general": 3, "@": 0}, "epoch": "0000"})
            alice.drain()
            alice.send({"type": "cancel", "id": 4})
        bob.drain()
        with block("history-retention"):
            alice.listing(13, "history", {"channel": "general", "after": 0})
        with block("since-beyond-end"):
            alice.stream(5, "messages", {"since": {"general": 999, "@": 999}})
            bob.request(20, "message", {"channel": "general", "content": "new"})
            alice.until(lambda f: f.get("id") == 5)
            alice.drain()
        alice.close()
        bob.close()


@group
def short_times_server() -> None:
    """--session-linger 1 --dedup-window 1: a session that expires, a client_id forgotten."""
    with Server("--session-linger", "1", "--dedup-window", "1") as server:
        alice, bob = Tap(server, "A"), Tap(server, "B")
        with alice.hidden(), bob.hidden():
            login(bob, "bob")
            bob.stream(2, "messages")
            ok(bob.request(3, "channel.join", {"channel": "general"}))
            sid = login(alice, "alice")["session_id"]
            ok(alice.request(3, "channel.join", {"channel": "general"}))
            bob.drain()
        with block("linger-expires"):
            alice.close()
            note("A's connection closes: the session lingers for 1 s")
            bob.nothing(0.5)
            note("B was sent nothing for half a second; then, a second after the close:")
            bob.drain(1.0)
            alice = Tap(server, "A")
            alice.request(1, "login", {"username": "alice", "resume": sid})
        with block("dedup-window"):
            message = {"channel": "general", "content": "once more", "client_id": "w:1"}
            alice.request(2, "channel.join", {"channel": "general"})
            alice.request(3, "message", message)
            note("1.5 s pass: longer than the dedup window")
            time.sleep(1.5)
            alice.request(4, "message", message)
        alice.close()
        bob.close()


@group
def token_server() -> None:
    """--auth token: failures, a token attaching, the per-session limit, the login timeout."""
    with tempfile.TemporaryDirectory() as tmp:
        secret = Path(tmp, "secret")
        secret.write_bytes(os.urandom(32).hex().encode())
        secret.chmod(0o600)

        def token(username: str, ttl: str = "1h") -> str:
            return subprocess.run(
                [str(BIN / "chat-token"), username, "--ttl", ttl, "--secret-file", str(secret)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()

        options = (
            "--auth",
            "token",
            "--secret-file",
            str(secret),
            "--max-auth-failures",
            "3",
            "--max-connections-per-session",
            "2",
            "--login-timeout",
            "2",
        )
        with Server(*options) as server:
            with block("token"):
                a = Tap(server, "A")
                a.request(1, "login", {"username": "erin"})
                a.request(2, "login", {"username": "erin", "token": token("frank")})
                a.request(3, "login", {"username": "erin", "token": token("erin")})
                b = Tap(server, "B")
                with b.hidden():
                    b.request(1, "login", {"username": "erin"})
                    b.request(2, "login", {"username": "erin", "token": "v1.erin.1.bad"})
                note("B's logins 1 and 2 failed too")
                b.request(3, "login", {"username": "erin", "token": "v2.ZXJpbg.1.bad"})
                b.expect_close()
            with block("token-attach"):
                c = Tap(server, "C")
                c.request(1, "login", {"username": "erin", "token": token("erin")})
            for tap in (a, c):
                tap.close()
            with block("per-session-limit"):
                a = Tap(server, "A")
                sid = login(a, "gus", token=token("gus"))["session_id"]
                b = Tap(server, "B")
                b.request(1, "login", {"username": "gus", "token": token("gus"), "resume": sid})
                c = Tap(server, "C")
                c.request(1, "login", {"username": "gus", "token": token("gus"), "resume": sid})
            for tap in (a, b, c):
                tap.close()
            with block("login-timeout"):
                a = Tap(server)
                a.request(1, "channel.join", {"channel": "general"})
                note("2 seconds pass")
                a.expect_close()


@group
def limits_server() -> None:
    """Limits a client can notice: channels per user and per server, request rates."""
    options = (
        "--max-channels-per-user",
        "1",
        "--max-channels",
        "2",
        "--message-rate",
        "1",
        "--message-burst",
        "2",
        "--join-rate",
        "1",
        "--join-burst",
        "2",
    )
    with Server(*options) as server:
        with block("limits"):
            a, b = Tap(server, "A"), Tap(server, "B")
            with a.hidden(), b.hidden():
                login(a, "erin")
                login(b, "frank")
            a.request(4, "channel.join", {"channel": "one"})
            a.request(5, "channel.join", {"channel": "two"})
            a.request(6, "channel.leave", {"channel": "one"})
            b.request(4, "channel.join", {"channel": "two"})
            c = Tap(server, "C")
            with c.hidden():
                login(c, "gwen")
            c.request(4, "channel.join", {"channel": "three"})
            a.request(7, "message", {"channel": "one", "content": "hi"})
            a.request(8, "message", {"channel": "one", "content": "hi"})
            a.request(9, "message", {"channel": "one", "content": "hi"})
        for tap in (a, b, c):
            tap.close()


@group
def closes_server() -> None:
    """Every close the server sends."""
    with Server() as server, block("closes"):
        a = Tap(server)
        a.ws.send_binary(b"\x01\x02")
        a.line("→", "(a binary message)")
        a.expect_close()
        a = Tap(server)
        with a.hidden():
            for _ in range(99):
                a.send_text("x")
                a.recv()
        a.send_together(
            ["x", {"type": "request", "id": 1, "route": "login", "data": {"username": "zed"}}],
            shown={
                0: "x            "
                "(the 100th bad frame in a row; the 99 before got bad_frame errors)",
                1: compact(
                    {"type": "request", "id": 1, "route": "login", "data": {"username": "zed"}}
                )
                + "   (in the same write: not processed)",
            },
        )
        a.expect_close()
        a = Tap(server)
        pad = {"type": "fire", "route": "statistics", "data": {"memory_usage": 1}, "pad": ""}
        pad["pad"] = "a" * (65537 - len(json.dumps(pad)))
        assert len(json.dumps(pad)) == 65537
        a.send(pad, shown=compact({**pad, "pad": "aaaa…"}) + "   (65,537 bytes)")
        a.expect_close()
        a = Tap(server)
        bad = b'{"type":"fire","route":"statistics","data":"\xff"}'
        a.line(
            "→",
            '{"type":"fire","route":"statistics","data":"\\xff"}   (the byte FF: not UTF-8)',
        )
        a.ws.send(bad, websocket.ABNF.OPCODE_TEXT)
        a.expect_close()
        a = Tap(server)
        frame = websocket.ABNF(1, 1, 0, 0, websocket.ABNF.OPCODE_TEXT, 1, b"{}")
        a.line("→", "(a text frame with the reserved bit RSV1 set; no extension was agreed)")
        a.write(frame.format())
        a.expect_close()
        a = Tap(server)
        frame = websocket.ABNF(1, 0, 0, 0, websocket.ABNF.OPCODE_TEXT, 0, b"{}")
        a.line("→", "(a text frame without a mask)")
        a.write(frame.format())
        a.expect_close()
        a = Tap(server)
        a.line("→", 'close 4000 "bye"')
        a.ws.send_close(4000, b"bye")
        a.expect_close()
    with Server() as server, block("shutdown"):
        a = Tap(server)
        a.request(1, "login", {"username": "zoe"})
        note("the server gets SIGTERM")
        assert server.process is not None
        os.killpg(server.process.pid, signal.SIGTERM)
        a.expect_close()
        server.process.wait(10)


@group
def sqlite_restart() -> None:
    """A retry across kill -9 of a server on SQLite."""
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(store=f"sqlite:{tmp}/chat.db").start()
        try:
            with block("retry-restart"):
                a = Tap(server)
                sid = login(a, "alice")["session_id"]
                ok(a.request(2, "channel.join", {"channel": "general"}))
                a.request(
                    3, "message", {"channel": "general", "content": "saved?", "client_id": "cli:42"}
                )
                note("the server is killed with SIGKILL and started again")
                server.stop(signal.SIGKILL)
                a.close()
                server.start()
                a = Tap(server)
                a.request(1, "login", {"username": "alice", "resume": sid})
                a.request(2, "channel.join", {"channel": "general"})
                a.request(
                    3, "message", {"channel": "general", "content": "saved?", "client_id": "cli:42"}
                )
                a.listing(4, "history", {"channel": "general"})
            with block("answers-any-order"):
                a.send_together(
                    [
                        {
                            "type": "request",
                            "id": 5,
                            "route": "message",
                            "data": {"channel": "general", "content": "pipelined"},
                        },
                        {"type": "stream", "id": 6, "route": "channels"},
                        {
                            "type": "stream",
                            "id": 7,
                            "route": "history",
                            "data": {"channel": "general", "after": 3},
                        },
                    ]
                )
                a.until(lambda f: f.get("id") == 7 and f["type"] == "complete")
                a.drain()
            a.close()
        finally:
            server.stop()


# Checking the document


def normalize(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        line = re.sub(r'"ts":\d+', '"ts":…', line)
        line = re.sub(r"\b[0-9a-f]{4}…", "…", line)
        line = re.sub(r"(v[12]\.[A-Za-z0-9_-]+\.)\d+\.[A-Za-z0-9_-]{4}…", r"\1….…", line)
        line = re.sub(r'"memory_usage":\d+', '"memory_usage":…', line)
        line = re.sub(r"retry in \d+\.\d+ s", "retry in … s", line)
        out.append(line.rstrip())
    return out


def same_per_interaction(want: list[str], got: list[str]) -> bool:
    """The same lines, and per connection the same order of what it sent and of the frames of
    each interaction: PROTOCOL.md leaves the order between interactions open."""
    if sorted(want) != sorted(got):
        return False

    def threads(lines: list[str]) -> dict[tuple[str, str], list[str]]:
        found: dict[tuple[str, str], list[str]] = {}
        for line in lines:
            match = re.match(r'(\S*?)(←) \{"type":"\w+","id":(\w+)', line)
            key = (match.group(1), match.group(3)) if match else ("", "")
            found.setdefault(key, []).append(line)  # sent lines and notes keep one order
        return found

    return threads(want) == threads(got)


def document_blocks(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    pattern = re.compile(
        r"^[ \t]*<!-- transcript: ([\w-]+) -->\n([ \t]*)```\n(.*?)\n[ \t]*```", re.M | re.S
    )
    for match in pattern.finditer(text):
        found[match.group(1)] = textwrap.dedent(match.group(3)).splitlines()
    return found


def check() -> int:
    documented = document_blocks(DOC.read_text(encoding="utf-8"))
    failures = 0
    for name, lines in BLOCKS.items():
        if name not in documented:
            print(f"{name}: captured, but no <!-- transcript: {name} --> block in {DOC.name}")
            failures += 1
            continue
        want, got = normalize(documented[name]), normalize(lines)
        if want != got and same_per_interaction(want, got):
            print(f"{name}: the same, but interactions interleave differently (allowed)")
        elif want != got:
            failures += 1
            print(f"{name}: differs")
            sys.stdout.writelines(
                line + "\n"
                for line in difflib.unified_diff(want, got, "document", "server", lineterm="")
            )
    for name in documented.keys() - BLOCKS.keys():
        print(f"{name}: in {DOC.name}, but no scenario captures it")
        failures += 1
    print(f"{len(BLOCKS)} transcripts captured, {failures} failed")
    return failures


# Checking the clients of section 12


RESUME_HARNESS = r"""
// Runs the 1.1 client of docs/protocol.md as two pages of one tab, against a server.
import vm from "node:vm";
import fs from "node:fs";
const [host, file] = process.argv.slice(2);
const code = fs.readFileSync(file, "utf8");
const stored = new Map();
const sessionStorage = {
  getItem: (k) => stored.get(k) ?? null, setItem: (k, v) => stored.set(k, v),
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function page() {
  const log = [];
  const ctx = vm.createContext({
    WebSocket, location: { host }, sessionStorage, alive: true,
    setTimeout: (f, ms) => (ctx.alive ? setTimeout(f, ms) : 0),
    console: { log: (x) => log.push(x), error: (x) => log.push({ error: x }) },
  });
  vm.runInContext(code, ctx);
  return { ctx, log, run: (src) => vm.runInContext(src, ctx) };
}
async function user(frames) {
  const ws = new WebSocket(`ws://${host}/ws`);
  await new Promise((r) => (ws.onopen = r));
  const got = [];
  ws.onmessage = (e) => got.push(JSON.parse(e.data));
  for (const f of frames) ws.send(JSON.stringify(f));
  await sleep(300);
  return { ws, got };
}
const bob = await user([
  { type: "request", id: 1, route: "login", data: { username: "bob" } },
  { type: "request", id: 2, route: "channel.join", data: { channel: "general" } },
]);
const first = page();
await sleep(500);
first.run('say("general", "one")');
await sleep(300);
first.run('say("general", "two"); ws.close()');  // the connection drops before the answer
await sleep(1800);                                 // it reconnects after 1 s and sends again
const outbox = JSON.parse(stored.get("chat")).outbox.length;
first.ctx.alive = false;                           // a reload: the page goes away
first.run("ws.close()");
await sleep(200);
bob.ws.send(JSON.stringify({ type: "request", id: 3, route: "message",
                             data: { channel: "general", content: "while you reload" } }));
await sleep(300);
const second = page();
await sleep(800);
const reader = await user([
  { type: "request", id: 1, route: "login", data: { username: "carl" } },
  { type: "stream", id: 2, route: "history", data: { channel: "general" } },
]);
console.log(JSON.stringify({
  outbox,
  first: first.log.map((i) => i.content ?? i.kind),
  second: second.log.map((i) => i.content ?? i.kind),
  history: reader.got.filter((f) => f.type === "next")
    .map((f) => [f.data.kind, f.data.from, f.data.content ?? null]),
}));
process.exit(0);
"""


def document_clients(text: str) -> dict[str, str]:
    pattern = re.compile(r"^<!-- client: ([\w.-]+) -->\n```\w*\n(.*?)\n```", re.M | re.S)
    return {m.group(1): m.group(2) + "\n" for m in pattern.finditer(text)}


def node_command() -> list[str] | None:
    """``node`` with a global WebSocket (a flag before Node 22), or None without node."""
    if shutil.which("node") is None:
        return None
    for flags in ([], ["--experimental-websocket"]):
        probe = subprocess.run(
            ["node", *flags, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
            capture_output=True,
        )
        if probe.returncode == 0:
            return ["node", *flags]
    return None


def check_clients() -> int:
    """Run the clients of section 12 against fresh servers; 1 if one does not work."""
    clients = document_clients(DOC.read_text(encoding="utf-8"))
    failures = 0

    def report(name: str, good: bool, output: str) -> None:
        nonlocal failures
        print(f"client {name}: {'works' if good else 'FAILED'}")
        if not good:
            failures += 1
            print(textwrap.indent(output, "    "))

    with tempfile.TemporaryDirectory() as tmp:
        with Server() as server:
            code = clients["minimal.py"].replace("localhost:8080", f"127.0.0.1:{server.port}")
            Path(tmp, "minimal.py").write_text(code)
            try:
                run = subprocess.run(
                    [sys.executable, Path(tmp, "minimal.py")],
                    capture_output=True,
                    text=True,
                    timeout=3,
                )
                output = run.stdout + run.stderr
            except subprocess.TimeoutExpired as exc:  # it reads forever, as written
                output = (exc.stdout or b"").decode()
            good = all(f"'id': {i}" in output for i in (2, 3, 4)) and "'duplicate': False" in output
            report("minimal.py", good, output)
        node = node_command()
        if node is None:
            print("clients minimal.js, resume.js: not run (no node with a WebSocket)")
            return failures
        with Server() as server:
            shim = f'globalThis.location = {{ host: "127.0.0.1:{server.port}" }};\n'
            Path(tmp, "minimal.js").write_text(
                shim + clients["minimal.js"] + "setTimeout(() => process.exit(0), 1500);\n"
            )
            run = subprocess.run(
                [*node, Path(tmp, "minimal.js")], capture_output=True, text=True, timeout=20
            )
            output = run.stdout + run.stderr
            good = "content: 'hello'" in output and "duplicate: false" in output
            report("minimal.js", good, output)
        with Server() as server:
            Path(tmp, "resume.js").write_text(clients["resume.js"])
            Path(tmp, "harness.mjs").write_text(RESUME_HARNESS)
            run = subprocess.run(
                [
                    *node,
                    Path(tmp, "harness.mjs"),
                    f"127.0.0.1:{server.port}",
                    Path(tmp, "resume.js"),
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            output = run.stdout + run.stderr
            try:
                result = json.loads(run.stdout.strip().splitlines()[-1])
                history = result["history"]
                good = (
                    result["outbox"] == 0  # every message answered
                    and [h[2] for h in history if h[0] == "message"]
                    == ["one", "two", "while you reload"]  # "two" stored once
                    and ["leave", "alice", None] not in history  # the reload left nothing
                    and history.count(["join", "alice", None]) == 1
                    and result["second"] == ["while you reload"]  # what the reload missed
                )
            except (IndexError, KeyError, ValueError):
                good = False
            report("resume.js", good, output)
    return failures


def main() -> int:
    global RAW
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="print only these transcripts")
    parser.add_argument("--check", action="store_true", help="compare with docs/protocol.md")
    parser.add_argument("--raw", action="store_true", help="do not shorten ids and tokens")
    parser.add_argument("--json", action="store_true", help="print {name: [lines]} as JSON")
    parser.add_argument(
        "--clients",
        action="store_true",
        help="only run the clients of section 12 against fresh servers",
    )
    args = parser.parse_args()
    RAW = args.raw
    if args.clients:
        return 1 if check_clients() else 0
    for run in GROUPS:
        run()
    if args.check:
        return 1 if check() + check_clients() else 0
    if args.json:
        json.dump(
            {n: b for n, b in BLOCKS.items() if not args.names or n in args.names},
            sys.stdout,
            ensure_ascii=False,
            indent=1,
        )
        return 0
    for name, lines in BLOCKS.items():
        if args.names and name not in args.names:
            continue
        print(f"<!-- transcript: {name} -->\n```")
        print("\n".join(lines))
        print("```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
