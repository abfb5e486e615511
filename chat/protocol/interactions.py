"""The interaction state machine of one connection, without I/O.

Theory of operation
-------------------
A connection carries many *interactions* at once, each named by a client-chosen ``id``.
``request``, ``stream`` and ``channel`` frames open one; ``fire`` opens none. An interaction
ends when the server sends ``response``, ``complete`` or ``error`` on it, or when the client
sends ``cancel``. The state of each open interaction is small and lives here::

    (absent) --opening frame--> OPEN --response/complete/error (server)--> (absent)
                                  |---cancel (client)------------------> (absent)
                                  |---request_n (client): credit += n   (stream, channel)
                                  |---next/complete (client)            (channel only)

Frames naming an id that is not open are ignored, as are client ``next``/``complete`` on
anything but a ``channel`` and ``request_n`` on a ``request``. The server side asks
:class:`Interactions` for the bytes of every frame it sends, so an interaction that has ended
cannot be written to by mistake (the ``encode`` methods return ``None`` for it).

Credit lives on the :class:`Interaction` itself: stream producers spend it, ``request_n``
grants more, and ``None`` means unlimited (paced by TCP backpressure only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from chat.protocol import frames
from chat.protocol.closes import BAD_FRAMES, Disconnect
from chat.protocol.errors import BadFrame, ErrorCode

DEFAULT_MAX_OPEN: Final = 64
DEFAULT_MAX_BAD_IN_ROW: Final = 100


class Kind(StrEnum):
    REQUEST = "request"
    STREAM = "stream"
    CHANNEL = "channel"


@dataclass(slots=True, eq=False)
class Interaction:
    """One open interaction: its id, model, route, and the credit the client granted."""

    id: int
    kind: Kind
    route: str
    credit: int | None = None
    open: bool = True
    prefix: bytes = field(default=b"", repr=False)

    def grant(self, n: int) -> None:
        """Add ``n`` to the credit, capped at 2^31-1; unlimited credit stays unlimited."""
        if self.credit is not None:
            self.credit = min(self.credit + n, frames.MAX_CREDIT)


# Events returned by Interactions.receive: what the caller must act on.


@dataclass(frozen=True, slots=True)
class Opened:
    """A request, stream or channel was opened: dispatch it to its route."""

    interaction: Interaction
    data: frames.JSON


@dataclass(frozen=True, slots=True)
class Fired:
    """A fire-and-forget frame: dispatch it; never answer a route error."""

    route: str
    data: frames.JSON


@dataclass(frozen=True, slots=True)
class ClientNext:
    """The client sent an item on an open channel interaction."""

    interaction: Interaction
    data: frames.JSON


@dataclass(frozen=True, slots=True)
class ClientCompleted:
    """The client will send no more items on this channel interaction (it stays open)."""

    interaction: Interaction


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The client cancelled: stop the interaction and send nothing more on it."""

    interaction: Interaction


@dataclass(frozen=True, slots=True)
class CreditGranted:
    """``request_n`` added credit to a stream or channel: a waiting producer may go on."""

    interaction: Interaction


@dataclass(frozen=True, slots=True)
class Refused:
    """The core answered the frame itself (bad_frame, duplicate_id, rate_limited)."""

    frame: bytes


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """The client misbehaved past the limit: close the WebSocket."""

    disconnect: Disconnect


Event = Opened | Fired | ClientNext | ClientCompleted | Cancelled | CreditGranted | Refused


class Interactions:
    """The open interactions of one connection, and the only writer of their frames.

    Call :meth:`receive` with each text message; it returns the event to act on, or ``None``
    when the frame needs nothing (an ignored frame). Use :meth:`respond`, :meth:`complete`,
    :meth:`fail` and :meth:`next_prefix` to build outgoing frames.
    """

    __slots__ = ("bad_in_row", "max_bad_in_row", "max_open", "on_error", "open")

    def __init__(
        self,
        max_open: int = DEFAULT_MAX_OPEN,
        max_bad_in_row: int = DEFAULT_MAX_BAD_IN_ROW,
        on_error: Callable[[ErrorCode], None] = lambda code: None,
    ) -> None:
        self.max_open = max_open
        self.max_bad_in_row = max_bad_in_row
        self.on_error = on_error  # told of every error frame built here (metrics)
        self.bad_in_row = 0
        self.open: dict[int, Interaction] = {}

    def receive(self, text: str | bytes) -> Event | CloseConnection | None:
        try:
            frame = frames.parse_frame(text)
        except BadFrame as exc:
            self.bad_in_row += 1
            if self.bad_in_row >= self.max_bad_in_row:
                return CloseConnection(BAD_FRAMES.because(f"{self.bad_in_row}"))
            self.on_error(exc.code)
            return Refused(frames.encode_error(exc.frame_id, exc.code, exc.message))
        self.bad_in_row = 0
        return self._dispatch(frame)

    def _dispatch(self, frame: frames.ClientFrame) -> Event | None:
        match frame:
            case frames.Fire(route, data):
                return Fired(route, data)
            case frames.Request(fid, route, data):
                return self._open(fid, Kind.REQUEST, route, data, None)
            case frames.Stream(fid, route, data, credit):
                return self._open(fid, Kind.STREAM, route, data, credit)
            case frames.Channel(fid, route, data, credit):
                return self._open(fid, Kind.CHANNEL, route, data, credit)
        interaction = self.open.get(frame.id)
        if interaction is None:
            return None
        match frame:
            case frames.Cancel():
                self._close(interaction)
                return Cancelled(interaction)
            case frames.RequestN(_, n) if interaction.kind is not Kind.REQUEST:
                interaction.grant(n)
                return CreditGranted(interaction)
            case frames.Next(_, data) if interaction.kind is Kind.CHANNEL:
                return ClientNext(interaction, data)
            case frames.Complete() if interaction.kind is Kind.CHANNEL:
                return ClientCompleted(interaction)
        return None

    def _open(
        self, fid: int, kind: Kind, route: str, data: frames.JSON, credit: int | None
    ) -> Event:
        if fid in self.open:
            self.on_error(ErrorCode.DUPLICATE_ID)
            return Refused(
                frames.encode_error(
                    fid, ErrorCode.DUPLICATE_ID, f"id {fid} names an interaction that is open"
                )
            )
        if len(self.open) >= self.max_open:
            self.on_error(ErrorCode.RATE_LIMITED)
            return Refused(
                frames.encode_error(
                    fid,
                    ErrorCode.RATE_LIMITED,
                    f"at most {self.max_open} interactions may be open at once; "
                    "wait for one to end or cancel one",
                )
            )
        interaction = Interaction(fid, kind, route, credit, prefix=frames.next_prefix(fid))
        self.open[fid] = interaction
        return Opened(interaction, data)

    def _close(self, interaction: Interaction) -> None:
        interaction.open = False
        if self.open.get(interaction.id) is interaction:
            del self.open[interaction.id]

    # Outgoing frames. Each returns None when the interaction has already ended.

    def respond(self, interaction: Interaction, data: frames.JSON) -> bytes | None:
        if not interaction.open:
            return None
        self._close(interaction)
        return frames.encode_response(interaction.id, data)

    def complete(self, interaction: Interaction) -> bytes | None:
        if not interaction.open:
            return None
        self._close(interaction)
        return frames.encode_complete(interaction.id)

    def fail(self, interaction: Interaction, code: ErrorCode, message: str) -> bytes | None:
        if not interaction.open:
            return None
        self._close(interaction)
        self.on_error(code)
        return frames.encode_error(interaction.id, code, message)

    def close_all(self) -> None:
        """The connection is gone: end every interaction."""
        for interaction in self.open.values():
            interaction.open = False
        self.open.clear()
