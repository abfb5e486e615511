"""Log output: the formats of ``twistd chat --log-format``, and :class:`LogThrottle`.

``text`` is twistd's own format. ``json`` writes one JSON object per event to standard output
(twisted.logger's ``jsonFileLogObserver``: every event field, ``log_format`` included), for log
shippers; the plugin installs it as twistd's ``--logger``.

:class:`LogThrottle` bounds the log lines clients can cause (see its docstring).
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import ILogObserver, Logger, jsonFileLogObserver

from chat.service.ratelimit import TokenBucket

JSON_OBSERVER = "chat.logs.json_observer"


def json_observer() -> ILogObserver:
    """One JSON object per line on standard output."""
    return jsonFileLogObserver(sys.stdout, recordSeparator="")


class LogThrottle:
    """Rate-limits log lines that clients can cause, and says how many it held back.

    Why: anything a client can make the server log once, it can make the server log a million
    times; an unbounded log fills the disk and drowns the lines that matter. So every line a
    client can cause (a refused request, a timed-out connection, a failed login, a request
    that crashed a handler) asks a throttle first::

        throttle = LogThrottle(reactor, burst=20, per_second=1.0, log=Logger())
        ...
        if throttle.allow("http.timeout"):
            log.info("dropped {peer}: no request head within {seconds} s", ...)

    ``allow(key)`` spends one token of ``key``'s bucket (:class:`~chat.service.ratelimit.
    TokenBucket`: ``burst`` lines at once, then ``per_second`` on average) and says whether
    the line may be written. A refused line is counted; ``report_every`` seconds after the
    first refusal, one line per key says ``N similar log lines suppressed (key)`` at warn
    level on ``log``, and counting starts again. So a flood costs at most ``burst`` lines,
    then ``per_second`` lines a second, plus one report per key every ``report_every``
    seconds.

    A key names a *kind* of line, chosen by the code (``"http.timeout"``, ``"ws.bad_token"``),
    never client data such as an address: each key keeps a bucket and a count. At most
    ``max_keys`` keys get their own bucket; lines of any further key share the bucket ``"*"``,
    so a mistake there costs a shared budget, not memory.

    ``logger(namespace, key)`` is a :class:`~twisted.logger.Logger` every event of which asks
    ``allow(key)`` first: hand it to code that logs on its own (twisted.web's requests log a
    line for every faked ``HEAD``), so that its lines are throttled too.

    ``flush()`` writes any pending report at once and cancels the timer (call it when the
    server stops, or at the end of a test). ``suppressed(key)`` is the count not yet reported.
    """

    OVERFLOW_KEY = "*"

    def __init__(
        self,
        clock: IReactorTime,
        burst: int = 10,
        per_second: float = 1.0,
        *,
        log: Logger | None = None,
        report_every: float = 10.0,
        max_keys: int = 256,
    ) -> None:
        if burst < 1 or per_second <= 0 or report_every <= 0 or max_keys < 1:
            raise ValueError("a log throttle needs burst >= 1 and positive rates")
        self.clock = clock
        self.burst = burst
        self.per_second = per_second
        self.log = log if log is not None else Logger(namespace="chat.logs")
        self.report_every = report_every
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}
        self._suppressed: dict[str, int] = {}
        self._report: IDelayedCall | None = None

    def allow(self, key: str) -> bool:
        """Whether a line of kind ``key`` may be written now; if not, it is counted."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                key = self.OVERFLOW_KEY
                bucket = self._buckets.get(key)
            if bucket is None:
                bucket = TokenBucket(self.per_second, self.burst, self.clock.seconds())
                self._buckets[key] = bucket
        if bucket.take(self.clock.seconds()):
            return True
        self._suppressed[key] = self._suppressed.get(key, 0) + 1
        if self._report is None:
            self._report = self.clock.callLater(self.report_every, self._write_report)
        return False

    def logger(self, namespace: str, key: str) -> Logger:
        """A Logger in ``namespace`` whose events are written only when ``allow(key)``."""
        return ThrottledLogger(self, key, namespace=namespace)

    def suppressed(self, key: str) -> int:
        """Lines of ``key`` refused since the last report."""
        return self._suppressed.get(key, 0)

    def flush(self) -> None:
        """Write the pending report now, and cancel its timer."""
        if self._report is not None and self._report.active():
            self._report.cancel()
        self._write_report()

    def _write_report(self) -> None:
        self._report = None
        counts, self._suppressed = self._suppressed, {}
        for key, count in sorted(counts.items()):
            self.log.warn(
                "{count} similar log lines suppressed ({key})",
                count=count,
                key=key,
                log_throttled=True,
            )


class ThrottledLogger(Logger):
    """A :class:`~twisted.logger.Logger` that drops what its :class:`LogThrottle` holds back."""

    def __init__(self, throttle: LogThrottle, key: str, namespace: str) -> None:
        super().__init__(namespace=namespace)
        self.throttle = throttle
        self.key = key

    def emit(self, level: Any, format: str | None = None, **kwargs: object) -> None:
        if self.throttle.allow(self.key):
            super().emit(level, format, **kwargs)
