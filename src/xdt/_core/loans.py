"""Read-only mappings of memfds that peers lend us, kept between loans.

A peer lends the same warm buffers again and again (a function's SDK, a sidecar's object
server), so their read-only mappings are kept here between loans, by inode: mapping 64 MiB
afresh costs ~7 ms of page faults — as much as copying it. A lent memfd must be sealed against
shrinking and growing, so the lender cannot pull the pages from under us (SIGBUS); its
contents may still change, so what is kept is copied out before answering. Lenders of
different trust (functions, peer sidecars) get :class:`Loans` of their own: a function's memfd
can never be taken for a cached mapping of a peer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import mmap
import os
import threading
import time
from dataclasses import dataclass

from .buffers import DEFAULT_POOL_LIMITS, FIXED_SIZE_SEALS, PAGE, Buffer

__all__ = ["LOANS", "Loans"]


@dataclass(eq=False, slots=True)
class _Mapping:
    owner: Loans
    map: mmap.mmap  # holds its own descriptor of the memfd
    length: int
    users: int = 0
    last_used: float = 0.0

    def give_back(self) -> None:
        self.owner.give_back(self)


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
        return Buffer.over_lease(mapping, size)

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
