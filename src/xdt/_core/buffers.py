"""memfd-backed buffers and the pool that keeps them warm.

Every object's bytes live in a memfd so that they can be mapped, streamed, and handed to
another local process as a file descriptor without a copy. Fresh pages cost more than copies
(256 MiB here: a warm copy 23 ms; into a fresh mapping 200 ms of page faults, 150 ms with
``MAP_POPULATE``; ``pwrite`` into a fresh memfd 85 ms), so buffers are pooled by size class and
handed out again warm, and a pool can make one *ahead* of need, off the event loop
(:meth:`BufferPool.replenish`): a buffer given away sealed never comes back, so its successor
is made while nobody waits.

A buffer that has been *sealed* (``F_SEAL_WRITE``, to be shared read-only with another process)
can never be written again and so never returns to the pool.

A buffer may also be a read-only window on a memfd another process *lends* us
(:meth:`Buffer.over_lease`; the mappings are kept by :mod:`xdt._core.loans`), or a memfd
written once and sealed to be *given* away (:func:`sealed_buffer`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import fcntl
import mmap
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from .._util.procfs import available_memory
from .checksum import checksum

__all__ = [
    "DEFAULT_POOL_LIMITS",
    "FIXED_SIZE_SEALS",
    "PAGE",
    "READ_ONLY_SEALS",
    "Buffer",
    "BufferPool",
    "Lease",
    "PoolLimits",
    "as_bytes",
    "sealed_buffer",
    "sealed_copy",
    "size_class",
]

PAGE = mmap.PAGESIZE
_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
READ_ONLY_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
FIXED_SIZE_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW  # writable, but never truncated


class Lease(Protocol):
    """A read-only mapping of a lent memfd that someone else keeps between loans."""

    @property
    def map(self) -> mmap.mmap: ...

    def give_back(self) -> None: ...


_HUGE = 2 << 20  # a huge page: smaller mappings are not worth the advice
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux 5.14
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


def _map_populated(fd: int, capacity: int, *, populate: bool = True) -> mmap.mmap:
    """A shared writable mapping of the memfd with every page present (``populate``), or
    with pages made as they are first written.

    A mapping of 2 MiB or more asks for huge pages (``MADV_HUGEPAGE``) before its pages are
    made: where the host gives memfds huge pages on request (``shmem_enabled`` ``advise``) a
    fresh 256 MiB buffer then costs ~35 ms here instead of ~95 ms, and writing it ~28 ms
    instead of ~53 ms (fewer TLB misses). Elsewhere the advice is ignored. It is asked
    unconditionally: a sandboxed function cannot read the host's setting."""
    flags = mmap.MAP_SHARED | (mmap.MAP_POPULATE if populate else 0)
    if capacity < _HUGE:
        return mmap.mmap(fd, capacity, flags=flags)
    mapping = mmap.mmap(fd, capacity, flags=mmap.MAP_SHARED)
    try:
        mapping.madvise(mmap.MADV_HUGEPAGE)
        if populate:
            mapping.madvise(_MADV_POPULATE_WRITE)
    except OSError:  # a kernel without MADV_POPULATE_WRITE (< 5.14): populate at mapping
        mapping.close()
        return mmap.mmap(fd, capacity, flags=flags)
    return mapping


def size_class(size: int) -> int:
    """The capacity a buffer for ``size`` bytes gets: 8 classes per doubling, whole pages."""
    if size <= PAGE:
        return PAGE
    step = max(PAGE, 1 << (size.bit_length() - 4))
    return -(-size // step) * step


class Buffer:
    """A memfd of ``capacity`` bytes, mapped shared and writable, holding ``size`` bytes.

    Its pages are made at once (``populate``: one call, the fastest way to fresh pages), or as
    they are first written — for bytes that arrive slowly from someone untrusted, whose
    declared size must cost nothing before the bytes do."""

    __slots__ = (
        "_loan",
        "_map",
        "_view",
        "capacity",
        "checksum",
        "fd",
        "idle_since",
        "lent",
        "made_by",
        "retired",
        "sealed",
        "size",
    )

    def __init__(self, capacity: int, *, name: str = "xdt-object", populate: bool = True) -> None:
        self.capacity = capacity
        self.size = 0
        self.idle_since = 0.0
        self.sealed = False
        self.lent = False  # another process's memfd, mapped for a moment: copy, never keep
        # The XXH3 of the bytes as its maker claims it (see xdt.channel.sealed_buffer); None
        # when whoever needs it must compute it.
        self.checksum: int | None = None
        # Lent to another process that may still be reading it: never reused, only closed.
        self.retired = False
        self.made_by: BufferPool | None = None  # the pool that made it, which may replace it
        self._loan: Lease | None = None
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, capacity)
            self._map: mmap.mmap | None = _map_populated(self.fd, capacity, populate=populate)
        except BaseException:
            os.close(self.fd)
            raise
        self._view: memoryview | None = memoryview(self._map)

    @classmethod
    def from_sealed_fd(cls, fd: int, size: int) -> Buffer:
        """Adopt a memfd another process passed us, after checking it is sealed read-only and
        holds exactly ``size`` bytes. Takes ownership of ``fd`` (closed on failure too)."""
        return cls._from_fd(fd, size)

    @classmethod
    def over_lease(cls, lease: Lease | None, size: int) -> Buffer:
        """A read-only buffer over the first ``size`` bytes of a lent memfd's mapping, kept
        by whoever made ``lease`` (None for an empty one); closing it gives the lease back.
        Its contents may still change (the lender reuses it): copy them out before answering.
        Made by :meth:`xdt._core.loans.Loans.borrow`."""
        buffer = cls.__new__(cls)
        buffer.capacity = buffer.size = size
        buffer.idle_since, buffer.sealed, buffer.lent = 0.0, False, True
        buffer._map, buffer._loan, buffer.fd, buffer.checksum = None, lease, -1, None
        buffer.retired, buffer.made_by = False, None
        buffer._view = memoryview(b"") if lease is None else memoryview(lease.map)
        return buffer

    @classmethod
    def _from_fd(cls, fd: int, size: int) -> Buffer:
        buffer = cls.__new__(cls)
        buffer.fd, buffer.capacity, buffer.size = fd, size, size
        buffer.idle_since, buffer.sealed, buffer.lent = 0.0, True, False
        buffer._map, buffer._view, buffer._loan, buffer.checksum = None, None, None, None
        buffer.retired, buffer.made_by = False, None
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            held = os.fstat(fd).st_size
            if seals & READ_ONLY_SEALS != READ_ONLY_SEALS:
                raise ValueError("the memfd is not sealed read-only")
            if held != size:
                raise ValueError(f"the memfd holds {held} bytes, not {size}")
            if size:  # no MAP_POPULATE: a peer's sparse memfd must not cost us its pages
                buffer._map = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
                buffer._view = memoryview(buffer._map)
        except BaseException:
            buffer.close()
            raise
        return buffer

    def fix_size(self) -> None:
        """Seal the memfd against shrinking and growing (it stays writable): it can then be
        lent to another process, which may map it safely, again and again."""
        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, FIXED_SIZE_SEALS)

    @property
    def closed(self) -> bool:
        return self.fd < 0 and self._loan is None

    def writable(self) -> memoryview:
        """The whole capacity, writable. Only before the object is published."""
        if self._view is None or self.sealed or self.lent:
            raise ValueError("buffer is sealed, lent to us, or closed")
        return self._view

    def view(self) -> memoryview:
        """The ``size`` bytes held, read-only."""
        if self._view is None:
            if self.size == 0 and not self.closed:
                return memoryview(b"")
            raise ValueError("buffer is closed")
        return self._view[: self.size].toreadonly()

    def populate(self) -> None:
        """About to read every byte of a sealed memfd another process made: map its pages in
        one call rather than one fault at a time as the reading reaches them (256 MiB: ~9 ms
        against ~14 ms here). Not done on adoption: a sidecar passes most memfds on unread."""
        if self.sealed and self._map is not None and self.size >= _HUGE:
            with contextlib.suppress(OSError):
                self._map.madvise(_MADV_POPULATE_READ)

    def fill(self, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` in and set ``size``."""
        source = memoryview(data).cast("B")
        size = source.nbytes
        if size > self.capacity:
            raise ValueError(f"{size} bytes do not fit a buffer of {self.capacity}")
        self.writable()[:size] = source
        self.size = size

    def seal(self) -> None:
        """Make the memfd immutable (shrunk to ``size``) so its fd can be shared read-only.

        The writable mapping is replaced by a read-only one; the buffer never returns to a
        pool. Raises :class:`OSError` (EBUSY), leaving the buffer as it was, while someone
        still holds a view of it.
        """
        if self.sealed:
            return
        lent_before = fcntl.fcntl(self.fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SHRINK
        if lent_before and os.fstat(self.fd).st_size != self.size:
            # fix_size() for a loan: it can no longer be shrunk to its size, and the bytes
            # past it (older objects') must not go to whoever is given it.
            raise OSError(errno.EPERM, "a buffer lent at another size cannot be sealed")
        try:
            self._unmap()
        except BufferError:
            raise OSError(errno.EBUSY, "a view of the buffer is still held") from None
        try:
            os.ftruncate(self.fd, self.size)
            # EBUSY while any shared mapping of a writable descriptor exists (a peer's too).
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, _SEALS)
        except OSError:
            # Left as it was: its full size and its writable mapping back.
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.capacity)
            self._map = mmap.mmap(self.fd, os.fstat(self.fd).st_size, flags=mmap.MAP_SHARED)
            self._view = memoryview(self._map)
            raise
        self.sealed = True
        if self.size:
            self._map = mmap.mmap(self.fd, self.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            self._view = memoryview(self._map)

    def __del__(self) -> None:
        # A loan dropped without close() would pin its mapping (and the lender's pages) for
        # good: give it back here. Ordinary buffers need nothing: their mmap unmaps itself.
        loan = getattr(self, "_loan", None)
        if loan is not None:
            with contextlib.suppress(Exception):
                loan.give_back()

    def close(self) -> None:
        if self._loan is not None:  # the mapping stays with its lease keeper for the next loan
            self._loan.give_back()
            self._loan = self._view = None
            return
        if self.fd < 0:
            return
        # If someone still holds a view, the mapping goes when they let go.
        with contextlib.suppress(BufferError):
            self._unmap()
        self._map = self._view = None
        os.close(self.fd)
        self.fd = -1

    def _unmap(self) -> None:
        """Drop the mapping. BufferError, with the buffer left as it was, while a view is out."""
        if self._map is None:
            return
        if self._view is not None:
            self._view.release()
        try:
            self._map.close()
        except BufferError:
            self._view = memoryview(self._map)
            raise
        self._map = self._view = None


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """What a pool keeps warm: at most ``max_idle_bytes`` of idle buffers, each idle at most
    ``idle_seconds``, none bigger than ``max_buffer_bytes``.

    Big buffers (over ``big_buffer_bytes``) are kept, or made ahead, only while memory is
    plentiful: while the host (``MemAvailable``) would still have ``min_available_bytes`` free.
    Under less, they are given back at once, and a trim gives back the idle ones. A warm
    256 MiB buffer saves ~150 ms of page faults per transfer; it is not worth a host that swaps.
    """

    max_idle_bytes: int = 512 << 20
    idle_seconds: float = 30.0
    max_buffer_bytes: int = 512 << 20
    big_buffer_bytes: int = 64 << 20
    min_available_bytes: int = 1 << 30
    # Smaller buffers are not made ahead: fresh, they cost less than the hand-off to a thread.
    make_ahead_from: int = 1 << 20


DEFAULT_POOL_LIMITS = PoolLimits()


@dataclass(slots=True)
class PoolStats:
    """What a pool did (totals since it was made) and holds (``idle_bytes``, ``making_bytes``)."""

    created: int = 0  # buffers made when asked for (nothing idle of the size)
    reused: int = 0  # asks served by an idle buffer (warm, or made ahead)
    made_ahead: int = 0  # buffers made by replenish(), off the caller's path
    idle_bytes: int = 0
    making_bytes: int = 0
    trimmed_idle_bytes: int = 0  # given back for being idle too long (or at close)
    trimmed_pressure_bytes: int = 0  # given back, or not kept, for lack of free memory
    evicted_bytes: int = 0  # given back to make room under max_idle_bytes


# Buffers made ahead are made here, one at a time: it is page allocation, which a second
# thread does not speed up, and it must not take the event loop's core from it.
_makers = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="xdt-reserve")


class BufferPool:
    """Warm buffers by size class, and buffers made ahead of need (:meth:`replenish`).

    Used from one event loop, but thread-safe: buffers made ahead arrive from a worker thread,
    and the SDK of a plain ``def`` handler may call from its thread. ``available`` reads the
    host's free memory (tests pass their own).
    """

    def __init__(
        self,
        limits: PoolLimits = DEFAULT_POOL_LIMITS,
        *,
        name: str = "xdt",
        available: Callable[[], int | None] = available_memory,
    ) -> None:
        self.limits = limits
        self._name = name
        self._available = available
        self._idle: dict[int, list[Buffer]] = {}
        self._making: dict[int, concurrent.futures.Future[None]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.stats = PoolStats()

    @property
    def idle_bytes(self) -> int:
        return self.stats.idle_bytes

    @property
    def created(self) -> int:
        return self.stats.created

    @property
    def reused(self) -> int:
        return self.stats.reused

    def acquire(self, size: int, *, populate: bool = True) -> Buffer:
        """A buffer with room for ``size`` bytes: an idle one (or the one being made ahead),
        else a new one (``populate``: see :class:`Buffer`)."""
        buffer = self.take_idle(size)
        if buffer is None:
            buffer = self._make(size_class(size), populate=populate)
            self.stats.created += 1
        buffer.size = 0
        buffer.checksum = None
        return buffer

    def take_idle(self, size: int) -> Buffer | None:
        """An idle buffer with room for ``size`` bytes (waiting for one being made: making
        another beside it would cost as long and hold twice the memory), or None: never
        makes one itself."""
        capacity = size_class(size)
        with self._lock:
            buffer = self._take_idle(capacity)
            making = self._making.get(capacity) if buffer is None else None
        if making is not None:
            making.result()  # never raises: a failed make just leaves nothing idle
            with self._lock:
                buffer = self._take_idle(capacity)
        if buffer is not None:
            self.stats.reused += 1
            buffer.size = 0
            buffer.checksum = None
        return buffer

    def _make(self, capacity: int, *, populate: bool = True) -> Buffer:
        buffer = Buffer(capacity, name=self._name, populate=populate)
        buffer.made_by = self
        return buffer

    def _take_idle(self, capacity: int) -> Buffer | None:
        idle = self._idle.get(capacity)
        if not idle:
            return None
        buffer = idle.pop()
        if not idle:
            del self._idle[capacity]
        self.stats.idle_bytes -= capacity
        return buffer

    def release(self, buffer: Buffer) -> None:
        """Take a buffer back; keep it warm if it is reusable and there is room. A sealed one
        this pool made is closed and replaced (:meth:`replenish`): it was given away whole."""
        if buffer.sealed or buffer.closed or buffer.lent or buffer.retired:
            made_here, capacity = buffer.made_by is self and buffer.sealed, buffer.capacity
            buffer.close()
            if made_here:
                self.replenish(capacity)
            return
        if not self._keeps(buffer.capacity, new=False):
            if buffer.capacity <= min(self.limits.max_buffer_bytes, self.limits.max_idle_bytes):
                self.stats.trimmed_pressure_bytes += buffer.capacity  # kept but for memory
            buffer.close()
            return
        self.trim()
        with self._lock:
            # Room is made by closing the buffers idle the longest, whatever their size: the
            # one just used is the likeliest to be wanted again (closing it instead let a mix
            # of small payloads keep a 64 MiB one from ever staying warm).
            while self._idle and self._held() + buffer.capacity > self.limits.max_idle_bytes:
                self.stats.evicted_bytes += self._close_oldest()
            self._keep(buffer)

    def replenish(self, capacity: int) -> bool:
        """Make a buffer of ``capacity`` bytes ahead of need, on a worker thread, unless one
        is idle or being made, it would not be kept, or there is no room. True if started.

        Called once a buffer of the pool's has been given away for good (sealed), when its
        memory is likely gone: not before, so that a transfer never holds its payload and the
        next one's buffer at once."""
        capacity = size_class(capacity)
        if capacity < self.limits.make_ahead_from or not self._keeps(capacity, new=True):
            return False
        with self._lock:
            if self._closed or capacity in self._making or self._idle.get(capacity):
                return False
            if self._held() + capacity > self.limits.max_idle_bytes:
                return False
            made = self._making[capacity] = concurrent.futures.Future()
            self.stats.making_bytes += capacity
        _makers.submit(self._make_ahead, capacity, made)
        return True

    def _make_ahead(self, capacity: int, made: concurrent.futures.Future[None]) -> None:
        try:
            buffer: Buffer | None = self._make(capacity)
        except OSError:
            buffer = None  # out of memory or descriptors: the next acquire makes its own
        with self._lock:
            del self._making[capacity]
            self.stats.making_bytes -= capacity
            if buffer is not None and self._closed:
                buffer.close()
            elif buffer is not None:
                self._keep(buffer)
                self.stats.made_ahead += 1
        made.set_result(None)

    def _keep(self, buffer: Buffer) -> None:
        buffer.idle_since = time.monotonic()
        self._idle.setdefault(buffer.capacity, []).append(buffer)
        self.stats.idle_bytes += buffer.capacity

    def _held(self) -> int:
        return self.stats.idle_bytes + self.stats.making_bytes

    def _keeps(self, capacity: int, *, new: bool) -> bool:
        """Whether a buffer of ``capacity`` may stay (or, ``new``, be made) idle here."""
        limits = self.limits
        if capacity > min(limits.max_buffer_bytes, limits.max_idle_bytes):
            return False
        return capacity <= limits.big_buffer_bytes or self._plentiful(capacity if new else 0)

    def _plentiful(self, more: int) -> bool:
        available = self._available()
        return available is None or available - more >= self.limits.min_available_bytes

    def _close_oldest(self) -> int:
        capacity = min(self._idle, key=lambda c: self._idle[c][0].idle_since)
        oldest = self._idle[capacity].pop(0)
        if not self._idle[capacity]:
            del self._idle[capacity]
        self.stats.idle_bytes -= capacity
        oldest.close()
        return capacity

    def trim(self, *, everything: bool = False) -> int:
        """Close buffers idle longer than the limit (or all), and the big ones while memory
        is short; returns the bytes given back."""
        cutoff = time.monotonic() - self.limits.idle_seconds
        pressed = any(c > self.limits.big_buffer_bytes for c in self._idle) and not (
            self._plentiful(0)
        )
        freed = 0
        with self._lock:
            for capacity, buffers in list(self._idle.items()):
                big = capacity > self.limits.big_buffer_bytes
                if everything or (big and pressed):
                    keep = []
                else:
                    keep = [b for b in buffers if b.idle_since > cutoff]
                for buffer in buffers[: len(buffers) - len(keep)]:  # oldest first
                    buffer.close()
                    freed += capacity
                    if big and pressed and not everything:
                        self.stats.trimmed_pressure_bytes += capacity
                    else:
                        self.stats.trimmed_idle_bytes += capacity
                if keep:
                    self._idle[capacity] = keep
                else:
                    del self._idle[capacity]
            self.stats.idle_bytes -= freed
        return freed

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.trim(everything=True)


def as_bytes(payload: bytes | Buffer) -> bytes:
    """A payload as bytes: a memfd's contents are copied out, and the memfd closed.

    Copied through the mapping, not read(2): 256 MiB of a given memfd into a warm heap took
    36 ms so against 56 ms with pread here (the kernel copies a page at a time)."""
    if not isinstance(payload, Buffer):
        return payload
    try:
        payload.populate()
        return payload.view().tobytes()
    finally:
        payload.close()


def sealed_copy(data: bytes | bytearray | memoryview, pool: BufferPool) -> Buffer:
    """What :func:`sealed_buffer` makes, in an idle buffer of ``pool``'s if it has one (warm,
    or made ahead): no fresh page is touched on the way (256 MiB: 24 ms of copy against 85 ms
    of pwrite into fresh pages). Without one, :func:`sealed_buffer`'s fresh memfd (pwrite is
    the cheapest way into fresh pages). Either way the result is marked as the pool's, so
    that once it has been given away the pool makes its successor
    (:meth:`BufferPool.replenish`)."""
    view = memoryview(data).cast("B")
    buffer = pool.take_idle(view.nbytes)
    if buffer is None:
        made = sealed_buffer(view)
        made.made_by = pool
        return made

    def fill_and_seal() -> Buffer:
        try:
            buffer.fill(view)
            buffer.seal()
        except BaseException:
            pool.release(buffer)
            raise
        return buffer

    sealed, digest = _hashed_beside(view, fill_and_seal)
    sealed.checksum = digest
    return sealed


def sealed_buffer(data: bytes | bytearray | memoryview) -> Buffer:
    """A new memfd holding ``data``, sealed read-only: ready to pass to another process.

    Written with pwrite(2), not through a mapping: fresh pages cost less that way (64 MiB:
    ~26 ms against ~45 ms here), and this process never maps what it gives away. Its
    checksum is computed here, from the warm source, beside the write (XXH3 lets go of the
    GIL), and travels with it: the receiver, which has not mapped the pages, would pay a
    fault per page to hash them."""
    view = memoryview(data).cast("B")

    def write() -> Buffer:
        fd = os.memfd_create("xdt-local", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            written = 0
            while written < view.nbytes:
                written += os.pwrite(fd, view[written:], written)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, READ_ONLY_SEALS | fcntl.F_SEAL_SEAL)
        except BaseException:
            os.close(fd)
            raise
        return Buffer.from_sealed_fd(fd, view.nbytes)  # owns fd from here, even failing

    buffer, digest = _hashed_beside(view, write)
    buffer.checksum = digest
    return buffer


T = TypeVar("T")


def _hashed_beside(view: memoryview, write: Callable[[], T]) -> tuple[T, int]:
    """``write()``'s result and the checksum of ``view``, hashed on another thread while
    ``write`` copies it (both read the same warm source; XXH3 lets go of the GIL)."""
    hashing = _hasher().submit(checksum, view) if view.nbytes >= _HASH_BESIDE else None
    try:
        written = write()
    except BaseException:
        if hashing is not None and not hashing.cancel():
            hashing.exception()  # wait for it: the view must outlive the hash
        raise
    return written, checksum(view) if hashing is None else hashing.result()


_HASH_BESIDE = 8 << 20  # below this a thread hand-off costs more than it saves
_hashers: concurrent.futures.ThreadPoolExecutor | None = None


_hashers_lock = threading.Lock()


def _hasher() -> concurrent.futures.ThreadPoolExecutor:
    global _hashers
    with _hashers_lock:
        if _hashers is None:
            _hashers = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="xdt-hash")
        return _hashers
