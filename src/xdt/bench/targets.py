"""The benchmarks' targets: one table (``targets.toml``), read by every bench and by
``xdt bench check``, which runs exactly the cases the targets name.

A target compares what one case measured (``measure``), alone or against another case of
the same run (``against``), with a bound: see the file's header for the kinds of value.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._util.units import parse_size

__all__ = [
    "TARGETS_FILE",
    "Address",
    "Outcome",
    "Plan",
    "Target",
    "Targets",
    "keyed",
    "load_targets",
]

TARGETS_FILE = Path(__file__).with_name("targets.toml")
VALUES = ("speed", "time-ratio", "seconds", "memory", "rss", "p50-ratio")
BENCHES = {"transfer": 2, "micro": 3, "platform": 1}  # the parts of an address after the bench


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """One case: ``transfer:<path>:<size>``, ``micro:<mode>:<pattern>:<size>`` or
    ``platform:<xdt|direct>``."""

    bench: str
    parts: tuple[str, ...]
    size: int | None  # bytes, for transfer and micro

    @classmethod
    def parse(cls, text: str) -> Address:
        bench, *parts = text.split(":")
        if bench not in BENCHES or len(parts) != BENCHES[bench]:
            raise ValueError(
                f"{text!r} is not a case: write transfer:<path>:<size>, "
                "micro:<mode>:<pattern>:<size> or platform:<xdt|direct>"
            )
        if bench == "platform":
            return cls(bench, tuple(parts), None)
        *names, size = parts
        return cls(bench, tuple(names), parse_size(size))

    @property
    def key(self) -> tuple[object, ...]:
        return (self.bench, *self.parts, self.size)

    def __str__(self) -> str:
        size = "" if self.size is None else f":{self.size}"
        return f"{self.bench}:{':'.join(self.parts)}{size}"


@dataclass(frozen=True, slots=True)
class Target:
    what: str
    value: str
    measure: Address
    against: Address | None
    at_least: float | None
    at_most: float | None

    @property
    def bound(self) -> str:
        return f"≥ {self.at_least:g}" if self.at_least is not None else f"≤ {self.at_most:g}"

    def cases(self) -> list[Address]:
        return [self.measure] + ([self.against] if self.against else [])

    def reach(self, results: Mapping[tuple[object, ...], Any]) -> float | None:
        """The value reached, from the records of a run keyed by :attr:`Address.key`; None
        when a case it needs was not measured."""
        measured: Any = results.get(self.measure.key)
        against: Any = results.get(self.against.key) if self.against else None
        if measured is None or (self.against is not None and against is None):
            return None
        size = self.measure.size or 1
        if self.value == "speed":
            return float(against.median_s / measured.median_s)
        if self.value == "time-ratio":
            return float(measured.median_s / against.median_s)
        if self.value == "seconds":
            return float(measured.median_s)
        if self.value == "memory":
            return float(measured.case_memory_bytes / size)
        if self.value == "rss":
            return float(measured.peak_rss_bytes / size)
        return float(measured.p50_s / against.p50_s)  # p50-ratio

    def met(self, reached: float) -> bool:
        if self.at_least is not None:
            return reached >= self.at_least
        return self.at_most is not None and reached <= self.at_most


@dataclass(frozen=True, slots=True)
class Outcome:
    target: Target
    reached: float | None  # None: a case it needs failed or was not run

    @property
    def met(self) -> bool:
        return self.reached is not None and self.target.met(self.reached)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a check must run: transfer sizes and paths, micro cases by (mode, size), and
    whether the platform bench is needed."""

    transfer_sizes: list[int] = field(default_factory=list)
    transfer_paths: list[str] = field(default_factory=list)
    micro: dict[tuple[str, int], list[str]] = field(default_factory=dict)  # → patterns
    platform: bool = False


@dataclass(frozen=True, slots=True)
class Targets:
    targets: list[Target]
    settings: dict[str, Any]

    def for_bench(self, bench: str) -> list[Target]:
        """The targets whose cases are all of ``bench``."""
        return [t for t in self.targets if all(c.bench == bench for c in t.cases())]

    def judge(
        self, results: Mapping[tuple[object, ...], Any], bench: str | None = None
    ) -> list[Outcome]:
        """Each target with what ``results`` reached: all of them, or (``bench``) those of
        that bench whose cases were all measured."""
        if bench is None:
            return [Outcome(t, t.reach(results)) for t in self.targets]
        outcomes = [Outcome(t, t.reach(results)) for t in self.for_bench(bench)]
        return [outcome for outcome in outcomes if outcome.reached is not None]

    def plan(self) -> Plan:
        plan = Plan()
        sizes: set[int] = set()
        paths: set[str] = set()
        for target in self.targets:
            for case in target.cases():
                if case.bench == "transfer" and case.size is not None:
                    sizes.add(case.size)
                    paths.add(case.parts[0])
                elif case.bench == "micro" and case.size is not None:
                    mode, pattern = case.parts
                    patterns = plan.micro.setdefault((mode, case.size), [])
                    if pattern not in patterns:
                        patterns.append(pattern)
                elif case.bench == "platform":
                    object.__setattr__(plan, "platform", True)
        plan.transfer_sizes.extend(sorted(sizes))
        plan.transfer_paths.extend(sorted(paths))
        return plan


def load_targets(path: Path = TARGETS_FILE) -> Targets:
    """Read a targets file; ValueError naming what is wrong in it."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read the targets file {path}: {exc}") from None
    targets = []
    for index, entry in enumerate(data.get("target", []), start=1):
        where = f"{path}: target {index}"
        try:
            value = entry["value"]
            if value not in VALUES:
                raise ValueError(f"value must be one of {', '.join(VALUES)}, not {value!r}")
            bounds = [entry.get("at_least"), entry.get("at_most")]
            if sum(b is not None for b in bounds) != 1:
                raise ValueError("give exactly one of at_least and at_most")
            against = Address.parse(entry["against"]) if "against" in entry else None
            if (against is None) != (value in ("seconds", "memory", "rss")):
                raise ValueError(
                    f"a {value} target {'needs' if against is None else 'takes no'} `against`"
                )
            targets.append(
                Target(
                    what=str(entry.get("what", entry["measure"])),
                    value=value,
                    measure=Address.parse(entry["measure"]),
                    against=against,
                    at_least=None if bounds[0] is None else float(bounds[0]),
                    at_most=None if bounds[1] is None else float(bounds[1]),
                )
            )
        except KeyError as missing:
            raise ValueError(f"{where} has no {missing}") from None
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    if not targets:
        raise ValueError(f"{path} names no [[target]]")
    return Targets(targets, dict(data.get("check", {})))


def keyed(
    records: Iterable[Any], key: Callable[[Any], tuple[object, ...]]
) -> dict[tuple[object, ...], Any]:
    return {key(record): record for record in records}
