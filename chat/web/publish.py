"""``POST /api/publish``: back-end services post a message to a channel over HTTP.

::

    curl -H "Authorization: Bearer $KEY" -d '{"channel":"general","content":"deploy done"}' \\
         http://localhost:8080/api/publish
    {"channel": "general", "seq": 42, "ts": 1763780000000}

The item is appended and delivered like any message; its ``from`` is ``api:<from>``
(``api:server`` when ``from`` is omitted), a form no username can take, so clients can tell
it from a user. Errors are JSON ``{"error": {"code", "message"}}`` with status 400 (bad JSON or
fields), 401 (missing or wrong key), 404 (no such channel), 405 (not POST), 413 (body over
``--max-body-size``: refused by :mod:`chat.web.channel` from its ``Content-Length``, or as a
chunked body passes the limit, before this resource runs), 500 (the store failed).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from chat.connection import Node
from chat.protocol.errors import ErrorCode, ProtocolError
from chat.service import validation as v
from chat.web.apikeys import bearer_authorized
from chat.web.channel import error_body

SENDER_PREFIX = "api:"
STATUS = {ErrorCode.INVALID_DATA: 400, ErrorCode.NOT_FOUND: 404}


class PublishResource(Resource):
    isLeaf = True
    log = Logger()

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node

    def render_POST(self, request: Request) -> bytes | int:
        settings = self.node.settings
        if not self._authorized(request):
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="chat"')
            return _error(request, 401, "unauthenticated", "missing or wrong Bearer key")
        assert request.content is not None
        body = request.content.read()  # at most --max-body-size: the channel refused more
        try:
            fields = v.obj(json.loads(body), "publish")
            channel = v.name(fields, "channel")
            content = v.content(fields, settings.max_content_length)
            sender = v.name(fields, "from") if fields.get("from") is not None else "server"
            d = self.node.service.announce(channel, SENDER_PREFIX + sender, content)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(request, 400, "invalid_data", f"the body is not JSON: {exc}")
        except ProtocolError as exc:
            return _error(request, STATUS.get(exc.code, 400), exc.code, exc.message)

        def published(answer: dict[str, Any]) -> None:
            request.setHeader(b"Content-Type", b"application/json")
            request.write(json.dumps(answer).encode())
            request.finish()

        def failed(failure: Failure) -> None:
            self.log.failure("publish failed", failure)
            request.write(_error(request, 500, "internal", "the store could not append"))
            request.finish()

        d.addCallbacks(published, failed)
        return NOT_DONE_YET

    def _authorized(self, request: Request) -> bool:
        return bearer_authorized(request.getHeader(b"authorization"), self.node.settings.api_keys)


def _error(request: Request, status: int, code: str, message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return error_body(str(code), message)
