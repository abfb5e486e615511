"""Connection limits at accept: ``--max-connections`` and ``--max-connections-per-ip``.

Every accepted TCP (or TLS, or UNIX) connection is counted from the moment it is accepted
until it closes, whatever it becomes: an HTTP connection that never finishes its head, a
keep-alive connection, or a WebSocket. :class:`ConnectionLimits` wraps the site in a
:class:`~twisted.protocols.policies.WrappingFactory` whose protocol, :class:`CountedConnection`,
stands in front of the connection's protocol for its whole life: when Autobahn's
``WebSocketResource`` takes a connection over, the wrapper ends up in front of the WebSocket
protocol instead of the HTTP channel, so an upgraded connection is still counted while open
and released when it closes, by the same wrapper. (Twisted's own ``LimitConnectionsByPeer``
does this job but expects the tuple addresses of old Twisted releases, and its wrapper poses
as the transport, which hides TLS from Autobahn.)

A connection over a limit is answered ``503`` with ``Connection: close`` and closed at once;
it is never counted and costs the server one write. The per-address limit counts by IP address
(IPv4, or IPv6 exact); UNIX-socket clients have no address and only count towards the total.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from chat.web.channel import LimitedChannel, error_response, throttled_log

if TYPE_CHECKING:
    from chat.web.site import ChatSite


def address_host(addr: IAddress | None) -> str | None:
    """The IP address of a peer, or ``None`` for one without (a UNIX socket)."""
    host = getattr(addr, "host", None)
    return host if isinstance(host, str) else None


class CountedConnection(ProtocolWrapper):
    """One accepted connection, counted by its factory from open to close.

    It sits on the protocol side only: the transport delivers to it and it passes data and
    the close on to the wrapped protocol, but the wrapped protocol gets the real transport
    (TCP or TLS), so nothing on the write path pays for it, and Autobahn sees the TLS
    transport it needs for the channel id. It is a :class:`ProtocolWrapper` because that is
    how Autobahn's ``WebSocketResource`` recognises a protocol that stands in front of the
    HTTP channel: over TCP it makes this wrapper wrap the WebSocket protocol instead.
    Over TLS it replaces the TLS layer's protocol, this wrapper, and :meth:`taken_over`
    puts the wrapper back in front.
    """

    factory: ConnectionLimits

    def __init__(self, factory: ConnectionLimits, wrapped: Any, host: str | None) -> None:
        super().__init__(factory, wrapped)
        self.host = host

    def makeConnection(self, transport: Any) -> None:
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        if isinstance(self.wrappedProtocol, LimitedChannel):
            self.wrappedProtocol.counted = self  # it calls taken_over() on an upgrade
        self.wrappedProtocol.makeConnection(transport)

    def taken_over(self, transport: Any) -> None:
        """A resource took ``transport`` over for another protocol: keep counting it.

        Over TCP, Autobahn has already made this wrapper wrap the new protocol. A TLS
        transport is a :class:`ProtocolWrapper` itself, and Autobahn made it wrap the new
        protocol directly; this wrapper goes back between the two, so that it still hears
        the close.
        """
        inner = getattr(transport, "wrappedProtocol", None)
        if isinstance(transport, ProtocolWrapper) and inner is not None and inner is not self:
            self.wrappedProtocol = inner
            transport.wrappedProtocol = self


class Refused(Protocol):
    """A connection over a limit: one ``503`` naming the limit, then closed."""

    def __init__(self, message: str) -> None:
        self.message = message

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(error_response(503, "too_many_connections", self.message))
        self.transport.loseConnection()


class ConnectionLimits(WrappingFactory[CountedConnection]):
    """The site behind the connection limits of its settings (0 turns a limit off)."""

    protocol = CountedConnection

    def __init__(self, site: ChatSite) -> None:
        super().__init__(site)
        self.site = site
        self.total = 0
        self.by_host: Counter[str] = Counter()

    def refusal(self, host: str | None) -> str | None:
        """Why a new connection from ``host`` must be refused now, or ``None``."""
        settings = self.site.settings
        most = settings.max_connections
        if most and self.total >= most:
            return f"the server has its maximum of {most} connections open; retry later"
        per_ip = settings.max_connections_per_ip
        if per_ip and host is not None and self.by_host[host] >= per_ip:
            return f"at most {per_ip} connections per address are allowed"
        return None

    def buildProtocol(self, addr: IAddress | None) -> Any:
        host = address_host(addr)
        reason = self.refusal(host)
        if reason is not None:
            throttled_log(self.site, "http.503", _Peer(addr), 503, reason)
            return Refused(reason)
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return CountedConnection(self, wrapped, host)

    def registerProtocol(self, p: ProtocolWrapper) -> None:
        """Called when a counted connection opens (``makeConnection``)."""
        assert isinstance(p, CountedConnection)
        self.total += 1
        if p.host is not None:
            self.by_host[p.host] += 1

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        """Called when a counted connection closes, HTTP or WebSocket."""
        assert isinstance(p, CountedConnection)
        self.total -= 1
        if p.host is not None:
            self.by_host[p.host] -= 1
            if self.by_host[p.host] <= 0:
                del self.by_host[p.host]


class _Peer:
    """Just enough of a transport for :func:`~chat.web.channel.describe_peer`."""

    def __init__(self, addr: IAddress | None) -> None:
        self.addr = addr

    def getPeer(self) -> IAddress | None:
        return self.addr
