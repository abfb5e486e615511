"""The server side: one Autobahn connection bound to one :class:`~chat.connection.ChatConnection`.

:class:`ServerProtocol` negotiates the ``chat.v1.json`` subprotocol (or none), swaps
HTTPChannel's producer for the connection's :class:`~chat.producers.outbound.Outbound`, hands
text messages in (simple frames through the receive fast path), closes on binary ones, and
reports the close. Autobahn enforces the frame size limit (close 1009), frame validity (1002)
and UTF-8 validity (1007) itself.

Writing: the connection writes frames through :meth:`ServerProtocol.write_frames`, which drops
them once the WebSocket is no longer open (a close frame was sent or received): a close frame
is always the last frame on the wire. It sends at once when the transport has nothing unsent
(:func:`chat.websocket._twisted.write_through`) instead of waiting for the reactor's next poll.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from typing import Any, Final

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.web.resource import IResource

from chat.connection import ChatConnection, Node
from chat.protocol.closes import BINARY_MESSAGE, Disconnect
from chat.web.origins import origin_allowed
from chat.websocket import _autobahn as ab
from chat.websocket._twisted import write_through

SUBPROTOCOL: Final = "chat.v1.json"
UNTHROTTLED_LOG: Final = WebSocketServerProtocol.log  # Autobahn's txaio logger of the class
AUTOBAHN_LOG_KEY: Final = "ws.autobahn"  # the throttle's key for the lines Autobahn writes
CLOSE_TIMEOUT: Final = 5  # seconds; Autobahn rounds its timers down to whole seconds


class ServerProtocol(WebSocketServerProtocol):
    """One client connection, as Autobahn sees it."""

    factory: ServerFactory
    connection: ChatConnection | None = None
    written_when_heard = 0  # the connection's bytes written when the client last sent data

    def onConnect(self, request: ConnectionRequest) -> str | None:
        settings = self.factory.node.settings
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
            self.factory.node,
            self.write_frames,
            self.send_close,
            transport.pauseProducing,
            transport.resumeProducing,
            transport,
            self.peer or "",
        )
        transport.registerProducer(self.connection.outbound, True)

    def write_frames(self, data: bytes) -> None:
        """The connection's only way out: nothing is written once the WebSocket is not open."""
        if ab.is_open(self):
            write_through(self.transport, data)

    def send_close(self, disconnect: Disconnect) -> None:
        """Send the close frame (``sendClose`` refuses codes other than 1000 and 3000-4999)."""
        if ab.is_open(self):
            reason = disconnect.reason.encode()[:123]
            self.sendCloseFrame(code=int(disconnect.code), reasonUtf8=reason, isReply=False)

    def processData(self) -> bool:
        """Fast path for the common frame: complete, final, masked text frames.

        Autobahn's parser costs about 20 µs per message (frame objects, UTF-8 validator,
        a future per message); most client frames are simple, so they are split here in one
        pass and handed straight to the connection. Anything else (control frames, fragments,
        binary, oversize, invalid UTF-8, a non-minimal length, a partial frame) is left to
        Autobahn, which also sends every error close code.
        """
        connection = self.connection
        if connection is not None:
            self.written_when_heard = connection.outbound.bytes_written
        if connection is not None and ab.between_messages(self):
            payloads = ab.take_simple_frames(self, self.factory.node.settings.max_frame_size)
            if payloads:
                for payload in payloads:
                    if connection.closing:
                        break  # closing: the rest is not processed
                    connection.text_received(payload)
                return ab.buffered(self) > 0 and ab.is_open(self)
        result: bool = super().processData()
        return result

    def onAutoPingTimeout(self) -> None:
        """No pong in time: drop the peer, unless it is merely slow.

        A client that was sent data since it last spoke and does not read has not seen the
        ping (it waits behind that data, in its kernel's receive buffer or in ours): that is a
        slow consumer, which this server never disconnects. So when such a peer's TCP stack
        is alive (:func:`peer_still_acknowledges`), wait another timeout; the pong comes once
        it reads. A peer that is gone stops acknowledging, and one that was sent nothing but
        pings has no reason not to answer: both are dropped.
        """
        connection = self.connection
        timeout = self.factory.node.settings.ping_timeout
        if (
            connection is not None
            and connection.outbound.bytes_written > self.written_when_heard
            and peer_still_acknowledges(self.transport, connection.outbound.paused, timeout)
        ):
            self.factory.node.pongs_excused += 1
            ab.wait_for_pong_again(self, timeout, self.onAutoPingTimeout)
            return
        super().onAutoPingTimeout()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.connection is None or self.connection.closing:
            return  # Autobahn goes on parsing until the close handshake ends; we do not
        if isBinary:
            self.connection.close(BINARY_MESSAGE)
            return
        self.connection.text_received(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.node.closes[code if code is not None else 1006] += 1
        if self.connection is not None:
            self.connection.connection_lost()
            transport: Any = self.transport
            if transport is not None:
                transport.unregisterProducer()


TCP_INFO_LAYOUT: Final = struct.Struct("8B24I")  # Linux struct tcp_info, its first fields
RETRANSMITS, PROBES, LAST_ACK_RECV = 2, 3, 8 + 13  # indexes into the unpacked fields


def peer_still_acknowledges(transport: Any, paused: bool, seconds: float) -> bool:
    """Whether the peer's TCP stack is alive though its application does not read (Linux).

    Gone: segments or zero-window probes went unanswered more than once. Alive and not
    reading: data waits for it (our producer is paused, the kernel holds unsent bytes, or a
    zero-window probe is out, which a live peer answers within a round trip), or it
    acknowledged the ping itself. Without a kernel view, trust backpressure alone.
    """
    try:
        sock = transport.getHandle()
        unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LAYOUT.size)
        info = TCP_INFO_LAYOUT.unpack(raw)
    except (AttributeError, OSError, ValueError, struct.error):
        return paused
    retransmits, probes = info[RETRANSMITS], info[PROBES]
    if retransmits >= 2 or probes >= 2:
        return False
    data_waits = paused or unsent > 0 or probes > 0
    acknowledged_the_ping = retransmits == 0 and info[LAST_ACK_RECV] <= seconds * 1000 + 250
    return data_waits or acknowledged_the_ping


class ServerFactory(WebSocketServerFactory):
    protocol = ServerProtocol  # type: ignore[assignment]

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node
        self.protocol_log = ab.ThrottledLog(
            UNTHROTTLED_LOG, lambda: node.throttle.allow(AUTOBAHN_LOG_KEY)
        )
        settings = node.settings
        self.setProtocolOptions(
            maxFramePayloadSize=settings.max_frame_size,
            maxMessagePayloadSize=settings.max_frame_size,
            autoFragmentSize=0,
            failByDrop=False,  # let clients see 1002/1007/1009 close frames
            closeHandshakeTimeout=CLOSE_TIMEOUT,
            autoPingInterval=settings.ping_interval,
            autoPingTimeout=settings.ping_timeout,
        )

    def buildProtocol(self, addr: Any) -> Any:
        protocol: Any = super().buildProtocol(addr)
        if protocol is not None:
            protocol.log = self.protocol_log  # Autobahn's own lines, throttled (ThrottledLog)
        return protocol


def websocket_resource(node: Node) -> IResource:
    """The ``/ws`` resource of the site."""
    factory = ServerFactory(node)
    factory.startFactory()
    resource: IResource = WebSocketResource(factory)
    return resource
