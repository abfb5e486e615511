"""Checks of route ``data``: each raises ``invalid_data`` with a message saying what is wrong.

Pure functions over decoded JSON; the order of checks follows PROTOCOL.md ("Rules in detail").
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeGuard

from chat.protocol.errors import ErrorCode, RouteError

NAME_RULE: Final = "1-32 characters of A-Z a-z 0-9 _ . -"
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,32}", re.ASCII)


def invalid(message: str) -> RouteError:
    return RouteError(ErrorCode.INVALID_DATA, message)


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def obj(data: object, route: str, *, optional: bool = False) -> dict[str, Any]:
    """``data`` as an object; ``None`` (absent) is an empty object when ``optional``."""
    if data is None and optional:
        return {}
    if not isinstance(data, dict):
        kind = "absent" if data is None else f"a JSON {_json_type(data)}"
        raise invalid(f'"{route}" needs "data" to be an object, but it is {kind}')
    return data


def name(data: dict[str, Any], key: str) -> str:
    """A required username or channel name."""
    if key not in data:
        raise invalid(f'missing field "{key}"')
    value = data[key]
    if not isinstance(value, str):
        raise invalid(f'"{key}" must be a string, got a JSON {_json_type(value)}')
    if not _NAME.fullmatch(value):
        raise invalid(f'"{key}" must be {NAME_RULE}, got {value!r:.60}')
    return value


def is_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def content(data: dict[str, Any], max_length: int) -> str:
    if "content" not in data:
        raise invalid('missing field "content"')
    value = data["content"]
    if not isinstance(value, str):
        raise invalid(f'"content" must be a string, got a JSON {_json_type(value)}')
    if not value:
        raise invalid('"content" must not be empty')
    if len(value) > max_length:
        raise invalid(f'"content" is {len(value)} characters; at most {max_length} are allowed')
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise invalid(
            f'"content" holds a lone surrogate at character {exc.start}, which is not Unicode text'
        ) from None
    return value


def optional_int(data: dict[str, Any], key: str, low: int, high: int | None = None) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not is_int(value) or value < low or (high is not None and value > high):
        upper = f" to {high}" if high is not None else " or more"
        raise invalid(f'"{key}" must be an integer from {low}{upper}, got {value!r:.40}')
    return int(value)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
