"""Checks of route ``data``: each raises ``invalid_data`` with a message saying what is wrong.

Pure functions over decoded JSON; the order of checks follows PROTOCOL.md ("Rules in detail").
"""

from __future__ import annotations

from typing import Any, TypeGuard

from chat.protocol.errors import ErrorCode, RouteError
from chat.protocol.names import CLIENT_ID_RULE, NAME_RULE, is_client_id
from chat.protocol.names import is_name as is_name


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
    if not is_name(value):
        raise invalid(f'"{key}" must be {NAME_RULE}, got {value!r:.60}')
    return value


def nothing(data: object, route: str) -> None:
    """A route that takes no input: ``data`` absent, or an empty object."""
    if data is not None and data != {}:
        raise invalid(f'"{route}" takes no "data"')


def optional_str(data: dict[str, Any], key: str, most: int = 256) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= most:
        raise invalid(f'"{key}" must be a string of 1 to {most} characters, got {value!r:.40}')
    return value


def client_id(data: dict[str, Any]) -> str | None:
    """The optional ``client_id`` of a message."""
    value = data.get("client_id")
    if value is None:
        return None
    if not is_client_id(value):
        raise invalid(f'"client_id" must be {CLIENT_ID_RULE}, got {value!r:.70}')
    return str(value)


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
