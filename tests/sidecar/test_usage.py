"""The instance's usage counters: the billed rounding, the keep-alive clock, the record."""

from __future__ import annotations

import collections

import pytest

from xdt.sidecar.usage import KeepAliveClock, Usage, billed_ms


@pytest.mark.parametrize(
    ("seconds", "expected"), [(0.0, 1), (0.0004, 1), (0.001, 1), (0.0010001, 2), (1.2345, 1235)]
)
def test_an_invocation_is_billed_in_whole_milliseconds_rounded_up(
    seconds: float, expected: int
) -> None:
    assert billed_ms(seconds) == expected


def test_keep_alive_counts_only_time_holding_objects_with_no_invocation_running() -> None:
    now = [0.0]
    clock = KeepAliveClock(lambda: now[0])
    clock.busy(1)
    clock.holding(True)  # put during an invocation: not extra
    now[0] = 2.0
    clock.busy(0)  # answered, still holding: from here it counts
    now[0] = 5.0
    clock.busy(1)  # another invocation: not extra again
    now[0] = 6.0
    clock.busy(0)
    now[0] = 6.5
    clock.holding(False)  # pulled
    now[0] = 100.0  # idle, holding nothing
    assert clock.seconds == pytest.approx(3.0 + 0.5)


def test_usage_adds_subtracts_and_survives_its_json_record() -> None:
    one = Usage(2, 30, 0.5, collections.Counter(xdt=100), collections.Counter(inline=5), 0,
                collections.Counter(PutObject=3), 1.5)  # fmt: skip
    two = one + one
    assert (two.invocations, two.billed_ms, two.sent_bytes["xdt"]) == (4, 60, 200)
    assert two - one == one
    assert Usage.from_record(two.record()) == two
    with pytest.raises(ValueError, match="not a usage record"):
        Usage.from_record({"invocations": 1})
