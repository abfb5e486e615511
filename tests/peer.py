"""A raw client the project did not write (``websocket-client``), for servers run as users run
them, and twistd servers on each store.

:class:`Peer` sorts frames by interaction id as they arrive, and can send several frames in one
TCP write (:meth:`Peer.pipelined`), so the server reads them together without waiting for any
answer. :func:`store_server` runs ``twistd -n chat`` on memory, SQLite (a file in a temporary
directory) or Redis (the session's redis-server, a key prefix of its own).
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import websocket

from tests.helpers import twistd_server
from tests.redis_fixtures import shared_redis_url

TIMEOUT = 20
STORES = ("memory", "sqlite", "redis")


class Peer:
    """A raw websocket-client connection with frames sorted by id."""

    def __init__(self, url: str, **options: Any) -> None:
        self.ws = websocket.create_connection(url, timeout=TIMEOUT, **options)
        self.inbox: list[dict[str, Any]] = []
        self.next_id = 100

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def send(self, frame: dict[str, Any] | str) -> None:
        self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    def pipelined(self, frames: list[dict[str, Any]]) -> None:
        """Every frame in one TCP write: the server reads them before answering any."""
        wire = b"".join(
            websocket.ABNF.create_frame(json.dumps(f), websocket.ABNF.OPCODE_TEXT).format()
            for f in frames
        )
        self.ws.sock.sendall(wire)

    def wait(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        for i, frame in enumerate(self.inbox):
            if match(frame):
                return self.inbox.pop(i)
        while True:
            frame = json.loads(self.ws.recv())
            if match(frame):
                return frame
            self.inbox.append(frame)

    def answer(self, frame_id: int) -> dict[str, Any]:
        return self.wait(lambda f: f.get("id") == frame_id and f["type"] in ("response", "error"))

    def request_frame(self, route: str, data: Any = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "request", "id": self.new_id(), "route": route}
        if data is not None:
            frame["data"] = data
        return frame

    def request(self, frame_id: int | str, route: str | Any = None, data: Any = None) -> Any:
        """``request(id, route, data)``, or ``request(route, data)`` with a fresh id."""
        if isinstance(frame_id, str):
            frame_id, route, data = self.new_id(), frame_id, route
        frame: dict[str, Any] = {"type": "request", "id": frame_id, "route": route}
        if data is not None:
            frame["data"] = data
        self.send(frame)
        return self.answer(frame_id)

    def collect(self, frame_id: int, route: str, data: Any = None) -> list[Any]:
        self.send({"type": "stream", "id": frame_id, "route": route, "data": data})
        items = []
        while True:
            frame = self.wait(lambda f: f.get("id") == frame_id)
            if frame["type"] != "next":
                assert frame["type"] == "complete", frame
                return items
            items.append(frame["data"])

    def items(self, frame_id: int, count: int) -> list[dict[str, Any]]:
        """The next ``count`` items of stream ``frame_id``."""
        return [self.wait(lambda f: f.get("id") == frame_id)["data"] for _ in range(count)]

    def close_code(self) -> int | None:
        """Read until the server closes; the close code it sent."""
        while True:
            opcode, data = self.ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return int.from_bytes(data[:2], "big") if len(data) >= 2 else None

    def close(self) -> None:
        self.ws.close()


def data(frame: dict[str, Any]) -> Any:
    assert frame["type"] == "response", frame
    return frame["data"]


def code(frame: dict[str, Any]) -> str:
    assert frame["type"] == "error", frame
    assert frame["error"]["message"]
    return str(frame["error"]["code"])


@contextmanager
def store_server(store: str, *options: str) -> Iterator[str]:
    """``twistd -n chat`` on ``store`` ("memory", "sqlite" or "redis"); yields its /ws URL."""
    with tempfile.TemporaryDirectory(prefix="chat-store-") as directory:
        if store == "sqlite":
            args = ["--store", f"sqlite:{directory}/chat.db"]
        elif store == "redis":
            prefix = f"t{uuid.uuid4().hex[:10]}:"
            args = ["--store", shared_redis_url(), "--redis-prefix", prefix]
        else:
            args = ["--store", "memory"]
        with twistd_server(*args, *options, cwd=directory) as (_, port):
            yield f"ws://127.0.0.1:{port}/ws"
