"""The autoscaler: Knative's KPA decision logic, pure (no I/O, time passed in).

Nothing here reads a clock, sleeps or talks to the network: every call takes ``now``, a float
number of seconds on whatever monotonic clock the caller uses, and the caller owns scraping,
ticking and actually starting or stopping instances.

**Windows.** Observed concurrency (in-flight requests, summed over every pod scraped plus
whatever the activator is holding) goes into 1 s buckets (:class:`ConcurrencyWindow`, after
``pkg/autoscaler/aggregation/bucketing.go``). Each tick the autoscaler averages two windows of
those buckets: the *stable* window (60 s) and the *panic* window (10 % of it, 6 s). A window
that has not filled yet is averaged over the data present only, so a new function is not
underestimated. The scraper samples pods rather than asking all of them
(:func:`sample_size`, ``pkg/autoscaler/metrics/sample_size.go``).

**Target.** Each pod should carry ``target`` concurrent requests: the container concurrency
(or 100 when it is unlimited) times the target utilisation, 70 %
(:func:`target_concurrency`, ``pkg/reconciler/autoscaling/resources/target.go``). Wanted
pods are ``ceil(average / target)``, clamped per tick by the maximum scale-up rate
(``ready × 1000``) and scale-down rate (``ready / 2``).

**Panic.** When the panic window asks for at least twice the ready pods, the autoscaler
panics: it follows the larger of the two windows and never scales down. Every tick over the
threshold extends the panic; it ends once a whole stable window has passed without one, by
which time the surge is in the stable average. A new autoscaler starts panicking if more
than one pod is ready, so that losing its metric history does not shrink the function
(:class:`Decider`, ``pkg/autoscaler/scaling/autoscaler.go``: ``Scale`` and
``newAutoscaler``). The same tick reports the excess burst capacity and the number of
activators to spread the function over (``computeNumActivators`` in
``pkg/reconciler/autoscaling/kpa/kpa.go``).

**Scale to zero.** The reconciler step (:class:`ScaleGate`, after
``pkg/reconciler/autoscaling/kpa/scaler.go``) clamps the decision to the function's
``[min_scale, max_scale]`` and only lets it reach zero once the decisions have said zero for
the whole grace period; a request at zero (the activator's poke) brings it back to one at
once. xdt's activator is always in the request path, so Knative's activator probe and the
separate stable-window wait for "inactive" collapse into that one grace timer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "DEFAULT_AUTOSCALER_CONFIG",
    "MIN_ACTIVATORS",
    "TARGET_MIN",
    "AutoscalerConfig",
    "ConcurrencyWindow",
    "Decider",
    "Decision",
    "ScaleGate",
    "sample_size",
    "target_concurrency",
    "total_concurrency",
]

TARGET_MIN = 0.01
"""The smallest per-pod target (``autoscaling.TargetMin``): keeps ``average / target`` finite."""

MIN_ACTIVATORS = 2
"""A function is always spread over at least this many activators (``MinActivators``)."""

# Bucket and window arithmetic on float seconds: 6.0 / 0.2 is 29.999999999999996, which must
# still land in bucket 30.
_EPSILON = 1e-9


@dataclass(frozen=True)
class AutoscalerConfig:
    """KPA settings. Defaults equal Knative's (``pkg/autoscaler/config/config.go``); times in
    seconds. Tests shorten the windows.

    The checks follow Knative's ``validate`` where it has one (both rates above 1, a target
    of at least :data:`TARGET_MIN`, a burst capacity of -1 or at least 0); Knative's bounds
    on the stable window (6 s to 1 h, whole seconds) are left out so that tests can shrink
    it. A panic window shorter than a bucket acts as one bucket.
    """

    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    target_utilization_percentage: float = 70.0
    container_concurrency_target_default: float = 100.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    tick_interval: float = 2.0
    bucket_size: float = 1.0
    scale_to_zero_grace: float = 30.0
    enable_scale_to_zero: bool = True
    initial_scale: int = 1
    target_burst_capacity: float = 211.0
    activator_capacity: float = 100.0

    def __post_init__(self) -> None:
        for name in ("stable_window", "tick_interval", "bucket_size", "scale_to_zero_grace"):
            _check(name, getattr(self, name), "a positive number of seconds", low=0.0)
        _check("panic_window_percentage", self.panic_window_percentage, "in (0, 100]", 0.0, 100.0)
        _check("panic_threshold_percentage", self.panic_threshold_percentage, "positive", 0.0)
        _check(
            "target_utilization_percentage",
            self.target_utilization_percentage,
            "in (0, 100]",
            0.0,
            100.0,
        )
        _check(
            "container_concurrency_target_default",
            self.container_concurrency_target_default,
            "positive",
            0.0,
        )
        default_target = (
            self.container_concurrency_target_default * self.target_utilization_percentage / 100
        )
        if default_target < TARGET_MIN:
            raise ValueError(
                f"container_concurrency_target_default × target_utilization_percentage gives "
                f"a target of {default_target:g} concurrent requests; it must be at least "
                f"{TARGET_MIN}"
            )
        # A rate of 1 or less would pin the scale (ceil(1 × ready) = ready) or push it the
        # wrong way, which is why Knative demands more than 1 for both.
        _check("max_scale_up_rate", self.max_scale_up_rate, "greater than 1", low=1.0)
        _check("max_scale_down_rate", self.max_scale_down_rate, "greater than 1", low=1.0)
        _check("activator_capacity", self.activator_capacity, "at least 1", low=1.0, strict=False)
        tbc = self.target_burst_capacity
        if not (math.isfinite(tbc) and (tbc >= 0 or tbc == -1)):
            raise ValueError(
                f"target_burst_capacity must be at least 0, or -1 for an activator always in "
                f"the path (got {tbc!r})"
            )
        if self.initial_scale < 0:
            raise ValueError(f"initial_scale must be at least 0 (got {self.initial_scale!r})")

    @property
    def panic_window(self) -> float:
        """The panic window in seconds (``stable_window × panic_window_percentage / 100``)."""
        return self.stable_window * self.panic_window_percentage / 100

    @property
    def panic_threshold(self) -> float:
        """The panic threshold as a fraction: 2.0 for 200 %."""
        return self.panic_threshold_percentage / 100

    @property
    def target_utilization(self) -> float:
        """The target utilisation as a fraction: 0.7 for 70 %."""
        return self.target_utilization_percentage / 100


def _check(
    name: str,
    value: float,
    allowed: str,
    low: float,
    high: float = math.inf,
    *,
    strict: bool = True,
) -> None:
    # Written so that NaN fails every comparison and is rejected.
    above = value > low if strict else value >= low
    if not (above and value <= high and math.isfinite(value)):
        raise ValueError(f"{name} must be {allowed} (got {value!r})")


DEFAULT_AUTOSCALER_CONFIG = AutoscalerConfig()


def total_concurrency(container_concurrency: int, config: AutoscalerConfig) -> float:
    """Concurrency one pod can take: its ``containerConcurrency``, or the configured default
    (100) when that is 0, meaning unlimited. Knative's ``TotalValue``, used for the excess
    burst capacity."""
    if container_concurrency < 0:
        raise ValueError(f"container_concurrency must be at least 0 (got {container_concurrency})")
    if container_concurrency > 0:
        return float(container_concurrency)
    return config.container_concurrency_target_default


def target_concurrency(container_concurrency: int, config: AutoscalerConfig) -> float:
    """Concurrency each pod should carry: total × target utilisation, at least
    :data:`TARGET_MIN`. CC 10 gives 7; CC 0 (unlimited) gives 70."""
    total = total_concurrency(container_concurrency, config)
    # Multiply before dividing: 10 × 70 / 100 is exactly 7, 10 × 0.7 need not be.
    return max(TARGET_MIN, total * config.target_utilization_percentage / 100)


# X = z² · σ² / E² for 95 % confidence (z 1.96), variance 100, margin of error 5.
_SAMPLE_X = 1.96**2 * 100 / 5**2


def sample_size(pods: int) -> int:
    """How many of ``pods`` ready pods the scraper asks each second.

    All of them up to 3, then ``ceil(N·X / (N + X − 1))`` with ``X = 1.96² · 100 / 5² ≈ 15.4``:
    the sample that estimates the mean within ±5 at 95 % confidence. It grows slowly: 10
    pods → 7, 100 → 14, never above 16.
    """
    if pods < 0:
        raise ValueError(f"pods must be at least 0 (got {pods})")
    if pods <= 3:
        return pods
    return math.ceil(pods * _SAMPLE_X / (pods + _SAMPLE_X - 1))


class ConcurrencyWindow:
    """Observed concurrency in buckets of ``bucket_size`` seconds, averaged over windows.

    Records in one bucket add up: the caller records each source (each scraped pod, the
    activator's buffered requests) separately, and their sum is the function's concurrency.
    :meth:`average` follows Knative's ``TimedFloat64Buckets.WindowAverage``:

    - buckets without a record *between* records count as 0;
    - data younger than the window is averaged over the buckets from its first record, so a
      new function is not diluted by the empty part of the window; a gap of a whole window
      or more starts the count afresh;
    - buckets after the last record (a scrape not in yet, or a source that went quiet) are
      left out of the average rather than counted as 0;
    - nothing recorded inside the window gives None.

    Buckets are pruned to twice the largest window asked for (the start-afresh rule looks one
    window further back). Pass ``max_window`` to prune before the first :meth:`average`.
    """

    def __init__(self, bucket_size: float, *, max_window: float | None = None) -> None:
        if not (bucket_size > 0 and math.isfinite(bucket_size)):
            raise ValueError(f"bucket_size must be a positive number of seconds ({bucket_size!r})")
        self._bucket_size = bucket_size
        self._buckets: dict[int, float] = {}  # bucket index → summed concurrency
        self._keep = 0  # buckets to keep behind the newest one; 0 until a window is known
        if max_window is not None:
            self._keep = 2 * self._window_buckets(max_window)

    @property
    def bucket_size(self) -> float:
        return self._bucket_size

    def record(self, now: float, value: float) -> None:
        """Add ``value`` (concurrent requests seen by one source) to the bucket of ``now``."""
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"concurrency must be a finite number ≥ 0 (got {value!r})")
        index = self._index(now)
        self._buckets[index] = self._buckets.get(index, 0.0) + value
        self._prune(index)

    def average(self, now: float, window: float) -> float | None:
        """Average concurrency over the buckets in ``(now − window, now]``, or None when none
        of them holds a record."""
        w = self._window_buckets(window)
        self._keep = max(self._keep, 2 * w)
        end = self._index(now)
        self._prune(end)
        start = end - w + 1
        inside = [i for i in self._buckets if start <= i <= end]
        if not inside:
            return None
        first, last = min(inside), max(inside)
        before = [i for i in self._buckets if i < start]
        # The data started before the window unless it stopped for a whole window first.
        if before and first - max(before) < w:
            first = start
        total = sum(self._buckets.get(i, 0.0) for i in range(first, last + 1))
        return total / (last - first + 1)

    def _index(self, now: float) -> int:
        return math.floor(now / self._bucket_size + _EPSILON)

    def _window_buckets(self, window: float) -> int:
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(f"window must be a positive number of seconds (got {window!r})")
        return max(1, math.ceil(window / self._bucket_size - _EPSILON))

    def _prune(self, newest: int) -> None:
        if not self._keep:
            return
        cutoff = newest - self._keep
        for index in [i for i in self._buckets if i <= cutoff]:
            del self._buckets[index]


@dataclass(frozen=True)
class Decision:
    """One tick's outcome (Knative's ``ScaleResult``)."""

    desired: int
    """Pods wanted after the KPA rules (rates, panic), before min/max scale and scale to
    zero: :class:`ScaleGate` applies those."""
    stable_average: float
    """Average concurrency over the stable window."""
    panic_average: float
    """Average concurrency over the panic window (0 when it holds no data but the stable one
    does)."""
    panicking: bool
    excess_burst_capacity: int
    """Spare concurrency beyond the burst capacity: 0 when the target burst capacity is 0,
    -1 when it is -1; negative means the activator should stay in the path."""
    activators: int
    """How many activators to spread the function over: at least :data:`MIN_ACTIVATORS`."""
    ready: int
    """Ready pods the decision was made with, as given (0 stays 0)."""


class Decider:
    """The KPA for one function: records concurrency, decides a pod count each tick.

    Mirrors ``pkg/autoscaler/scaling/autoscaler.go``. ``initial_ready`` is the number of pods
    already ready when the decider is created: above 1 it starts in panic, holding that
    count until it has seen a stable window of data.
    """

    def __init__(
        self,
        config: AutoscalerConfig,
        container_concurrency: int,
        *,
        initial_ready: int = 0,
        now: float = 0.0,
    ) -> None:
        if initial_ready < 0:
            raise ValueError(f"initial_ready must be at least 0 (got {initial_ready})")
        self._config = config
        self._total = total_concurrency(container_concurrency, config)
        self._target = target_concurrency(container_concurrency, config)
        self._window = ConcurrencyWindow(config.bucket_size, max_window=config.stable_window)
        # newAutoscaler: a restarted autoscaler has lost its history; panicking keeps the
        # current scale until the windows refill instead of shrinking on partial data.
        self._panic_time: float | None = now if initial_ready > 1 else None
        self._max_panic_pods = initial_ready

    @property
    def config(self) -> AutoscalerConfig:
        return self._config

    @property
    def target(self) -> float:
        """Concurrency each pod should carry (:func:`target_concurrency`)."""
        return self._target

    @property
    def total(self) -> float:
        """Concurrency one pod can take (:func:`total_concurrency`)."""
        return self._total

    @property
    def panicking(self) -> bool:
        return self._panic_time is not None

    def record(self, now: float, concurrency: float) -> None:
        """Record one source's observed concurrency (see :meth:`ConcurrencyWindow.record`)."""
        self._window.record(now, concurrency)

    def decide(self, now: float, ready_pods: int, *, reachable: bool = True) -> Decision | None:
        """One tick of ``Scale``. None when the stable window holds no data: the caller keeps
        the current scale. ``reachable`` False (nothing routes to the function) lifts the
        scale-down rate limit."""
        if ready_pods < 0:
            raise ValueError(f"ready_pods must be at least 0 (got {ready_pods})")
        cfg = self._config
        stable = self._window.average(now, cfg.stable_window)
        if stable is None:
            return None
        panic = self._window.average(now, cfg.panic_window)
        if panic is None:  # data in the stable window only: the last few seconds were quiet
            panic = 0.0

        # With no pod ready, rates and the threshold are relative to one.
        ready = max(1, ready_pods)
        max_scale_up = math.ceil(cfg.max_scale_up_rate * ready)
        max_scale_down = math.floor(ready / cfg.max_scale_down_rate) if reachable else 0

        dspc = math.ceil(stable / self._target)
        dppc = math.ceil(panic / self._target)
        desired_stable = min(max(dspc, max_scale_down), max_scale_up)
        desired_panic = min(max(dppc, max_scale_down), max_scale_up)

        # The threshold uses the unclamped count: with a scale-up rate below the threshold the
        # clamped one could never reach it.
        over_threshold = dppc / ready >= cfg.panic_threshold
        if over_threshold:
            self._panic_time = now  # enter panic, or extend it
        elif self._panic_time is not None and self._panic_time + cfg.stable_window < now:
            # A whole stable window without a tick over the threshold: the surge is in the
            # stable average by now, so it can steer again.
            self._panic_time = None
            self._max_panic_pods = 0

        desired = desired_stable
        if self._panic_time is not None:
            # The stable window can exceed the panic one (the load just dropped); provision
            # for the larger, and never scale down while panicking.
            desired = max(desired, desired_panic)
            self._max_panic_pods = max(self._max_panic_pods, desired)
            desired = self._max_panic_pods

        return Decision(
            desired=desired,
            stable_average=stable,
            panic_average=panic,
            panicking=self._panic_time is not None,
            excess_burst_capacity=self._excess_burst_capacity(ready_pods, panic),
            activators=self._activators(ready_pods),
            ready=ready_pods,
        )

    def _excess_burst_capacity(self, ready_pods: int, panic: float) -> int:
        # Based on the panic average so the activator decision reacts to bursts.
        tbc = self._config.target_burst_capacity
        if tbc == 0:
            return 0
        if tbc < 0:  # -1: the activator is always in the path
            return -1
        return math.floor(ready_pods * self._total - tbc - panic)

    def _activators(self, ready_pods: int) -> int:
        cfg = self._config
        if cfg.target_burst_capacity <= 0:
            return MIN_ACTIVATORS
        capacity = ready_pods * self._total + cfg.target_burst_capacity
        return max(MIN_ACTIVATORS, math.ceil(capacity / cfg.activator_capacity))


class ScaleGate:
    """The reconciler's last step: min/max scale and the scale-to-zero grace period.

    After ``pkg/reconciler/autoscaling/kpa/scaler.go`` (``applyBounds`` and
    ``handleScaleToZero``), simplified for an activator that is always in the path.
    ``max_scale`` 0 means unlimited.
    """

    def __init__(self, config: AutoscalerConfig, min_scale: int, max_scale: int) -> None:
        if min_scale < 0:
            raise ValueError(f"min_scale must be at least 0 (got {min_scale})")
        if max_scale < 0 or (max_scale and max_scale < min_scale):
            raise ValueError(
                f"max_scale must be 0 (unlimited) or at least min_scale {min_scale} "
                f"(got {max_scale})"
            )
        self._config = config
        self._min_scale = min_scale
        self._max_scale = max_scale
        self._zero_since: float | None = None  # when the decisions started saying 0

    @property
    def min_scale(self) -> int:
        return self._min_scale

    @property
    def max_scale(self) -> int:
        return self._max_scale

    def apply(self, now: float, desired: int | None, current: int) -> int:
        """The scale to run, given the decider's ``desired`` (None: no decision, keep
        ``current``) and the scale running now."""
        if current < 0:
            raise ValueError(f"current must be at least 0 (got {current})")
        if desired is None:  # neither starts nor resets the grace timer
            return current
        if desired < 0:
            raise ValueError(f"desired must be at least 0 (got {desired})")
        scale = self._bounded(desired)
        if scale != 0:
            self._zero_since = None
            return scale
        if not self._config.enable_scale_to_zero:
            return 1
        if self._zero_since is None:
            self._zero_since = now
        if now - self._zero_since >= self._config.scale_to_zero_grace:
            return 0
        # Within the grace period: keep what runs (a function already at 0 stays there), so
        # a request arriving meanwhile finds a warm instance.
        return current

    def poke(self, now: float) -> int:
        """The activator holds a request for a function at zero: the scale to start at once
        (at least 1). Restarts the grace period."""
        self._zero_since = None
        return self._bounded(1)

    def _bounded(self, scale: int) -> int:
        scale = max(scale, self._min_scale)
        if self._max_scale:
            scale = min(scale, self._max_scale)
        return scale
