"""``xdt bench apps``: the three workflows (:mod:`xdt.apps`) in each transfer mode, timed,
checked and costed.

For each mode one platform runs every chosen workflow's functions (``platform.transfer`` set,
their scale pinned as in vSwarm), its baseline stores a real Redis server and moto's S3 server
that the bench starts, so it can read them. For each workflow: a warm-up run, then ``runs``
timed runs, each from the request to the answer at the gateway; every answer is checked
against the single-process computation (:class:`~xdt.apps.WrongAnswer` fails the run, loudly:
it is never timed as a success). Around each run the bench reads the platform's ``/usage``
(billed milliseconds, keep-alive, bytes by mode, Redis and S3 requests) and samples Redis's
memory every 2 ms (the peak in flight, which sizes an ElastiCache cluster); the platform's
memory is sampled every 250 ms. The averages per run are the cost model's inputs
(:mod:`.cost`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

from .._util import procfs
from .._util.units import format_size, parse_size
from ..apps import APPS, App, WrongAnswer
from ..modes import MODES
from ..sidecar.usage import Usage
from ..testing import LaunchedPlatform, LocalStores
from ._memory import MemorySampler, Sampler
from .cost import (
    DEFAULT_PARAMETERS,
    CostParameters,
    FunctionUse,
    Prices,
    RunInputs,
    cost,
)

__all__ = [
    "LARGE_SCALE",
    "AppResult",
    "BenchInputError",
    "Scale",
    "check_request",
    "run_apps_bench",
]

LARGE_SCALE = 128 << 20  # in flight per run: the evaluation's big case (≥ 100 MB)
# What a run may hold at once, as a multiple of the payload bytes it moves: copies in the
# sender, the store or the receiver, the checker's own computation. Measured peaks are below.
_MEMORY_FACTOR = 6
_PLATFORM_BASE = 4 << 30  # ~25 instances of Python with numpy, OpenCV and scikit-learn
RUN_TIMEOUT = 600.0


class BenchInputError(ValueError):
    """A request the bench refuses before anything starts (unknown app, mode, bad scale)."""


@dataclass(frozen=True)
class Scale:
    """How big a run is: a multiplier of each app's default size (``2``), or the payload
    bytes one run moves (``128MiB``), which each app turns into a multiplier of its own."""

    multiplier: float | None = 1.0
    in_flight_bytes: int | None = None

    @classmethod
    def parse(cls, text: str) -> Scale:
        try:
            return cls(multiplier=float(text))
        except ValueError:
            pass
        try:
            return cls(multiplier=None, in_flight_bytes=parse_size(text))
        except ValueError:
            raise BenchInputError(
                f"--scale {text!r}: give a multiplier of the default size (0.5, 1, 40) or the "
                "bytes a run moves (128MiB)"
            ) from None

    def for_app(self, app: App) -> float:
        if self.in_flight_bytes is not None:
            return round(self.in_flight_bytes / app.in_flight_bytes(1.0), 3)
        assert self.multiplier is not None
        return self.multiplier

    def __str__(self) -> str:
        if self.in_flight_bytes is not None:
            return f"{format_size(self.in_flight_bytes)} in flight"
        return f"{self.multiplier:g}×"


@dataclass
class AppResult:
    """One workflow in one mode."""

    app: str
    mode: str
    scale: float
    status: str  # "ok", "wrong" (an answer was not right), "failed", "over-inline-limit"
    times_s: list[float] = field(default_factory=list)
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # what the checker said of it
    inputs: RunInputs | None = None  # per run, averaged: what the cost model charges
    peak_memory_bytes: int = 0
    idle_memory_bytes: int = 0
    in_flight_bytes: int = 0  # the app's own estimate for this scale
    asked: str = ""  # the scale as asked (--scale), which groups results in tables

    @property
    def correct(self) -> bool:
        return self.status == "ok"

    @property
    def scale_label(self) -> str:
        """ "1× (default)", else the scale as asked (each app at a multiplier of its own for
        "128 MiB in flight"), so that the apps of one request sit side by side."""
        if self.scale == 1.0 and self.asked in ("", "1×"):
            return "1× (default)"
        return self.asked or f"{self.scale:.3g}×"

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s) if self.times_s else 0.0

    def record(
        self, parameters: CostParameters = DEFAULT_PARAMETERS, prices: Prices | None = None
    ) -> dict[str, Any]:
        priced = cost(self.inputs, parameters, prices) if self.inputs and self.correct else None
        return {
            "app": self.app,
            "mode": self.mode,
            "scale": self.scale,
            "status": self.status,
            "correct": self.correct,
            "error": self.error,
            "runs": len(self.times_s),
            "median_s": round(self.median_s, 6),
            "min_s": round(min(self.times_s), 6) if self.times_s else 0.0,
            "max_s": round(max(self.times_s), 6) if self.times_s else 0.0,
            "times_s": [round(t, 6) for t in self.times_s],
            "bytes_moved": int(self.inputs.moved_bytes) if self.inputs else 0,
            "in_flight_bytes": self.in_flight_bytes,
            "asked_scale": self.asked,
            "peak_memory_bytes": self.peak_memory_bytes,
            "idle_memory_bytes": self.idle_memory_bytes,
            "summary": self.summary,
            "inputs": self.inputs.record() if self.inputs else None,
            "cost_per_million_runs_usd": round(priced.per_million_runs, 4) if priced else None,
            "cost_breakdown_per_million_usd": (
                {k: round(v, 6) for k, v in priced.breakdown_per_million().items()}
                if priced
                else None
            ),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AppResult:
        """A result read back from ``--json`` (for ``xdt bench cost`` and the report)."""
        try:
            inputs = record["inputs"]
            return cls(
                app=str(record["app"]),
                mode=str(record["mode"]),
                scale=float(record["scale"]),
                status=str(record["status"]),
                times_s=[float(t) for t in record["times_s"]],
                error=record.get("error"),
                summary=dict(record.get("summary") or {}),
                inputs=RunInputs.from_record(inputs) if inputs else None,
                peak_memory_bytes=int(record.get("peak_memory_bytes", 0)),
                idle_memory_bytes=int(record.get("idle_memory_bytes", 0)),
                in_flight_bytes=int(record.get("in_flight_bytes", 0)),
                asked=str(record.get("asked_scale", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchInputError(
                f"not a record of xdt bench apps --json: {exc!r} in {str(record)[:200]}"
            ) from None


def check_request(apps: Sequence[str], modes: Sequence[str], scale: Scale, runs: int) -> None:
    """Refuse, before anything starts, what cannot run: raises :class:`BenchInputError`."""
    unknown_apps = [a for a in apps if a not in APPS]
    if unknown_apps or not apps:
        raise BenchInputError(
            f"unknown app(s) {', '.join(unknown_apps) or '(none given)'}; apps: {', '.join(APPS)}"
        )
    unknown_modes = [m for m in modes if m not in MODES]
    if unknown_modes or not modes:
        raise BenchInputError(
            f"unknown mode(s) {', '.join(unknown_modes) or '(none given)'}; "
            f"modes: {', '.join(MODES)}"
        )
    for key in apps:
        multiplier = scale.for_app(APPS[key])
        if not 0.01 <= multiplier <= 1000:
            raise BenchInputError(
                f"--scale {scale}: {key} at {multiplier:g}× its default size; give a scale "
                "from 0.01× to 1000×"
            )
    if runs < 1:
        raise BenchInputError("--runs must be at least 1")
    missing = [m for m in ("cv2", "sklearn", "numpy", "matplotlib") if not _importable(m)]
    if missing:
        raise BenchInputError(
            f"the workflows need {', '.join(missing)}, which are not installed: "
            "pip install 'xdt[apps]' (opencv-python-headless 4.x, scikit-learn, numpy, "
            "matplotlib)"
        )
    moved = max(APPS[a].in_flight_bytes(scale.for_app(APPS[a])) for a in apps)
    needed = _PLATFORM_BASE + _MEMORY_FACTOR * moved
    available = procfs.available_memory()
    if available is not None and needed > available:
        raise BenchInputError(
            f"--scale {scale} needs about {format_size(needed)} of memory (the platform and "
            f"{_MEMORY_FACTOR}× the {format_size(moved)} a run moves), and "
            f"{format_size(available)} is available: use a smaller --scale"
        )


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@dataclass(frozen=True)
class Progress:
    """What the bench tells its caller as it goes."""

    on_phase: Callable[[str], None] = lambda what: None
    on_run: Callable[[str, str, int, int], None] = lambda app, mode, i, n: None
    on_result: Callable[[AppResult], None] = lambda result: None


def run_apps_bench(
    *,
    apps: Sequence[str] = tuple(APPS),
    modes: Sequence[str] = MODES,
    scale: Scale = Scale(),
    runs: int = 5,
    seed: int = 1,
    progress: Progress = Progress(),
) -> list[AppResult]:
    check_request(apps, modes, scale, runs)
    chosen = [APPS[a] for a in apps]
    results: list[AppResult] = []
    with tempfile.TemporaryDirectory(prefix="xdt-apps-") as scratch:
        root = Path(scratch)
        code = root / "code"
        code.mkdir()
        code.chmod(0o755)  # isolated functions (their own uids) read their code from here
        for app in chosen:
            progress.on_phase(f"setting up {app.key}")
            folder = code / app.package
            shutil.copytree(app.folder, folder, ignore=shutil.ignore_patterns("__pycache__"))
            app.prepare(folder, scale.for_app(app))
            for path in [folder, *folder.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
        with LocalStores(root) as stores:
            for mode in modes:
                (code / "xdt.yaml").write_text(_spec(chosen, mode, stores))
                progress.on_phase(f"starting the platform with transfer: {mode}")
                platform = LaunchedPlatform(code / "xdt.yaml", root / f"up-{mode}.log")
                try:
                    platform.wait_ready(timeout=300)
                    for app in chosen:
                        result = _measure(platform, stores, app, mode, scale.for_app(app),
                                          runs, seed, code / app.package, progress)  # fmt: skip
                        result.asked = str(scale)
                        results.append(result)
                        progress.on_result(result)
                finally:
                    platform.stop()
    return results


def _spec(apps: Sequence[App], mode: str, stores: LocalStores) -> str:
    functions = []
    for app in apps:
        for function in app.functions():
            module, name = function["handler"].split(":")
            functions.append({**function, "handler": f"{app.package}.{module}:{name}"})
    document = {
        "platform": {
            "transfer": mode,
            **stores.spec(),
            "object_quota": "4GiB",
        },
        "functions": functions,
    }
    return yaml.safe_dump(document, sort_keys=False)


def _measure(
    platform: LaunchedPlatform,
    stores: LocalStores,
    app: App,
    mode: str,
    scale: float,
    runs: int,
    seed: int,
    folder: Path,
    progress: Progress,
) -> AppResult:
    result = AppResult(app.key, mode, scale, "ok", in_flight_bytes=app.in_flight_bytes(scale))
    order = app.order(scale, seed)
    sampler = MemorySampler(platform.process.pid, interval=0.25)
    result.idle_memory_bytes = sampler.footprint()
    measured: list[_Run] = []
    instances = _InstancePeaks(platform, {f["name"] for f in app.functions()})
    with sampler, instances:
        for i in range(runs + 1):  # the first warms connections, pools and imports
            progress.on_run(app.key, mode, i, runs)
            try:
                run = _run_once(platform, stores, app, order, folder,
                                watch_redis=mode == "elasticache")  # fmt: skip
            except _RunFailed as failure:
                result.status, result.error = failure.status, str(failure)
                break
            if i > 0:
                measured.append(run)
                result.times_s.append(run.seconds)
                result.summary = run.summary
    result.peak_memory_bytes = sampler.peak_memory
    if measured and result.correct:
        result.inputs = _average(mode, measured, instances.peaks)
    return result


@dataclass
class _Run:
    seconds: float
    used: dict[str, Usage]
    memory: dict[str, int]
    redis_peak: int
    summary: dict[str, Any]


class _RunFailed(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def _run_once(
    platform: LaunchedPlatform,
    stores: LocalStores,
    app: App,
    order: bytes,
    folder: Path,
    *,
    watch_redis: bool = True,
) -> _Run:
    try:
        before = platform.usage()
        # Redis's memory only where it is used: polling it costs the run a little CPU.
        with _RedisPeak(stores, watch=watch_redis) as redis_peak:
            started = time.perf_counter()
            status, _, answer = platform.invoke(app.entry, order, timeout=RUN_TIMEOUT)
            seconds = time.perf_counter() - started
        after = platform.usage()  # before checking: keep-alive must not run on meanwhile
    except (OSError, TimeoutError, ValueError, KeyError) as exc:
        raise _RunFailed("failed", f"the platform did not answer: {exc!r}") from None
    if status != 200:
        text = answer.decode(errors="replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            text = json.loads(text)["message"]
        if "PayloadTooLarge" in text or "inline limit" in text:
            raise _RunFailed("over-inline-limit", f"a payload is over the inline limit: {text}")
        raise _RunFailed("failed", f"HTTP {status}: {text[:2000]}")
    try:
        summary = app.check(folder, order, answer)
    except WrongAnswer as wrong:
        raise _RunFailed("wrong", f"WRONG ANSWER: {wrong}") from None
    except Exception as exc:  # a checker that cannot read the answer: not a right one
        raise _RunFailed("wrong", f"WRONG ANSWER: the checker failed on it: {exc!r}") from None
    used = {
        name: Usage.from_record(after[name]) - Usage.from_record(before[name])
        for name in after
        if name in {f["name"] for f in app.functions()}
    }
    memory = {name: int(after[name]["memory_bytes"]) for name in used}
    return _Run(seconds, used, memory, redis_peak.peak, summary)


def _average(mode: str, runs: Sequence[_Run], peaks: dict[str, int]) -> RunInputs:
    """The cost model's inputs for one run: the mean of each counter over the runs, the
    median duration, the highest Redis peak."""
    n = len(runs)
    names = list(runs[0].used)
    functions = tuple(
        FunctionUse(
            name=name,
            memory_bytes=runs[0].memory[name],
            invocations=sum(r.used[name].invocations for r in runs) / n,
            billed_ms=sum(r.used[name].billed_ms for r in runs) / n,
            keep_alive_s=sum(r.used[name].keep_alive_s for r in runs) / n,
            peak_bytes=peaks.get(name, 0),
        )
        for name in names
    )
    totals = [sum(r.used.values(), Usage()) for r in runs]
    s3_requests: dict[str, float] = {}
    for total in totals:
        for operation, count in total.s3_requests.items():
            s3_requests[operation] = s3_requests.get(operation, 0.0) + count / n
    return RunInputs(
        mode=mode,
        duration_s=statistics.median(r.seconds for r in runs),
        functions=functions,
        s3_requests=s3_requests,
        s3_byte_seconds=sum(t.s3_byte_seconds for t in totals) / n,
        redis_commands=sum(t.redis_commands for t in totals) / n,
        redis_peak_bytes=max(r.redis_peak for r in runs),
        # What crossed between hosts: every byte received, and the uploads to a store.
        moved_bytes=sum(_crossed(t) for t in totals) / n,
        s3_moved_bytes=sum(t.received_bytes["s3"] + t.sent_bytes["s3"] for t in totals) / n,
    )


class _InstancePeaks(Sampler):
    """The most memory one instance of each function held — its sidecar's and its
    function process's own pages and the memfds they hold (the objects xdt keeps) — sampled
    every 0.5 s: what a memory setting must cover."""

    def __init__(self, platform: LaunchedPlatform, functions: set[str], interval: float = 0.5):
        status = platform.status()["functions"]
        self._instances = {
            name: [[p for p in (i["sidecar_pid"], i["function_pid"]) if p]
                   for i in status[name]["instances"]]
            for name in functions if name in status
        }  # fmt: skip
        self.peaks = dict.fromkeys(self._instances, 0)
        super().__init__(interval)

    def sample(self) -> None:
        for name, instances in self._instances.items():
            for pids in instances:
                held = sum(procfs.memory(p).own for p in pids) + procfs.memfd_bytes(pids)
                self.peaks[name] = max(self.peaks[name], held)


def _crossed(usage: Usage) -> int:
    stored = usage.sent_bytes["elasticache"] + usage.sent_bytes["s3"]
    return sum(usage.received_bytes.values()) + stored


class _RedisPeak(Sampler):
    """The most memory Redis used above where it was when the run began, sampled every 2 ms
    (a run's objects live for at least a hop, milliseconds)."""

    def __init__(self, stores: LocalStores, interval: float = 0.002, *, watch: bool = True) -> None:
        super().__init__(interval)
        self._redis = stores.redis
        self._watching = watch
        self.peak = 0

    def _used(self) -> int:
        return int(self._redis.info("memory")["used_memory"])

    def __enter__(self) -> Self:
        if self._watching:
            self._base = self._used()
            super().__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._watching:
            super().__exit__(*exc_info)

    def sample(self) -> None:
        self.peak = max(self.peak, self._used() - self._base)
