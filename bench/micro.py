"""In-process micro-benchmarks of the delivery path: the chat server's code against the floor's.

No sockets, no reactor: connections write into a counting sink, and the one scheduled call (the
flush) is run by hand. What is left is the Python work of the server per publish and per
delivery — parse, route, append, wake, frame, write — which is what a change to the hot path
moves. Run it under callgrind to count instructions (steady on a shared machine, where timings
are not)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python -m bench.micro fanout --publishes 100
    # run again with --publishes 200: the difference / 100 is the cost of one publish

or time it directly (``--repeat``, best of)::

    .venv/bin/python -m bench.micro fanout --subscribers 1000 --publishes 200 --repeat 5

``fanout``: one publisher posts to one channel with ``--subscribers`` open feeds; each publish
is flushed on its own (the fixed-rate case: batches of one item). ``--batch N`` flushes after N
publishes instead (the saturated case). ``--target floor`` runs the floor baseline's routes and
hub (bench/baselines) on the same frames.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

import orjson

CONTENT = "T" + "0" * 19 + " " + "x" * 44


class Sink:
    """A transport that counts what it is given."""

    __slots__ = ("bytes", "writes")

    def __init__(self) -> None:
        self.bytes = 0
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.bytes += len(data)


class Calls:
    """The reactor's ``callLater``, run by hand."""

    def __init__(self) -> None:
        self.due: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any) -> Any:
        self.due.append((f, args))
        return _Delayed()

    def seconds(self) -> float:
        return time.monotonic()

    def run(self) -> None:
        while self.due:
            due, self.due = self.due, []
            for f, args in due:
                f(*args)


class _Delayed:
    def active(self) -> bool:
        return False

    def cancel(self) -> None:
        pass


def _request(fid: int, route: str, data: Any = None, kind: str = "request") -> bytes:
    frame: dict[str, Any] = {"type": kind, "id": fid, "route": route}
    if data is not None:
        frame["data"] = data
    return orjson.dumps(frame)


def _message(fid: int) -> bytes:
    return _request(fid, "message", {"channel": "bench", "content": CONTENT})


class ChatFanout:
    def __init__(self, subscribers: int) -> None:
        from chat.connection import ChatConnection, Node
        from chat.service.chat import ChatService
        from chat.service.routes import router
        from chat.settings import Settings
        from chat.stores.memory import MemoryLogStore
        from chat.stores.presence import LocalPresence

        self.calls = Calls()
        settings = Settings(store="memory", login_timeout=0)
        store = MemoryLogStore()
        service = ChatService(store, LocalPresence(), settings, self.calls)  # type: ignore[arg-type]
        self.node = Node(service, router, settings, self.calls)  # type: ignore[arg-type]
        self.sinks: list[Sink] = []

        def connect(name: str) -> Any:
            sink = Sink()
            self.sinks.append(sink)
            conn = ChatConnection(self.node, sink.write, lambda d: None)
            conn.text_received(_request(1, "login", {"username": name}))
            conn.text_received(_request(2, "channel.join", {"channel": "bench"}))
            self.calls.run()
            return conn

        self.publisher = connect("publisher")
        members = [connect(f"u{i}") for i in range(subscribers)]
        # Feeds open after every join, from the last join on (as bench.load does): else N
        # subscribers joining one by one cost N^2/2 join deliveries.
        since = {"since": {"bench": store.last_seq("#bench")}, "epoch": store.epoch}
        for conn in members:
            conn.text_received(_request(3, "messages", since, kind="stream"))
        self.calls.run()
        self.next_id = 10

    def publish(self) -> None:
        self.next_id += 1
        self.publisher.text_received(_message(self.next_id))

    def flush(self) -> None:
        self.calls.run()


class FloorFanout:
    def __init__(self, subscribers: int) -> None:
        from bench.baselines import hub as hub_module
        from bench.baselines.protocol import BaseProtocol

        calls = self.calls = Calls()
        hub = hub_module.Hub("floor")
        hub_module.reactor = calls  # type: ignore[assignment]

        class Factory:
            pass

        factory = Factory()
        factory.hub = hub  # type: ignore[attr-defined]
        self.sinks: list[Sink] = []

        def connect(name: str) -> Any:
            sink = Sink()
            self.sinks.append(sink)
            conn = BaseProtocol()
            conn.factory = factory  # type: ignore[assignment]
            conn.transport = sink
            conn.onMessage(_request(1, "login", {"username": name}), False)
            conn.onMessage(_request(2, "channel.join", {"channel": "bench"}), False)
            calls.run()
            return conn

        self.publisher = connect("publisher")
        members = [connect(f"u{i}") for i in range(subscribers)]
        for conn in members:
            conn.onMessage(_request(3, "messages", {}, kind="stream"), False)
        calls.run()
        self.next_id = 10

    def publish(self) -> None:
        self.next_id += 1
        self.publisher.onMessage(_message(self.next_id), False)

    def flush(self) -> None:
        self.calls.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=["fanout"])
    parser.add_argument("--target", choices=["chat", "floor"], default="chat")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--publishes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1, help="publishes per flush")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    bench = (ChatFanout if args.target == "chat" else FloorFanout)(args.subscribers)
    for _ in range(5):  # warm up: first-use allocations, buckets, caches
        bench.publish()
        bench.flush()
    gc.collect()
    best = float("inf")
    for _ in range(args.repeat):
        before = sum(s.bytes for s in bench.sinks)
        started = time.process_time()
        for i in range(args.publishes):
            bench.publish()
            if (i + 1) % args.batch == 0:
                bench.flush()
        bench.flush()
        best = min(best, time.process_time() - started)
        written = sum(s.bytes for s in bench.sinks) - before
    deliveries = args.publishes * args.subscribers
    print(
        f"{args.target}: {args.publishes} publishes x {args.subscribers} subscribers, "
        f"batch {args.batch}: best {best * 1e3:.1f} ms, {best / deliveries * 1e9:.0f} ns per "
        f"delivery, {written} bytes written"
    )


if __name__ == "__main__":
    main()
