"""The ingress breaker: at most ``containerConcurrency`` requests in the function, a bounded
queue in front, and an immediate refusal beyond it (Knative's ``pkg/queue/breaker.go``).

Admission takes two steps, as in Knative: claim one of ``queue_depth + max_concurrency`` slots
or be refused at once (:class:`~xdt.Overloaded`, which the sidecar answers with 503); then wait for
one of ``max_concurrency`` execution permits. The queue gives the autoscaler time to react to a
burst without the callers seeing errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .._core.errors import Overloaded

__all__ = ["Breaker"]


class Breaker:
    """``Breaker(queue_depth=10, max_concurrency=1)``; use ``async with breaker.slot(): ...``.
    ``function`` names whose instance it guards, in the refusals."""

    def __init__(self, *, queue_depth: int, max_concurrency: int, function: str = "") -> None:
        if max_concurrency < 1 or queue_depth < 0:
            raise ValueError("a breaker needs max_concurrency ≥ 1 and queue_depth ≥ 0")
        self.capacity = max_concurrency
        self.function = function
        self.total_slots = queue_depth + max_concurrency
        self._in_flight = 0  # admitted: queued or executing
        self._permits = asyncio.Semaphore(max_concurrency)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return max(0, self._in_flight - self.capacity)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._in_flight >= self.total_slots:
            raise Overloaded(
                f"function {self.function!r} is overloaded: {self._in_flight} requests "
                f"admitted, the most this instance takes is {self.capacity} running plus "
                f"{self.total_slots - self.capacity} queued; retry later",
                function=self.function or None,
            )
        self._in_flight += 1
        try:
            async with self._permits:
                yield
        finally:
            self._in_flight -= 1
