"""Knative's KPA decision logic (``xdt.platform.autoscaler``), on hand-computed numbers.

Times are plain floats; nothing sleeps. Unless a test says otherwise: stable window 60 s,
panic window 6 s, 1 s buckets, CC 10 so the per-pod target is 7.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from xdt.platform.autoscaler import (
    DEFAULT_AUTOSCALER_CONFIG,
    AutoscalerConfig,
    ConcurrencyWindow,
    Decider,
    Decision,
    ScaleGate,
    sample_size,
    target_concurrency,
    total_concurrency,
)

CFG = DEFAULT_AUTOSCALER_CONFIG


def decide_once(
    value: float,
    ready: int,
    *,
    config: AutoscalerConfig = CFG,
    cc: int = 10,
    reachable: bool = True,
) -> Decision:
    """A fresh decider that saw ``value`` concurrent requests at t=0, asked at t=0."""
    decider = Decider(config, cc)
    decider.record(0.0, value)
    decision = decider.decide(0.0, ready, reachable=reachable)
    assert decision is not None
    return decision


# --- config ---------------------------------------------------------------------------------


def test_default_config_derived_fractions() -> None:
    # 60 s × 10 % = 6 s; 200 % = 2.0; 70 % = 0.7.
    assert CFG.panic_window == 6.0
    assert CFG.panic_threshold == 2.0
    assert CFG.target_utilization == 0.7


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stable_window", 0.0),
        ("stable_window", -60.0),
        ("tick_interval", math.nan),
        ("bucket_size", 0.0),
        ("scale_to_zero_grace", 0.0),
        ("panic_window_percentage", 0.0),
        ("panic_window_percentage", 101.0),
        ("panic_threshold_percentage", 0.0),
        ("target_utilization_percentage", 0.0),
        ("target_utilization_percentage", 150.0),
        ("container_concurrency_target_default", 0.0),
        # positive, but 0.001 × 70 % = 0.0007 is below the 0.01 minimum target
        ("container_concurrency_target_default", 0.001),
        ("max_scale_up_rate", 1.0),
        ("max_scale_down_rate", 0.5),
        ("activator_capacity", 0.5),
        ("target_burst_capacity", -2.0),
        ("target_burst_capacity", math.inf),
        ("initial_scale", -1),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        AutoscalerConfig(**{field: value})


@pytest.mark.parametrize("tbc", [-1.0, 0.0, 5.0])
def test_config_accepts_burst_capacity_minus_one_or_non_negative(tbc: float) -> None:
    assert AutoscalerConfig(target_burst_capacity=tbc).target_burst_capacity == tbc


# --- target and sample size -----------------------------------------------------------------


def test_target_knative_doc_example() -> None:
    # CC 10 × 70 % = 7 per pod; 100 concurrent → ceil(100 / 7) = ceil(14.29) = 15 pods.
    # 10 ready: clamp to [floor(10 / 2) = 5, 1000 × 10]; 15 / 10 = 1.5 < 2, no panic.
    assert target_concurrency(10, CFG) == 7.0
    decision = decide_once(100.0, ready=10)
    assert decision.desired == 15
    assert not decision.panicking
    assert decision.stable_average == decision.panic_average == 100.0


def test_target_unlimited_concurrency_uses_the_default() -> None:
    # CC 0 → total 100 → 100 × 70 % = 70.
    assert total_concurrency(0, CFG) == 100.0
    assert target_concurrency(0, CFG) == 70.0
    assert total_concurrency(10, CFG) == 10.0


def test_target_has_a_floor() -> None:
    # CC 1 × 0.5 % = 0.005, raised to the 0.01 minimum.
    config = AutoscalerConfig(target_utilization_percentage=0.5)
    assert target_concurrency(1, config) == 0.01


def test_target_rejects_negative_concurrency() -> None:
    with pytest.raises(ValueError, match="container_concurrency"):
        target_concurrency(-1, CFG)


@pytest.mark.parametrize(
    ("pods", "sample"),
    [
        (0, 0),
        (1, 1),
        (3, 3),
        (4, 4),  # 4 × 15.3664 / 18.3664 = 3.35 → 4
        (7, 6),  # 107.5648 / 21.3664 = 5.03 → 6
        (16, 9),  # 245.8624 / 30.3664 = 8.10 → 9
        (10, 7),  # 153.664 / 24.3664 = 6.31 → 7
        (100, 14),  # 1536.64 / 114.3664 = 13.44 → 14
        (1000, 16),  # 15366.4 / 1014.3664 = 15.15 → 16
    ],
)
def test_sample_size(pods: int, sample: int) -> None:
    assert sample_size(pods) == sample


def test_sample_size_rejects_negative() -> None:
    with pytest.raises(ValueError, match="pods"):
        sample_size(-1)


# --- the concurrency window -----------------------------------------------------------------


def test_window_records_in_one_bucket_sum() -> None:
    # Three sources in bucket 5: 3 + 4 + 2.5 = 9.5. One more in bucket 6: (9.5 + 1) / 2.
    window = ConcurrencyWindow(1.0)
    window.record(5.0, 3.0)
    window.record(5.4, 4.0)
    window.record(5.9, 2.5)
    assert window.average(5.9, 60.0) == 9.5
    window.record(6.0, 1.0)
    assert window.average(6.0, 60.0) == 5.25


def test_window_partial_is_averaged_over_the_data_present() -> None:
    # 10 in buckets 0, 1, 2: averaged over 3 buckets (10), not over 60 (0.5).
    window = ConcurrencyWindow(1.0)
    for t in (0.0, 1.0, 2.0):
        window.record(t, 10.0)
    assert window.average(2.0, 60.0) == 10.0


def test_window_gaps_between_records_count_as_zero() -> None:
    # 12 at 0, 6 at 3: buckets 0..3 are 12, 0, 0, 6 → 18 / 4 = 4.5.
    window = ConcurrencyWindow(1.0)
    window.record(0.0, 12.0)
    window.record(3.0, 6.0)
    assert window.average(3.0, 60.0) == 4.5


def test_window_leaves_out_buckets_after_the_last_record() -> None:
    # Knative's WindowAverage: 12 at 0, 6 at 1, asked at 4 → (12 + 6) / 2 = 9, buckets 2..4
    # (a scrape not in yet) are not counted as 0 (that would give 18 / 5 = 3.6).
    window = ConcurrencyWindow(1.0)
    window.record(0.0, 12.0)
    window.record(1.0, 6.0)
    assert window.average(4.0, 60.0) == 9.0


def test_window_full_window_slides() -> None:
    # Value t at each second t = 0..99. At 99 the 60 s window holds buckets 40..99, mean
    # (40 + 99) / 2 = 69.5; the 6 s window holds 94..99, mean 96.5.
    window = ConcurrencyWindow(1.0)
    for t in range(100):
        window.record(float(t), float(t))
    assert window.average(99.0, 60.0) == 69.5
    assert window.average(99.0, 6.0) == 96.5


def test_window_empty_gives_none() -> None:
    # One record at 0: still inside (−0.5, 59.5]; outside (0, 60].
    window = ConcurrencyWindow(1.0)
    assert window.average(0.0, 60.0) is None
    window.record(0.0, 10.0)
    assert window.average(59.5, 60.0) == 10.0
    assert window.average(60.0, 60.0) is None


def test_window_short_gap_keeps_the_whole_window() -> None:
    # 10 at 0, 4 at 50, asked at 70: the 50 s gap is shorter than the window, so the data
    # runs on from before the window start (bucket 11); buckets 11..50 hold only the 4 → 4 / 40.
    window = ConcurrencyWindow(1.0)
    window.record(0.0, 10.0)
    window.record(50.0, 4.0)
    assert window.average(70.0, 60.0) == 0.1


def test_window_starts_afresh_after_a_quiet_window() -> None:
    # 10 at 0, 4 at 60: a whole window without data, so 60 starts a new partial window → 4.
    window = ConcurrencyWindow(1.0)
    window.record(0.0, 10.0)
    window.record(60.0, 4.0)
    assert window.average(70.0, 60.0) == 4.0


def test_window_prunes_old_buckets() -> None:
    # max_window 6 → keep 12 buckets behind the newest; 1000 records leave at most 13.
    window = ConcurrencyWindow(1.0, max_window=6.0)
    for t in range(1000):
        window.record(float(t), 1.0)
    assert len(window._buckets) <= 13
    assert window.average(999.0, 6.0) == 1.0


def test_window_prunes_to_the_largest_window_asked_for() -> None:
    # No max_window given: asking for a 6 s window sets the limit to 12 buckets.
    window = ConcurrencyWindow(1.0)
    window.record(0.0, 1.0)
    assert window.average(0.0, 6.0) == 1.0
    for t in range(1, 1000):
        window.record(float(t), 1.0)
    assert len(window._buckets) <= 13


def test_window_fractional_bucket_size() -> None:
    # 0.1 s buckets: 0.3 / 0.1 is 2.9999999999999996 in floats but must be bucket 3, the
    # bucket of 0.35, so the one-bucket window at 0.35 holds 1 + 2 = 3.
    window = ConcurrencyWindow(0.1)
    window.record(0.3, 1.0)
    window.record(0.35, 2.0)
    assert window.average(0.35, 0.1) == 3.0


def test_window_rejects_negative_concurrency() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        ConcurrencyWindow(1.0).record(0.0, -1.0)


# --- the decider ----------------------------------------------------------------------------


def test_no_data_no_decision() -> None:
    # Nothing recorded; then one record at 0, which has left the 60 s window at 60.
    decider = Decider(CFG, 10)
    assert decider.decide(0.0, 0) is None
    decider.record(0.0, 100.0)
    assert decider.decide(60.0, 1) is None


def test_quiet_panic_window_averages_zero() -> None:
    # 70 at 0, asked at 10: stable 70 → ceil(70 / 7) = 10; panic window (4, 10] is empty → 0,
    # so no panic.
    decider = Decider(CFG, 10)
    decider.record(0.0, 70.0)
    decision = decider.decide(10.0, 1)
    assert decision is not None
    assert decision.panic_average == 0.0
    assert not decision.panicking
    assert decision.desired == 10


@pytest.mark.parametrize(
    ("rate", "ready", "limit"),
    [
        (2.0, 0, 2),  # no pod ready counts as one: ceil(2 × 1)
        (2.0, 1, 2),
        (2.0, 3, 6),
        (1.5, 3, 5),  # ceil(1.5 × 3) = ceil(4.5) = 5
    ],
)
def test_max_scale_up_rate(rate: float, ready: int, limit: int) -> None:
    # At most ceil(rate × max(1, ready)) pods, however big the load (7000 / 7 = 1000).
    config = AutoscalerConfig(max_scale_up_rate=rate)
    assert decide_once(7000.0, ready, config=config).desired == limit


def test_max_scale_down_rate() -> None:
    # No load, 10 ready: at least floor(10 / 2) = 5; unreachable lifts the limit → 0.
    assert decide_once(0.0, ready=10).desired == 5
    assert decide_once(0.0, ready=10, reachable=False).desired == 0
    # Rate 3: floor(10 / 3) = 3.
    assert decide_once(0.0, ready=10, config=AutoscalerConfig(max_scale_down_rate=3.0)).desired == 3


@pytest.mark.parametrize(
    ("value", "panicking", "desired"),
    [
        (1393.0, False, 199),  # 1393 / 7 = 199 pods for 100 ready: 199 %, below the threshold
        (1400.0, True, 200),  # 1400 / 7 = 200 pods for 100 ready: exactly 200 %, panic
    ],
)
def test_panic_threshold_is_inclusive(value: float, panicking: bool, desired: int) -> None:
    decision = decide_once(value, ready=100)
    assert decision.panicking is panicking
    assert decision.desired == desired


def test_panic_threshold_uses_the_unclamped_count() -> None:
    # Rate 1.5, 2 ready, 7000 → 1000 pods wanted: 1000 / 2 ≥ 2 panics, although the clamped
    # ceil(1.5 × 2) = 3 would give only 3 / 2 = 1.5. Desired stays clamped at 3.
    decision = decide_once(7000.0, ready=2, config=AutoscalerConfig(max_scale_up_rate=1.5))
    assert decision.panicking
    assert decision.desired == 3


def test_panic_at_exactly_twice_the_ready_pods() -> None:
    # 28 / 7 = 4 pods wanted for 2 ready: 4 / 2 = 2.0 ≥ 2.0.
    decision = decide_once(28.0, ready=2)
    assert decision.panicking
    assert decision.desired == 4


def test_no_scale_down_while_panicking() -> None:
    decider = Decider(CFG, 10)
    # t=0: 28 → 4 pods for 2 ready, panic; desired 4.
    decider.record(0.0, 28.0)
    first = decider.decide(0.0, 2)
    assert first is not None and first.panicking and first.desired == 4

    # t=1..10: no load. Stable 28 / 11 = 2.55 → 1, clamped to floor(4 / 2) = 2; panic
    # window 5..10 is all 0 → 0 / 4, not over. Still in panic (0 + 60 ≥ 10): stays 4.
    for t in range(1, 11):
        decider.record(float(t), 0.0)
    quiet = decider.decide(10.0, 4)
    assert quiet is not None
    assert quiet.stable_average == pytest.approx(28 / 11)
    assert quiet.panicking
    assert quiet.desired == 4

    # t=11: 420. Panic window 6..11: 420 / 6 = 70 → 10 pods, 10 / 4 = 2.5, over. Stable
    # (28 + 420) / 12 = 37.3 → 6. max(6, 10) = 10 > 4: ratchets up to 10.
    decider.record(11.0, 420.0)
    surge = decider.decide(11.0, 4)
    assert surge is not None and surge.desired == 10

    # t=12: 0. Panic 420 / 6 = 70 → 10 for 10 ready, 1.0, not over; stable 448 / 13 = 34.5
    # → 5. Ten is kept, not 5.
    decider.record(12.0, 0.0)
    after = decider.decide(12.0, 10)
    assert after is not None
    assert after.panicking
    assert after.desired == 10


def test_panic_ends_a_full_stable_window_after_the_last_tick_over() -> None:
    # Stable window 10 s, panic window 1 s (one bucket); 1 ready.
    config = AutoscalerConfig(stable_window=10.0)
    decider = Decider(config, 10)
    # t=0: 14 → 2 pods for 1 ready: panic from 0, desired 2.
    decider.record(0.0, 14.0)
    start = decider.decide(0.0, 1)
    assert start is not None and start.panicking and start.desired == 2
    # t=5: over again (14 in the one-bucket panic window) → panic extended to 5.
    decider.record(5.0, 14.0)
    extended = decider.decide(5.0, 1)
    assert extended is not None and extended.panicking
    for t in range(6, 17):
        decider.record(float(t), 0.0)
    # t=15: 5 + 10 = 15 is not before 15, still panicking. Stable buckets 6..15 are 0 → 0
    # pods, but the ratchet holds 2. (Had 0 been the panic start, it would have ended.)
    held = decider.decide(15.0, 1)
    assert held is not None and held.panicking and held.desired == 2
    # t=16: 15 < 16, panic over; stable 0 → 0 pods (floor(1 / 2) = 0).
    over = decider.decide(16.0, 1)
    assert over is not None
    assert not over.panicking
    assert over.desired == 0


def test_leaving_panic_forgets_the_ratchet() -> None:
    # Stable window 10 s, panic window 1 s, 1 ready. t=0: 70 → 10 pods, panic, ratchet 10.
    config = AutoscalerConfig(stable_window=10.0)
    decider = Decider(config, 10)
    decider.record(0.0, 70.0)
    surge = decider.decide(0.0, 1)
    assert surge is not None and surge.desired == 10
    # t=1..11 quiet: 0 + 10 < 11, panic over; stable buckets 2..11 are 0 → 0.
    for t in range(1, 12):
        decider.record(float(t), 0.0)
    calm = decider.decide(11.0, 1)
    assert calm is not None and not calm.panicking and calm.desired == 0
    # t=12: 14 → 2 pods for 1 ready, panic again. Stable 14 / 10 = 1.4 → 2. The new panic
    # ratchets from 0 → 2, not from the old 10.
    decider.record(12.0, 14.0)
    again = decider.decide(12.0, 1)
    assert again is not None and again.panicking and again.desired == 2


def test_panic_follows_the_stable_window_when_it_is_larger() -> None:
    # Stable window 10 s, panic window 1 s. t=0: 14 for 1 ready → panic, ratchet 2.
    config = AutoscalerConfig(stable_window=10.0)
    decider = Decider(config, 10)
    decider.record(0.0, 14.0)
    assert decider.decide(0.0, 1) is not None
    # t=1: 700, t=2: 0; asked at 2 with 10 ready. Panic bucket 0 → 0 pods, clamped to
    # floor(10 / 2) = 5; stable (14 + 700 + 0) / 3 = 238 → 238 / 7 = 34. Still panicking
    # (0 + 10 ≥ 2): max(34, 5) = 34.
    decider.record(1.0, 700.0)
    decider.record(2.0, 0.0)
    decision = decider.decide(2.0, 10)
    assert decision is not None
    assert decision.panicking
    assert decision.panic_average == 0.0
    assert decision.desired == 34


@pytest.mark.parametrize(
    ("initial_ready", "panicking", "desired"), [(1, False, 1), (2, True, 2), (3, True, 3)]
)
def test_new_decider_starts_in_panic_above_one_ready_pod(
    initial_ready: int, panicking: bool, desired: int
) -> None:
    # No load, 3 ready: stable 0 → clamped to floor(3 / 2) = 1. Starting in panic with 2 or
    # 3 ready pods holds that many; starting with 1 does not panic → 1.
    decider = Decider(CFG, 10, initial_ready=initial_ready, now=0.0)
    decider.record(1.0, 0.0)
    decision = decider.decide(1.0, 3)
    assert decision is not None
    assert decision.panicking is panicking
    assert decision.desired == desired


def test_initial_panic_lasts_one_stable_window() -> None:
    # Panic from creation at 0 with 3 ready; no tick over → held at 60 (0 + 60 is not before
    # 60), over at 61 → floor(3 / 2) = 1.
    decider = Decider(CFG, 10, initial_ready=3, now=0.0)
    for t in range(62):
        decider.record(float(t), 0.0)
    held = decider.decide(60.0, 3)
    assert held is not None and held.panicking and held.desired == 3
    released = decider.decide(61.0, 3)
    assert released is not None and not released.panicking and released.desired == 1


@pytest.mark.parametrize(
    ("value", "ready", "cc", "tbc", "ebc", "activators"),
    [
        # 30 × 10 − 211 − 50 = 39; ceil((300 + 211) / 100) = ceil(5.11) = 6
        (50.0, 30, 10, 211.0, 39, 6),
        # floor(300 − 211 − 50.5) = floor(38.5) = 38
        (50.5, 30, 10, 211.0, 38, 6),
        # no pods: 0 − 211 − 0 = −211; ceil(211 / 100) = 3
        (0.0, 0, 10, 211.0, -211, 3),
        # CC 0 → total 100: 5 × 100 − 211 − 50 = 239; ceil(711 / 100) = 8
        (50.0, 5, 0, 211.0, 239, 8),
        # small: 1 × 10 − 50 − 0 = −40; ceil(60 / 100) = 1 → at least 2
        (0.0, 1, 10, 50.0, -40, 2),
        # TBC 0 → EBC 0; TBC −1 → EBC −1; both 2 activators
        (50.0, 30, 10, 0.0, 0, 2),
        (50.0, 30, 10, -1.0, -1, 2),
    ],
)
def test_excess_burst_capacity_and_activators(
    value: float, ready: int, cc: int, tbc: float, ebc: int, activators: int
) -> None:
    config = AutoscalerConfig(target_burst_capacity=tbc)
    decision = decide_once(value, ready, config=config, cc=cc)
    assert decision.excess_burst_capacity == ebc
    assert decision.activators == activators
    assert decision.ready == ready


# --- the scale gate -------------------------------------------------------------------------


def test_gate_clamps_to_min_and_max() -> None:
    gate = ScaleGate(CFG, 2, 5)
    assert gate.apply(0.0, 1, 3) == 2
    assert gate.apply(0.0, 9, 3) == 5
    assert gate.apply(0.0, 4, 3) == 4
    assert gate.apply(0.0, 0, 3) == 2  # min scale 2: never to zero, no grace involved
    assert ScaleGate(CFG, 0, 0).apply(0.0, 1000, 1) == 1000  # max 0 = unlimited


def test_gate_no_decision_keeps_current() -> None:
    gate = ScaleGate(CFG, 0, 0)
    assert gate.apply(0.0, None, 3) == 3
    assert gate.apply(0.0, None, 0) == 0


def test_gate_zero_only_after_the_grace_period() -> None:
    # Grace 30 s: zeros from 100 are honoured at 130, not at 129.9; meanwhile it holds what
    # runs (3 or 1).
    gate = ScaleGate(CFG, 0, 0)
    assert gate.apply(100.0, 0, 3) == 3
    assert gate.apply(115.0, 0, 1) == 1
    assert gate.apply(129.9, 0, 1) == 1
    assert gate.apply(130.0, 0, 1) == 0


def test_gate_does_not_hold_a_function_at_zero_up() -> None:
    gate = ScaleGate(CFG, 0, 0)
    assert gate.apply(100.0, 0, 0) == 0


def test_gate_non_zero_desired_restarts_the_grace_period() -> None:
    # Zero at 100, 1 at 120 resets; zero again from 140 → honoured at 170, not at 169
    # (without the reset, 140 would already be 40 s after 100).
    gate = ScaleGate(CFG, 0, 0)
    assert gate.apply(100.0, 0, 1) == 1
    assert gate.apply(120.0, 1, 1) == 1
    assert gate.apply(140.0, 0, 1) == 1
    assert gate.apply(169.0, 0, 1) == 1
    assert gate.apply(170.0, 0, 1) == 0


def test_gate_no_decision_does_not_restart_the_grace_period() -> None:
    # Zero at 100, no decision at 115, zero at 130 → 30 s since 100: honoured.
    gate = ScaleGate(CFG, 0, 0)
    assert gate.apply(100.0, 0, 1) == 1
    assert gate.apply(115.0, None, 1) == 1
    assert gate.apply(130.0, 0, 1) == 0


def test_gate_without_scale_to_zero_zero_becomes_one() -> None:
    gate = ScaleGate(replace(CFG, enable_scale_to_zero=False), 0, 0)
    assert gate.apply(0.0, 0, 1) == 1
    assert gate.apply(1000.0, 0, 1) == 1
    assert gate.apply(1000.0, 0, 0) == 1


def test_gate_poke_from_zero() -> None:
    # At zero by 130; a request at 131 → 1 at once; the grace restarts, so the next zeros
    # (from 132) are honoured at 162, not at 161.9.
    gate = ScaleGate(CFG, 0, 0)
    gate.apply(100.0, 0, 1)
    assert gate.apply(130.0, 0, 1) == 0
    assert gate.poke(131.0) == 1
    assert gate.apply(132.0, 0, 1) == 1
    assert gate.apply(161.9, 0, 1) == 1
    assert gate.apply(162.0, 0, 1) == 0
    assert ScaleGate(CFG, 2, 4).poke(0.0) == 2  # at least the min scale


@pytest.mark.parametrize(("min_scale", "max_scale"), [(-1, 0), (3, 2), (0, -1)])
def test_gate_rejects_bad_bounds(min_scale: int, max_scale: int) -> None:
    with pytest.raises(ValueError, match="_scale"):
        ScaleGate(CFG, min_scale, max_scale)
