"""The activator's load-balancing policies (``xdt.platform.balancer``)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from xdt.platform.balancer import (
    FirstAvailable,
    PowerOfTwoChoices,
    RoundRobin,
    Tracker,
    policy_for,
)


def name(tracker: Tracker[str] | None) -> str:
    assert tracker is not None
    return tracker.target


def trackers(*loads: tuple[int, int | None]) -> list[Tracker[str]]:
    """Trackers named t0, t1, … from (in_flight, capacity) pairs."""
    return [Tracker(f"t{i}", capacity, in_flight) for i, (in_flight, capacity) in enumerate(loads)]


@pytest.mark.parametrize(
    ("concurrency", "policy"),
    [
        (0, PowerOfTwoChoices),
        (1, FirstAvailable),
        (2, FirstAvailable),
        (3, FirstAvailable),
        (4, RoundRobin),
        (100, RoundRobin),
    ],
)
def test_policy_for(concurrency: int, policy: type) -> None:
    assert type(policy_for(concurrency)) is policy


def test_policy_for_returns_a_fresh_round_robin_each_time() -> None:
    a, b = policy_for(10), policy_for(10)
    assert a is not b
    ts = trackers((0, 10), (0, 10))
    assert a.pick(ts) is ts[0]
    assert b.pick(ts) is ts[0]  # b's position is its own


@pytest.mark.parametrize(
    ("in_flight", "capacity", "free"),
    [
        (0, None, True),
        (10**6, None, True),
        (0, 1, True),
        (1, 1, False),
        (2, 3, True),
        (3, 3, False),
    ],
)
def test_tracker_has_capacity(in_flight: int, capacity: int | None, free: bool) -> None:
    assert Tracker("x", capacity, in_flight).has_capacity is free


# --- power of two choices --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_p2c_with_two_trackers_always_picks_the_less_loaded(seed: int) -> None:
    policy = PowerOfTwoChoices(random.Random(seed))
    light, heavy = Tracker("light", None, 1), Tracker("heavy", None, 5)
    for order in ([light, heavy], [heavy, light]):
        for _ in range(10):
            assert policy.pick(order) is light


def test_p2c_prefers_less_loaded_among_many() -> None:
    """Each pick compares two random candidates, so the most loaded is never chosen and the
    least loaded is chosen most often."""
    policy = PowerOfTwoChoices(random.Random(7))
    ts = trackers((0, None), (3, None), (6, None), (9, None))
    counts = Counter(name(policy.pick(ts)) for _ in range(400))
    assert counts["t3"] == 0
    assert counts["t0"] > counts["t1"] > counts["t2"] > 0
    # t0 wins every pair it is in: 3 of the 6 pairs.
    assert counts["t0"] == pytest.approx(200, abs=50)


@pytest.mark.parametrize("seed", range(10))
def test_p2c_never_picks_a_full_tracker(seed: int) -> None:
    policy = PowerOfTwoChoices(random.Random(seed))
    ts = trackers((1, 1), (5, 8), (2, 2), (7, 8), (4, 4))
    picked = {name(policy.pick(ts)) for _ in range(50)}
    assert picked == {"t1"}  # t3 is more loaded but t1 and t3 are the only ones with room
    # …and with t1 gone, t3 is the only choice left.
    picked = {name(policy.pick([t for t in ts if t.target != "t1"])) for _ in range(20)}
    assert picked == {"t3"}


def test_p2c_a_full_less_loaded_tracker_is_skipped() -> None:
    policy = PowerOfTwoChoices(random.Random(0))
    full_but_light = Tracker("full", 1, 1)
    busy = Tracker("busy", None, 50)
    for _ in range(20):
        assert policy.pick([full_but_light, busy]) is busy


def test_p2c_single_and_none() -> None:
    policy = PowerOfTwoChoices(random.Random(0))
    only = Tracker("only", None, 100)
    assert policy.pick([only]) is only
    assert policy.pick([]) is None
    assert policy.pick(trackers((1, 1), (2, 2))) is None


def test_p2c_ties_are_spread() -> None:
    policy = PowerOfTwoChoices(random.Random(3))
    ts = trackers((0, None), (0, None))
    assert {name(policy.pick(ts)) for _ in range(50)} == {"t0", "t1"}


def test_p2c_is_deterministic_for_a_seed() -> None:
    ts = trackers((0, None), (0, None), (0, None), (0, None))

    def run(seed: int) -> list[str]:
        policy = PowerOfTwoChoices(random.Random(seed))
        return [name(policy.pick(ts)) for _ in range(30)]

    assert run(42) == run(42)


# --- first available -------------------------------------------------------------------------


def test_first_available_returns_the_first_with_capacity() -> None:
    policy = FirstAvailable()
    ts = trackers((1, 1), (0, 1), (0, 1))
    assert policy.pick(ts) is ts[1]
    assert policy.pick(ts) is ts[1]  # no rotation: the same one until it fills
    ts[1].in_flight = 1
    assert policy.pick(ts) is ts[2]


def test_first_available_ignores_load_when_there_is_room() -> None:
    ts = trackers((2, 3), (0, 3))
    assert FirstAvailable().pick(ts) is ts[0]


def test_first_available_none_when_all_full() -> None:
    policy = FirstAvailable()
    assert policy.pick(trackers((1, 1), (3, 3))) is None
    assert policy.pick([]) is None


# --- round robin -----------------------------------------------------------------------------


def test_round_robin_cycles() -> None:
    policy = RoundRobin()
    ts = trackers((0, 5), (0, 5), (0, 5))
    assert [name(policy.pick(ts)) for _ in range(7)] == [
        "t0",
        "t1",
        "t2",
        "t0",
        "t1",
        "t2",
        "t0",
    ]


def test_round_robin_skips_full_trackers() -> None:
    policy = RoundRobin()
    ts = trackers((0, 5), (5, 5), (0, 5))
    assert [name(policy.pick(ts)) for _ in range(4)] == ["t0", "t2", "t0", "t2"]


def test_round_robin_continues_after_the_last_pick() -> None:
    policy = RoundRobin()
    ts = trackers((0, 5), (0, 5), (0, 5), (0, 5))
    assert policy.pick(ts) is ts[0]
    ts[1].in_flight = ts[2].in_flight = 5
    assert policy.pick(ts) is ts[3]
    ts[1].in_flight = 0
    assert policy.pick(ts) is ts[0]
    assert policy.pick(ts) is ts[1]


def test_round_robin_none_when_all_full_then_resumes() -> None:
    policy = RoundRobin()
    ts = trackers((4, 4), (4, 4))
    assert policy.pick(ts) is None
    assert policy.pick([]) is None
    ts[1].in_flight = 3
    assert policy.pick(ts) is ts[1]


def test_round_robin_survives_a_shrinking_list() -> None:
    policy = RoundRobin()
    ts = trackers((0, 5), (0, 5), (0, 5))
    for _ in range(3):
        policy.pick(ts)
    shorter = ts[:1]
    assert policy.pick(shorter) is ts[0]
    assert policy.pick(shorter) is ts[0]
