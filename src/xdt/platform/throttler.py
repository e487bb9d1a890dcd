"""The activator's per-function throttler: hand each request an instance slot, or buffer it.

A request takes a slot on an instance picked by the function's balancing policy. When every
instance is full, or there is none yet (the function is at zero), it waits in a FIFO queue
bounded by ``queue_depth``; beyond that it is refused at once with
:class:`~xdt.Overloaded`. A freed slot or a new ready instance serves the queue in order.

The time-weighted number of buffered requests is demand the sidecars cannot see, so the
autoscaler reads it from :attr:`Throttler.waiting` (Knative's activator reports it the same
way), and the first request to a function at zero calls ``on_cold`` at once — the poke that
starts scale-from-zero without waiting for the next autoscaler tick.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from .._core.errors import Overloaded
from .._util.concurrency import RequestStats
from .balancer import Tracker, policy_for

__all__ = ["Throttler"]

T = TypeVar("T")


class Throttler(Generic[T]):
    def __init__(
        self,
        function: str,
        *,
        concurrency: int,
        queue_depth: int,
        on_cold: Callable[[], None] = lambda: None,
    ) -> None:
        self.function = function
        self.concurrency = concurrency
        self.queue_depth = queue_depth
        self.on_cold = on_cold
        self.waiting = RequestStats()
        self._policy = policy_for(concurrency)
        self._trackers: list[Tracker[T]] = []
        self._queue: collections.deque[asyncio.Future[Tracker[T]]] = collections.deque()

    @property
    def trackers(self) -> Sequence[Tracker[T]]:
        return self._trackers

    @property
    def queued(self) -> int:
        return self.waiting.concurrency

    @property
    def in_flight(self) -> int:
        return sum(t.in_flight for t in self._trackers)

    def add(self, target: T) -> Tracker[T]:
        """Route to a newly ready instance."""
        tracker = Tracker(target, self.concurrency or None)
        self._trackers.append(tracker)
        self._dispatch()
        return tracker

    def remove(self, target: T) -> Tracker[T] | None:
        """Stop routing new requests to an instance (draining or gone). Its in-flight
        requests finish on their own."""
        for tracker in self._trackers:
            if tracker.target is target:
                self._trackers.remove(tracker)
                return tracker
        return None

    async def acquire(self) -> Tracker[T]:
        """A slot on some instance; waits in the queue if there is none. Cancel to give up."""
        if not self._queue:
            tracker = self._policy.pick(self._trackers)
            if tracker is not None:
                tracker.in_flight += 1
                return tracker
        if len(self._queue) >= self.queue_depth:
            raise Overloaded(
                f"function {self.function!r} is overloaded: {len(self._queue)} requests are "
                f"already waiting for an instance (queue_depth {self.queue_depth}); retry later",
                function=self.function,
            )
        waiter: asyncio.Future[Tracker[T]] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        self.waiting.request_in()
        if not self._trackers:
            self.on_cold()  # cheap when already poked: the deployment only acts on a change
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # granted as we gave up: hand it on
            raise
        finally:
            self.waiting.request_out()
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                self._queue.remove(waiter)

    def fail_waiting(self, error: Callable[[], Exception]) -> None:
        """Answer every buffered request with a fresh ``error()`` (no instance can start)."""
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_exception(error())

    def release(self, tracker: Tracker[T]) -> None:
        tracker.in_flight -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        while self._queue:
            waiter = self._queue[0]
            if waiter.done():
                self._queue.popleft()
                continue
            tracker = self._policy.pick(self._trackers)
            if tracker is None:
                return
            tracker.in_flight += 1
            self._queue.popleft()
            waiter.set_result(tracker)
