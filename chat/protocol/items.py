"""Every kind of log item, built in one place (PROTOCOL.md, "The messages feed").

Items are JSON objects whose fields come in the order built here, followed by ``seq`` and
``ts`` (added by the store). Names are ASCII letters, digits and ``_ . -``, which JSON never
escapes, so the start of a stored item's bytes tells its kind and sender exactly: the
``conversations`` unread count and ``history`` with ``user`` test stored items with
:meth:`bytes.startswith` instead of decoding them.
"""

from __future__ import annotations

from typing import Any

Item = dict[str, Any]

MESSAGE_PREFIX = b'{"kind":"message",'


def join_item(channel: str, username: str) -> Item:
    return {"kind": "join", "channel": channel, "from": username}


def leave_item(channel: str, username: str) -> Item:
    return {"kind": "leave", "channel": channel, "from": username}


def channel_message(channel: str, sender: str, content: str, client_id: str | None = None) -> Item:
    item: Item = {"kind": "message", "channel": channel, "from": sender, "content": content}
    if client_id is not None:
        item["client_id"] = client_id
    return item


def private_message(
    sender: str, recipient: str, content: str, client_id: str | None = None
) -> Item:
    item: Item = {
        "kind": "message",
        "channel": None,
        "from": sender,
        "to": recipient,
        "content": content,
    }
    if client_id is not None:
        item["client_id"] = client_id
    return item


def gap_item(channel: str | None, first: int, last: int) -> Item:
    return {"kind": "gap", "channel": channel, "first": first, "last": last}


def _channel_json(channel: str | None) -> bytes:
    return b"null" if channel is None else b'"%s"' % channel.encode()


def sent_prefix(channel: str | None, sender: str) -> bytes:
    """The first bytes of every message ``sender`` stored in ``channel`` (None: an inbox)."""
    return MESSAGE_PREFIX + b'"channel":%s,"from":"%s",' % (_channel_json(channel), sender.encode())


def is_unread(payload: bytes, own: bytes) -> bool:
    """A message by someone else: ``own`` is :func:`sent_prefix` of the reader in that log."""
    return payload.startswith(MESSAGE_PREFIX) and not payload.startswith(own)


def conversation_prefixes(me: str, other: str) -> tuple[bytes, bytes]:
    """The first bytes of the private messages between ``me`` and ``other``, either way."""
    return (
        sent_prefix(None, me) + b'"to":"%s",' % other.encode(),
        sent_prefix(None, other) + b'"to":"%s",' % me.encode(),
    )
