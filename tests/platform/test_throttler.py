"""The activator's per-function throttler (``xdt.platform.throttler.Throttler``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from xdt import InvocationError, Overloaded, XdtError
from xdt.platform.balancer import Tracker
from xdt.platform.throttler import Throttler

T = TypeVar("T")

# A regression here tends to leave a task waiting forever: fail fast instead.
pytestmark = pytest.mark.timeout(5)


class Instance:
    """A stand-in routing target, compared by identity as the throttler does."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Instance({self.name})"


async def settle(rounds: int = 5) -> None:
    """Let the tasks that can run, run."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def throttler(
    *, concurrency: int = 1, queue_depth: int = 10, on_cold: Callable[[], None] = lambda: None
) -> Throttler[Instance]:
    return Throttler("resize", concurrency=concurrency, queue_depth=queue_depth, on_cold=on_cold)


def spawn(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    return asyncio.create_task(coro)


async def test_first_acquire_takes_a_free_slot_at_once() -> None:
    t = throttler()
    instance = Instance("a")
    tracker = t.add(instance)
    assert tracker.target is instance
    assert tracker.capacity == 1
    assert await t.acquire() is tracker
    assert t.in_flight == 1
    assert t.queued == 0


async def test_second_acquire_waits_until_release() -> None:
    t = throttler(concurrency=1)
    tracker = t.add(Instance("a"))
    first = await t.acquire()

    second = spawn(t.acquire())
    await settle()
    assert not second.done()
    assert t.queued == 1
    assert t.in_flight == 1

    t.release(first)
    await settle()
    assert second.done()
    assert second.result() is tracker
    assert t.in_flight == 1  # handed straight to the waiter
    assert t.queued == 0

    t.release(tracker)
    assert t.in_flight == 0


async def test_waiters_are_served_in_arrival_order() -> None:
    t = throttler(concurrency=1)
    t.add(Instance("a"))
    held = await t.acquire()
    order: list[int] = []

    async def request(number: int) -> Tracker[Instance]:
        tracker = await t.acquire()
        order.append(number)
        return tracker

    tasks = []
    for number in range(5):
        tasks.append(spawn(request(number)))
        await settle()  # each is queued before the next arrives
    assert t.queued == 5
    assert order == []

    t.release(held)
    for expected in range(5):
        await settle()
        assert order == list(range(expected + 1))
        t.release(tasks[expected].result())
    await settle()
    assert t.in_flight == 0
    assert t.queued == 0


async def test_new_arrivals_queue_behind_waiters_even_if_a_slot_frees() -> None:
    """A slot freed while requests wait goes to the oldest waiter, not to a newcomer."""
    t = throttler(concurrency=1)
    t.add(Instance("a"))
    held = await t.acquire()
    waiter = spawn(t.acquire())
    await settle()

    t.release(held)  # granted to the waiter synchronously
    newcomer = spawn(t.acquire())
    await settle()
    assert waiter.done()
    assert not newcomer.done()
    t.release(waiter.result())
    await settle()
    assert newcomer.done()
    t.release(newcomer.result())
    assert t.in_flight == 0


async def test_queue_bound_refuses_with_overloaded() -> None:
    t = throttler(concurrency=1, queue_depth=2)
    t.add(Instance("a"))
    held = await t.acquire()
    waiters = [spawn(t.acquire()) for _ in range(2)]
    await settle()
    assert t.queued == 2

    with pytest.raises(Overloaded) as info:
        await t.acquire()
    error = info.value
    message = str(error)
    assert "'resize'" in message
    assert "queue_depth 2" in message
    assert "2 requests are already waiting" in message
    assert error.function == "resize"
    assert error.status == 503
    assert isinstance(error, InvocationError)
    assert t.queued == 2  # the refused request never joined

    t.release(held)
    for waiter in waiters:
        await settle()
        t.release(await waiter)
    assert t.in_flight == 0


async def test_queue_depth_zero_refuses_whenever_nothing_is_free() -> None:
    t = throttler(concurrency=1, queue_depth=0)
    with pytest.raises(Overloaded):
        await t.acquire()
    t.add(Instance("a"))
    tracker = await t.acquire()  # a free slot needs no queue
    with pytest.raises(Overloaded):
        await t.acquire()
    t.release(tracker)


async def test_on_cold_is_called_when_no_instance_exists() -> None:
    pokes: list[int] = []
    t = throttler(on_cold=lambda: pokes.append(1))
    waiter = spawn(t.acquire())
    await settle()
    assert pokes == [1]
    assert not waiter.done()
    assert t.queued == 1

    tracker = t.add(Instance("a"))  # the instance that started serves the waiter
    await settle()
    assert waiter.result() is tracker
    assert t.queued == 0
    t.release(tracker)


async def test_on_cold_is_not_called_when_an_instance_exists() -> None:
    pokes: list[int] = []
    t = throttler(concurrency=1, on_cold=lambda: pokes.append(1))
    t.add(Instance("a"))
    held = await t.acquire()
    waiter = spawn(t.acquire())  # full, so it waits, but the function is not cold
    await settle()
    assert not waiter.done()
    assert pokes == []
    t.release(held)
    await settle()
    t.release(await waiter)
    assert pokes == []


async def test_add_serves_as_many_waiters_as_it_has_slots() -> None:
    t = throttler(concurrency=2)
    waiters = [spawn(t.acquire()) for _ in range(3)]
    await settle()
    assert t.queued == 3

    tracker = t.add(Instance("a"))
    await settle()
    assert [w.done() for w in waiters] == [True, True, False]
    assert tracker.in_flight == 2
    assert t.queued == 1

    second = t.add(Instance("b"))
    await settle()
    assert waiters[2].result() is second
    assert t.queued == 0
    assert t.in_flight == 3
    for waiter in waiters:
        t.release(waiter.result())
    assert t.in_flight == 0


async def test_unlimited_concurrency_never_queues() -> None:
    t = throttler(concurrency=0)
    tracker = t.add(Instance("a"))
    assert tracker.capacity is None
    grabbed = [await t.acquire() for _ in range(50)]
    assert all(g is tracker for g in grabbed)
    assert t.in_flight == 50
    assert t.queued == 0


async def test_cancelled_waiter_leaves_the_queue_without_leaking_a_slot() -> None:
    t = throttler(concurrency=1)
    tracker = t.add(Instance("a"))
    held = await t.acquire()

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(t.acquire(), timeout=0.01)
    assert t.queued == 0

    behind = spawn(t.acquire())
    await settle()
    t.release(held)
    await settle()
    assert behind.result() is tracker  # the cancelled waiter did not take the slot
    t.release(tracker)
    assert t.in_flight == 0
    assert t.queued == 0


async def test_cancelled_waiter_in_the_middle_is_skipped() -> None:
    t = throttler(concurrency=1)
    t.add(Instance("a"))
    held = await t.acquire()
    first, middle, last = (spawn(t.acquire()) for _ in range(3))
    await settle()
    assert t.queued == 3

    middle.cancel()
    await settle()
    assert middle.cancelled()
    assert t.queued == 2

    t.release(held)
    await settle()
    assert first.done() and not last.done()
    t.release(first.result())
    await settle()
    assert last.done()
    t.release(last.result())
    assert t.in_flight == 0
    assert t.queued == 0


async def test_waiter_cancelled_just_after_being_granted_hands_the_slot_on() -> None:
    """The slot was given to a waiter whose caller gave up before it ran: it goes to the next
    waiter instead of being lost."""
    t = throttler(concurrency=1)
    tracker = t.add(Instance("a"))
    held = await t.acquire()
    granted, next_in_line = spawn(t.acquire()), spawn(t.acquire())
    await settle()

    t.release(held)  # grants `granted` synchronously…
    granted.cancel()  # …which is cancelled before it resumes
    await settle()
    assert granted.cancelled()
    assert next_in_line.result() is tracker
    assert t.in_flight == 1
    t.release(tracker)
    assert t.in_flight == 0


async def test_waiter_cancelled_just_after_being_granted_frees_the_slot() -> None:
    t = throttler(concurrency=1)
    t.add(Instance("a"))
    held = await t.acquire()
    granted = spawn(t.acquire())
    await settle()
    t.release(held)
    granted.cancel()
    await settle()
    assert granted.cancelled()
    assert t.in_flight == 0
    assert t.queued == 0


class NoInstance(XdtError):
    code = "test_no_instance"


async def test_fail_waiting_makes_every_waiter_raise() -> None:
    t = throttler()
    made: list[NoInstance] = []

    def error() -> NoInstance:
        made.append(NoInstance("the instance could not start"))
        return made[-1]

    waiters = [spawn(t.acquire()) for _ in range(3)]
    await settle()
    assert t.queued == 3

    t.fail_waiting(error)
    await settle()
    raised = []
    for waiter in waiters:
        with pytest.raises(NoInstance, match="could not start") as info:
            await waiter
        raised.append(info.value)
    assert len(made) == 3
    assert all(a is b for a, b in zip(raised, made, strict=True))  # a fresh error each
    assert t.queued == 0
    assert t.in_flight == 0

    # The throttler still works afterwards.
    tracker = t.add(Instance("a"))
    assert await t.acquire() is tracker


async def test_fail_waiting_with_nobody_waiting_does_nothing() -> None:
    t = throttler()
    t.fail_waiting(lambda: AssertionError("never called"))
    assert t.queued == 0


async def test_remove_stops_routing_to_a_target() -> None:
    t = throttler(concurrency=4)
    a, b = Instance("a"), Instance("b")
    tracker_a = t.add(a)
    tracker_b = t.add(b)
    assert [tr.target for tr in t.trackers] == [a, b]

    assert t.remove(a) is tracker_a
    assert [tr.target for tr in t.trackers] == [b]
    assert t.remove(a) is None
    assert t.remove(Instance("a")) is None  # by identity, not by look

    grabbed = [await t.acquire() for _ in range(4)]
    assert all(g is tracker_b for g in grabbed)
    for g in grabbed:
        t.release(g)


async def test_remove_the_last_instance_makes_requests_wait() -> None:
    pokes: list[int] = []
    t = throttler(concurrency=1, on_cold=lambda: pokes.append(1))
    a = Instance("a")
    tracker = t.add(a)
    in_progress = await t.acquire()
    assert t.remove(a) is tracker

    waiter = spawn(t.acquire())
    await settle()
    assert not waiter.done()
    assert pokes == [1]

    t.release(in_progress)  # the draining instance finishes; its slot is not reused
    await settle()
    assert not waiter.done()
    assert tracker.in_flight == 0

    replacement = t.add(Instance("b"))
    await settle()
    assert waiter.result() is replacement
    t.release(replacement)


async def test_in_flight_counts_across_instances() -> None:
    t = throttler(concurrency=2)
    t.add(Instance("a"))
    t.add(Instance("b"))
    grabbed = [await t.acquire() for _ in range(4)]
    assert t.in_flight == 4
    assert {id(g) for g in grabbed} == {id(tr) for tr in t.trackers}
    for g in grabbed:
        t.release(g)
    assert t.in_flight == 0


async def test_waiting_stats_see_the_buffered_requests() -> None:
    t = throttler()
    waiters = [spawn(t.acquire()) for _ in range(2)]
    await settle()
    report = t.waiting.report()
    assert report.concurrency == 2
    assert report.request_count == 2
    t.fail_waiting(lambda: NoInstance("x"))
    for waiter in waiters:
        with pytest.raises(NoInstance):
            await waiter
    assert t.waiting.report().concurrency == 0
