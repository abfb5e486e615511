"""The two comparison servers, speaking the subset of PROTOCOL.md the benchmarks use.

Run as ``python -m bench.baselines --mode autobahn|floor --port PORT``.

Both accept the WebSocket with Autobahn (so reading, unmasking and UTF-8 checking of client
frames costs the same as in the chat server, which also reads through Autobahn) and answer
``login``, the ``messages`` stream, ``channel.join``, ``message`` (to a channel) and the
``channels`` stream (completes at once). They keep no log and no history: items go to the
members' open feeds, live, and nowhere else. An item's JSON is encoded once per append, with
the same compact shape as the chat server's, so every delivered frame has the same size as the
chat server's. JSON is read and written with the codec the chat server uses (orjson when it is
installed, else the standard library), so that the comparison is about delivery, not about
JSON libraries. They differ only in how the item reaches the recipients:

- ``autobahn`` (baseline a, "what most code does"): for each member with an open feed,
  build that client's ``next`` frame text and call ``sendMessage`` on it. No backpressure:
  a client that does not read makes the transport buffer grow.
- ``floor`` (baseline b): the ``next`` frame is built and WebSocket-framed once per distinct
  stream id and appended to each recipient's pending list; once per reactor turn every
  connection with pending frames gets ONE ``transport.write`` of all of them. Also without
  backpressure. This is the least Python work a Twisted server can do per delivery.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
import uuid
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor

SUBPROTOCOL = "chat.v1.json"

try:
    import orjson

    CODEC = "orjson"
    encode = orjson.dumps
    decode = orjson.loads
except ImportError:  # pragma: no cover - the chat server depends on orjson
    CODEC = "json"
    _dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    decode = json.loads

    def encode(value: Any) -> bytes:
        return _dumps(value).encode()


def text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class Channel:
    __slots__ = ("members", "name", "seq")

    def __init__(self, name: str) -> None:
        self.name = name
        self.seq = 0
        self.members: dict[BaseProtocol, None] = {}


class Hub:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.epoch = uuid.uuid4().hex
        self.channels: dict[str, Channel] = {}
        self.sessions: dict[str, BaseProtocol] = {}
        self.dirty: dict[BaseProtocol, None] = {}
        self.flush_scheduled = False

    def append(self, channel: Channel, fields: dict[str, Any]) -> tuple[int, int]:
        channel.seq += 1
        ts = time.time_ns() // 1_000_000
        item = encode({**fields, "seq": channel.seq, "ts": ts})
        self.broadcast(channel, item)
        return channel.seq, ts

    def broadcast(self, channel: Channel, item: bytes) -> None:
        if self.mode == "autobahn":
            for member in channel.members:
                fid = member.feed_id
                if fid is not None:
                    member.sendMessage(b'{"type":"next","id":%d,"data":%s}' % (fid, item))
        else:
            framed: dict[int, bytes] = {}
            dirty = self.dirty
            for member in channel.members:
                fid = member.feed_id
                if fid is None:
                    continue
                frame = framed.get(fid)
                if frame is None:
                    frame = framed[fid] = text_frame(
                        b'{"type":"next","id":%d,"data":%s}' % (fid, item)
                    )
                member.pending.append(frame)
                dirty[member] = None
            self.schedule_flush()

    def schedule_flush(self) -> None:
        if not self.flush_scheduled:
            self.flush_scheduled = True
            reactor.callLater(0, self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        dirty, self.dirty = self.dirty, {}
        for member in dirty:
            pending = member.pending
            if pending and member.transport is not None:
                member.pending = []
                member.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))


class BaseProtocol(WebSocketServerProtocol):  # type: ignore[misc]
    factory: Factory

    def __init__(self) -> None:
        super().__init__()
        self.username: str | None = None
        self.feed_id: int | None = None
        self.joined: set[str] = set()
        self.pending: list[bytes] = []

    def onConnect(self, request: Any) -> str | None:
        return SUBPROTOCOL if SUBPROTOCOL in request.protocols else None

    def send_frame(self, payload: bytes) -> None:
        hub = self.factory.hub
        if hub.mode == "autobahn":
            self.sendMessage(payload)
        else:
            self.pending.append(text_frame(payload))
            hub.dirty[self] = None
            hub.schedule_flush()

    def respond(self, fid: int, data: Any) -> None:
        self.send_frame(b'{"type":"response","id":%d,"data":%s}' % (fid, encode(data)))

    def error(self, fid: Any, code: str, message: str) -> None:
        self.send_frame(
            encode({"type": "error", "id": fid, "error": {"code": code, "message": message}})
        )

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        hub = self.factory.hub
        try:
            frame = decode(payload)
            kind = frame["type"]
            fid = frame.get("id")
            route = frame.get("route")
            data = frame.get("data") or {}
        except (ValueError, KeyError, TypeError, AttributeError):
            self.error(None, "bad_frame", "not a frame")
            return
        if kind == "request" and route == "login":
            name = data["username"]
            if self.username is not None or name in hub.sessions:
                self.error(fid, "username_taken", "taken")
                return
            self.username = name
            hub.sessions[name] = self
            self.respond(
                fid, {"username": name, "session_id": uuid.uuid4().hex, "epoch": hub.epoch}
            )
            return
        if self.username is None:
            self.error(fid, "unauthenticated", "log in first")
            return
        if kind == "request" and route == "message":
            channel = hub.channels.get(data.get("channel"))
            if channel is None or self not in channel.members:
                self.error(fid, "forbidden", "join first")
                return
            fields = {"kind": "message", "channel": channel.name, "from": self.username}
            fields["content"] = data["content"]
            seq, ts = hub.append(channel, fields)
            self.respond(fid, {"channel": channel.name, "seq": seq, "ts": ts})
        elif kind == "request" and route == "channel.join":
            name = data["channel"]
            channel = hub.channels.get(name)
            if channel is None:
                channel = hub.channels[name] = Channel(name)
            if self in channel.members:
                self.respond(
                    fid, {"channel": name, "seq": channel.seq, "users": len(channel.members)}
                )
                return
            channel.members[self] = None
            self.joined.add(name)
            seq, _ = hub.append(channel, {"kind": "join", "channel": name, "from": self.username})
            self.respond(fid, {"channel": name, "seq": seq, "users": len(channel.members)})
        elif kind == "stream" and route == "messages":
            self.feed_id = fid  # live only: these baselines keep no log, so "since" is moot
        elif kind == "stream" and route == "channels":
            self.send_frame(b'{"type":"complete","id":%d}' % fid)
        else:
            self.error(fid, "unknown_route", f"no {kind} route {route!r} in this baseline")

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        hub = self.factory.hub
        hub.dirty.pop(self, None)
        if self.username is not None and hub.sessions.get(self.username) is self:
            del hub.sessions[self.username]
        for name in self.joined:
            channel = hub.channels[name]
            channel.members.pop(self, None)
            hub.append(channel, {"kind": "leave", "channel": name, "from": self.username})
        self.joined.clear()


class Factory(WebSocketServerFactory):  # type: ignore[misc]
    protocol = BaseProtocol

    def __init__(self, url: str, mode: str) -> None:
        super().__init__(url)
        self.hub = Hub(mode)
        size = 64 * 1024  # the chat server's default frame limit
        self.setProtocolOptions(
            maxFramePayloadSize=size, maxMessagePayloadSize=size, autoFragmentSize=0
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["autobahn", "floor"], required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    factory = Factory(f"ws://127.0.0.1:{args.port}", args.mode)
    reactor.listenTCP(args.port, factory, interface="127.0.0.1")
    print(f"baseline {args.mode} ({CODEC}) listening on 127.0.0.1:{args.port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    sys.exit(main())
