"""Client frames as data, parsed and checked; server frames as bytes.

:func:`parse_frame` turns one WebSocket text message into one of the client frame classes or
raises :class:`~chat.protocol.errors.BadFrame` with a message a developer can act on. The
``encode_*`` functions build server frames; :func:`next_prefix` is the head of every ``next``
frame of one interaction, so that a stored item (already JSON) is framed by joining bytes
instead of being decoded and encoded again for each recipient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import orjson

from chat.protocol.errors import BadFrame, ErrorCode
from chat.protocol.wsframe import text_frame_header

MAX_ID: Final = 2**53 - 1
MAX_CREDIT: Final = 2**31 - 1

JSON = Any  # a decoded JSON value; routes check its shape


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    route: str
    data: JSON = None


@dataclass(frozen=True, slots=True)
class Fire:
    route: str
    data: JSON = None


@dataclass(frozen=True, slots=True)
class Stream:
    id: int
    route: str
    data: JSON = None
    credit: int | None = None


@dataclass(frozen=True, slots=True)
class Channel:
    id: int
    route: str
    data: JSON = None
    credit: int | None = None


@dataclass(frozen=True, slots=True)
class Next:
    id: int
    data: JSON = None


@dataclass(frozen=True, slots=True)
class Complete:
    id: int


@dataclass(frozen=True, slots=True)
class Cancel:
    id: int


@dataclass(frozen=True, slots=True)
class RequestN:
    id: int
    n: int


Opening = Request | Stream | Channel
ClientFrame = Request | Fire | Stream | Channel | Next | Complete | Cancel | RequestN

SERVER_ONLY_TYPES: Final = frozenset({"response", "error"})


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _usable_id(value: object) -> int | None:
    if _is_int(value) and 0 < value <= MAX_ID:
        return value
    return None


def parse_frame(text: str | bytes) -> ClientFrame:
    """Parse one text message into a client frame, or raise :class:`BadFrame` saying why."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        # orjson is strict: no NaN/Infinity, no lone surrogates, at most 1024 levels deep.
        raise BadFrame(f"frame is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BadFrame(f"frame must be a JSON object, got {type(obj).__name__}")
    raw_id = obj.get("id")
    frame_id = _usable_id(raw_id)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise BadFrame('frame needs a string "type"', frame_id)
    parser = _PARSERS.get(kind)
    if parser is None:
        if kind in SERVER_ONLY_TYPES:
            raise BadFrame(f'type "{kind}" is sent by the server only', frame_id)
        known = ", ".join(sorted(_PARSERS))
        raise BadFrame(f'unknown frame type "{kind}" (expected one of {known})', frame_id)
    if kind != "fire" and frame_id is None:
        if "id" not in obj:
            raise BadFrame(f'a "{kind}" frame needs an "id"')
        raise BadFrame(f'"id" must be an integer from 1 to 2^53-1, got {raw_id!r:.40}')
    return parser(obj, frame_id or 0)


def _route(obj: dict[str, Any], frame_id: int | None) -> str:
    route = obj.get("route")
    if not isinstance(route, str) or not route:
        raise BadFrame('frame needs a non-empty string "route"', frame_id)
    return route


def _credit(obj: dict[str, Any], frame_id: int) -> int | None:
    if "credit" not in obj or obj["credit"] is None:
        return None
    credit = obj["credit"]
    if not _is_int(credit) or credit <= 0:
        raise BadFrame(f'"credit" must be a positive integer, got {credit!r:.40}', frame_id)
    return min(credit, MAX_CREDIT)


def _parse_request(obj: dict[str, Any], frame_id: int) -> ClientFrame:
    return Request(frame_id, _route(obj, frame_id), obj.get("data"))


def _parse_fire(obj: dict[str, Any], frame_id: int) -> ClientFrame:
    return Fire(_route(obj, None), obj.get("data"))


def _parse_stream(obj: dict[str, Any], frame_id: int) -> ClientFrame:
    return Stream(frame_id, _route(obj, frame_id), obj.get("data"), _credit(obj, frame_id))


def _parse_channel(obj: dict[str, Any], frame_id: int) -> ClientFrame:
    return Channel(frame_id, _route(obj, frame_id), obj.get("data"), _credit(obj, frame_id))


def _parse_next(obj: dict[str, Any], frame_id: int) -> ClientFrame:
    return Next(frame_id, obj.get("data"))


def _parse_complete(obj: dict[str, Any], frame_id: int) -> ClientFrame:
    return Complete(frame_id)


def _parse_cancel(obj: dict[str, Any], frame_id: int) -> ClientFrame:
    return Cancel(frame_id)


def _parse_request_n(obj: dict[str, Any], frame_id: int) -> ClientFrame:
    n = obj.get("n")
    if not _is_int(n) or n <= 0:
        raise BadFrame(f'"n" must be a positive integer, got {n!r:.40}', frame_id)
    return RequestN(frame_id, min(n, MAX_CREDIT))


_PARSERS = {
    "request": _parse_request,
    "fire": _parse_fire,
    "stream": _parse_stream,
    "channel": _parse_channel,
    "next": _parse_next,
    "complete": _parse_complete,
    "cancel": _parse_cancel,
    "request_n": _parse_request_n,
}


def encode_json(value: JSON) -> bytes:
    """Compact UTF-8 JSON, the encoding of every byte this server sends (orjson).

    For bytes that are written and dropped. What is kept beyond the request that made it
    goes through :func:`encode_kept`.
    """
    return orjson.dumps(value)


def encode_kept(value: JSON) -> bytes:
    """Like :func:`encode_json`, as an exact-size ``bytes`` for things that are kept.

    ``orjson.dumps`` returns a buffer whose allocation is rounded up (about 4 KB for a result
    of a few hundred bytes) and never shrinks (orjson issue #483); copying it through a
    memoryview allocates exactly its length.
    """
    return bytes(memoryview(orjson.dumps(value)))


def encode_response(frame_id: int, data: JSON) -> bytes:
    return b'{"type":"response","id":%d,"data":%s}' % (frame_id, encode_json(data))


def encode_complete(frame_id: int) -> bytes:
    return b'{"type":"complete","id":%d}' % frame_id


def encode_error(frame_id: int | None, code: ErrorCode, message: str) -> bytes:
    return encode_json(
        {"type": "error", "id": frame_id, "error": {"code": str(code), "message": message}}
    )


def next_prefix(frame_id: int) -> bytes:
    """The bytes before ``data`` in a ``next`` frame of one interaction (see next_frame)."""
    return b'{"type":"next","id":%d,"data":' % frame_id


def next_frame(prefix: bytes, item: bytes) -> bytes:
    """The whole WebSocket frame of one ``next``: ``item`` is JSON already, ``prefix`` is
    :func:`next_prefix` of the interaction. The only place a ``next`` frame is built."""
    return b"".join((text_frame_header(len(prefix) + len(item) + 1), prefix, item, b"}"))
