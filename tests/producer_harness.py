"""A server node on a :class:`Clock` with connections on fake transports, driven by frames.

The producer tests drive the real :class:`~chat.connection.ChatConnection` the way Autobahn and
Twisted would: client frames go in through ``text_received`` (the real core, router and routes
handle them), the fake transport pauses the connection's ``Outbound`` when its buffer passes a
high-water mark (Twisted's is 64 KiB) and resumes it when the test drains it, and reactor turns
are run by hand on a :class:`twisted.internet.task.Clock`. What the client would read is
decoded from the raw bytes with the independent decoder in tests/wsdecode.py.

:class:`SlowDiskStore` is a store whose memory holds only its newest few items and whose older
items come back from "disk" one reactor turn later, so the feed's disk path (pages, page slots,
gaps found while reading) runs deterministically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface import implementer

from chat.connection import ChatConnection, Node
from chat.protocol.closes import Disconnect
from chat.protocol.items import channel_message, private_message
from chat.service.chat import ChatService
from chat.service.routes import router
from chat.settings import Settings
from chat.stores.interface import Appended, ILogStore, LogItem, channel_log, inbox_log
from chat.stores.memory import MemoryLogStore
from chat.stores.presence import LocalPresence
from tests.wsdecode import FrameDecoder

TWISTED_HIGH_WATER = 64 * 1024


class FakeTransport:
    """Keeps what was written; pauses its producer past ``high_water`` buffered bytes."""

    def __init__(self, high_water: int | None = None) -> None:
        self.high_water = high_water
        self.producer: Any = None
        self.decoder = FrameDecoder()
        self.frames: list[dict[str, Any]] = []
        self.closes: list[Disconnect] = []  # close frames sent, in order
        self.after_close: list[dict[str, Any]] = []  # frames written after a close frame
        self.writes = 0
        self.buffered = 0
        self.writes_while_paused = 0
        self.reading = True

    def write(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        self.writes += 1
        if self.producer is not None and self.producer.paused:
            self.writes_while_paused += 1
        for frame in self.decoder.feed(data):
            assert frame.fin
            (self.after_close if self.closes else self.frames).append(frame.json())
        self.buffered += len(data)
        if (
            self.high_water is not None
            and self.producer is not None
            and self.buffered > self.high_water
        ):
            self.producer.pauseProducing()  # as Twisted's FileDescriptor does

    def send_close(self, disconnect: Disconnect) -> None:
        self.closes.append(disconnect)

    def drain(self) -> None:
        """The kernel took everything: Twisted resumes the producer once the buffer is empty."""
        self.buffered = 0
        if self.producer is not None:
            self.producer.resumeProducing()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Harness:
    """One node: a store, the in-process presence, the real service and router, a Clock."""

    def __init__(self, store: ILogStore | None = None, **settings: Any) -> None:
        self.clock = Clock()
        self.store: Any = store if store is not None else MemoryLogStore()
        self.settings = Settings(store="memory", **settings)
        self.presence = LocalPresence()
        self.service = ChatService(self.store, self.presence, self.settings, self.clock)
        self.node = Node(self.service, router, self.settings, self.clock)

    def connect(self, username: str | None = None, high_water: int | None = None) -> Conn:
        conn = Conn(self, high_water)
        if username is not None:
            answer = conn.request("login", {"username": username})
            assert answer["type"] == "response", answer
        return conn

    # The reactor side.

    def turn(self) -> int:
        """One reactor turn: run the calls due now, not the ones they schedule. Returns how many."""
        now = self.clock.seconds()
        due = [call for call in self.clock.getDelayedCalls() if call.getTime() <= now]
        for call in due:
            if call.active():  # an earlier call of this turn may have cancelled it
                self.clock.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)
        return len(due)

    def settle(self, max_turns: int = 10_000) -> None:
        """Run turns until nothing is due now (every connection is idle or paused)."""
        for _ in range(max_turns):
            if not self.turn():
                return
        raise AssertionError(f"still busy after {max_turns} turns: a stream that never rests")

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, running every timer and flush on the way, in order."""
        target = self.clock.seconds() + seconds
        for _ in range(100_000):
            self.settle()
            pending = [c.getTime() for c in self.clock.getDelayedCalls()]
            upcoming = [t for t in pending if t <= target]
            if not upcoming:
                break
            self.clock.advance(min(upcoming) - self.clock.seconds())
            self.settle()
        self.clock.advance(target - self.clock.seconds())
        self.settle()

    # Other users' items, appended straight to the store.

    def post(self, channel: str, content: str = "hi", sender: str = "bob") -> Appended:
        return self._now(
            self.store.append(channel_log(channel), channel_message(channel, sender, content))
        )

    def private(self, to: str, content: str = "psst", sender: str = "bob") -> Appended:
        return self._now(self.store.append(inbox_log(to), private_message(sender, to, content)))

    def _now(self, d: Deferred[Appended]) -> Appended:
        results: list[Any] = []
        d.addBoth(results.append)
        self.settle()
        assert results and isinstance(results[0], Appended), results
        return results[0]  # type: ignore[no-any-return]

    def listeners(self) -> int:
        """Listeners registered anywhere in the store."""
        return sum(len(state.listeners) for state in self.store.all_states().values())


class Conn:
    """One client connection to the harness's node."""

    def __init__(self, harness: Harness, high_water: int | None) -> None:
        self.harness = harness
        self.transport = FakeTransport(high_water)
        self.connection = ChatConnection(
            harness.node,
            self.transport.write,
            self.transport.send_close,
            self.transport.pause_reading,
            self.transport.resume_reading,
        )
        self.outbound = self.connection.outbound
        self.transport.producer = self.outbound
        self.next_id = 1000

    @property
    def core(self) -> Any:
        return self.connection.interactions

    @property
    def reading(self) -> bool:
        return self.transport.reading

    # The client side: frames go through the real connection.

    def client(self, **frame: Any) -> None:
        self.connection.text_received(json.dumps(frame))

    def raw(self, text: str) -> None:
        self.connection.text_received(text)

    def request(self, route: str, data: Any = None) -> dict[str, Any]:
        """Send a request, settle, and return its answer (response or error)."""
        self.next_id += 1
        fid = self.next_id
        frame: dict[str, Any] = {"type": "request", "id": fid, "route": route}
        if data is not None:
            frame["data"] = data
        self.client(**frame)
        self.harness.settle()
        answers = [f for f in self.frames(fid) if f["type"] in ("response", "error")]
        assert answers, f"no answer to {frame}"
        return answers[-1]

    def open(
        self,
        fid: int,
        route: str,
        data: Any = None,
        credit: int | None = None,
        kind: str = "stream",
    ) -> None:
        frame: dict[str, Any] = {"type": kind, "id": fid, "route": route}
        if data is not None:
            frame["data"] = data
        if credit is not None:
            frame["credit"] = credit
        self.client(**frame)

    def open_feed(
        self, fid: int = 1, credit: int | None = None, since: Mapping[str, int] | None = None
    ) -> Any:
        data = {"since": dict(since)} if since is not None else None
        self.open(fid, "messages", data, credit)
        return self.outbound.streams[fid]

    def join(self, channel: str) -> int:
        answer = self.request("channel.join", {"channel": channel})
        assert answer["type"] == "response", answer
        return int(answer["data"]["seq"])

    def leave(self, channel: str) -> None:
        answer = self.request("channel.leave", {"channel": channel})
        assert answer["type"] == "response", answer

    # What the client read.

    def frames(self, fid: int | None = None) -> list[dict[str, Any]]:
        return [f for f in self.transport.frames if fid is None or f.get("id") == fid]

    def items(self, fid: int) -> list[dict[str, Any]]:
        return [f["data"] for f in self.frames(fid) if f["type"] == "next"]

    def catch_up(self, max_rounds: int = 100_000) -> None:
        """Drain the transport and flush until everything available was delivered."""
        for _ in range(max_rounds):
            self.harness.settle()
            if not self.outbound.paused:
                return
            self.transport.drain()
        raise AssertionError("the connection never caught up")


def seqs_of(items: Sequence[dict[str, Any]], channel: str | None) -> list[int]:
    return [i["seq"] for i in items if i.get("channel") == channel and i["kind"] != "gap"]


@implementer(ILogStore)
class SlowDiskStore(MemoryLogStore):
    """A memory store that holds only its newest ``cache`` items of each log in memory.

    Older retained items are read from "disk": :meth:`fetch` answers one reactor turn later
    (on the harness's clock), or only when the test calls :meth:`serve` if ``manual``. Reads
    are counted, so tests see how many pages a catch-up took.
    """

    def __init__(
        self, clock: Clock | None, cache: int = 8, retention: int = 10_000, manual: bool = False
    ) -> None:
        super().__init__(retention=retention)
        self.clock: Any = clock
        self.small = cache
        self.manual = manual
        self.waiting: list[tuple[Deferred[Sequence[LogItem]], list[LogItem]]] = []
        self.fetches = 0

    def cached(
        self, log: str, after: int, limit: int, max_bytes: int = 64 * 1024
    ) -> Sequence[LogItem] | None:
        last = self.last_seq(log)
        if after + 1 < max(self.first_seq(log), last - self.small + 1):
            return None  # "on disk"
        return super().cached(log, after, limit, max_bytes)

    def read(
        self, log: str, after: int, limit: int, max_bytes: int = 64 * 1024
    ) -> Deferred[Sequence[LogItem]]:
        items = self.cached(log, after, limit, max_bytes)
        if items is not None:
            d: Deferred[Sequence[LogItem]] = Deferred()
            d.callback(items)
            return d
        self.fetches += 1
        page = list(super().cached(log, after, limit, max_bytes) or [])
        d = Deferred()
        if self.manual:
            self.waiting.append((d, page))
        else:
            self.clock.callLater(0, d.callback, page)
        return d

    def serve(self) -> int:
        """Answer every read waiting (manual mode); how many."""
        waiting, self.waiting = self.waiting, []
        for d, page in waiting:
            d.callback(page)
        return len(waiting)
