"""The object store: budget, expiry, release, quota with backpressure, drain."""

from __future__ import annotations

import asyncio

import pytest

import xdt
from _support.clock import ManualClock
from xdt import ObjectStore, StoreConfig
from xdt._core.checksum import checksum


async def test_put_holds_the_bytes_and_counts_them(store: ObjectStore) -> None:
    obj = await store.put(b"hello world", tenant="t1", pulls=2, ttl=30)
    assert obj.buffer.view().tobytes() == b"hello world"
    assert obj.checksum == checksum(b"hello world")
    assert (obj.size, obj.tenant, obj.pulls_left) == (11, "t1", 2)
    assert store.stats.objects == 1 and store.stats.bytes_held == 11
    ref = obj.reference("127.0.0.1:1")
    assert ref.object_id == obj.id and ref.size == 11 and ref.tenant == "t1"


async def test_a_pull_counts_only_when_it_completes(store: ObjectStore) -> None:
    obj = await store.put(b"x", pulls=1)
    aborted = await store.begin_pull(obj.id)
    aborted.abort()  # the receiver died mid-pull: the object stays for a retry
    assert obj.id in store and store.stats.pulls == 0
    done = await store.begin_pull(obj.id)
    done.complete()
    assert obj.id not in store and store.stats.pulls == 1
    assert store.stats.bytes_held == 0
    with pytest.raises(xdt.PullBudgetExhausted):
        await store.begin_pull(obj.id)
    assert store.stats.rejects == 1


async def test_last_pull_waits_for_the_one_in_flight(store: ObjectStore) -> None:
    obj = await store.put(b"x", pulls=1)
    first = await store.begin_pull(obj.id)
    second = asyncio.ensure_future(store.begin_pull(obj.id))
    await asyncio.sleep(0.01)
    assert not second.done()  # the only pull is in flight elsewhere
    first.abort()  # ... and it failed: the waiter gets it
    (await second).complete()
    assert store.stats.pulls == 1 and obj.id not in store


async def test_waiter_for_the_last_pull_learns_it_was_used(store: ObjectStore) -> None:
    obj = await store.put(b"x", pulls=1)
    first = await store.begin_pull(obj.id)
    second = asyncio.ensure_future(store.begin_pull(obj.id))
    await asyncio.sleep(0.01)
    first.complete()
    with pytest.raises(xdt.PullBudgetExhausted):
        await second


async def test_unlimited_pulls_until_expiry() -> None:
    clock = ManualClock()
    store = ObjectStore(clock=clock)
    obj = await store.put(b"broadcast", pulls=None, ttl=20)
    assert obj.expires_at == clock.now + 20
    for _ in range(5):
        (await store.begin_pull(obj.id)).complete()
    assert obj.id in store and store.stats.pulls == 5
    clock.advance(19.9)
    assert obj.id in store
    clock.advance(0.1)
    assert obj.id not in store
    with pytest.raises(xdt.ReferenceExpired, match="expired"):
        store.get(obj.id)
    store.close()


async def test_nothing_leaks_after_expiry() -> None:
    clock = ManualClock()
    store = ObjectStore(clock=clock)
    for size in (0, 1, 5000, 1 << 20):
        await store.put(b"z" * size, ttl=60)
    assert store.stats.objects == 4
    clock.advance(60)
    assert store.stats.objects == 0 and store.stats.bytes_held == 0
    assert store.stats.expiries == 4 and len(store) == 0
    assert store._reserved == 0
    store.close()


async def test_a_pull_in_flight_keeps_the_buffer_past_expiry() -> None:
    clock = ManualClock()
    store = ObjectStore(clock=clock)
    obj = await store.put(b"still being read", ttl=5)
    pull = await store.begin_pull(obj.id)
    clock.advance(10)
    assert obj.id not in store and store.stats.expiries == 1
    assert pull.object.buffer.view().tobytes() == b"still being read"  # not reused under us
    assert store.stats.bytes_held == 16
    pull.complete()
    assert store.stats.bytes_held == 0
    store.close()


async def test_release(store: ObjectStore) -> None:
    obj = await store.put(b"x")
    assert store.release(obj.id) is True
    assert store.release(obj.id) is False
    with pytest.raises(xdt.ObjectNotFound, match="released"):
        store.get(obj.id)
    assert store.stats.releases == 1 and store.stats.bytes_held == 0


async def test_unknown_object(store: ObjectStore) -> None:
    with pytest.raises(xdt.ObjectNotFound, match="not held here"):
        store.get(b"\x00" * 16)


async def test_put_beyond_quota_waits_then_proceeds_when_space_frees() -> None:
    store = ObjectStore(StoreConfig(quota_bytes=1000))
    first = await store.put(b"a" * 600)
    waiting = asyncio.ensure_future(store.put(b"b" * 600, timeout=5))
    await asyncio.sleep(0.02)
    assert not waiting.done() and store.stats.quota_waits == 1
    store.release(first.id)
    second = await waiting
    assert second.buffer.view().tobytes() == b"b" * 600
    store.close()


async def test_put_beyond_quota_fails_cleanly_after_its_timeout() -> None:
    store = ObjectStore(StoreConfig(quota_bytes=1000))
    await store.put(b"a" * 600)
    with pytest.raises(xdt.QuotaExceeded, match=r"after waiting 0\.1s"):
        await store.put(b"b" * 600, timeout=0.1)
    assert store.stats.quota_timeouts == 1 and store.stats.objects == 1
    assert store._reserved == 600  # the failed put left nothing reserved
    await store.put(b"c" * 400, timeout=0.1)  # what still fits, fits
    store.close()


async def test_object_larger_than_the_quota_fails_at_once() -> None:
    store = ObjectStore(StoreConfig(quota_bytes=1000))
    with pytest.raises(xdt.QuotaExceeded, match="can never fit"):
        await store.put(b"x" * 1001)
    store.close()


async def test_quota_waiters_are_served_in_order() -> None:
    store = ObjectStore(StoreConfig(quota_bytes=1000))
    first = await store.put(b"a" * 900)
    order: list[str] = []

    async def put(name: str, size: int) -> None:
        await store.put(b"x" * size, timeout=5)
        order.append(name)

    big = asyncio.ensure_future(put("big", 800))
    await asyncio.sleep(0.01)
    small = asyncio.ensure_future(put("small", 50))  # would fit now, but waits its turn
    await asyncio.sleep(0.01)
    assert order == []
    store.release(first.id)
    await asyncio.gather(big, small)
    assert order == ["big", "small"]
    store.close()


async def test_drain_resolves_when_the_last_object_goes() -> None:
    clock = ManualClock()
    store = ObjectStore(clock=clock)
    assert await store.drain(timeout=0.01) is True  # empty already
    obj = await store.put(b"x")
    await store.put(b"y", ttl=30)
    assert await store.drain(timeout=0.01) is False
    draining = asyncio.ensure_future(store.drain(timeout=5))
    store.release(obj.id)
    await asyncio.sleep(0.01)
    assert not draining.done()  # one still lives until its expiry
    clock.advance(30)
    assert await draining is True
    assert store.stats.objects == 0
    store.close()


async def test_close_fails_waiting_puts_and_refuses_new_ones() -> None:
    store = ObjectStore(StoreConfig(quota_bytes=10))
    await store.put(b"x" * 10)
    waiting = asyncio.ensure_future(store.put(b"y", timeout=5))
    await asyncio.sleep(0.01)
    store.close()
    with pytest.raises(xdt.StoreClosed):
        await waiting
    with pytest.raises(xdt.StoreClosed):
        await store.put(b"z")
    assert store.stats.bytes_held == 0


async def test_allocate_then_publish_in_place(store: ObjectStore) -> None:
    allocation = await store.allocate(4)
    allocation.writable()[:] = b"abcd"
    obj = allocation.publish()
    assert obj.buffer.view().tobytes() == b"abcd" and obj.checksum == checksum(b"abcd")
    aborted = await store.allocate(100)
    aborted.abort()
    assert store._reserved == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"pulls": 0}, "pulls must be"), ({"ttl": 0}, "ttl must be"), ({"ttl": -1}, "ttl must be")],
)
async def test_bad_arguments(store: ObjectStore, kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        await store.put(b"x", **kwargs)  # type: ignore[arg-type]


async def test_buffers_are_reused_warm(store: ObjectStore) -> None:
    for _ in range(3):
        obj = await store.put(b"r" * 70_000)
        store.release(obj.id)
    assert store.pool.created == 1 and store.pool.reused == 2


async def test_a_gone_object_says_it_expired_once_its_time_has_passed() -> None:
    clock = ManualClock()
    store = ObjectStore(clock=clock)
    obj = await store.put(b"x", ttl=10)
    store.release(obj.id)
    with pytest.raises(xdt.ObjectNotFound, match="released"):
        store.get(obj.id)
    clock.now += 11  # past its expiry, whatever removed it: expired is the truer answer
    with pytest.raises(xdt.ReferenceExpired):
        store.get(obj.id)
    store.close()


async def test_closing_cancels_every_timer() -> None:
    clock = ManualClock()
    store = ObjectStore(clock=clock)
    await store.put(b"x" * 5000, ttl=10)
    assert clock.pending == 1
    store.close()
    assert clock.pending == 0
