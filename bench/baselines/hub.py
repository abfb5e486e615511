"""Channels, inboxes and the two ways a baseline delivers an item to its recipients.

Every item is encoded once per append (with a seq per channel or inbox, and a ``ts``), like
the chat server does. What differs between the modes is only the path to the sockets:
``autobahn`` calls ``sendMessage`` per recipient; ``floor`` frames once per distinct stream id,
queues the bytes on each recipient and writes each connection's queue once per reactor turn.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Protocol

from twisted.internet import reactor

from bench.baselines.codec import encode
from bench.baselines.fastpath import text_frame


class Recipient(Protocol):
    """What the hub needs of a connection."""

    feed_id: int | None
    pending: list[bytes]
    transport: Any

    def sendMessage(self, payload: bytes) -> None: ...


class Channel:
    __slots__ = ("members", "name", "seq")

    def __init__(self, name: str) -> None:
        self.name = name
        self.seq = 0
        self.members: dict[Recipient, None] = {}  # join order: the floor's fan-out order


class Hub:
    """The state of one baseline server: channels, sessions, inbox seqs, pending writes."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.epoch = uuid.uuid4().hex
        self.channels: dict[str, Channel] = {}
        self.sessions: dict[str, Recipient] = {}
        self.inbox_seq: dict[str, int] = {}  # every user who ever logged in has an inbox
        self.dirty: dict[Recipient, None] = {}
        self.flush_scheduled = False

    def append(self, channel: Channel, fields: dict[str, Any]) -> tuple[int, int]:
        """Append an item to ``channel`` and deliver it to its members' open feeds."""
        channel.seq += 1
        ts = time.time_ns() // 1_000_000
        item = encode({**fields, "seq": channel.seq, "ts": ts})
        self.broadcast(channel.members, item)
        return channel.seq, ts

    def private(self, sender: str, user: str, content: str) -> tuple[int, int]:
        """Append a private message to ``user``'s inbox (one copy, as the chat server today)."""
        seq = self.inbox_seq[user] = self.inbox_seq[user] + 1
        ts = time.time_ns() // 1_000_000
        fields = {"kind": "message", "channel": None, "from": sender, "to": user}
        item = encode({**fields, "content": content, "seq": seq, "ts": ts})
        recipient = self.sessions.get(user)
        if recipient is not None:
            self.broadcast((recipient,), item)
        return seq, ts

    def broadcast(self, members: Any, item: bytes) -> None:
        if self.mode == "autobahn":
            for member in members:
                fid = member.feed_id
                if fid is not None:
                    member.sendMessage(b'{"type":"next","id":%d,"data":%s}' % (fid, item))
            return
        framed: dict[int, bytes] = {}
        dirty = self.dirty
        for member in members:
            fid = member.feed_id
            if fid is None:
                continue
            frame = framed.get(fid)
            if frame is None:
                frame = framed[fid] = text_frame(b'{"type":"next","id":%d,"data":%s}' % (fid, item))
            member.pending.append(frame)
            dirty[member] = None
        self.schedule_flush()

    def send(self, member: Recipient, payload: bytes) -> None:
        """A response or error frame to one connection, the mode's way."""
        if self.mode == "autobahn":
            member.sendMessage(payload)
        else:
            member.pending.append(text_frame(payload))
            self.dirty[member] = None
            self.schedule_flush()

    def schedule_flush(self) -> None:
        if not self.flush_scheduled:
            self.flush_scheduled = True
            reactor.callLater(0, self.flush)

    def flush(self) -> None:
        """One ``transport.write`` per connection with pending frames."""
        self.flush_scheduled = False
        dirty, self.dirty = self.dirty, {}
        for member in dirty:
            pending = member.pending
            if pending and member.transport is not None:
                member.pending = []
                member.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
