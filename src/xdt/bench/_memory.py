"""The memory a platform uses: summed over ``xdt up`` and all its descendants, sampled."""

from __future__ import annotations

import threading
from typing import Self

from .._util import procfs

__all__ = ["MemorySampler", "Sampler"]


class Sampler:
    """Calls :meth:`sample` every ``interval`` seconds on a thread of its own while the
    ``with`` block runs; subclasses keep their peaks."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)


class MemorySampler(Sampler):
    """Peaks of the summed RSS and PSS of a process and all its descendants, and of their
    footprint (each process's own pages plus the memfds they hold, each counted once; see
    :mod:`xdt.bench.micro`), sampled every ``interval`` seconds."""

    def __init__(self, root: int, interval: float = 0.01) -> None:
        super().__init__(interval)
        self.root = root
        self.peak_rss = self.peak_pss = self.peak_memory = 0

    def footprint(self) -> int:
        return self._sample()[2]

    def _sample(self) -> tuple[int, int, int]:
        processes = procfs.descendants(self.root)
        totals = [procfs.memory(pid) for pid in processes]
        own = sum(m.own for m in totals)
        rss, pss = sum(m.rss for m in totals), sum(m.pss for m in totals)
        return rss, pss, own + procfs.memfd_bytes(processes)

    def sample(self) -> None:
        rss, pss, memory = self._sample()
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_memory = max(self.peak_memory, memory)
