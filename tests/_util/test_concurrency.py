"""Time-weighted request concurrency (``xdt._util.concurrency.RequestStats``) on a fake clock."""

from __future__ import annotations

import pytest

from xdt._util.concurrency import RequestStats, StatsReport


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stats_at(clock: Clock) -> RequestStats:
    return RequestStats(clock=clock)


def test_knative_example_two_half_second_requests_in_a_second() -> None:
    """Knative's doc example: two requests of 500 ms each within one second → 1.0."""
    clock = Clock(0.0)
    stats = stats_at(clock)
    stats.request_in()
    clock.now = 0.5
    stats.request_out()
    stats.request_in()
    clock.now = 1.0
    stats.request_out()

    report = stats.report()
    assert report == StatsReport(
        average_concurrency=1.0, request_count=2, concurrency=0, period=1.0
    )


def test_overlapping_requests_add_up() -> None:
    clock = Clock(10.0)
    stats = stats_at(clock)
    stats.request_in()  # 10.0 – 12.0
    clock.now = 11.0
    stats.request_in()  # 11.0 – 11.5
    clock.now = 11.5
    stats.request_out()
    clock.now = 12.0
    stats.request_out()
    clock.now = 14.0
    report = stats.report()
    # (2 s × 1 + 0.5 s × 1) over 4 s
    assert report.average_concurrency == pytest.approx(2.5 / 4)
    assert report.request_count == 2
    assert report.period == pytest.approx(4.0)


def test_a_request_spanning_two_reports_counts_in_both() -> None:
    clock = Clock(0.0)
    stats = stats_at(clock)
    clock.now = 0.5
    stats.request_in()
    clock.now = 1.0
    first = stats.report()
    assert first.average_concurrency == pytest.approx(0.5)
    assert first.request_count == 1
    assert first.concurrency == 1

    clock.now = 1.25
    stats.request_out()
    clock.now = 2.0
    second = stats.report()
    assert second.average_concurrency == pytest.approx(0.25)
    assert second.request_count == 0  # arrivals only: it arrived in the first period
    assert second.concurrency == 0
    assert second.period == pytest.approx(1.0)


def test_request_count_counts_arrivals_not_completions() -> None:
    clock = Clock()
    stats = stats_at(clock)
    for _ in range(3):
        stats.request_in()
    stats.request_out()
    clock.now += 1
    report = stats.report()
    assert report.request_count == 3
    assert report.concurrency == 2
    assert stats.concurrency == 2


def test_report_resets_the_period() -> None:
    clock = Clock()
    stats = stats_at(clock)
    stats.request_in()
    clock.now += 1
    stats.request_out()
    clock.now += 1
    assert stats.report().average_concurrency == pytest.approx(0.5)

    clock.now += 3
    quiet = stats.report()
    assert quiet == StatsReport(average_concurrency=0.0, request_count=0, concurrency=0, period=3.0)


def test_steady_concurrency_reports_itself() -> None:
    clock = Clock()
    stats = stats_at(clock)
    for _ in range(4):
        stats.request_in()
    for _ in range(3):
        clock.now += 0.25
        assert stats.report().average_concurrency == pytest.approx(4.0)


def test_report_over_no_time_gives_the_current_concurrency() -> None:
    clock = Clock()
    stats = stats_at(clock)
    stats.request_in()
    stats.request_in()
    report = stats.report()
    assert report.period == 0
    assert report.average_concurrency == 2.0
    assert report.request_count == 2


def test_concurrency_property() -> None:
    stats = stats_at(Clock())
    assert stats.concurrency == 0
    stats.request_in()
    assert stats.concurrency == 1
    stats.request_out()
    assert stats.concurrency == 0


def test_default_clock_is_monotonic() -> None:
    stats = RequestStats()
    stats.request_in()
    report = stats.report()
    assert report.period >= 0
    assert report.request_count == 1


def test_idle_since_moves_with_requests_not_with_scrapes() -> None:
    clock = Clock()
    stats = stats_at(clock)
    clock.now = 105.0
    stats.request_in()
    clock.now = 106.0
    assert stats.idle_since() == 106.0  # busy: idle since "now"
    stats.request_out()
    clock.now = 150.0
    stats.report()  # the autoscaler's scrape is not activity
    assert stats.idle_since() == 106.0
