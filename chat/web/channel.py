"""HTTP/1.1 with bounds: what one HTTP connection may cost, enforced where the bytes arrive.

twisted.web's :class:`~twisted.web.http.HTTPChannel` trusts its client more than a public
server can: it spools any body over 100 kB to a temporary file before a resource sees the
request, and its idle timer is reset by every byte, so a client sending one header byte a
second keeps a connection for hours. :class:`LimitedChannel` and :class:`LimitedRequest`
keep twisted.web's parser and add, per request:

- a deadline for the request head (``--header-timeout``), armed when the connection opens
  and again when a response is done (so an idle keep-alive connection is a head that has not
  arrived); then one for the body (``--body-timeout``). A missed deadline is answered
  ``408``. The timers are deadlines, not idle timers: bytes do not reset them.
- a body limit per route (:func:`body_limit`): ``POST /api/publish`` takes up to
  ``--max-body-size`` bytes, every other route none. A ``Content-Length`` above the limit is
  answered ``413`` at once, from the head, before one byte of the body is read; a chunked body
  is answered ``413`` as soon as it passes the limit. Bodies are kept in memory (the site's
  ``getContentFile``): with the limit, never more than ``--max-body-size`` per connection, and
  never on disk. The publish route's Bearer key is checked from the head too (``401``), so
  only key holders get to send a body at all.
- ``--allowed-host``: a request whose ``Host`` is not allowed is answered ``421`` before any
  resource (the WebSocket handshake included) sees it.
- a malformed or oversized head is answered ``400`` (``431`` for a line over 16 KiB) with a
  message, where twisted.web writes a bare ``400``.

A refusal (:meth:`LimitedChannel.refuse`) is a complete response with ``Connection: close``
and a JSON body ``{"error": {"code", "message"}}``; the connection then reads nothing more,
half-closes (so the client can read the answer: closing a socket with unread input would
send a reset that may destroy it), and is dropped :data:`LINGER` seconds later at most. Log
lines about refusals go through the site's :class:`~chat.logs.LogThrottle`.

These classes use attributes twisted.web keeps for itself (``HTTPChannel._command``,
``_path``, ``_networkProducer`` and ``_respondToBadRequestAndDisconnect``, checked with Twisted
26.10); the tests in tests/test_http_limits.py fail if a Twisted release changes them.
"""

from __future__ import annotations

import json
from functools import partial
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote_to_bytes

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request

from chat.settings import Settings
from chat.web.apikeys import bearer_authorized
from chat.web.origins import host_allowed

if TYPE_CHECKING:
    from chat.web.connections import CountedConnection
    from chat.web.site import ChatSite

LINGER: Final = 2.0  # seconds a refused client has to read the answer before it is dropped
UNAUTHORIZED: Final = 'WWW-Authenticate: Bearer realm="chat"\r\n'
REASONS: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    408: "Request Timeout",
    413: "Content Too Large",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

log = Logger(namespace="chat.web")


def error_body(code: str, message: str) -> bytes:
    """The JSON body of every HTTP error this server sends."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def error_response(status: int, code: str, message: str, headers: str = "") -> bytes:
    """A whole HTTP/1.1 error response that ends the connection, as bytes.

    ``headers``: more header lines, each ending in CRLF.
    """
    body = error_body(code, message)
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n{headers}"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def body_limit(settings: Settings, method: bytes, path: bytes) -> int:
    """The most bytes of body the route of ``method path`` takes: 0 for every route but one.

    Only ``POST /api/publish`` takes a body, and only when the publish API is on. The path is
    split and unquoted the way :class:`twisted.web.server.Request` routes it, so that
    ``/api/%70ublish`` or ``/api/publish/`` (which reach the same leaf resource) get the
    same limit.
    """
    if method != b"POST" or not settings.api_keys:
        return 0
    segments = [unquote_to_bytes(s) for s in path.split(b"?", 1)[0][1:].split(b"/")]
    return settings.max_body_size if segments[:2] == [b"api", b"publish"] else 0


def describe_peer(transport: Any) -> str:
    try:
        peer = transport.getPeer()
    except AttributeError:
        return "?"
    host = getattr(peer, "host", None)
    return f"{host}:{peer.port}" if host is not None else str(peer)


class LimitedChannel(HTTPChannel):
    """One HTTP connection, with the deadlines and body limits of the module docstring."""

    site: ChatSite
    requests: list[LimitedRequest]
    # Each header costs about 200 bytes of Python objects beyond its text: twisted.web's 500
    # made a 16 KiB head cost 100 KB of memory. Browsers send about 20.
    maxHeaders = 100
    refused = False
    counted: CountedConnection | None = None  # set by the CountedConnection in front of it
    _deadline: IDelayedCall | None = None
    _linger: IDelayedCall | None = None

    @property
    def settings(self) -> Settings:
        return self.site.settings

    # Deadlines

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm(self.settings.header_timeout, "head")

    def _arm(self, seconds: float, phase: str) -> None:
        self._disarm()
        if seconds > 0:
            self._deadline = self.callLater(seconds, partial(self._too_slow, phase, seconds))

    def _disarm(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _too_slow(self, phase: str, seconds: float) -> None:
        self._deadline = None
        what = "request head" if phase == "head" else "request body"
        self.refuse(408, "timeout", f"the {what} did not arrive within {seconds:g} s")

    # The parser, stopped after a refusal

    def lineReceived(self, line: bytes) -> None:
        if not self.refused:
            super().lineReceived(line)

    def rawDataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().rawDataReceived(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        limit = self.MAX_LENGTH
        self.refuse(431, "header_too_large", f"a request line or header is over {limit} bytes")

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.refuse(400, "bad_request", "the request head is malformed or too large")

    def allHeadersReceived(self) -> None:
        """The head is in: refuse a body the route does not take, before reading any of it."""
        request = self.requests[-1]
        settings = self.settings
        limit = body_limit(settings, self._command, self._path)
        if self.length is not None and self.length > limit:
            self.refuse(413, "too_large", _too_large(limit))
            return
        if limit and not bearer_authorized(request.getHeader(b"authorization"), settings.api_keys):
            # The body budget is for key holders: others are refused before sending it.
            self.refuse(401, "unauthenticated", "missing or wrong Bearer key", UNAUTHORIZED)
            return
        request.body_limit = limit
        super().allHeadersReceived()
        if self.length != 0:  # a body follows: it gets a deadline of its own
            self._arm(self.settings.body_timeout, "body")

    def allContentReceived(self) -> None:
        if self.refused:
            return
        self._disarm()  # the request is complete; answering it takes what it takes
        super().allContentReceived()

    def requestDone(self, request: Request) -> None:
        if self.persistent:
            # Before the parser resumes: it may complete the next, pipelined request at once.
            self._arm(self.settings.header_timeout, "head")
        super().requestDone(request)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._disarm()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None
        super().connectionLost(reason)

    # Refusals

    def refuse(self, status: int, code: str, message: str, headers: str = "") -> None:
        """Answer ``status`` with ``message``, read nothing more, and close.

        The write side is shut after the answer (TLS: the whole connection, with its close
        alert) while the peer's unread input is left alone, so the peer sees the answer
        rather than a reset; whatever the peer does, the connection is gone :data:`LINGER`
        seconds later.
        """
        transport: Any = self.transport  # TCP or TLS, maybe inside a CountedConnection
        if self.refused or transport is None:
            return
        self.refused = True
        self._disarm()
        throttled_log(self.site, f"http.{status}", transport, status, message)
        transport.write(error_response(status, code, message, headers))
        self._networkProducer.pauseProducing()  # read no more of it
        if self.isSecure():
            transport.loseConnection()
        else:
            transport.loseWriteConnection()
        self._linger = self.callLater(LINGER, self._drop)

    def _drop(self) -> None:
        self._linger = None
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()


class LimitedRequest(Request):
    """A request whose body is counted as it arrives, and whose ``Host`` is checked.

    twisted.web's own log lines about a request (a ``HEAD`` faked with ``GET``, a producer
    left registered) go through the site's throttle too: clients decide how many there are.
    """

    channel: LimitedChannel
    body_limit = 0  # set by the channel once the head is in
    _body_received = 0

    def __init__(self, channel: LimitedChannel, *args: Any, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)
        # An instance attribute hides twisted.web's class-level Logger (a non-data descriptor).
        self._log = channel.site.throttle.logger("twisted.web.server", "http.twisted")

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if channel.refused:
            return
        self._body_received += len(data)
        if self._body_received > self.body_limit:
            channel.refuse(413, "too_large", _too_large(self.body_limit))
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        """Refuse a ``Host`` not in ``--allowed-host`` (421) before any resource runs."""
        site = self.channel.site
        allowed = site.settings.allowed_hosts
        if allowed:
            host = (self.getHeader(b"host") or b"").decode("latin-1")
            if not host_allowed(host, allowed):
                self.site = site
                message = f"this server does not answer for host {host[:100]!r}"
                throttled_log(site, "http.421", self.transport, 421, message)
                self._answer(421, "unknown_host", message)
                return
        channel, transport = self.channel, self.channel.transport
        super().process()
        if channel.transport is None and transport is not None and channel.counted is not None:
            channel.counted.taken_over(transport)  # the WebSocket resource took it over

    def processingFailed(self, reason: Failure) -> Failure:
        """A resource raised: a JSON 500, and the traceback through the site's throttle.

        Every known cause is fixed; this keeps an unknown one from flooding the log.
        """
        if self.channel.site.throttle.allow("http.500"):
            log.failure("request {method} {uri} failed", reason, method=self.method, uri=self.uri)
        self._answer(500, "internal", "the server failed to answer this request")
        return reason

    def _answer(self, status: int, code: str, message: str) -> None:
        body = error_body(code, message)
        self.setResponseCode(status, REASONS[status].encode())
        self.setHeader(b"Content-Type", b"application/json")
        self.setHeader(b"Content-Length", b"%d" % len(body))
        self.write(body)
        self.finish()


def _too_large(limit: int) -> str:
    if limit == 0:
        return "this route takes no request body"
    return f"the request body exceeds {limit} bytes (--max-body-size)"


def throttled_log(site: ChatSite, key: str, transport: Any, status: int, message: str) -> None:
    """One info line about a refused client, unless the site's throttle holds it back."""
    if site.throttle.allow(key):
        log.info(
            "refused {peer} with {status}: {message}",
            peer=describe_peer(transport),
            status=status,
            message=message,
        )
