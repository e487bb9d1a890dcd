"""``xdt bench check``: exactly the cases ``targets.toml`` names, in one short run.

It runs the transfer bench at the sizes the targets name, one platform per (mode, size) of
the micro cases they name (only those patterns), and the platform bench's warm latency if a
target needs it, then judges every target. A benchmark, not a test: run it alone, before
resolving any change to the data path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._util.units import format_size
from .micro import CaseFailed, MicroCase, run_micro_bench
from .platform import run_platform_bench
from .targets import Outcome, Targets, keyed
from .transfer import Case, run_transfer_bench

__all__ = ["CheckRun", "run_check"]


@dataclass
class CheckRun:
    outcomes: list[Outcome]
    transfer: list[Case] = field(default_factory=list)
    micro: list[MicroCase] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    records: dict[tuple[object, ...], Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures and all(outcome.met for outcome in self.outcomes)


def run_check(targets: Targets, *, on_phase: Callable[[str], None] = lambda what: None) -> CheckRun:
    plan = targets.plan()
    run = CheckRun(outcomes=[])
    if plan.transfer_sizes:
        on_phase(f"transfer: {', '.join(format_size(s) for s in plan.transfer_sizes)}")
        run.transfer = run_transfer_bench(plan.transfer_sizes, paths=plan.transfer_paths)
        run.records.update(keyed(run.transfer, lambda c: c.key))
    runs = int(targets.settings.get("micro_runs", 3))
    for (mode, size), patterns in sorted(plan.micro.items()):
        on_phase(f"micro: {mode} {format_size(size)} ({', '.join(patterns)})")
        try:
            cases = run_micro_bench(
                modes=[mode], patterns=patterns, sizes=[size], runs=runs,
                on_failure=run.failures.append,
            )  # fmt: skip
        except (CaseFailed, RuntimeError) as exc:
            run.failures.append(f"{mode} {format_size(size)}: {exc}")
            continue
        run.micro.extend(cases)
        run.records.update(keyed(cases, lambda c: c.key))
    if plan.platform:
        on_phase("platform: warm latency")
        bench = run_platform_bench(
            requests=int(targets.settings.get("platform_requests", 500)),
            concurrencies=(), cold_starts=0, progress=on_phase,
        )  # fmt: skip
        run.records.update(keyed(bench.latency, lambda c: c.key))
    run.outcomes = targets.judge(run.records)
    return run
