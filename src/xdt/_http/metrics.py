"""The one Prometheus renderer: metrics in the text exposition format, with HELP and TYPE.

Each process (the gateway, every sidecar) builds its metrics afresh for each scrape from its
own counters: there is no registry to keep in step, only :func:`render`. A latency is kept as
a :class:`Histogram` (cumulative buckets, ``_sum`` and ``_count``, as Prometheus wants them).
The output is checked against ``prometheus_client``'s own parser in the tests.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "Histogram", "Metric", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = Mapping[str, str]
# Seconds: from a warm same-host call (ms) to a big payload through S3 (tens of seconds).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, 300.0)  # fmt: skip


class Histogram:
    """Observations counted into buckets (each an upper bound), with their sum and count."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)  # per bucket, not cumulative; beyond the last: +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.sum += value
        self.count += 1


@dataclass(frozen=True)
class Metric:
    """One metric family: its name, kind, help text and samples ``(suffix, labels, value)``
    (the suffix: ``_bucket``, ``_sum``, ``_count`` of a histogram; empty otherwise)."""

    name: str
    kind: Literal["counter", "gauge", "histogram"]
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Metric:
        self.samples.append(("", labels, value))
        return self

    def add_histogram(self, histogram: Histogram, **labels: str) -> Metric:
        cumulative = 0
        for bound, count in zip(histogram.buckets, histogram.counts, strict=True):
            cumulative += count
            self.samples.append(("_bucket", {**labels, "le": _number(float(bound))}, cumulative))
        self.samples.append(("_bucket", {**labels, "le": "+Inf"}, histogram.count))
        self.samples.append(("_sum", labels, histogram.sum))
        self.samples.append(("_count", labels, histogram.count))
        return self


def render(metrics: Iterable[Metric]) -> str:
    lines: list[str] = []
    for metric in metrics:
        lines.append(f"# HELP {metric.name} {_escape_help(metric.help)}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        for suffix, labels, value in metric.samples:
            lines.append(f"{metric.name}{suffix}{_labels(labels)} {_number(value)}")
    return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{name}="{_escape_value(text)}"' for name, text in labels.items())
    return "{" + inner + "}"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value == int(value) else repr(value)
