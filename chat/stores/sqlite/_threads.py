"""The threads of the SQLite store: one writer that group-commits, one reader.

SQLite calls block (a commit waits for ``fsync``), so none of them runs on the reactor thread.
Each thread owns its own connection (SQLite connections must not be shared across threads
without a lock, and a WAL database lets one writer and any number of readers work at once).

Why dedicated threads and not Twisted's thread pool or ``adbapi``: group commit needs *one*
place that sees every pending append and commits them together; a pool would run appends in
parallel transactions that SQLite serializes anyway (``SQLITE_BUSY`` under contention) and would
need a lock to keep per-log seqs gapless. A dedicated writer keeps the seq counters, the
transaction and the batching in one thread with no locks. Reads go to a second thread with its
own connection, so a slow history read never delays a commit and a commit never delays a read.

Results go back to the reactor with ``reactor.callFromThread``; nothing here touches Twisted
objects from the worker threads otherwise.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred

T = TypeVar("T")


class Job(Generic[T]):
    """A call to run on a worker thread with its connection; ``deferred`` fires on the reactor."""

    __slots__ = ("deferred", "function")

    def __init__(self, function: Callable[[sqlite3.Connection], T]) -> None:
        self.function = function
        self.deferred: Deferred[T] = Deferred()


class Stop:
    """Tells a worker thread to close its connection and end."""

    __slots__ = ("deferred",)

    def __init__(self) -> None:
        self.deferred: Deferred[None] = Deferred()


class Worker:
    """A thread owning one SQLite connection, running jobs from a queue in order."""

    def __init__(self, name: str, connect: Callable[[], sqlite3.Connection], reactor: Any) -> None:
        self.name = name
        self.connect = connect
        self.reactor = reactor
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self.thread.start()

    def call(self, function: Callable[[sqlite3.Connection], T]) -> Deferred[T]:
        job = Job(function)
        self.start()
        self.queue.put(job)
        return job.deferred

    def stop(self) -> Deferred[None]:
        stop = Stop()
        if self.thread is None:
            stop.deferred.callback(None)
        else:
            self.queue.put(stop)
        return stop.deferred

    def _run(self) -> None:
        try:
            connection = self.connect()
        except BaseException as exc:  # fail every job rather than hang them
            self._fail_forever(exc)
            return
        stop: Stop | None = None
        try:
            while stop is None:
                stop = self.handle(connection, self.queue.get())
        finally:
            connection.close()  # after the last commit; checkpoints the WAL
            if stop is not None:
                self.reactor.callFromThread(stop.deferred.callback, None)

    def _fail_forever(self, exc: BaseException) -> None:
        while True:
            job = self.queue.get()
            if isinstance(job, Stop):
                self.reactor.callFromThread(job.deferred.callback, None)
                return
            self.fail_job(job, exc)

    def fail_job(self, job: Any, exc: BaseException) -> None:
        self.reactor.callFromThread(job.deferred.errback, exc)

    def handle(self, connection: sqlite3.Connection, job: Any) -> Stop | None:
        """Run one queued entry; the :class:`Stop` when the thread should end."""
        if isinstance(job, Stop):
            return job
        self.run_job(connection, job)
        return None

    def run_job(self, connection: sqlite3.Connection, job: Job[Any]) -> None:
        try:
            result = job.function(connection)
        except BaseException as exc:  # handed to the reactor, never lost in the thread
            self.reactor.callFromThread(job.deferred.errback, exc)
        else:
            self.reactor.callFromThread(job.deferred.callback, result)
