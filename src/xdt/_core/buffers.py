"""memfd-backed buffers and the pool that keeps them warm.

Every object's bytes live in a memfd so that they can be mapped, streamed, and handed to
another local process as a file descriptor without a copy. Fresh pages cost more than copies
(first-touch faults: writing 256 MiB into a fresh memfd takes ~0.8 s here, ~0.17 s when the
mapping is made with ``MAP_POPULATE``, ~0.02 s into a reused one), so buffers are pooled by size
class and handed out again warm.

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
from dataclasses import dataclass
from typing import Protocol

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
        # The XXH3 of the bytes as its maker claims it (see xdt.channel.sealed_buffer); None
        # when whoever needs it must compute it.
        self.checksum: int | None = None
        # Lent to another process that may still be reading it: never reused, only closed.
        self.retired = False
        self._loan: Lease | None = None
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
    def over_lease(cls, lease: Lease | None, size: int) -> Buffer:
        """A read-only buffer over the first ``size`` bytes of a lent memfd's mapping, kept
        by whoever made ``lease`` (None for an empty one); closing it gives the lease back.
        Its contents may still change (the lender reuses it): copy them out before answering.
        Made by :meth:`xdt._core.loans.Loans.borrow`."""
        buffer = cls.__new__(cls)
        buffer.capacity = buffer.size = size
        buffer.idle_since, buffer.sealed, buffer.lent = 0.0, False, True
        buffer._map, buffer._loan, buffer.fd, buffer.checksum = None, lease, -1, None
        buffer.retired = False
        buffer._view = memoryview(b"") if lease is None else memoryview(lease.map)
        return buffer

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
    """How many idle bytes a pool keeps warm, for how long, and the biggest buffer it keeps.

    Bigger payloads do not go through pools at all: a function gives them to its sidecar as
    one sealed memfd, written once (:func:`xdt.channel.sealed_buffer`), which is the object
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


_MAX_READ = 1 << 30  # read(2) moves at most ~2 GiB at once


def as_bytes(payload: bytes | Buffer) -> bytes:
    """A payload as bytes: a memfd's contents are copied out, and the memfd closed."""
    if not isinstance(payload, Buffer):
        return payload
    try:
        if payload.sealed and 0 < payload.size <= _MAX_READ:
            # Read, not through the mapping: a given memfd's pages are new to this process,
            # and read(2) skips faulting them in (256 MiB: ~50 ms against ~56 ms here).
            data = os.pread(payload.fd, payload.size, 0)
            if len(data) == payload.size:
                return data
        return payload.view().tobytes()
    finally:
        payload.close()


def sealed_buffer(data: bytes | bytearray | memoryview) -> Buffer:
    """A new memfd holding ``data``, sealed read-only: ready to pass to another process.

    Written with pwrite(2), not through a mapping: fresh pages cost less that way (64 MiB:
    ~26 ms against ~45 ms here), and this process never maps what it gives away. Its
    checksum is computed here, from the warm source, beside the write (XXH3 lets go of the
    GIL), and travels with it: the receiver, which has not mapped the pages, would pay a
    fault per page to hash them."""
    view = memoryview(data).cast("B")
    hashing = _hasher().submit(checksum, view) if view.nbytes >= _HASH_BESIDE else None
    try:
        fd = os.memfd_create("xdt-local", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            written = 0
            while written < view.nbytes:
                written += os.pwrite(fd, view[written:], written)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, READ_ONLY_SEALS | fcntl.F_SEAL_SEAL)
        except BaseException:
            os.close(fd)
            raise
        buffer = Buffer.from_sealed_fd(fd, view.nbytes)  # owns fd from here, even failing
    except BaseException:
        if hashing is not None and not hashing.cancel():
            hashing.exception()  # wait for it: the view must outlive the hash
        raise
    buffer.checksum = checksum(view) if hashing is None else hashing.result()
    return buffer


_HASH_BESIDE = 8 << 20  # below this a thread hand-off costs more than it saves
_hashers: concurrent.futures.ThreadPoolExecutor | None = None


_hashers_lock = threading.Lock()


def _hasher() -> concurrent.futures.ThreadPoolExecutor:
    global _hashers
    with _hashers_lock:
        if _hashers is None:
            _hashers = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="xdt-hash")
        return _hashers
