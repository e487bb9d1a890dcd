"""The sidecar's ingress breaker (``xdt.sidecar.breaker``), Knative's queue-proxy semantics."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from xdt._core.errors import Overloaded
from xdt.sidecar.breaker import Breaker

# A regression here tends to leave a task waiting forever: fail fast instead.
pytestmark = pytest.mark.timeout(5)


async def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


class Request:
    """A request that holds its breaker slot until :meth:`finish`."""

    def __init__(self, breaker: Breaker) -> None:
        self.breaker = breaker
        self.running = False
        self._done = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with self.breaker.slot():
            self.running = True
            await self._done.wait()
        self.running = False

    def finish(self) -> None:
        self._done.set()


async def test_one_runs_two_wait_the_fourth_is_refused_at_once() -> None:
    breaker = Breaker(queue_depth=2, max_concurrency=1)
    requests = [Request(breaker) for _ in range(3)]
    await settle()
    assert [r.running for r in requests] == [True, False, False]
    assert breaker.in_flight == 3
    assert breaker.queued == 2

    with pytest.raises(Overloaded) as info:
        async with breaker.slot():
            pytest.fail("a fourth request must not run")
    assert "1 running plus 2 queued" in str(info.value)
    assert breaker.in_flight == 3  # the refusal took nothing

    requests[0].finish()
    await settle()
    assert [r.running for r in requests] == [False, True, False]
    assert breaker.in_flight == 2
    assert breaker.queued == 1

    # A freed queue slot admits a new request again.
    fourth = Request(breaker)
    await settle()
    assert breaker.in_flight == 3
    assert not fourth.running

    for request in [*requests[1:], fourth]:
        request.finish()
        await settle()
    assert all(r.task.done() for r in [*requests, fourth])
    assert breaker.in_flight == 0
    assert breaker.queued == 0


async def test_waiters_are_admitted_in_order() -> None:
    breaker = Breaker(queue_depth=3, max_concurrency=1)
    started: list[int] = []

    async def request(number: int, done: asyncio.Event) -> None:
        async with breaker.slot():
            started.append(number)
            await done.wait()

    events = [asyncio.Event() for _ in range(4)]
    tasks = []
    for number, event in enumerate(events):
        tasks.append(asyncio.create_task(request(number, event)))
        await settle()
    assert started == [0]
    for number, event in enumerate(events):
        event.set()
        await settle()
        assert started == list(range(min(number + 2, 4)))
    await asyncio.gather(*tasks)
    assert breaker.in_flight == 0


async def test_concurrency_above_one() -> None:
    breaker = Breaker(queue_depth=1, max_concurrency=3)
    assert breaker.capacity == 3
    assert breaker.total_slots == 4
    requests = [Request(breaker) for _ in range(4)]
    await settle()
    assert sum(r.running for r in requests) == 3
    assert breaker.in_flight == 4
    assert breaker.queued == 1
    with pytest.raises(Overloaded):
        async with breaker.slot():
            pass
    for request in requests:
        request.finish()
    await asyncio.gather(*(r.task for r in requests))
    assert breaker.in_flight == 0


async def test_queue_depth_zero_refuses_as_soon_as_all_run() -> None:
    breaker = Breaker(queue_depth=0, max_concurrency=2)
    requests = [Request(breaker) for _ in range(2)]
    await settle()
    assert all(r.running for r in requests)
    assert breaker.queued == 0
    with pytest.raises(Overloaded):
        async with breaker.slot():
            pass
    for request in requests:
        request.finish()
    await asyncio.gather(*(r.task for r in requests))


async def test_a_failing_request_gives_its_slot_back() -> None:
    breaker = Breaker(queue_depth=0, max_concurrency=1)
    with pytest.raises(RuntimeError, match="boom"):
        async with breaker.slot():
            assert breaker.in_flight == 1
            raise RuntimeError("boom")
    assert breaker.in_flight == 0
    async with breaker.slot():  # and the slot can be taken again
        assert breaker.in_flight == 1


async def test_a_cancelled_waiter_gives_its_queue_slot_back() -> None:
    breaker = Breaker(queue_depth=1, max_concurrency=1)
    running = Request(breaker)
    waiting = Request(breaker)
    await settle()
    assert breaker.in_flight == 2

    waiting.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting.task
    assert breaker.in_flight == 1
    assert breaker.queued == 0

    replacement = Request(breaker)  # there is room in the queue again
    await settle()
    assert breaker.in_flight == 2
    running.finish()
    await settle()
    assert replacement.running
    replacement.finish()
    await asyncio.gather(running.task, replacement.task)
    assert breaker.in_flight == 0


@pytest.mark.parametrize(
    ("queue_depth", "max_concurrency"), [(0, 0), (10, 0), (10, -1), (-1, 1), (-5, 3)]
)
def test_constructor_rejects_bad_values(queue_depth: int, max_concurrency: int) -> None:
    with pytest.raises(ValueError, match="max_concurrency ≥ 1 and queue_depth ≥ 0"):
        Breaker(queue_depth=queue_depth, max_concurrency=max_concurrency)


def test_constructor_accepts_the_smallest_values() -> None:
    breaker = Breaker(queue_depth=0, max_concurrency=1)
    assert (breaker.capacity, breaker.total_slots) == (1, 1)
    assert (breaker.in_flight, breaker.queued) == (0, 0)
