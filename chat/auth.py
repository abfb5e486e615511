"""Signed login tokens for ``--auth token``.

A token is ``v2.<name>.<expires>.<signature>``: ``<name>`` is the username it is for,
base64url-encoded without padding (a username may contain ``.``, the separator, so it cannot
stand in the token as it is), ``<expires>`` its expiry in Unix seconds, and ``<signature>`` an
HMAC-SHA256 with the server's secret over everything before it, base64url-encoded. It needs no
storage on the server and cannot be altered or moved to another username without the secret.
``chat-token USERNAME --ttl 1h --secret-file FILE`` issues one.

Tokens of the first format, ``v1.<username>.<expires>.<signature>`` (the username as it is),
still verify until they expire, so that tokens issued before an upgrade keep working; only
usernames without ``.`` could ever have one. Nothing issues them any more. The two formats
sign different texts (``v1.`` and ``v2.`` prefixes), so one cannot be turned into the other.

:func:`verify_token` raises :class:`TokenError` for every bad input, whatever its shape, so
the ``login`` route answers each with ``unauthenticated`` and counts it as a failed login.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import os
import stat
import sys
import time
from pathlib import Path

from chat.settings import parse_duration

VERSION = "v2"
LEGACY_VERSION = "v1"  # verified until such tokens expire, never issued
MIN_SECRET_BYTES = 16
MAX_TOKEN_LENGTH = 512  # a v2 token for the longest username is about 110 characters
MAX_EXPIRES_DIGITS = 12  # Unix seconds until the year 33658


class TokenError(ValueError):
    """Why a token was refused (the message is sent to the client)."""


def _sign(secret: bytes, message: str) -> str:
    digest = hmac.new(secret, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def encode_name(username: str) -> str:
    """``username`` as it stands in a v2 token: UTF-8, base64url, no padding."""
    return base64.urlsafe_b64encode(username.encode()).rstrip(b"=").decode()


def decode_name(text: str) -> str:
    """The inverse of :func:`encode_name`; :class:`TokenError` when ``text`` is not one."""
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        return raw.decode()
    except (binascii.Error, UnicodeDecodeError):
        raise TokenError("the token is malformed") from None


def issue_token(secret: bytes, username: str, ttl: float, now: float | None = None) -> str:
    """A v2 token for ``username``, valid for ``ttl`` seconds from ``now``."""
    expires = int((time.time() if now is None else now) + ttl)
    body = f"{VERSION}.{encode_name(username)}.{expires}"
    return f"{body}.{_sign(secret, body)}"


def verify_token(secret: bytes, token: object, username: str, now: float | None = None) -> None:
    """Raise :class:`TokenError` unless ``token`` is valid, unexpired and for ``username``.

    Anything a client may send, any JSON value of any length and any characters, ends in a
    :class:`TokenError` with a message for the client, never another exception: the shape is
    checked before the signature (which is compared as bytes, so a non-ASCII signature is
    merely wrong), and the name is decoded only once the signature proves it is ours.
    """
    if not isinstance(token, str) or not token:
        raise TokenError('this server needs a "token" with the username (see chat-token)')
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise TokenError("the token is malformed")
    parts = token.split(".")
    if len(parts) != 4 or parts[0] not in (VERSION, LEGACY_VERSION):
        raise TokenError("the token is malformed")
    version, name, expires, signature = parts
    if not (expires.isdigit() and len(expires) <= MAX_EXPIRES_DIGITS):
        raise TokenError("the token is malformed")
    expected = _sign(secret, ".".join(parts[:3])).encode()
    if not hmac.compare_digest(expected, signature.encode()):
        raise TokenError("the token's signature is not valid for this server")
    named = decode_name(name) if version == VERSION else name
    if named != username:
        raise TokenError(f"the token is for {named!r}, not for {username!r}")
    if int(expires) <= (time.time() if now is None else now):
        raise TokenError("the token has expired")


def check_private_file(path: str) -> None:
    """Raise ValueError when ``path`` may be read by users other than its owner.

    A secret others can read is no secret: the server refuses to start with it, and says how
    to fix it.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(
            f"{path} may be read by other users (mode {stat.S_IMODE(mode):04o}); "
            f"make it private with: chmod 600 {path}"
        )


def read_secret(path: str) -> bytes:
    """The secret in ``path`` (surrounding whitespace removed); at least 16 bytes, private."""
    check_private_file(path)
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the secret in {path} is shorter than {MIN_SECRET_BYTES} bytes")
    return secret


HELP = """Print a login token for a server run with --auth token --secret-file FILE.
The client sends it in its login request: {"username": USERNAME, "token": TOKEN}."""


def main(argv: list[str] | None = None) -> int:
    """``chat-token USERNAME [--ttl 1h] --secret-file FILE``: print a login token."""
    from chat.protocol.names import NAME_RULE, is_name

    parser = argparse.ArgumentParser(prog="chat-token", description=HELP)
    parser.add_argument("username", help=f"who the token is for: {NAME_RULE}")
    parser.add_argument("--ttl", default="1h", help="how long the token is valid (default 1h)")
    parser.add_argument(
        "--secret-file", required=True, help="the server's --secret-file (mode 0600)"
    )
    args = parser.parse_args(argv)
    if not is_name(args.username):
        # Such a token could never log in: the server refuses the username itself.
        print(f"chat-token: a username is {NAME_RULE}, got {args.username!r}", file=sys.stderr)
        return 1
    try:
        token = issue_token(read_secret(args.secret_file), args.username, parse_duration(args.ttl))
    except (OSError, ValueError) as exc:
        print(f"chat-token: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0
