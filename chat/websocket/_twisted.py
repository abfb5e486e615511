"""Every Twisted transport attribute the server touches beyond ``ITransport``, named once.

Why: ``transport.write`` never sends. It appends to the transport's buffer and registers the
socket for writing (one ``epoll_ctl``); the reactor's next poll reports it writable, and
``doWrite`` sends and unregisters it (another ``epoll_ctl``). For a live feed at an ordinary
rate — one small frame per subscriber per message — that round costs more than everything
the server itself does for the delivery (py-spy of 1,000 subscribers at 50 messages/s: half
of the server's time in the reactor's write path, two fifths of it outside ``send``).

:func:`write_through` sends at once when the transport holds nothing unsent, and hands only
what the socket did not take to ``transport.write``: bytes still go out in order, Twisted's
buffer, its producer pause above 64 KiB and its handling of a lost connection are unchanged.
Only a plain TCP connection (no TLS) is written through; anything else gets
``transport.write`` itself.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.tcp import Server


def write_through(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, sending right away when nothing waits before it."""
    # Twisted's FileDescriptor: unsent bytes are dataBuffer[offset:] (b"" once all are sent)
    # and _tempDataBuffer (_tempDataLen bytes); disconnecting: loseConnection() was called.
    if (
        type(transport) is not Server
        or transport.TLS
        or transport._tempDataLen
        or transport.dataBuffer
        or transport.disconnecting
        or not transport.connected
        or transport._writeDisconnected
    ):
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)  # as Connection.writeSomeData, without its wrappers
    except OSError:  # full (EAGAIN, ENOBUFS) or gone: Twisted buffers it, or finds the loss
        sent = 0
    if sent < len(data):
        transport.write(data[sent:])
