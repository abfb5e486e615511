"""The client side: :func:`connect` opens a WebSocket for the Python client library.

:mod:`chat.client` uses only this module, so the library never imports the server (nor the
server-side Autobahn protocol).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet.defer import Deferred

SUBPROTOCOL: Final = "chat.v1.json"
CLOSE_TIMEOUT: Final = 5  # seconds; Autobahn rounds its timers down to whole seconds


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
