"""Instance log lines: stamped so they can be merged, and limited so a flood cannot multiply
them.

Every line of an instance log reads ``<UTC time> <instance> <request id or -> <text>``
(:class:`StampedLines`, :func:`parse_line`): ``xdt logs`` merges the logs of many instances
by the time and shows which request each line was written for.

A hostile client can make a listener fail thousands of times a second (a connection flood, a
descriptor shortage); one log line each would fill the disk. :class:`RateLimitedLog` writes a
repeated kind of line at most once per interval, and says how many it held back.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO, NamedTuple

__all__ = [
    "LogLine",
    "RateLimitFilter",
    "RateLimitedLog",
    "StampedLines",
    "parse_line",
    "rate_limit_loop_errors",
    "stamp",
    "stamp_output",
]

MAX_LINE = 64 << 10  # a longer line is cut into lines of this many characters
_LINE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) (\S+) ?(.*)", re.DOTALL)


def stamp(instance: str, request_id: str | None, text: str, now: float | None = None) -> str:
    """One log line (without its newline)."""
    when = datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.UTC)
    return (
        f"{when.strftime('%Y-%m-%dT%H:%M:%S.')}{when.microsecond // 1000:03d}Z "
        f"{instance} {request_id or '-'} {text}"
    )


class LogLine(NamedTuple):
    time: str  # ISO 8601, UTC, to the millisecond: sorts as text
    instance: str
    request_id: str | None
    text: str


def parse_line(line: str) -> LogLine | None:
    """The fields of a stamped line; None for a line that is not (a process's raw output)."""
    match = _LINE.fullmatch(line.rstrip("\n"))
    if match is None:
        return None
    when, instance, request_id, text = match.groups()
    return LogLine(when, instance, None if request_id == "-" else request_id, text)


class StampedLines(io.TextIOBase):
    """A text stream (for ``sys.stdout``/``sys.stderr``) that writes each complete line to
    ``raw`` stamped with the time, ``instance`` and the request id ``request_id()`` gives in
    the writing thread or task. Lines are put together per thread, so that two threads that
    ``print`` at once do not interleave within a line."""

    def __init__(self, raw: BinaryIO, instance: str, request_id: Callable[[], str | None]) -> None:
        super().__init__()
        self.raw = raw
        self.instance = instance
        self.request_id = request_id
        self._lock = threading.Lock()
        self._pending = threading.local()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        pending: str = getattr(self._pending, "text", "") + text
        *lines, rest = pending.split("\n")
        while len(rest) >= MAX_LINE:
            lines.append(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        self._pending.text = rest
        if lines:
            request = self.request_id()
            data = "".join(stamp(self.instance, request, line) + "\n" for line in lines)
            with self._lock:
                self.raw.write(data.encode("utf-8", errors="replace"))
                self.raw.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self.raw.flush()

    def close_line(self) -> None:
        """Write this thread's unfinished line, if any (at exit)."""
        if getattr(self._pending, "text", ""):
            self.write("\n")


def stamp_output(
    instance: str,
    request_id: Callable[[], str | None],
    names: tuple[str, ...] = ("stdout", "stderr"),
) -> None:
    """From here on, every line this process prints to ``sys.stdout``/``sys.stderr`` is
    stamped (:class:`StampedLines`)."""
    for name in names:
        raw = getattr(getattr(sys, name), "buffer", None)
        if raw is not None:
            setattr(sys, name, StampedLines(raw, instance, request_id))


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
