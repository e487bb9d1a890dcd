"""One function as the platform runs it: its instances, its throttler, its autoscaler.

The platform feeds a :class:`Deployment` three things — requests (:meth:`invoke`), scraped
concurrency (:meth:`observe`, every bucket) and clock ticks (:meth:`tick`, every tick interval)
— and it keeps ``desired`` instances running: it starts missing ones, drains surplus ones, and
scales from zero at once when a request finds no instance (the activator's poke).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from .._core.errors import (
    InstanceFailed,
    InstanceStartError,
    InvocationError,
    InvocationTimeout,
    PeerGone,
    ProtocolError,
)
from .._core.refs import TransferMode
from .._http.client import HttpAnswer, RequestHeaders
from .._http.contract import REQUEST_ID_HEADER
from .._http.headers import ERROR_HEADER
from .._http.metrics import Histogram
from .._util.logs import RateLimitedLog
from .._util.tasks import TaskSet
from ..sidecar.usage import Usage
from .autoscaler import Decider, Decision, ScaleGate
from .balancer import Tracker
from .events import Event, Kind
from .instances import CRASH_LOOP_RESET, Instance, InstanceManager, State
from .spec import FunctionSpec, PlatformSpec
from .status import DecisionRecord, ErrorRecord, EventRecord, FunctionStatus
from .throttler import Throttler

__all__ = ["Deployment"]

START_RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)  # after an instance failed to start
_MAX_DELIVERIES = 40  # forwards refused at connect before giving up (~8 s of backoff)
_ACTIVE = (State.STARTING, State.READY, State.RESTARTING)  # instances that count as serving


MAX_ERROR_MESSAGE = 4000  # characters of a last error kept for /status


def _request_id(headers: RequestHeaders | None) -> str | None:
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in pairs:
        if name.lower() == REQUEST_ID_HEADER.lower():
            return value
    return None


def _message_of(answer: HttpAnswer) -> str:
    """An error answer's message (its JSON ``message``), or what can be said without it."""
    if answer.stream is None and len(answer.body) <= 1 << 16:
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(answer.body).get("message")
            if isinstance(message, str):
                return message
    return f"answered {answer.status}"


def _crash_looping(instance: Instance) -> bool:
    recent = instance.crashed_at is not None and (
        time.monotonic() - instance.crashed_at < CRASH_LOOP_RESET
    )
    return instance.crashes >= 2 and (instance.state is State.RESTARTING or recent)


class _Undelivered(Exception):
    """No instance took the connection: the request went nowhere and may go elsewhere."""


class Deployment:
    def __init__(
        self,
        spec: FunctionSpec,
        platform: PlatformSpec,
        manager: InstanceManager,
        *,
        mode: TransferMode = TransferMode.XDT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.mode = mode  # the effective one: the platform's override, else the function's
        self.manager = manager
        self.clock = clock
        config = platform.autoscaler
        self.throttler: Throttler[Instance] = Throttler(
            spec.name,
            concurrency=spec.concurrency,
            queue_depth=platform.queue_depth,
            on_cold=self.poke,
        )
        self.decider = Decider(config, spec.concurrency, now=clock())
        self.gate = ScaleGate(config, spec.min_scale, spec.max_scale)
        initial = config.initial_scale if spec.initial_scale is None else spec.initial_scale
        self.desired = max(spec.min_scale, initial)
        if spec.max_scale:
            self.desired = min(self.desired, spec.max_scale)
        self.instances: list[Instance] = []
        self.last_decision: Decision | None = None
        self.decisions: collections.deque[DecisionRecord] = collections.deque(maxlen=40)
        self.events: collections.deque[EventRecord] = collections.deque(maxlen=100)
        self.requests = 0
        self.restarts = 0
        self.answers: collections.Counter[str] = collections.Counter()
        # For /metrics: answers by (HTTP status, error code or ""), and their latency.
        self.outcomes: collections.Counter[tuple[int, str]] = collections.Counter()
        self.latency = Histogram()
        self._started = clock()
        self._start_failures = 0
        self._retry: asyncio.TimerHandle | None = None
        self._tasks = TaskSet()
        self._troubled = False
        self._draining: dict[Instance, Tracker[Instance] | None] = {}
        self._starting: dict[Instance, asyncio.Task[None]] = {}
        self.undelivered = 0  # forwards no instance took, sent again elsewhere
        self.retired = Usage()  # what instances that are gone used
        self.last_error: ErrorRecord | None = None
        self._error_events = RateLimitedLog(interval=1.0, clock=clock)

    # -- requests ----------------------------------------------------------------------------

    async def invoke(self, body: bytes, headers: RequestHeaders | None = None) -> HttpAnswer:
        """Route one request to an instance and return its answer. ``headers`` go with it
        (the gateway's: the caller's that pass, its method and path, trace, hop)."""
        self.requests += 1
        request_id = _request_id(headers)
        started = self.clock()
        try:
            async with asyncio.timeout(self.spec.timeout):
                answer, served_by = await self._deliver(body, headers)
        except TimeoutError:
            error = InvocationTimeout(
                f"function {self.spec.name!r} did not answer within {self.spec.timeout:g} s "
                "(its timeout)",
                function=self.spec.name,
            )
            self.answers[error.code] += 1
            self.outcomes[(error.status, error.code)] += 1
            self._failed(error.code, str(error), request_id)
            raise error from None
        except InvocationError as exc:
            self.answers[exc.code] += 1
            self.outcomes[(exc.status, exc.code)] += 1
            if exc.status >= 500:
                self._failed(exc.code, str(exc), request_id)
            raise
        finally:
            self.latency.observe(self.clock() - started)
        code = answer.header(ERROR_HEADER)
        self.answers[code or str(answer.status)] += 1
        self.outcomes[(answer.status, code or "")] += 1
        if answer.status >= 500:
            self._failed(code or str(answer.status), _message_of(answer), request_id, served_by)
        return answer

    def _failed(
        self,
        code: str,
        message: str,
        request_id: str | None,
        instance: str | None = None,
        *,
        event: bool = True,
    ) -> None:
        """Keep a failure as the function's last error; an event for it, a few per second
        per code at most (a failing function under load must not wash out the others)."""
        self.last_error = {
            "at_unix": round(time.time(), 3),
            "instance": instance,
            "code": code,
            "message": message[:MAX_ERROR_MESSAGE],
            "request_id": request_id,
        }
        if event and self._error_events.admit(code) is not None:
            self.record(Event(Kind.ERROR, f"{code}: {message[:200]}", request_id), instance)

    async def _deliver(self, body: bytes, headers: RequestHeaders | None) -> tuple[HttpAnswer, str]:
        """Forward to an instance the throttler picks; its answer, and which instance gave it.
        One that nobody answers at all (a sidecar that just died: connection refused) never
        got the request, so it waits for another instance, as a buffered request does, with a
        short backoff while the dead one is noticed and replaced; a request that may have been
        delivered is never re-sent."""
        tried: list[str] = []
        for attempt in range(_MAX_DELIVERIES):
            tracker = await self.throttler.acquire()
            try:
                return await self._forward(tracker.target, body, headers), tracker.target.id
            except _Undelivered:
                self.undelivered += 1
                tried.append(tracker.target.id)
            finally:
                self.throttler.release(tracker)
            await asyncio.sleep(min(0.005 * 2**attempt, 0.25))
        raise InstanceFailed(
            f"no instance of function {self.spec.name!r} took the request in {len(tried)} "
            f"tries: each refused the connection (last: {tried[-1]})",
            function=self.spec.name,
        )

    async def _forward(
        self, instance: Instance, body: bytes, headers: RequestHeaders | None
    ) -> HttpAnswer:
        assert instance.pool is not None
        try:
            answer = await instance.pool.post("/invoke", body, headers)
        except PeerGone as exc:
            if exc.delivered is False:
                raise _Undelivered from None
            raise InstanceFailed(
                f"instance {instance.id} of function {self.spec.name!r} failed mid-request: {exc}",
                function=self.spec.name,
            ) from None
        except ProtocolError as exc:
            raise InstanceFailed(
                f"instance {instance.id} of function {self.spec.name!r} failed mid-request: {exc}",
                function=self.spec.name,
            ) from None
        return answer

    # -- autoscaling -------------------------------------------------------------------------

    def observe(self, now: float, sidecar_concurrency: float) -> None:
        """One bucket of demand: the sidecars' concurrency plus the requests buffered here."""
        buffered = self.throttler.waiting.report().average_concurrency
        self.decider.record(now, sidecar_concurrency + buffered)

    def poke(self) -> None:
        """A request found no instance: scale from zero now, not at the next tick. Records
        nothing: the buffered requests reach the autoscaler through :meth:`observe`."""
        wanted = max(self.desired, self.gate.poke(self.clock()))
        if wanted != self.desired:
            self._log(
                Event(
                    Kind.POKED, f"a request is waiting and no instance is ready; scale → {wanted}"
                )
            )
            self.desired = wanted
        self.reconcile()

    def tick(self, now: float) -> None:
        decision = self.decider.decide(now, self.ready_count)
        desired = self.gate.apply(now, decision.desired if decision else None, self.desired)
        if decision is not None:
            self.last_decision = decision
            self.decisions.append(
                {
                    "at": round(now - self._started, 3),
                    "desired": desired,
                    "kpa_desired": decision.desired,
                    "ready": self.ready_count,
                    "stable_concurrency": round(decision.stable_average, 3),
                    "panic_concurrency": round(decision.panic_average, 3),
                    "panicking": decision.panicking,
                    "excess_burst_capacity": decision.excess_burst_capacity,
                }
            )
        if desired != self.desired:
            self._log(Event(Kind.SCALED, f"{self.desired} → {desired}"))
        self.desired = desired
        self.reconcile()

    @property
    def in_flight(self) -> int:
        """Requests at instances, draining ones included."""
        return self.throttler.in_flight + sum(
            t.in_flight for t in self._draining.values() if t is not None
        )

    @property
    def troubled(self) -> bool:
        """Whether an instance of this function crashed or failed (its logs are worth
        keeping)."""
        return self._troubled

    @property
    def panicking(self) -> bool:
        return self.last_decision is not None and self.last_decision.panicking

    # -- instances ---------------------------------------------------------------------------

    def count(self, *states: State) -> int:
        return sum(1 for i in self.instances if i.state in states)

    @property
    def ready_count(self) -> int:
        return self.count(State.READY)

    def reconcile(self) -> None:
        """Start or drain instances until the active ones match ``desired``."""
        active = self._active()
        missing = self.desired - len(active)
        if missing > 0 and self._retry is None:
            for _ in range(missing):
                instance = self.manager.create(self.spec)
                self.instances.append(instance)
                self._starting[instance] = self._spawn(self._start(instance))
        elif missing < 0:
            # Not-yet-ready instances go first: draining a ready one while a newer one still
            # starts would leave nothing to route to. Then the least busy ready ones; among
            # equals the youngest (it holds the least).
            starting = [i for i in active if i.state is State.STARTING]
            for instance in sorted(starting, key=lambda i: -i.started_at)[:-missing]:
                self._give_up_start(instance)
                missing += 1
            ready = [i for i in active if i.state is State.READY]
            ready.sort(key=lambda i: (self._in_flight(i), -i.started_at))
            for instance in ready[: max(0, -missing)]:
                self._begin_drain(instance)

    def roll(self, reason: str) -> None:
        """Replace every instance with a fresh one (new code): the old ones drain as at scale
        down — in-flight requests finish, their objects stay until pulled — while new ones
        start; requests meanwhile go to what still serves, or wait in the activator."""
        old = self._active()
        for instance in old:
            if not self._give_up_start(instance):
                self._begin_drain(instance)
        self.record(Event(Kind.ROLLED, f"{reason}: {len(old)} instance(s) replaced"))
        self.reconcile()

    def _active(self) -> list[Instance]:
        """The instances serving or about to: what ``desired`` counts."""
        return [i for i in self.instances if i.state in _ACTIVE]

    def _give_up_start(self, instance: Instance) -> bool:
        """Cancel the start of an instance still starting; whether it was."""
        task = self._starting.pop(instance, None)
        if task is not None:
            task.cancel()
        return task is not None

    def _begin_drain(self, instance: Instance) -> None:
        """No new requests for ``instance``; it stops once its in-flight requests are done
        and its objects pulled or expired (:meth:`_drain`)."""
        tracker = self.throttler.remove(instance)
        self.manager.begin_drain(instance)
        self._draining[instance] = tracker
        self._spawn(self._drain(instance, tracker))

    def on_instance_event(self, instance: Instance, event: Event) -> None:
        self._log(event, instance)
        kind = event.kind
        if kind.troubled:
            self._failed(kind.value, event.detail, None, instance.id, event=False)
        if kind is Kind.CRASHED and instance.crashes >= 2 and self.ready_count == 0:
            # Crash-looping, and nothing else serves: the buffered requests hear why now.
            detail = event.detail
            self.throttler.fail_waiting(
                lambda: InstanceFailed(
                    f"function {self.spec.name!r} is crash-looping ({instance.id} crashed "
                    f"{instance.crashes} times in a row): {detail}",
                    function=self.spec.name,
                )
            )
        if kind is Kind.RESTARTED:
            self.restarts += 1
        if kind in (Kind.READY, Kind.RESTARTED) and instance.state is State.READY:
            self.throttler.add(instance)
        elif kind in (Kind.CRASHED, Kind.FAILED):
            self.throttler.remove(instance)
        if kind is Kind.FAILED and instance in self.instances:
            self.instances.remove(instance)
            self.retired += instance.usage
            if instance.ready_at is not None:  # it had been serving: replace it now
                self.reconcile()
        if kind is Kind.STOPPED and instance in self.instances:
            self.instances.remove(instance)
            self.retired += instance.usage

    async def _start(self, instance: Instance) -> None:
        try:
            await self.manager.start(instance)
        except asyncio.CancelledError:
            if instance in self.instances:
                self.instances.remove(instance)
            self._log(Event(Kind.START_CANCELLED, "scaled down before it was ready"), instance)
            raise
        except InstanceStartError as exc:
            reason = str(exc)
            self._start_failures += 1
            if self.ready_count == 0:
                # Nothing can serve the buffered requests: tell them why now, not at timeout.
                self.throttler.fail_waiting(
                    lambda: InstanceFailed(
                        f"function {self.spec.name!r} could not start an instance: {reason}",
                        function=self.spec.name,
                    )
                )
            delay = START_RETRY_DELAYS[min(self._start_failures, len(START_RETRY_DELAYS)) - 1]
            self._retry_in(delay)
            return
        finally:
            self._starting.pop(instance, None)
        self._start_failures = 0

    async def _drain(self, instance: Instance, tracker: Tracker[Instance] | None) -> None:
        try:
            await self.manager.drain(instance, lambda: tracker.in_flight if tracker else 0)
        finally:
            self._draining.pop(instance, None)

    def _retry_in(self, delay: float) -> None:
        def retry() -> None:
            self._retry = None
            self.reconcile()

        if self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(delay, retry)

    def _in_flight(self, instance: Instance) -> int:
        return next((t.in_flight for t in self.throttler.trackers if t.target is instance), 0)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self._tasks.spawn(coroutine)

    def _log(self, event: Event, instance: Instance | None = None) -> None:
        self.record(event, instance.id if instance else None)

    def record(self, event: Event, instance: str | None = None) -> None:
        """Keep ``event`` (of the instance with that id) among the recent ones."""
        self._troubled = self._troubled or event.kind.troubled
        self.events.append(
            {
                "at": round(self.clock() - self._started, 3),
                "instance": instance,
                "kind": event.kind.value,
                "event": str(event),
                "request_id": event.request_id,
            }
        )

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        await self._tasks.cancel()
        await asyncio.gather(
            *(self.manager.stop(i) for i in self.instances if i.state is not State.STOPPED),
            return_exceptions=True,
        )

    # -- reporting ---------------------------------------------------------------------------

    async def usage(self) -> Usage:
        """What every instance of the function used, gone ones included (a sidecar that
        crashed counts what it last reported)."""
        instances = list(self.instances)
        fresh = await asyncio.gather(*(self.manager.usage(i) for i in instances))
        # One that went meanwhile is in `retired` now, with what it last said.
        live = [u for i, u in zip(instances, fresh, strict=True) if i in self.instances]
        return sum(live, self.retired)

    def status(self) -> FunctionStatus:
        return {
            "ready": self.ready_count,
            "starting": self.count(State.STARTING, State.RESTARTING),
            "draining": self.count(State.DRAINING),
            "desired": self.desired,
            "in_flight": self.in_flight,
            "queued": self.throttler.queued,
            "panicking": self.panicking,
            "requests": self.requests,
            "answers": dict(self.answers),
            "concurrency": self.spec.concurrency,
            "min_scale": self.spec.min_scale,
            "max_scale": self.spec.max_scale,
            "transfer": self.mode.label,
            "kind": self.spec.kind,
            "memory_bytes": self.spec.memory,
            "restarts": self.restarts,
            "objects": sum(i.objects for i in self.instances),
            "last_error": self.last_error,
            "crash_looping": [i.id for i in self.instances if _crash_looping(i)],
            "start_failures": self._start_failures,
            "instances": [i.describe(self._in_flight(i)) for i in self.instances],
            "decisions": list(self.decisions)[-10:],
            "events": list(self.events)[-30:],
        }
