"""Signed login tokens for ``--auth token``.

A token is ``v1.<username>.<expires>.<signature>``: the username it is for, its expiry in Unix
seconds, and an HMAC-SHA256 over the rest with the server's secret, base64url-encoded. It
needs no storage on the server and cannot be altered or moved to another username without
the secret. ``chat-token USERNAME --ttl 1h --secret-file FILE`` issues one.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import stat
import sys
import time
from pathlib import Path

from chat.settings import parse_duration

VERSION = "v1"
MIN_SECRET_BYTES = 16


class TokenError(ValueError):
    """Why a token was refused (the message is sent to the client)."""


def _sign(secret: bytes, message: str) -> str:
    digest = hmac.new(secret, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue_token(secret: bytes, username: str, ttl: float, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + ttl)
    body = f"{VERSION}.{username}.{expires}"
    return f"{body}.{_sign(secret, body)}"


def verify_token(secret: bytes, token: object, username: str, now: float | None = None) -> None:
    """Raise :class:`TokenError` unless ``token`` is valid, unexpired and for ``username``."""
    if not isinstance(token, str) or not token:
        raise TokenError('this server needs a "token" with the username (see chat-token)')
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VERSION:
        raise TokenError("the token is malformed")
    _, named, expires, signature = parts
    if not hmac.compare_digest(_sign(secret, ".".join(parts[:3])), signature):
        raise TokenError("the token's signature is not valid for this server")
    if named != username:
        raise TokenError(f"the token is for {named!r}, not for {username!r}")
    if not expires.isdigit() or int(expires) <= (time.time() if now is None else now):
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


def main(argv: list[str] | None = None) -> int:
    """``chat-token USERNAME [--ttl 1h] --secret-file FILE``: print a login token."""
    parser = argparse.ArgumentParser(prog="chat-token", description=main.__doc__)
    parser.add_argument("username")
    parser.add_argument("--ttl", default="1h", help="how long the token is valid (default 1h)")
    parser.add_argument("--secret-file", required=True, help="the server's --secret-file")
    args = parser.parse_args(argv)
    try:
        token = issue_token(read_secret(args.secret_file), args.username, parse_duration(args.ttl))
    except (OSError, ValueError) as exc:
        print(f"chat-token: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0
