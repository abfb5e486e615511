"""The shapes of names PROTOCOL.md allows: usernames, channel names, ``client_id``\\ s.

Pure functions, used by validation, the stores and the bridge alike.
"""

from __future__ import annotations

import re
from typing import Final

NAME_RULE: Final = "1-32 characters of A-Z a-z 0-9 _ . -"
CLIENT_ID_RULE: Final = "1-64 characters of A-Z a-z 0-9 _ . : -"
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,32}", re.ASCII)
_CLIENT_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,64}", re.ASCII)


def is_name(value: object) -> bool:
    """A valid username or channel name."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def is_client_id(value: object) -> bool:
    return isinstance(value, str) and _CLIENT_ID.fullmatch(value) is not None
