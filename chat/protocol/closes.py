"""Every WebSocket close the server sends, named once (after centrifuge's ``disconnect.go``).

A :class:`Disconnect` is a close code and a reason; the server closes a connection only with
one of :data:`CATALOGUE` (some with a detail appended, e.g. the number of bad frames), and
docs/protocol.md lists them all (a test checks that it does). Closes that Autobahn sends on
its own (a malformed frame, invalid UTF-8, a frame over the size limit) are listed too, so a
client author finds every code here.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

import attrs


class CloseCode(IntEnum):
    """WebSocket close codes (RFC 6455 section 7.4.1) this server sends."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011


@attrs.frozen
class Disconnect:
    """One reason to close a connection: its code and the reason sent with it."""

    code: CloseCode
    reason: str
    by_autobahn: bool = False  # sent by the WebSocket library itself, listed for completeness

    def because(self, detail: str) -> Disconnect:
        """The same close with a detail, e.g. ``BAD_FRAMES.because("100 in a row")``."""
        return attrs.evolve(self, reason=f"{self.reason}: {detail}")


SHUTDOWN: Final = Disconnect(CloseCode.GOING_AWAY, "server shutting down")
BINARY_MESSAGE: Final = Disconnect(
    CloseCode.UNSUPPORTED_DATA, "binary messages are not accepted; send JSON text"
)
BAD_FRAMES: Final = Disconnect(CloseCode.POLICY_VIOLATION, "too many bad frames in a row")
LOGIN_FAILURES: Final = Disconnect(CloseCode.POLICY_VIOLATION, "too many failed logins")
LOGIN_TIMEOUT: Final = Disconnect(CloseCode.POLICY_VIOLATION, "no login in time")
PROTOCOL_ERROR: Final = Disconnect(
    CloseCode.PROTOCOL_ERROR, "the bytes are not a valid WebSocket frame", by_autobahn=True
)
INVALID_UTF8: Final = Disconnect(
    CloseCode.INVALID_PAYLOAD, "a text message is not valid UTF-8", by_autobahn=True
)
TOO_BIG: Final = Disconnect(
    CloseCode.MESSAGE_TOO_BIG, "a message is larger than --max-frame-size", by_autobahn=True
)

CATALOGUE: Final = (
    SHUTDOWN,
    BINARY_MESSAGE,
    BAD_FRAMES,
    LOGIN_FAILURES,
    LOGIN_TIMEOUT,
    PROTOCOL_ERROR,
    INVALID_UTF8,
    TOO_BIG,
)
