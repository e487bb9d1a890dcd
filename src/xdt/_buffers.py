"""memfd-backed buffers and the pool that keeps them warm.

Every object's bytes live in a memfd so that they can be mapped, streamed, and handed to
another local process as a file descriptor without a copy. Fresh pages cost more than copies
(first-touch faults: writing 256 MiB into a fresh memfd takes ~0.8 s here, ~0.17 s when the
mapping is made with ``MAP_POPULATE``, ~0.02 s into a reused one), so buffers are pooled by size
class and handed out again warm.

A buffer that has been *sealed* (``F_SEAL_WRITE``, to be shared read-only with another process)
can never be written again and so never returns to the pool.

The other side of pooling is :class:`Loans`: a peer lends the same warm buffers again and
again, so their read-only mappings are kept here between loans. Mapping 64 MiB afresh costs
~7 ms of page faults — as much as copying it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import mmap
import os
import threading
import time
from dataclasses import dataclass

__all__ = [
    "DEFAULT_POOL_LIMITS",
    "LOANS",
    "Buffer",
    "BufferPool",
    "Loans",
    "PoolLimits",
    "size_class",
]

PAGE = mmap.PAGESIZE
_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
READ_ONLY_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
FIXED_SIZE_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW  # writable, but never truncated


def size_class(size: int) -> int:
    """The capacity a buffer for ``size`` bytes gets: 8 classes per doubling, whole pages."""
    if size <= PAGE:
        return PAGE
    step = max(PAGE, 1 << (size.bit_length() - 4))
    return -(-size // step) * step


class Buffer:
    """A memfd of ``capacity`` bytes, mapped shared and writable, holding ``size`` bytes."""

    __slots__ = (
        "_loan",
        "_map",
        "_view",
        "capacity",
        "checksum",
        "fd",
        "idle_since",
        "lent",
        "retired",
        "sealed",
        "size",
    )

    def __init__(self, capacity: int, *, name: str = "xdt-object") -> None:
        self.capacity = capacity
        self.size = 0
        self.idle_since = 0.0
        self.sealed = False
        self.lent = False  # another process's memfd, mapped for a moment: copy, never keep
        # The XXH3 of the bytes as its maker claims it (see xdt._local.sealed_buffer); None
        # when whoever needs it must compute it.
        self.checksum: int | None = None
        # Lent to another process that may still be reading it: never reused, only closed.
        self.retired = False
        self._loan: _Mapping | None = None
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, capacity)
            # MAP_POPULATE allocates every page in one call: ~5x faster than faulting them in.
            self._map: mmap.mmap | None = mmap.mmap(
                self.fd, capacity, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE
            )
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
    def from_lent_fd(cls, fd: int, size: int, loans: Loans | None = None) -> Buffer:
        """The first ``size`` bytes of a memfd another local process lends us (it keeps
        writing to it later), read-only, mapped through :data:`LOANS`. The memfd must be
        sealed against shrinking, so the lender cannot pull the pages from under us (SIGBUS);
        its contents may still change, so copy them out before answering. Takes ownership
        of ``fd``. Lenders of different trust (functions, peer sidecars) get ``Loans`` of
        their own."""
        return (LOANS if loans is None else loans).borrow(fd, size)

    @classmethod
    def _from_fd(cls, fd: int, size: int) -> Buffer:
        buffer = cls.__new__(cls)
        buffer.fd, buffer.capacity, buffer.size = fd, size, size
        buffer.idle_since, buffer.sealed, buffer.lent = 0.0, True, False
        buffer._map, buffer._view, buffer._loan, buffer.checksum = None, None, None, None
        buffer.retired = False
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
        try:
            self._unmap()
        except BufferError:
            raise OSError(errno.EBUSY, "a view of the buffer is still held") from None
        os.ftruncate(self.fd, self.size)
        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, _SEALS)
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
                loan.owner.give_back(loan)

    def close(self) -> None:
        if self._loan is not None:  # the mapping stays in its Loans for the next loan
            self._loan.owner.give_back(self._loan)
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
    """How many idle bytes a pool keeps warm, for how long, and the biggest buffer it keeps.

    Bigger payloads do not go through pools at all: a function gives them to its sidecar as
    one sealed memfd, written once (:func:`xdt._local.sealed_buffer`), which is the object
    and is passed on to the receiving function as it is. Fresh pages cost more than warm
    copies, but one such payload costs its size once more, not once per hop, and no process
    keeps hundreds of MiB warm and idle.
    """

    max_idle_bytes: int = 512 << 20
    idle_seconds: float = 30.0
    max_buffer_bytes: int = 64 << 20


DEFAULT_POOL_LIMITS = PoolLimits()


class BufferPool:
    """Warm buffers by size class. Not thread-safe: use it from one event loop."""

    def __init__(self, limits: PoolLimits = DEFAULT_POOL_LIMITS, *, name: str = "xdt") -> None:
        self.limits = limits
        self._name = name
        self._idle: dict[int, list[Buffer]] = {}
        self.idle_bytes = 0
        self.created = 0
        self.reused = 0

    def acquire(self, size: int) -> Buffer:
        """A buffer with room for ``size`` bytes, warm if one is idle."""
        capacity = size_class(size)
        idle = self._idle.get(capacity)
        if idle:
            buffer = idle.pop()
            self.idle_bytes -= capacity
            self.reused += 1
        else:
            buffer = Buffer(capacity, name=self._name)
            self.created += 1
        buffer.size = 0
        buffer.checksum = None
        return buffer

    def release(self, buffer: Buffer) -> None:
        """Take a buffer back; keep it warm if it is reusable and there is room."""
        if buffer.sealed or buffer.closed or buffer.lent or buffer.retired:
            buffer.close()
            return
        if buffer.capacity > min(self.limits.max_buffer_bytes, self.limits.max_idle_bytes):
            buffer.close()
            return
        self.trim()
        # Room is made by closing the buffers idle the longest, whatever their size: the one
        # just used is the likeliest to be wanted again (closing it instead let a mix of
        # small payloads keep a 64 MiB one from ever staying warm).
        while self.idle_bytes + buffer.capacity > self.limits.max_idle_bytes:
            self._close_oldest()
        buffer.idle_since = time.monotonic()
        self._idle.setdefault(buffer.capacity, []).append(buffer)
        self.idle_bytes += buffer.capacity

    def _close_oldest(self) -> None:
        capacity = min(self._idle, key=lambda c: self._idle[c][0].idle_since)
        oldest = self._idle[capacity].pop(0)
        if not self._idle[capacity]:
            del self._idle[capacity]
        self.idle_bytes -= capacity
        oldest.close()

    def trim(self, *, everything: bool = False) -> int:
        """Close buffers idle longer than the limit (or all); returns the bytes given back."""
        cutoff = time.monotonic() - self.limits.idle_seconds
        freed = 0
        for capacity, buffers in list(self._idle.items()):
            keep = [] if everything else [b for b in buffers if b.idle_since > cutoff]
            for buffer in buffers[: len(buffers) - len(keep)]:  # oldest first: they went idle first
                buffer.close()
                freed += capacity
            if keep:
                self._idle[capacity] = keep
            else:
                del self._idle[capacity]
        self.idle_bytes -= freed
        return freed

    def close(self) -> None:
        self.trim(everything=True)


@dataclass(eq=False, slots=True)
class _Mapping:
    owner: Loans
    map: mmap.mmap  # holds its own descriptor of the memfd
    length: int
    users: int = 0
    last_used: float = 0.0


class Loans:
    """Read-only mappings of memfds peers lend us, kept between loans (by inode: each loan
    comes as a new descriptor), so a lender's warm buffer costs no page faults here after the
    first loan. Bounded: at most ``max_bytes`` in ``max_count`` mappings, each idle at most
    ``idle_seconds``. Holding a mapping keeps the lender's memfd alive, which is why
    both bounds exist."""

    def __init__(
        self,
        max_bytes: int = 1 << 30,
        idle_seconds: float = 30.0,
        max_count: int = 64,
        max_kept: int = DEFAULT_POOL_LIMITS.max_buffer_bytes,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_count = max_count  # each mapping holds a descriptor
        # A mapping bigger than a pool keeps is unmapped once given back: its lender does
        # not reuse it, and keeping it would keep its pages alive here.
        self.max_kept = max_kept
        self.idle_seconds = idle_seconds
        self._mappings: dict[tuple[int, int], _Mapping] = {}  # by (device, inode); LRU order
        self.mapped_bytes = 0
        self.hits = 0
        self._lock = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def borrow(self, fd: int, size: int) -> Buffer:
        """A read-only Buffer over the first ``size`` bytes of the lent memfd ``fd``, which
        is taken over (kept open by the mapping, or closed). ValueError if the memfd is not
        sealed to a fixed size or holds fewer bytes."""
        try:
            # Seals first, then the size: sealed, the size can no longer change in between
            # (the other order lets a lender shrink it after we looked: SIGBUS on reading).
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            if seals & FIXED_SIZE_SEALS != FIXED_SIZE_SEALS:
                raise ValueError("a lent memfd must be sealed against shrinking and growing")
            stat = os.fstat(fd)
            if stat.st_blksize != PAGE:  # hugetlbfs: a punched hole can SIGBUS the reader
                raise ValueError("a lent memfd must be ordinary shared memory")
            if stat.st_size < size:
                raise ValueError(f"the memfd holds {stat.st_size} bytes, not {size}")
            with self._lock:
                mapping = self._take(fd, (stat.st_dev, stat.st_ino), size) if size else None
        finally:
            os.close(fd)  # a new mapping holds a descriptor of its own
        buffer = Buffer.__new__(Buffer)
        buffer.capacity = buffer.size = size
        buffer.idle_since, buffer.sealed, buffer.lent = 0.0, False, True
        buffer._map, buffer._loan, buffer.fd, buffer.checksum = None, mapping, -1, None
        buffer.retired = False
        buffer._view = memoryview(b"") if mapping is None else memoryview(mapping.map)
        return buffer

    def _take(self, fd: int, key: tuple[int, int], size: int) -> _Mapping:
        mapping = self._mappings.pop(key, None)
        if mapping is not None and mapping.length >= size:
            self.hits += 1  # the same memfd, lent again: its mapping is already here
        else:
            if mapping is not None:  # lent again with more bytes in use: map them all
                self._forget(mapping)
            view = mmap.mmap(fd, size, access=mmap.ACCESS_READ)  # read-only views too
            mapping = _Mapping(self, view, size)
            self.mapped_bytes += size
        mapping.users += 1
        mapping.last_used = time.monotonic()
        self._mappings[key] = mapping  # most recently used last
        self._trim(everything=False)
        return mapping

    def give_back(self, mapping: _Mapping) -> None:
        with self._lock:
            mapping.users -= 1
            mapping.last_used = time.monotonic()
            self._trim(everything=False)
            self._schedule_trim()

    def _schedule_trim(self) -> None:
        """An idle process unmaps too, with no loan to trigger it (no loop: the next loan)."""
        if self._timer_loop is not None and not self._timer_loop.is_closed() and self._timer:
            return
        with contextlib.suppress(RuntimeError):
            self._timer_loop = asyncio.get_running_loop()
            self._timer = self._timer_loop.call_later(self.idle_seconds + 1, self._on_timer)

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            self._trim(everything=False)
            if any(m.users == 0 for m in self._mappings.values()):
                self._schedule_trim()

    def trim(self, *, everything: bool = False) -> None:
        """Unmap what is idle too long or too big to keep, and the least recently used beyond
        ``max_bytes`` or ``max_count``."""
        with self._lock:
            self._trim(everything=everything)

    def _trim(self, *, everything: bool) -> None:
        cutoff = time.monotonic() - self.idle_seconds
        for key, mapping in list(self._mappings.items()):  # least recently used first
            over = self.mapped_bytes > self.max_bytes or len(self._mappings) > self.max_count
            stale = mapping.last_used < cutoff or mapping.length > self.max_kept
            if mapping.users == 0 and (everything or over or stale):
                del self._mappings[key]
                self._forget(mapping)

    def _forget(self, mapping: _Mapping) -> None:
        self.mapped_bytes -= mapping.length
        with contextlib.suppress(BufferError):  # a view still out: unmapped when it goes
            mapping.map.close()


LOANS = Loans()
