"""Every Autobahn attribute the server touches beyond Autobahn's documented API, named once.

The receive fast path reads Autobahn's receive buffer and parser state directly, and the frame
writer checks its connection state; if an Autobahn release renames any of these, this module
is the one place to change (tests/test_fastpath.py runs the fast path against Autobahn's own
parser on the same bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketServerProtocol

from chat.protocol.wsframe import split_text_frames


def is_open(protocol: WebSocketServerProtocol) -> bool:
    """Whether the WebSocket is open (not closing, not closed): frames may be written."""
    return bool(protocol.state == protocol.STATE_OPEN)


def between_messages(protocol: WebSocketServerProtocol) -> bool:
    """Open, and Autobahn's parser holds no partial frame or fragmented message."""
    return (
        protocol.state == protocol.STATE_OPEN
        and protocol.current_frame is None
        and not protocol.inside_message
    )


def take_simple_frames(protocol: WebSocketServerProtocol, max_payload: int) -> list[bytes]:
    """Remove the complete simple text frames at the head of Autobahn's receive buffer and
    return their payloads (see :func:`chat.protocol.wsframe.split_text_frames`)."""
    payloads, used = split_text_frames(protocol.data, max_payload)
    if used:
        protocol.data = protocol.data[used:]
        if protocol.autoPingTimeoutCall and protocol.autoPingRestartOnAnyTraffic:
            protocol._cancelAutoPingTimeoutCall()  # as Autobahn does for any data frame
    return payloads


def buffered(protocol: WebSocketServerProtocol) -> int:
    """Bytes left in Autobahn's receive buffer."""
    return len(protocol.data)


def wait_for_pong_again(
    protocol: WebSocketServerProtocol, seconds: float, then: Callable[[], None]
) -> None:
    """Wait ``seconds`` more for a pong, on Autobahn's own batched timer."""
    protocol.autoPingTimeoutCall = protocol.factory._batched_timer.call_later(seconds, then)


def transport_of(protocol: WebSocketServerProtocol) -> Any:
    return protocol.transport


class ThrottledLog:
    """Autobahn's protocol logger (a txaio ``Logger``, the ``log`` attribute of its protocols)
    with every line from ``info`` up asking ``allow()`` first.

    Why: Autobahn logs on its own, once per connection, what a client did wrong ("failing
    WebSocket connection (code=1002): unmasked client-to-server frame", a failed opening
    handshake, a pong nobody asked for): a client that opens connections in a loop and sends
    bad bytes would write those lines as fast as it can connect. ``debug`` and ``trace`` (off
    unless txaio's level says otherwise) pass through unchanged; every method is looked up on
    the txaio logger at each call, so a change of txaio's log level still takes effect.
    """

    __slots__ = ("_allow", "_inner")

    def __init__(self, inner: Any, allow: Callable[[], bool]) -> None:
        self._inner = inner
        self._allow = allow

    def debug(self, *args: Any, **kwargs: Any) -> None:
        self._inner.debug(*args, **kwargs)  # on every read: not through __getattr__

    def info(self, *args: Any, **kwargs: Any) -> None:
        if self._allow():
            self._inner.info(*args, **kwargs)

    def warn(self, *args: Any, **kwargs: Any) -> None:
        if self._allow():
            self._inner.warn(*args, **kwargs)

    def error(self, *args: Any, **kwargs: Any) -> None:
        if self._allow():
            self._inner.error(*args, **kwargs)

    def critical(self, *args: Any, **kwargs: Any) -> None:
        if self._allow():
            self._inner.critical(*args, **kwargs)

    def failure(self, *args: Any, **kwargs: Any) -> None:
        if self._allow():
            self._inner.failure(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # trace, emit, set_log_level, ...
        return getattr(self._inner, name)
