"""Waiting for a condition, bounded in time: the one loop every "until it is ready" uses."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

__all__ = ["until", "until_sync"]


async def until(
    check: Callable[[], bool | Awaitable[bool]], *, timeout: float, interval: float = 0.05
) -> bool:
    """Call ``check`` every ``interval`` seconds until it returns true (True) or ``timeout``
    seconds have passed (False). ``check`` may be async; what it raises propagates."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def until_sync(check: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    """:func:`until` for code without an event loop."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
