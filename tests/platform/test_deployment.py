"""One function's deployment (``xdt.platform.deployment``): reconcile, scale, drain, retry.

The deployment's own logic, on a clock the tests move, in front of an instance manager that
starts no processes (the real one is exercised through ``xdt up`` in test_embedded): it brings
instances up when told, or fails their start, and reports events as the real one does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from _support.waiting import eventually
from xdt import InstanceFailed, InstanceStartError
from xdt.platform.autoscaler import AutoscalerConfig
from xdt.platform.deployment import START_RETRY_DELAYS, Deployment
from xdt.platform.events import Event, Kind
from xdt.platform.instances import Instance, State
from xdt.platform.spec import FunctionSpec, PlatformSpec

AUTOSCALER = AutoscalerConfig(stable_window=6.0, tick_interval=1.0, scale_to_zero_grace=2.0)


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Instances:
    """Stands in for the InstanceManager: no processes, the same events."""

    deployment: Deployment | None = None
    failing: int = 0  # the next starts that fail
    held: bool = False  # while set, starts wait
    release: asyncio.Event = field(default_factory=asyncio.Event)
    made: int = 0
    drained: list[str] = field(default_factory=list)

    def create(self, function: FunctionSpec) -> Instance:
        self.made += 1
        return Instance(f"{function.name}-{self.made}", function, Path("/dev/null"))

    async def start(self, instance: Instance) -> None:
        if self.held:
            await self.release.wait()
        if self.failing:
            self.failing -= 1
            instance.state = State.FAILED
            self._event(instance, Event(Kind.FAILED, "it would not start"))
            raise InstanceStartError(f"{instance.id}: it would not start")
        instance.state = State.READY
        instance.ready_at = 1.0
        self._event(instance, Event(Kind.READY))

    def begin_drain(self, instance: Instance) -> None:
        instance.state = State.DRAINING
        self._event(instance, Event(Kind.DRAINING))

    async def drain(self, instance: Instance, in_flight: object) -> None:
        self.drained.append(instance.id)
        await self.stop(instance)

    async def stop(self, instance: Instance) -> None:
        instance.state = State.STOPPED
        self._event(instance, Event(Kind.STOPPED))

    def _event(self, instance: Instance, event: Event) -> None:
        assert self.deployment is not None
        self.deployment.on_instance_event(instance, event)


def deploy(instances: Instances, clock: Clock, **function: object) -> Deployment:
    spec = FunctionSpec(**{"name": "f", "handler": "m:f", **function})  # type: ignore[arg-type]
    platform = PlatformSpec(autoscaler=AUTOSCALER)
    deployment = Deployment(spec, platform, instances, clock=clock)  # type: ignore[arg-type]
    instances.deployment = deployment
    return deployment


def states(deployment: Deployment) -> list[str]:
    return [i.state.value for i in deployment.instances]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_it_starts_the_initial_scale_and_routes_to_ready_instances() -> None:
    instances, clock = Instances(), Clock()
    deployment = deploy(instances, clock, initial_scale=2)
    deployment.reconcile()
    await settle()
    assert states(deployment) == ["ready", "ready"]
    assert len(deployment.throttler.trackers) == 2
    await deployment.close()


async def test_load_scales_it_up_and_quiet_brings_it_to_zero_after_the_grace() -> None:
    instances, clock = Instances(), Clock()
    deployment = deploy(instances, clock, concurrency=1, max_scale=5)
    deployment.reconcile()
    await settle()
    for _ in range(3):  # 3 concurrent requests' worth, on a target of 0.7 per instance
        clock.now += 1
        deployment.observe(clock.now, 3.0)
        deployment.tick(clock.now)
    await settle()
    assert deployment.desired == 5  # ceil(3 / 0.7) = 5, at max_scale
    assert states(deployment) == ["ready"] * 5
    assert deployment.panicking  # the panic window asked for far more than one instance

    while deployment.desired:  # quiet: a bounded walk down, the grace included
        clock.now += 1
        deployment.observe(clock.now, 0.0)
        deployment.tick(clock.now)
        await settle()
        assert clock.now < 1100, "never scaled to zero"
    assert deployment.instances == [] and len(instances.drained) == 5
    kinds = [e["kind"] for e in deployment.events]
    assert "scale" in kinds and kinds.count("stopped") == 5
    await deployment.close()


async def test_scaling_down_drains_not_yet_ready_instances_first() -> None:
    instances, clock = Instances(), Clock()
    deployment = deploy(instances, clock, initial_scale=1)
    deployment.reconcile()
    await settle()
    instances.held = True  # the next ones hang in STARTING
    deployment.desired = 3
    deployment.reconcile()
    await settle()
    assert states(deployment) == ["ready", "starting", "starting"]
    deployment.desired = 1
    deployment.reconcile()
    await settle()
    assert states(deployment) == ["ready"]  # the starting ones were cancelled, not it
    assert [e["kind"] for e in deployment.events].count("start cancelled") == 2
    assert instances.drained == []
    await deployment.close()


async def test_the_least_busy_ready_instance_drains_first() -> None:
    instances, clock = Instances(), Clock()
    deployment = deploy(instances, clock, initial_scale=2)
    deployment.reconcile()
    await settle()
    busy = await deployment.throttler.acquire()  # one request on the first picked
    deployment.desired = 1
    deployment.reconcile()
    await settle()
    assert [i.id for i in deployment.instances] == [busy.target.id]
    deployment.throttler.release(busy)
    await deployment.close()


async def test_failed_starts_are_retried_later_and_waiting_requests_told_at_once() -> None:
    instances, clock = Instances(failing=1, held=True), Clock()
    deployment = deploy(instances, clock, initial_scale=1)
    deployment.reconcile()
    waiting = asyncio.ensure_future(deployment.throttler.acquire())
    await settle()
    assert not waiting.done()  # buffered while the instance starts
    instances.held = False
    instances.release.set()
    with pytest.raises(InstanceFailed, match="could not start an instance: f-1: it would not"):
        await asyncio.wait_for(waiting, 5)
    assert deployment.instances == []  # the failed one is gone; a retry is due
    await eventually(lambda: states(deployment) == ["ready"], within=START_RETRY_DELAYS[0] + 5)
    assert instances.made == 2
    assert deployment.troubled  # a failure: its logs are worth keeping
    await deployment.close()


async def test_a_request_at_zero_pokes_it_up_at_once() -> None:
    instances, clock = Instances(), Clock()
    deployment = deploy(instances, clock, initial_scale=0)
    deployment.reconcile()
    assert deployment.instances == []
    tracker = await asyncio.wait_for(deployment.throttler.acquire(), 5)  # waits, pokes
    assert deployment.desired == 1 and states(deployment) == ["ready"]
    assert any(e["kind"] == "poked" for e in deployment.events)
    deployment.throttler.release(tracker)
    await deployment.close()


async def test_a_crash_stops_routing_and_a_failure_of_a_serving_instance_replaces_it() -> None:
    instances, clock = Instances(), Clock()
    deployment = deploy(instances, clock, initial_scale=1)
    deployment.reconcile()
    await settle()
    (first,) = deployment.instances
    first.state = State.RESTARTING
    deployment.on_instance_event(first, Event(Kind.CRASHED, "exit 1"))
    assert deployment.throttler.trackers == []  # no requests to a crashed one
    first.state = State.READY
    deployment.on_instance_event(first, Event(Kind.RESTARTED))
    assert len(deployment.throttler.trackers) == 1 and deployment.restarts == 1

    first.state = State.FAILED
    deployment.on_instance_event(first, Event(Kind.FAILED, "the sidecar exited"))
    await settle()
    assert [i.id for i in deployment.instances] == ["f-2"] and states(deployment) == ["ready"]
    status = deployment.status()
    assert status["transfer"] == "xdt" and status["restarts"] == 1
    lines = [(e["instance"], e["event"]) for e in status["events"]]
    assert ("f-1", "crashed: exit 1") in lines and ("f-1", "failed: the sidecar exited") in lines
    assert lines[-1] == ("f-2", "ready")
    await deployment.close()
