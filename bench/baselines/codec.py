"""The JSON codec of the chat server (orjson), so that no comparison is about JSON libraries."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

try:
    import orjson

    CODEC = "orjson"
    encode: Callable[[Any], bytes] = orjson.dumps
    decode: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - the chat server depends on orjson
    CODEC = "json"
    _dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    decode = json.loads

    def encode(value: Any) -> bytes:
        return _dumps(value).encode()
