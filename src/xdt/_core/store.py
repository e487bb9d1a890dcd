"""The object store: one per sidecar, holding the objects its references point to.

An object is immutable bytes in a memfd-backed buffer, with a random 128-bit id, a checksum,
a tenant, an expiry and a pull budget (``pulls=N``, or ``pulls=None`` for unlimited pulls until
expiry: broadcast). Its life::

    allocate ──► fill ──► publish ──► pulled N times ──► freed
       │ (waits for quota)    │ (expiry timer starts)         ▲
       └── abort              ├── release() ────────────────┤
                              └── expiry ───────────────────┘

A pull counts when it *completes* (the receiver confirmed every byte), so a receiver that dies
mid-pull leaves the object for a retry. One that had every byte handed over and never
confirmed is *unconfirmed*: the object forgives as many of those as its budget allows pulls,
then counts them as pulls — so an object with ``pulls=N`` is handed over at most 2N times,
whatever its pullers do, while a receiver that crashed after the hand-over still gets its
retry. (Only sidecars can pull at all: :meth:`xdt._core.refs.KeyRing.pull_proof`.) A receiver
that says the bytes arrived wrong (``failed``) is not counted. While a pull is in flight the
buffer is never reused, even if the object expires or is released meanwhile: it is freed when
the last reader is done.

Memory is bounded by a byte quota over live objects: a put beyond it waits (FIFO) until space
frees or its timeout passes, then raises :class:`~xdt.QuotaExceeded`. :meth:`ObjectStore.drain`
resolves when no live object remains (scale-down and SIGTERM use it).

The store belongs to one event loop and is not thread-safe.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from .._util.units import format_size
from .buffers import DEFAULT_POOL_LIMITS, Buffer, BufferPool, PoolLimits
from .checksum import checksum
from .errors import (
    ObjectNotFound,
    PullBudgetExhausted,
    QuotaExceeded,
    ReferenceExpired,
    StoreClosed,
)
from .refs import DEFAULT_TENANT, Reference, TransferMode

__all__ = [
    "DEFAULT_STORE_CONFIG",
    "Allocation",
    "Clock",
    "LoopClock",
    "ObjectStore",
    "Pull",
    "StoreConfig",
    "StoreStats",
    "StoredObject",
]


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Where a store reads the time and sets its timers (expiry, trimming idle buffers).
    Tests give it one they advance by hand, rather than sleeping through real TTLs."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch, as references carry their expiry."""
        ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer: ...


class LoopClock:
    """The real clock: ``time.time()`` and the running event loop's timers."""

    def time(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Limits of one object store. Every field has a default meant for one sidecar."""

    quota_bytes: int = 1 << 30
    put_timeout: float = 10.0  # how long a put waits for room before QuotaExceeded
    default_ttl: float = 60.0
    max_ttl: float = 24 * 3600.0
    pull_wait: float = 30.0  # how long a pull waits for an in-flight pull of the last budget
    tombstones: int = 65536  # recently gone ids remembered, to say *why* a pull finds nothing
    pool: PoolLimits = DEFAULT_POOL_LIMITS
    # Objects this big that allow more than one pull are sealed when published: same-host
    # receivers then map the memfd itself rather than each copying a lent one (256 MiB:
    # ~25 ms less each, and no copy held per receiver). A pull-once object stays unsealed:
    # lent, its warm buffer returns to the pool, where a sealed one would leave it for good
    # (its successor costs fresh pages, ~95 ms per 256 MiB here).
    seal_from: int | None = 64 << 20


DEFAULT_STORE_CONFIG = StoreConfig()


@dataclass(slots=True)
class StoreStats:
    """Counters of one store (gauges first, then totals since start)."""

    bytes_held: int = 0
    objects: int = 0
    bytes_reserved: int = 0  # of the quota: live objects, and puts and rooms in progress
    puts: int = 0
    pulls: int = 0
    expiries: int = 0
    releases: int = 0
    rejects: int = 0
    quota_waits: int = 0
    quota_timeouts: int = 0


@dataclass(eq=False, slots=True)
class StoredObject:
    """One live object. Its bytes are in ``buffer``; never write them after publishing."""

    id: bytes
    size: int
    checksum: int
    tenant: str
    expires_at: float  # wall clock, as in references
    pulls_left: int | None  # None: unlimited until expiry
    buffer: Buffer
    budget: int = 0  # the pulls it allowed when made (0 with pulls_left None: unlimited)
    unconfirmed: int = 0  # hand-overs never confirmed, forgiven so far
    readers: int = 0  # pulls in flight
    freed: bool = False
    _timer: Timer | None = None
    _waiters: list[asyncio.Future[None]] = field(default_factory=list)

    @property
    def object_hex(self) -> str:
        return self.id.hex()

    def reference(self, source: str) -> Reference:
        """The reference for this object, served from ``source`` (host:port), ready to seal."""
        return Reference(
            object_id=self.id,
            source=source,
            size=self.size,
            checksum=self.checksum,
            expires_at=self.expires_at,
            tenant=self.tenant,
            mode=TransferMode.XDT,
        )

    def _available(self) -> bool:
        return self.pulls_left is None or self.pulls_left > self.readers

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()


class Allocation:
    """Room for one object, reserved within the quota; fill :attr:`buffer`, then publish."""

    def __init__(
        self,
        store: ObjectStore,
        buffer: Buffer,
        size: int,
        tenant: str,
        pulls: int | None,
        ttl: float,
    ) -> None:
        self._store = store
        self.buffer = buffer
        self.size = size
        self._tenant, self._pulls, self._ttl = tenant, pulls, ttl
        self._done = False

    def writable(self) -> memoryview:
        """The object's bytes, writable until :meth:`publish`."""
        return self.buffer.writable()[: self.size]

    def publish(self) -> StoredObject:
        """Freeze the bytes, start the expiry clock, and make the object pullable."""
        if self._done:
            raise RuntimeError("allocation already published or aborted")
        self._done = True
        self.buffer.size = self.size
        return self._store._publish(self.buffer, self._tenant, self._pulls, self._ttl)

    def abort(self) -> None:
        """Give the room back without publishing."""
        if not self._done:
            self._done = True
            self._store._unreserve(self.buffer, self.size)


class Pull:
    """One pull in flight: holds the buffer. :meth:`complete` counts it; :meth:`abort` does
    not, unless ``handed_over`` (every byte went out, no confirmation came) and the object has
    forgiven as many of those as its budget allows (see the module docstring)."""

    __slots__ = ("_done", "_store", "completed", "object")

    def __init__(self, store: ObjectStore, obj: StoredObject) -> None:
        self._store = store
        self.object = obj
        self._done = False
        self.completed = False

    def complete(self) -> None:
        if not self._done:
            self._done = True
            self.completed = True
            self._store._finish_pull(self.object, completed=True)

    def abort(self, *, handed_over: bool = False) -> None:
        if not self._done:
            self._done = True
            obj = self.object
            if handed_over and obj.pulls_left is not None:
                if obj.unconfirmed < obj.budget:
                    obj.unconfirmed += 1  # forgiven: perhaps its receiver died
                else:
                    self.completed = True  # no more forgiving: it counts
                    self._store._finish_pull(obj, completed=True)
                    return
            self._store._finish_pull(obj, completed=False)


_GONE_EXHAUSTED, _GONE_EXPIRED, _GONE_RELEASED = "exhausted", "expired", "released"


class ObjectStore:
    """The objects one sidecar holds. See the module docstring for the life of an object."""

    def __init__(
        self, config: StoreConfig = DEFAULT_STORE_CONFIG, *, clock: Clock | None = None
    ) -> None:
        self.config = config
        self.clock = LoopClock() if clock is None else clock
        self._counters = StoreStats()  # every field but the derived `objects`, `bytes_reserved`
        self.pool = BufferPool(config.pool, name="xdt-object")
        self._objects: dict[bytes, StoredObject] = {}
        self._gone: collections.OrderedDict[bytes, tuple[str, float]] = collections.OrderedDict()
        self._reserved = 0  # bytes of allocations and live objects (and ones still being read)
        self._quota_waiters: collections.deque[tuple[int, asyncio.Future[None]]] = (
            collections.deque()
        )
        self._empty = asyncio.Event()
        self._empty.set()
        self._closed = False
        self._trim_timer: Timer | None = None
        # Told True when the store starts holding objects and False when it holds none again
        # (the sidecar's keep-alive clock: an instance that holds objects must stay up).
        self.on_holding: Callable[[bool], None] | None = None

    # -- putting -----------------------------------------------------------------------------

    async def allocate(
        self,
        size: int,
        *,
        tenant: str = DEFAULT_TENANT,
        pulls: int | None = 1,
        ttl: float | None = None,
        timeout: float | None = None,
        populate: bool = True,
    ) -> Allocation:
        """Reserve room for ``size`` bytes, waiting up to ``timeout`` for the quota.

        ``populate=False``: a new buffer's pages are made as its bytes are written — for bytes
        that arrive slowly from an untrusted sender, whose declared size must cost quota, not
        memory, until they come."""
        ttl = await self._admit(size, pulls, ttl, timeout)
        try:
            buffer = self.pool.acquire(size, populate=populate)
        except BaseException:
            self._unreserve(None, size)
            raise
        return Allocation(self, buffer, size, tenant, pulls, ttl)

    async def adopt(
        self,
        buffer: Buffer,
        *,
        tenant: str = DEFAULT_TENANT,
        pulls: int | None = 1,
        ttl: float | None = None,
        timeout: float | None = None,
    ) -> StoredObject:
        """Publish a buffer that is already filled — a sealed memfd a local function passed —
        without copying it. Takes ownership of ``buffer`` (closed on failure too)."""
        try:
            ttl = await self._admit(buffer.size, pulls, ttl, timeout)
        except BaseException:
            buffer.close()
            raise
        return self._publish(buffer, tenant, pulls, ttl)

    async def _admit(
        self, size: int, pulls: int | None, ttl: float | None, timeout: float | None
    ) -> float:
        """Check a new object's terms and reserve its room in the quota; its ttl."""
        self._check_open()
        ttl = self.config.default_ttl if ttl is None else ttl
        if size < 0:
            raise ValueError("size must be >= 0")
        if pulls is not None and pulls < 1:
            raise ValueError("pulls must be >= 1, or None for unlimited pulls until expiry")
        if not 0 < ttl <= self.config.max_ttl:
            raise ValueError(f"ttl must be > 0 and <= {self.config.max_ttl:g} seconds")
        await self._reserve(size, self.config.put_timeout if timeout is None else timeout)
        return ttl

    @contextlib.asynccontextmanager
    async def room(self, size: int, *, timeout: float | None = None) -> AsyncIterator[None]:
        """Hold ``size`` bytes of the quota while the block runs, for memory the store answers
        for without holding it as an object (a download the gateway streams): waits for room
        as a put does, then :class:`~xdt.QuotaExceeded`."""
        self._check_open()
        await self._reserve(size, self.config.put_timeout if timeout is None else timeout)
        try:
            yield
        finally:
            self._unreserve(None, size)

    async def put(
        self,
        data: bytes | bytearray | memoryview,
        *,
        tenant: str = DEFAULT_TENANT,
        pulls: int | None = 1,
        ttl: float | None = None,
        timeout: float | None = None,
    ) -> StoredObject:
        """Copy ``data`` into a new object. See :meth:`allocate` for the arguments."""
        view = memoryview(data).cast("B")
        allocation = await self.allocate(
            view.nbytes, tenant=tenant, pulls=pulls, ttl=ttl, timeout=timeout
        )
        try:
            allocation.writable()[:] = view
        except BaseException:
            allocation.abort()
            raise
        return allocation.publish()

    # -- pulling -----------------------------------------------------------------------------

    def get(self, object_id: bytes) -> StoredObject:
        """The live object, or the error that says why there is none."""
        obj = self._objects.get(object_id)
        if obj is None:
            self._counters.rejects += 1
            raise self._gone_error(object_id)
        return obj

    async def begin_pull(self, object_id: bytes) -> Pull:
        """Start a pull. If every remaining pull is in flight elsewhere, wait for one of them to
        finish (it may fail and hand its pull back) for at most ``config.pull_wait`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.pull_wait
        while True:
            obj = self.get(object_id)
            if obj._available():
                obj.readers += 1
                return Pull(self, obj)
            waiter = loop.create_future()
            obj._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, max(0.0, deadline - loop.time()))
            except TimeoutError:
                self._counters.rejects += 1
                raise PullBudgetExhausted(
                    "every pull the object allows is in flight; none finished within the wait"
                ) from None

    def _finish_pull(self, obj: StoredObject, *, completed: bool) -> None:
        obj.readers -= 1
        live = self._objects.get(obj.id) is obj
        if completed:
            self._counters.pulls += 1
            if obj.pulls_left is not None:
                obj.pulls_left -= 1
                if obj.pulls_left == 0 and live:
                    self._remove(obj, _GONE_EXHAUSTED)  # frees the buffer, wakes waiters
                    return
        if not live and obj.readers == 0:
            self._free_buffer(obj)  # removed while this pull was in flight
        obj._wake()

    # -- ending ------------------------------------------------------------------------------

    def release(self, object_id: bytes) -> bool:
        """Free an object now (pulls in flight finish first). False if it was not live."""
        obj = self._objects.get(object_id)
        if obj is None:
            return False
        self._counters.releases += 1
        self._remove(obj, _GONE_RELEASED)
        return True

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until no live object remains. True if drained, False on timeout."""
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Free everything and refuse further puts. Waiting puts get :class:`StoreClosed`."""
        if self._closed:
            return
        self._closed = True
        for obj in list(self._objects.values()):
            self._remove(obj, _GONE_RELEASED)
        while self._quota_waiters:
            _, waiter = self._quota_waiters.popleft()
            if not waiter.done():
                waiter.set_exception(StoreClosed("the object store closed while a put waited"))
        if self._trim_timer is not None:
            self._trim_timer.cancel()
        self.pool.close()

    @property
    def stats(self) -> StoreStats:
        """A snapshot of the store's counters."""
        return dataclasses.replace(
            self._counters, objects=len(self._objects), bytes_reserved=self._reserved
        )

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, object_id: object) -> bool:
        return object_id in self._objects

    # -- internals ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the object store is closed (the sidecar is shutting down)")

    def _publish(self, buffer: Buffer, tenant: str, pulls: int | None, ttl: float) -> StoredObject:
        self._check_open()
        obj = StoredObject(
            id=os.urandom(16),
            size=buffer.size,
            # A maker's claim is taken (a sealed memfd from the function, whose pages are not
            # mapped here: hashing them would cost a page fault each). A wrong claim fails
            # only that function's own transfers' checks.
            checksum=checksum(buffer.view()) if buffer.checksum is None else buffer.checksum,
            tenant=tenant,
            expires_at=self.clock.time() + ttl,
            pulls_left=pulls,
            buffer=buffer,
            budget=pulls or 0,
        )
        seal_from = self.config.seal_from
        if seal_from is not None and obj.size >= seal_from and pulls != 1 and not buffer.lent:
            # After the checksum, read from the warm mapping. Refused (a view of ours is out):
            # it stays as it was, lent to same-host sidecars.
            with contextlib.suppress(OSError):
                buffer.seal()
        obj._timer = self.clock.call_later(ttl, functools.partial(self._expire, obj))
        self._objects[obj.id] = obj
        if len(self._objects) == 1 and self.on_holding is not None:
            self.on_holding(True)
        self._empty.clear()
        self._counters.puts += 1
        self._counters.bytes_held += obj.size
        return obj

    def _expire(self, obj: StoredObject) -> None:
        if self._objects.get(obj.id) is obj:
            self._counters.expiries += 1
            self._remove(obj, _GONE_EXPIRED)

    def _remove(self, obj: StoredObject, why: str) -> None:
        """Make the object unpullable; its buffer goes now, or when its last reader finishes."""
        del self._objects[obj.id]
        if obj._timer is not None:
            obj._timer.cancel()
        self._gone[obj.id] = (why, obj.expires_at)
        while len(self._gone) > self.config.tombstones:
            self._gone.popitem(last=False)
        if not self._objects:
            self._empty.set()
            if self.on_holding is not None:
                self.on_holding(False)
        if obj.readers == 0:
            self._free_buffer(obj)
        obj._wake()

    def _free_buffer(self, obj: StoredObject) -> None:
        if obj.freed:
            return
        obj.freed = True
        self._counters.bytes_held -= obj.size
        self._unreserve(obj.buffer, obj.size)

    def _gone_error(self, object_id: bytes) -> Exception:
        why, expires_at = self._gone.get(object_id, ("", 0.0))
        if why == _GONE_EXHAUSTED:
            return PullBudgetExhausted("every pull the object allowed has been made")
        if why == _GONE_EXPIRED or (why and self.clock.time() >= expires_at):
            return ReferenceExpired("the object expired and was freed")
        if why == _GONE_RELEASED:
            return ObjectNotFound("the object was released by its owner")
        return ObjectNotFound(
            "the object is not held here (it never was, or it is long gone; "
            "was the source sidecar restarted?)"
        )

    async def _reserve(self, size: int, timeout: float) -> None:
        if size > self.config.quota_bytes:
            self._counters.quota_timeouts += 1
            raise QuotaExceeded(
                f"{format_size(size)} can never fit this store's quota of "
                f"{format_size(self.config.quota_bytes)}; raise the quota or split the object"
            )
        if not self._quota_waiters and self._reserved + size <= self.config.quota_bytes:
            self._reserved += size
            return
        self._counters.quota_waits += 1
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, waiter)
        self._quota_waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            if waiter.done():
                if waiter.exception() is not None:
                    raise waiter.exception() from None  # type: ignore[misc]
                return  # granted just as the wait ran out: keep it
            self._quota_waiters.remove(entry)
            waiter.cancel()
            self._counters.quota_timeouts += 1
            self._grant_waiting()  # a big waiter at the head may have held smaller ones back
            raise QuotaExceeded(
                f"no room for {format_size(size)} within the quota of "
                f"{format_size(self.config.quota_bytes)} after waiting {timeout:g}s "
                f"({format_size(self._counters.bytes_held)} held by {len(self._objects)} objects); "
                "release or pull objects sooner, shorten their ttl, or raise the quota"
            ) from None
        except BaseException:
            if entry in self._quota_waiters:
                self._quota_waiters.remove(entry)
            elif waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._unreserve(None, size)
            raise

    def _unreserve(self, buffer: Buffer | None, size: int) -> None:
        self._reserved -= size
        if buffer is not None:
            self.pool.release(buffer)
            self._schedule_trim()
        self._grant_waiting()

    def _grant_waiting(self) -> None:
        while self._quota_waiters:
            size, waiter = self._quota_waiters[0]
            if self._reserved + size > self.config.quota_bytes:
                return
            self._quota_waiters.popleft()
            self._reserved += size
            waiter.set_result(None)

    def _schedule_trim(self) -> None:
        # Idle buffers give their memory back after pool.idle_seconds; one timer, no polling.
        if self._trim_timer is None and self.pool.idle_bytes:
            self._trim_timer = self.clock.call_later(self.config.pool.idle_seconds, self._trim)

    def _trim(self) -> None:
        self._trim_timer = None
        self.pool.trim()
        self._schedule_trim()
