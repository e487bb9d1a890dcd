"""Time-weighted request concurrency, the signal the autoscaler scales on.

Knative's ``RequestStats`` (``knative/networking: pkg/http/stats/request.go``): between two
reports, accumulate ``concurrency × dt`` at every change; a report divides by the time elapsed
and resets. Two requests of 500 ms each within one second report concurrency 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RequestStats", "StatsReport"]


@dataclass(frozen=True)
class StatsReport:
    average_concurrency: float
    request_count: int  # requests that arrived since the previous report
    concurrency: int  # in flight at the time of the report
    period: float  # seconds the report covers


class RequestStats:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._concurrency = 0
        self._weighted = 0.0
        self._requests = 0
        self._since = self._last_change = clock()
        self._last_request = self._since  # a request's arrival or end (scrapes do not count)

    @property
    def concurrency(self) -> int:
        return self._concurrency

    def request_in(self) -> None:
        self._advance(self._clock())
        self._last_request = self._last_change
        self._concurrency += 1
        self._requests += 1

    def request_out(self) -> None:
        self._advance(self._clock())
        self._last_request = self._last_change
        self._concurrency -= 1

    def idle_since(self) -> float:
        """When the last request ended (now, while one is in flight)."""
        return self._last_request if self._concurrency == 0 else self._clock()

    def report(self) -> StatsReport:
        now = self._clock()
        self._advance(now)
        period = now - self._since
        average = self._weighted / period if period > 0 else float(self._concurrency)
        report = StatsReport(average, self._requests, self._concurrency, period)
        self._weighted, self._requests, self._since = 0.0, 0, now
        return report

    def _advance(self, now: float) -> None:
        self._weighted += self._concurrency * (now - self._last_change)
        self._last_change = now
