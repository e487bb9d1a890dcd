"""Instance log lines (``xdt._util.logs``): stamped lines that parse back; rate-limited ones
(a flood of one kind writes one per interval and says how many it held back; other kinds are
not held back by it)."""

from __future__ import annotations

import io
import logging
import threading

import pytest

from _support.clock import ManualClock
from xdt._util.logs import (
    MAX_LINE,
    RateLimitedLog,
    RateLimitFilter,
    StampedLines,
    parse_line,
)


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


def test_stamped_lines_carry_time_instance_and_request_and_parse_back() -> None:
    raw = io.BytesIO()
    current: list[str | None] = [None]
    lines = StampedLines(raw, "fn-3", lambda: current[0])
    lines.write("first ")
    current[0] = "req-1"
    lines.write("line\nsecond")  # the first line is complete: stamped with the id now
    lines.close_line()
    parsed = [parse_line(line) for line in raw.getvalue().decode().splitlines()]
    assert [(p.instance, p.request_id, p.text) for p in parsed if p] == [
        ("fn-3", "req-1", "first line"),
        ("fn-3", "req-1", "second"),
    ]
    assert all(p is not None and p.time.endswith("Z") for p in parsed)
    assert parse_line("a raw line of a C library") is None


def test_a_line_longer_than_the_limit_is_cut_not_held() -> None:
    raw = io.BytesIO()
    lines = StampedLines(raw, "fn-1", lambda: None)
    lines.write("x" * (MAX_LINE * 2 + 5))
    written = raw.getvalue().decode().splitlines()
    assert len(written) == 2 and all(len(line) > MAX_LINE for line in written)


def test_lines_of_two_threads_do_not_interleave() -> None:
    raw = io.BytesIO()
    lines = StampedLines(raw, "fn-1", lambda: None)

    def write(letter: str) -> None:
        for _ in range(200):
            lines.write(letter * 10)
            lines.write(letter * 10 + "\n")

    threads = [threading.Thread(target=write, args=(c,)) for c in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    texts = [parse_line(line) for line in raw.getvalue().decode().splitlines()]
    assert len(texts) == 400
    assert {t.text for t in texts if t} == {"a" * 20, "b" * 20}
