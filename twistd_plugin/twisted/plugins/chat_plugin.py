"""The twistd drop-in for ``twistd chat``; the real code is in :mod:`chat.plugin`."""

from twisted.application.service import ServiceMaker

chat = ServiceMaker(
    "chat",
    "chat.plugin",
    "A real-time chat and pub/sub server over WebSocket (JSON protocol chat.v1.json).",
    "chat",
)
