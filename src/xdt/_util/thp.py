"""The host's transparent huge page (THP) settings, as benchmarks and ``xdt up`` report them.

Two settings matter to xdt: ``enabled`` (anonymous memory: the heap, ``bytes``) and
``shmem_enabled`` (memfds: every object). With ``madvise`` / ``advise`` a mapping that asks
(``MADV_HUGEPAGE``, which xdt's buffers do) gets 2 MiB pages: a fresh 256 MiB buffer then
costs ~75 ms of page faults instead of ~200 ms here. ``never`` ignores the advice; everything
works either way.
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["THP_DIR", "describe", "settings", "shmem_advisable"]

THP_DIR = Path("/sys/kernel/mm/transparent_hugepage")


def _chosen(path: Path) -> str | None:
    """The bracketed word of a sysfs choice file (``always [madvise] never`` → ``madvise``)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else text.strip() or None


def settings(root: Path = THP_DIR) -> dict[str, str | None]:
    """``enabled``, ``shmem_enabled`` and ``defrag``; None for what the host does not say."""
    return {name: _chosen(root / name) for name in ("enabled", "shmem_enabled", "defrag")}


def shmem_advisable(root: Path = THP_DIR) -> bool:
    """Whether memfd mappings get huge pages when they ask for them. Read once a second at
    most: buffers ask it each time one is made."""
    now = time.monotonic()
    cached = _ADVISABLE.get(root)
    if cached is not None and now - cached[0] < 1.0:
        return cached[1]
    advisable = settings(root)["shmem_enabled"] in ("always", "within_size", "advise", "force")
    _ADVISABLE[root] = (now, advisable)
    return advisable


_ADVISABLE: dict[Path, tuple[float, bool]] = {}


def describe(root: Path = THP_DIR) -> str:
    """One line: ``huge pages: heap madvise, memfds never (defrag madvise)``."""
    found = settings(root)
    if found["enabled"] is None:
        return "huge pages: not reported by this kernel"
    return (
        f"huge pages: heap {found['enabled']}, memfds {found['shmem_enabled'] or 'unknown'} "
        f"(defrag {found['defrag'] or 'unknown'})"
    )
