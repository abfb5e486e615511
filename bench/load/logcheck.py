"""Checking one feed against one log: every seq once, in order, gaps exactly where they are.

Used where a single subscriber must receive a whole log (the stalled consumer after it
resumes, the catch-up reader): each text frame goes through :meth:`FeedChecker.frame`, which
parses only what it needs (a ``gap`` item with :mod:`json`, anything else by byte search).
Seqs and gaps must tile the log: a seq or gap that does not start right after the previous
one is a hole (or a duplicate, when it starts at or before it).
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench.load.marks import MSG_MARK

MAX_PROBLEMS = 20


class FeedChecker:
    """The state of one feed of one log, as the client saw it."""

    def __init__(self, last: int = 0) -> None:
        self.last = last  # the highest seq accounted for (items and gaps)
        self.first_seen: int | None = None
        self.messages = 0  # message items
        self.items = 0  # items of any kind but gap
        self.gaps: list[dict[str, Any]] = []
        self.holes: list[str] = []
        self.duplicates = 0
        self.frames = 0
        self.t_progress = time.monotonic()  # when the last item or gap arrived
        self.t_last_item = 0.0

    def _problem(self, line: str) -> None:
        if len(self.holes) < MAX_PROBLEMS:
            self.holes.append(line)

    def _advance(self, first: int, last: int, what: str) -> None:
        if first <= self.last:
            self.duplicates += 1
            self._problem(f"{what} after {self.last} (duplicate)")
        elif first != self.last + 1:
            self._problem(f"{what} after {self.last} (hole)")
        self.last = max(self.last, last)
        if self.first_seen is None:
            self.first_seen = first
        self.t_progress = time.monotonic()

    def gap(self, gap: dict[str, Any]) -> None:
        """Account for a ``gap`` item (also one already parsed during setup)."""
        self.gaps.append(gap)
        self._advance(gap["first"], gap["last"], f"gap {gap['first']}..{gap['last']}")

    def frame(self, payload: bytes) -> int | None:
        """Account for one text frame; return the seq of the item it carried, if any."""
        self.frames += 1
        if b'"kind":"gap"' in payload:
            self.gap(json.loads(payload)["data"])
            return None
        i = payload.find(b'"seq":')
        if i < 0 or b'"type":"next"' not in payload:
            return None  # a response or another interaction's frame
        i += 6
        end = payload.find(b",", i)
        seq = int(payload[i : end if end > 0 else payload.index(b"}", i)])
        if MSG_MARK in payload:
            self.messages += 1
        self.items += 1
        self._advance(seq, seq, f"seq {seq}")
        self.t_last_item = self.t_progress
        return seq

    def summary(self) -> dict[str, Any]:
        return {
            "items_received": self.items,
            "messages_received": self.messages,
            "first_seq_seen": self.first_seen,
            "last_seq_seen": self.last,
            "gap_count": len(self.gaps),
            "gaps": self.gaps[:5],
            "duplicates": self.duplicates,
            "order_problems": self.holes,
        }
