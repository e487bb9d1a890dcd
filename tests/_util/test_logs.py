"""Rate-limited log lines (``xdt._util.logs``): a flood of one kind of line writes one per
interval and says how many it held back; other kinds are not held back by it."""

from __future__ import annotations

import logging

import pytest

from _support.clock import ManualClock
from xdt._util.logs import RateLimitedLog, RateLimitFilter


def test_a_flood_of_one_kind_writes_one_line_per_interval() -> None:
    clock, lines = ManualClock(), []
    log = RateLimitedLog(10.0, write=lines.append, clock=clock.time)
    for _ in range(1000):
        log("accept", "cannot accept")
    assert lines == ["cannot accept"]
    clock.advance(10.0)
    assert log("accept", "cannot accept")
    assert lines[-1] == "cannot accept (and 999 more like it in the last 10 s)"


def test_other_kinds_are_not_held_back_by_a_flood() -> None:
    lines: list[str] = []
    log = RateLimitedLog(10.0, write=lines.append, clock=ManualClock().time)
    for _ in range(100):
        log("cap", "at the cap")
    assert log("other", "something else")
    assert lines == ["at the cap", "something else"]


def test_the_kinds_it_remembers_are_bounded() -> None:
    lines: list[str] = []
    log = RateLimitedLog(10.0, write=lines.append, clock=ManualClock().time, max_kinds=4)
    for i in range(100):
        log(f"kind-{i}", f"line {i}")
    assert len(lines) == 100 and len(log._last) <= 4


def test_the_logging_filter_lets_one_record_per_template_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("xdt-test-flood")
    logger.addFilter(RateLimitFilter(RateLimitedLog(60.0)))
    with caplog.at_level(logging.ERROR, logger="xdt-test-flood"):
        for i in range(500):
            logger.error("Error handling request from %s", f"127.0.0.{i % 250}")
    assert len(caplog.records) == 1
