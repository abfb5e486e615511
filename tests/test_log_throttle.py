"""LogThrottle (chat/logs.py): a burst, then a rate, per kind of line, and a report of the rest.

Driven by twisted.internet.task.Clock, Twisted's own deterministic clock, so no test waits."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel

from chat.logs import LogThrottle


def recording() -> tuple[Logger, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    return Logger(namespace="test", observer=events.append), events


def test_a_burst_then_a_rate_per_key() -> None:
    clock = Clock()
    throttle = LogThrottle(clock, burst=3, per_second=2.0)
    assert [throttle.allow("a") for _ in range(5)] == [True, True, True, False, False]
    assert throttle.allow("b")  # each kind of line has its own budget
    clock.advance(0.5)
    assert [throttle.allow("a") for _ in range(2)] == [True, False]
    clock.advance(10)
    assert [throttle.allow("a") for _ in range(4)] == [True, True, True, False]  # capped burst


def test_what_was_held_back_is_reported_once_per_key() -> None:
    clock = Clock()
    log, events = recording()
    throttle = LogThrottle(clock, burst=1, per_second=1.0, log=log, report_every=10)
    for key in ["a"] * 4 + ["b"] * 2:
        throttle.allow(key)
    assert (throttle.suppressed("a"), throttle.suppressed("b")) == (3, 1)
    clock.advance(9.9)
    assert events == []
    clock.advance(0.1)
    assert [(e["key"], e["count"], e["log_level"]) for e in events] == [
        ("a", 3, LogLevel.warn),
        ("b", 1, LogLevel.warn),
    ]
    assert "3 similar log lines suppressed (a)" in events[0]["log_format"].format(**events[0])
    assert throttle.suppressed("a") == 0 and not clock.getDelayedCalls()


def test_flush_reports_at_once_and_leaves_no_timer() -> None:
    clock = Clock()
    log, events = recording()
    throttle = LogThrottle(clock, burst=1, per_second=1.0, log=log)
    throttle.allow("a")
    throttle.allow("a")
    throttle.flush()
    assert [e["count"] for e in events] == [1] and not clock.getDelayedCalls()
    throttle.flush()  # nothing pending: nothing written
    assert len(events) == 1


def test_keys_beyond_max_keys_share_one_bucket() -> None:
    throttle = LogThrottle(Clock(), burst=2, per_second=1.0, max_keys=2)
    assert throttle.allow("a") and throttle.allow("b")
    assert [throttle.allow(f"client-{n}") for n in range(4)] == [True, True, False, False]
    assert throttle.suppressed(LogThrottle.OVERFLOW_KEY) == 2


def test_a_throttled_logger_writes_only_what_the_throttle_allows() -> None:
    clock = Clock()
    events: list[dict[str, Any]] = []
    throttle = LogThrottle(clock, burst=2, per_second=1.0)
    logger = throttle.logger("twisted.web.server", "http.twisted")
    logger.observer = events.append
    for n in range(5):
        logger.info("line {n}", n=n)
    assert [e["n"] for e in events] == [0, 1] and throttle.suppressed("http.twisted") == 3


@pytest.mark.parametrize("args", [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_a_throttle_needs_a_burst_and_a_rate(args: tuple[int, float]) -> None:
    with pytest.raises(ValueError, match="burst"):
        LogThrottle(Clock(), *args)
