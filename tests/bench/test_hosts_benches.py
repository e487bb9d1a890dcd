"""The benches across test hosts: what they report is what crossed the links."""

from __future__ import annotations

from _support.hosts import needs_hosts
from xdt.bench.micro import run_micro_bench
from xdt.bench.transfer import run_transfer_bench
from xdt.platform.hosts import Link

pytestmark = needs_hosts


def test_transfer_across_hosts_reports_each_path_but_the_same_host_one() -> None:
    cases = run_transfer_bench([1 << 10, 1 << 20], runs=2, hosts=True, link=Link(rate=10**9))
    assert sorted({c.path for c in cases}) == ["aio-tcp", "memcpy", "raw-tcp", "xdt-tcp"]
    for case in cases:
        assert case.link == "1 Gbit/s"
        assert case.key[-1] == "across hosts"  # the one-host targets do not judge it
        assert case.link_share == case.size_bytes * 8 / case.median_s / 10**9


def test_micro_across_hosts_sees_the_bytes_cross_the_receivers_link() -> None:
    cases = run_micro_bench(
        modes=["xdt", "elasticache"], patterns=["1to1", "gather"], sizes=[4 << 20], runs=1,
        hosts=3, link=Link(rate=10**9),
    )  # fmt: skip
    assert {(c.mode, c.pattern) for c in cases} == {
        (m, p) for m in ("xdt", "elasticache") for p in ("1to1", "gather")
    }
    for case in cases:
        assert (case.hosts, case.link_bits) == (3, 10**9)
        assert case.key[-1] == "3 hosts"
        # 4 MiB (16 for gather) came in over the receiver's link: its counter moved at more
        # than a tenth of the link's rate, far more than the invocations' own bytes would.
        assert case.peak_receive_bits is not None and case.peak_receive_bits > 10**8
