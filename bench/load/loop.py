"""The load process's event loop: one ``epoll``, one callable per file descriptor.

No reactor: a reactor's per-event overhead would make the load clients cost as much as the
servers they measure. Every wait built on :meth:`Loop.run_until` has a deadline and raises
:class:`Timeout` with a line saying what it was waiting for.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Callable
from typing import Any

EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT


class Timeout(Exception):
    """A bounded wait ran out."""


class ServerError(Exception):
    """The server answered a setup request with an error, or closed a connection."""


def log(*parts: Any) -> None:
    """A line on stderr (stdout carries the one ``RESULT`` line the harness reads)."""
    print(f"[load {os.getpid()}]", *parts, file=sys.stderr, flush=True)


class Loop:
    """``epoll`` with one callable per file descriptor."""

    def __init__(self) -> None:
        self.ep = select.epoll()
        self.handlers: dict[int, Callable[[int], None]] = {}

    def add(self, fd: int, handler: Callable[[int], None], mask: int) -> None:
        self.handlers[fd] = handler
        self.ep.register(fd, mask)

    def modify(self, fd: int, mask: int) -> None:
        self.ep.modify(fd, mask)

    def remove(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            self.ep.unregister(fd)

    def poll(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for events and run their handlers; return how many."""
        events = self.ep.poll(timeout)
        handlers = self.handlers
        for fd, ev in events:
            handler = handlers.get(fd)
            if handler is not None:
                handler(ev)
        return len(events)

    def run_until(
        self, done: Callable[[], bool], timeout: float, what: Callable[[], str], step: float = 0.02
    ) -> None:
        """Serve events until ``done()``; raise :class:`Timeout` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise Timeout(f"timed out after {timeout:.0f}s waiting for {what()}")
            self.poll(step)

    def run_for(self, seconds: float, step: float = 0.05) -> None:
        """Serve events for ``seconds`` (a measured idle period, not a synchronisation)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.poll(min(step, left))
