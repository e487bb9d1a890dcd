"""Which event loop runs xdt's processes.

uvloop is the default where it is installed: on this machine it cuts the 1 KiB pull latency by
about a tenth against asyncio's own loop (``xdt bench transfer --loop asyncio`` shows the
difference). Everything in xdt also runs on asyncio's loop; the tests use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["LOOPS", "LoopName", "run"]

T = TypeVar("T")
LoopName = Literal["uvloop", "asyncio"]
LOOPS: tuple[LoopName, ...] = ("uvloop", "asyncio")


def run(main: Coroutine[Any, Any, T], loop: str = "uvloop") -> T:
    """Run ``main`` to completion on a fresh loop of the named kind."""
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency; be kind if it is gone
            return asyncio.run(main)
        result: T = uvloop.run(main)
        return result
    if loop == "asyncio":
        return asyncio.run(main)
    raise ValueError(f"unknown event loop {loop!r}; choose one of {', '.join(LOOPS)}")
