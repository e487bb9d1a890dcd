"""Keep the C heap warm for big payloads.

glibc serves every allocation over its mmap threshold (32 MiB at most) with fresh pages from
the kernel and gives them back on free, so each big ``bytes`` payload pays its page faults
again: 64 MiB took ~33 ms to allocate and fill here, against ~5.5 ms from a warm heap. Processes
that handle payloads over and over (the Python runtime, the sidecar) call :func:`keep_warm`
once: big allocations then come from the heap, and freed memory stays for the next one (up to
``retain`` bytes beyond what is in use). Like the buffer pools, that memory goes back once the
process has been idle a while: :func:`give_back_when_idle` runs beside its server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import time
from collections.abc import Callable

__all__ = ["IDLE_SECONDS", "give_back", "give_back_when_idle", "keep_warm", "trims_when_idle"]

IDLE_SECONDS = 30.0  # as the buffer pools' idle limit

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def keep_warm(retain: int = 1 << 30, *, arenas: int | None = None) -> bool:
    """True if the C library took the settings (glibc); harmless elsewhere. Call it before
    any thread starts. ``arenas``: at most that many malloc arenas. glibc gives threads arenas
    of their own (up to 8 per core); with big allocations kept in the heap, the freed memory
    of many arenas fragments apart, and :func:`give_back` can return little of it. Measured
    in the sending sidecar of an s3-mode 1→1 (boto3 moves payloads in worker threads), ten
    64 MiB transfers then 50 s idle, three runs each: 133–136 MiB of private memory kept with
    the default arenas, 51–69 MiB with two (28 MiB before any transfer); its peak 485–487 →
    234–264 MiB. Elasticache and xdt sidecars went back to 28–35 MiB either way."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        if arenas is not None and not libc.mallopt(_M_ARENA_MAX, arenas):
            return False
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, retain))
    return False


_TRIMS: list[Callable[[], object]] = []


def trims_when_idle(trim: Callable[[], object]) -> None:
    """Have :func:`give_back` call ``trim`` too: the warm pools of a process's parts (the
    SDK's, say) go back with its heap, without the part that idles knowing them."""
    _TRIMS.append(trim)


def give_back() -> bool:
    """Trim every pool registered with :func:`trims_when_idle`, then return the heap's free
    memory to the kernel (glibc's malloc_trim); True if the heap gave any."""
    for trim in list(_TRIMS):
        trim()
    with contextlib.suppress(OSError, AttributeError):
        return bool(ctypes.CDLL(None).malloc_trim(0))
    return False


async def give_back_when_idle(
    last_active: Callable[[], float],
    idle_seconds: float = IDLE_SECONDS,
    trim: Callable[[], object] = give_back,
) -> None:
    """Run forever: once ``last_active()`` (a ``time.monotonic()`` reading) is
    ``idle_seconds`` old, give the warm heap back — once per idle spell."""
    trimmed_after = -1.0
    while True:
        await asyncio.sleep(idle_seconds / 2)
        active = last_active()
        if active != trimmed_after and time.monotonic() - active >= idle_seconds:
            trim()
            trimmed_after = active
