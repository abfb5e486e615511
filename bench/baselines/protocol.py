"""The routes of the ``autobahn`` and ``floor`` baselines, over Autobahn with the fast path."""

from __future__ import annotations

import uuid
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

from bench.baselines.codec import decode, encode
from bench.baselines.fastpath import split_text_frames
from bench.baselines.hub import Channel, Hub

SUBPROTOCOL = "chat.v1.json"
MAX_FRAME = 64 * 1024  # the chat server's default frame limit


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

    def processData(self) -> bool:
        """The chat server's fast path (``chat/websocket.py``): simple text frames split here.

        Anything else (control frames, fragments, a partial frame) is left to Autobahn.
        """
        if self.state == self.STATE_OPEN and self.current_frame is None and not self.inside_message:
            payloads, used = split_text_frames(self.data, MAX_FRAME)
            if used:
                self.data = self.data[used:]
                for payload in payloads:
                    if self.state != self.STATE_OPEN:
                        break
                    self.onMessage(payload, False)
                return len(self.data) > 0
        result: bool = super().processData()
        return result

    def respond(self, fid: int, data: Any) -> None:
        self.factory.hub.send(self, b'{"type":"response","id":%d,"data":%s}' % (fid, encode(data)))

    def error(self, fid: Any, code: str, message: str) -> None:
        frame = {"type": "error", "id": fid, "error": {"code": code, "message": message}}
        self.factory.hub.send(self, encode(frame))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
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
            self.login(fid, data)
        elif self.username is None:
            self.error(fid, "unauthenticated", "log in first")
        elif kind == "request" and route == "message":
            self.message(fid, data)
        elif kind == "request" and route == "channel.join":
            self.join(fid, data["channel"])
        elif kind == "stream" and route == "messages":
            self.feed_id = fid  # live only: these baselines keep no log, so "since" is moot
        elif kind == "stream" and route == "channels":
            self.factory.hub.send(self, b'{"type":"complete","id":%d}' % fid)
        else:
            self.error(fid, "unknown_route", f"no {kind} route {route!r} in this baseline")

    def login(self, fid: int, data: dict[str, Any]) -> None:
        hub = self.factory.hub
        name = data["username"]
        if self.username is not None or name in hub.sessions:
            self.error(fid, "username_taken", "taken")
            return
        self.username = name
        hub.sessions[name] = self
        hub.inbox_seq.setdefault(name, 0)
        self.respond(fid, {"username": name, "session_id": uuid.uuid4().hex, "epoch": hub.epoch})

    def message(self, fid: int, data: dict[str, Any]) -> None:
        hub = self.factory.hub
        assert self.username is not None
        if "user" in data:
            user = data["user"]
            if user not in hub.inbox_seq:
                self.error(fid, "not_found", "no such user")
                return
            seq, ts = hub.private(self.username, user, data["content"])
            self.respond(fid, {"channel": None, "seq": seq, "ts": ts})
            return
        channel = hub.channels.get(str(data.get("channel")))
        if channel is None or self not in channel.members:
            self.error(fid, "forbidden", "join first")
            return
        fields = {"kind": "message", "channel": channel.name, "from": self.username}
        fields["content"] = data["content"]
        seq, ts = hub.append(channel, fields)
        self.respond(fid, {"channel": channel.name, "seq": seq, "ts": ts})

    def join(self, fid: int, name: str) -> None:
        hub = self.factory.hub
        channel = hub.channels.get(name)
        if channel is None:
            channel = hub.channels[name] = Channel(name)
        if self in channel.members:
            self.respond(fid, {"channel": name, "seq": channel.seq, "users": len(channel.members)})
            return
        channel.members[self] = None
        self.joined.add(name)
        seq, _ = hub.append(channel, {"kind": "join", "channel": name, "from": self.username})
        self.respond(fid, {"channel": name, "seq": seq, "users": len(channel.members)})

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
    protocol = BaseProtocol  # type: ignore[assignment]

    def __init__(self, url: str, mode: str) -> None:
        super().__init__(url)
        self.hub = Hub(mode)
        self.setProtocolOptions(
            maxFramePayloadSize=MAX_FRAME, maxMessagePayloadSize=MAX_FRAME, autoFragmentSize=0
        )
