"""Log lines that a flood cannot multiply.

A hostile client can make a listener fail thousands of times a second (a connection flood, a
descriptor shortage); one log line each would fill the disk. :class:`RateLimitedLog` writes a
repeated kind of line at most once per interval, and says how many it held back.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["RateLimitFilter", "RateLimitedLog", "rate_limit_loop_errors"]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class RateLimitedLog:
    """``log(kind, line)`` writes ``line`` unless a line of the same ``kind`` was written less
    than ``interval`` seconds ago; the next one written says how many were held back."""

    def __init__(
        self,
        interval: float = 10.0,
        *,
        write: Callable[[str], None] = _stderr,
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = 256,
    ) -> None:
        self.interval = interval
        self.write = write
        self.clock = clock
        self.max_kinds = max_kinds  # kinds come from our code, but bound them anyway
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, kind: str, line: str) -> bool:
        """Whether ``line`` was written."""
        suffix = self.admit(kind)
        if suffix is None:
            return False
        self.write(line + suffix)
        return True

    def admit(self, kind: str) -> str | None:
        """None if a line of ``kind`` is to be held back now; else what to add to it (how
        many were held back since the last one, or nothing)."""
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return None
        if last is None and len(self._last) >= self.max_kinds:
            self._last.clear()
            self._held.clear()
        held = self._held.pop(kind, 0)
        self._last[kind] = now
        if held and last is not None:
            return f" (and {held} more like it in the last {now - last:.0f} s)"
        return ""


class RateLimitFilter(logging.Filter):
    """A :mod:`logging` filter that lets through one record per message template per
    interval (aiohttp logs every malformed request with its traceback)."""

    def __init__(self, log: RateLimitedLog) -> None:
        super().__init__()
        self.log = log

    def filter(self, record: logging.LogRecord) -> bool:
        suffix = self.log.admit(f"{record.name}:{record.msg}")
        if suffix is None:
            return False
        if suffix:
            record.msg = f"{record.msg}{suffix}"
        return True


def rate_limit_loop_errors(loop: asyncio.AbstractEventLoop, log: RateLimitedLog) -> None:
    """Route the loop's own error reports (an accept that failed with EMFILE, a callback that
    raised) through ``log``, one kind per message text."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "asyncio error"))
        error = context.get("exception")
        detail = f": {type(error).__name__}: {error}" if error is not None else ""
        log(f"asyncio:{message}", f"xdt: {message}{detail}")

    loop.set_exception_handler(handler)
