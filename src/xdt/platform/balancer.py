"""Which instance gets the next request: Knative's activator policies (``lb_policy.go``).

The policy follows the function's containerConcurrency (CC), as ``newRevisionThrottler`` does:

- CC = 0 (unlimited): power of two random choices on in-flight requests;
- CC 1–3: the first instance with a free slot;
- CC > 3: round-robin from the last pick, skipping instances without a free slot.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

__all__ = ["FirstAvailable", "Policy", "PowerOfTwoChoices", "RoundRobin", "Tracker", "policy_for"]

T = TypeVar("T")


@dataclass(eq=False)
class Tracker(Generic[T]):
    """One instance as the activator sees it: its in-flight count and slot capacity."""

    target: T
    capacity: int | None  # None: unlimited
    in_flight: int = field(default=0)

    @property
    def has_capacity(self) -> bool:
        return self.capacity is None or self.in_flight < self.capacity


class Policy(Protocol):
    def pick(self, trackers: Sequence[Tracker[T]]) -> Tracker[T] | None: ...


class PowerOfTwoChoices:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, trackers: Sequence[Tracker[T]]) -> Tracker[T] | None:
        candidates = [t for t in trackers if t.has_capacity]
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        a, b = self._rng.sample(candidates, 2)
        return a if a.in_flight <= b.in_flight else b


class FirstAvailable:
    def pick(self, trackers: Sequence[Tracker[T]]) -> Tracker[T] | None:
        return next((t for t in trackers if t.has_capacity), None)


class RoundRobin:
    def __init__(self) -> None:
        self._next = 0

    def pick(self, trackers: Sequence[Tracker[T]]) -> Tracker[T] | None:
        count = len(trackers)
        for step in range(count):
            index = (self._next + step) % count
            if trackers[index].has_capacity:
                self._next = index + 1
                return trackers[index]
        return None


def policy_for(concurrency: int) -> Policy:
    if concurrency == 0:
        return PowerOfTwoChoices()
    if concurrency <= 3:
        return FirstAvailable()
    return RoundRobin()
