"""``GET /healthz``: 200 when the server can reach its store, 503 when it cannot.

For load balancers and orchestrators: the body is JSON ``{"status": "ok" | "failing",
"store": ..., "detail"?}`` and the check runs one trivial query against the store.
"""

from __future__ import annotations

import json

from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from chat.connection import Node

TIMEOUT = 5.0  # seconds the store gets to answer


class HealthResource(Resource):
    isLeaf = True

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node

    def render_GET(self, request: Request) -> int:
        store = self.node.settings.store

        def answer(status: int, body: dict[str, str]) -> None:
            request.setResponseCode(status)
            request.setHeader(b"Content-Type", b"application/json")
            request.setHeader(b"Cache-Control", b"no-store")
            request.write(json.dumps(body).encode())
            request.finish()

        def failed(failure: Failure) -> None:
            detail = failure.getErrorMessage() or repr(failure.value)
            answer(503, {"status": "failing", "store": store, "detail": detail})

        d = self.node.service.store.ping().addTimeout(TIMEOUT, self.node.clock)
        d.addCallbacks(lambda _: answer(200, {"status": "ok", "store": store}), failed)
        return NOT_DONE_YET
