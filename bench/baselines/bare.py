"""The ``bare`` baseline: what a plain Autobahn WebSocket connection costs by itself.

It negotiates the subprotocol like the chat server (so the handshake and the connection
object are the same work), answers ``login`` (with an epoch, as the load clients expect),
completes ``channels`` at once, accepts a ``messages`` stream and keeps nothing else: no
per-connection state of its own, no fast path (Autobahn's own frame parser). The idle and
reconnect-storm scenarios compare the chat server with it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

from bench.baselines.protocol import MAX_FRAME, SUBPROTOCOL

EPOCH = uuid.uuid4().hex


class BareProtocol(WebSocketServerProtocol):  # type: ignore[misc]
    def onConnect(self, request: Any) -> str | None:
        return SUBPROTOCOL if SUBPROTOCOL in request.protocols else None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        frame = json.loads(payload)
        fid = frame.get("id")
        route = frame.get("route")
        if route == "login":
            data = {"username": frame["data"]["username"], "session_id": uuid.uuid4().hex}
            data["epoch"] = EPOCH
            self.sendMessage(json.dumps({"type": "response", "id": fid, "data": data}).encode())
        elif route == "channels":
            self.sendMessage(b'{"type":"complete","id":%d}' % fid)
        elif route != "messages":
            error = {"code": "unknown_route", "message": f"no route {route!r} in bare"}
            self.sendMessage(json.dumps({"type": "error", "id": fid, "error": error}).encode())


class BareFactory(WebSocketServerFactory):  # type: ignore[misc]
    protocol = BareProtocol

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.setProtocolOptions(
            maxFramePayloadSize=MAX_FRAME, maxMessagePayloadSize=MAX_FRAME, autoFragmentSize=0
        )
