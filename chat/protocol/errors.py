"""Error codes and the exceptions that carry them.

Hierarchy::

    ProtocolError            an error that becomes an ``error`` frame: code + message
    ├── BadFrame             the frame itself is malformed (code ``bad_frame``)
    └── RouteError           raised by route handlers (any other code)

The WebSocket closes the server sends are in :mod:`chat.protocol.closes`.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every ``error.code`` PROTOCOL.md defines; no others are ever sent."""

    BAD_FRAME = "bad_frame"
    DUPLICATE_ID = "duplicate_id"
    UNKNOWN_ROUTE = "unknown_route"
    UNAUTHENTICATED = "unauthenticated"
    INVALID_DATA = "invalid_data"
    USERNAME_TAKEN = "username_taken"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"


class ProtocolError(Exception):
    """An error to report to the client as ``{"type":"error","id":…,"error":{code,message}}``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class BadFrame(ProtocolError):
    """A frame that is not JSON, not an object, or has an unknown type or ill-typed fields.

    ``frame_id`` is the frame's ``id`` when it had a usable one, so the error can name it.
    """

    def __init__(self, message: str, frame_id: int | None = None) -> None:
        super().__init__(ErrorCode.BAD_FRAME, message)
        self.frame_id = frame_id


class RouteError(ProtocolError):
    """Raised by a route handler to answer its interaction with an ``error`` frame."""
