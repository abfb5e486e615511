"""The WebSocket adapter: the ONLY module of the project that imports Autobahn.

Server side, :class:`ServerProtocol` binds one Autobahn connection to one
:class:`~chat.connection.ChatConnection`: it negotiates the ``chat.v1.json`` subprotocol (or
none), swaps HTTPChannel's producer for the connection's :class:`~chat.producers.outbound.
Outbound`, hands text messages in, closes on binary ones, and reports the close. Autobahn
enforces the frame size limit (close 1009) and UTF-8 validity (close 1007) itself.

Frames going out do not pass through Autobahn's ``sendMessage``: the producers frame
pre-encoded items themselves (:mod:`chat.protocol.wsframe`) and write many frames at once.

Client side, :func:`connect` opens a connection for the Python client library
(:mod:`chat.client`), which thereby never needs Autobahn itself.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from collections.abc import Callable
from typing import Any, Final

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
    connectWS,
)
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.web.resource import IResource

from chat.connection import ChatConnection, Hub
from chat.protocol.errors import CloseCode
from chat.protocol.wsframe import split_text_frames
from chat.web.origins import origin_allowed

SUBPROTOCOL: Final = "chat.v1.json"
CLOSE_TIMEOUT: Final = 5  # seconds; Autobahn rounds its timers down to whole seconds


class ServerProtocol(WebSocketServerProtocol):
    """One client connection, as Autobahn sees it."""

    factory: ServerFactory
    connection: ChatConnection | None = None

    def onConnect(self, request: ConnectionRequest) -> str | None:
        settings = self.factory.hub.settings
        origin = request.origin or None
        if not origin_allowed(origin, self.http_headers.get("host"), settings.allowed_origins):
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, f"origin {origin} is not allowed")
        # --allowed-host, --max-connections(-per-ip) were applied before this request reached
        # the resource (chat.web.channel, chat.web.connections); this connection is counted.
        return SUBPROTOCOL if SUBPROTOCOL in request.protocols else None

    def onOpen(self) -> None:
        transport: Any = self.transport  # TCP or TLS: a consumer and a producer too
        # Behind WebSocketResource, HTTPChannel is still the transport's producer.
        transport.unregisterProducer()
        self.connection = ChatConnection(
            self.factory.hub,
            transport.write,
            self.close_with,
            transport.pauseProducing,
            transport.resumeProducing,
            transport,
            self.peer or "",
        )
        transport.registerProducer(self.connection.outbound, True)

    def processData(self) -> bool:
        """Fast path for the common frame: complete, final, masked text frames.

        Autobahn's parser costs about 20 µs per message (frame objects, UTF-8 validator,
        a future per message); most client frames are simple, so they are split here in one
        pass (:func:`~chat.protocol.wsframe.split_text_frames`) and handed straight to the
        connection. Anything else (control frames, fragments, binary, oversize, invalid UTF-8,
        a partial frame) is left to Autobahn, which also enforces every error close code.
        """
        connection = self.connection
        if (
            connection is not None
            and self.state == self.STATE_OPEN
            and self.current_frame is None
            and not self.inside_message
        ):
            payloads, used = split_text_frames(self.data, self.factory.hub.settings.max_frame_size)
            if used:
                self.data = self.data[used:]
                if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
                    self._cancelAutoPingTimeoutCall()  # as Autobahn does for any data frame
                for payload in payloads:
                    if self.state != self.STATE_OPEN:
                        break  # closing: the rest is moot
                    connection.text_received(payload)
                return len(self.data) > 0
        result: bool = super().processData()
        return result

    def onAutoPingTimeout(self) -> None:
        """No pong in time: drop the peer, unless it is merely slow.

        A client that does not read has not seen the ping, and while our buffer is full we do
        not read it either: that is a slow consumer, which this server never disconnects. So
        when data is waiting for the peer (our producer is paused, or the kernel holds bytes
        the peer has not taken) and the peer's TCP still acknowledges (no retransmissions),
        wait another timeout; the pong comes once it reads. A peer that is gone stops
        acknowledging, and is dropped.
        """
        transport: Any = self.transport
        connection = self.connection
        if connection is not None and peer_is_slow_not_gone(transport, connection.outbound.paused):
            self.factory.hub.pongs_excused += 1
            self.autoPingTimeoutCall = self.factory._batched_timer.call_later(
                self.factory.hub.settings.ping_timeout, self.onAutoPingTimeout
            )
            return
        super().onAutoPingTimeout()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.connection is None:
            return
        if isBinary:
            self.close_with(
                CloseCode.UNSUPPORTED_DATA, "binary messages are not accepted; send JSON text"
            )
            return
        self.connection.text_received(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.hub.closes[code if code is not None else 1006] += 1
        if self.connection is not None:
            self.connection.connection_lost()
            transport: Any = self.transport
            if transport is not None:
                transport.unregisterProducer()

    def close_with(self, code: CloseCode, reason: str) -> None:
        """Close with any code; ``sendClose`` refuses codes other than 1000 and 3000-4999."""
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=int(code), reasonUtf8=reason.encode()[:123], isReply=False)


def peer_is_slow_not_gone(transport: Any, paused: bool) -> bool:
    """Whether data waits for a peer whose TCP stack still acknowledges (Linux)."""
    try:
        sock = transport.getHandle()
        unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except (AttributeError, OSError, ValueError):
        return paused  # no kernel view: trust backpressure alone
    retransmits, probes = info[2], info[3]
    return bool((paused or unsent > 0) and retransmits == 0 and probes == 0)


class ServerFactory(WebSocketServerFactory):
    protocol = ServerProtocol  # type: ignore[assignment]

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self.hub = hub
        size = hub.settings.max_frame_size
        self.setProtocolOptions(
            maxFramePayloadSize=size,
            maxMessagePayloadSize=size,
            autoFragmentSize=0,
            failByDrop=False,  # let clients see 1007/1009 close frames
            closeHandshakeTimeout=CLOSE_TIMEOUT,
            autoPingInterval=hub.settings.ping_interval,
            autoPingTimeout=hub.settings.ping_timeout,
        )


def websocket_resource(hub: Hub) -> IResource:
    """The ``/ws`` resource of the site."""
    factory = ServerFactory(hub)
    factory.startFactory()
    resource: IResource = WebSocketResource(factory)
    return resource


# Client side


class ClientLink:
    """An open client connection: send text frames, close, and see the transport."""

    def __init__(self, protocol: ClientProtocol) -> None:
        self._protocol = protocol

    @property
    def transport(self) -> Any:
        return self._protocol.transport

    def send(self, text: bytes) -> None:
        self._protocol.sendMessage(text, isBinary=False)

    def send_binary(self, data: bytes) -> None:
        self._protocol.sendMessage(data, isBinary=True)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self._protocol.sendClose(code, reason or None)


class ClientProtocol(WebSocketClientProtocol):
    factory: ClientFactory

    def onOpen(self) -> None:
        self.factory.opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not isBinary:
            self.factory.on_text(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.closed(code, reason or "")


class ClientFactory(WebSocketClientFactory):
    protocol = ClientProtocol  # type: ignore[assignment]

    def __init__(
        self,
        url: str,
        on_text: Callable[[bytes], None],
        on_close: Callable[[int | None, str], None],
    ) -> None:
        super().__init__(url, protocols=[SUBPROTOCOL])
        self.setProtocolOptions(autoFragmentSize=0, closeHandshakeTimeout=CLOSE_TIMEOUT)
        self.on_text = on_text
        self.on_close = on_close
        self.ready: Deferred[ClientLink] = Deferred()

    def opened(self, protocol: ClientProtocol) -> None:
        if not self.ready.called:
            self.ready.callback(ClientLink(protocol))

    def closed(self, code: int | None, reason: str) -> None:
        if not self.ready.called:
            self.ready.errback(ConnectionError(f"could not open {self.url}: {reason or code}"))
        else:
            self.on_close(code, reason)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        if not self.ready.called:
            self.ready.errback(reason)


def connect(
    url: str,
    on_text: Callable[[bytes], None],
    on_close: Callable[[int | None, str], None],
    timeout: float = 10,
    tls: Any = None,
) -> Deferred[ClientLink]:
    """Open a client WebSocket to ``url``; fires with a :class:`ClientLink` once open.

    ``tls`` (for ``wss://``) is what ``twisted.internet.ssl.optionsForClientTLS`` returns;
    without it, the system's trust roots are used.
    """
    factory = ClientFactory(url, on_text, on_close)
    connectWS(factory, contextFactory=tls, timeout=timeout)
    return factory.ready
