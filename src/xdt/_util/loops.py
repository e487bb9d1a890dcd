"""Which event loop runs xdt's processes.

asyncio's own loop is the default. uvloop (the ``uvloop`` extra) is supported and tested, but
measured here with ``xdt bench transfer --loop uvloop|asyncio`` it did not help: 1 KiB pulls
took 296 µs on uvloop and 253 µs on asyncio, 256 MiB pulls 120 ms and 103 ms, both within the
run-to-run noise. The pull path spends its time in system calls and our own code, not in the
loop, so a dependency that does not pay for itself stays optional.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["LOOPS", "LoopName", "run", "serving_loop", "set_serving_loop"]

T = TypeVar("T")
LoopName = Literal["uvloop", "asyncio"]
LOOPS: tuple[LoopName, ...] = ("asyncio", "uvloop")


def run(main: Coroutine[Any, Any, T], loop: str = "asyncio") -> T:
    """Run ``main`` to completion on a fresh loop of the named kind."""
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            main.close()
            raise RuntimeError("uvloop is not installed: pip install 'xdt[uvloop]'") from None
        result: T = uvloop.run(main)
        return result
    if loop == "asyncio":
        return asyncio.run(main)
    raise ValueError(f"unknown event loop {loop!r}; choose one of {', '.join(LOOPS)}")


_serving: asyncio.AbstractEventLoop | None = None


def set_serving_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    """Say which loop serves this process (the Python runtime's): blocking code in its
    worker threads (:mod:`xdt.sdk.sync`) runs its calls there."""
    global _serving
    _serving = loop


def serving_loop() -> asyncio.AbstractEventLoop | None:
    """The loop :func:`set_serving_loop` named, while it runs; else None."""
    loop = _serving
    return loop if loop is not None and loop.is_running() else None
