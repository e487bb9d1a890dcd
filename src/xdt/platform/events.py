"""What happens to a function's instances and its scale, as events the platform reports.

An :class:`Event` is a :class:`Kind` and a detail; it prints as the line ``xdt up`` shows and
``/status`` lists (``"crashed: the function process exited with code 1"``). Code decides on the
kind, never on the text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Event", "Kind"]


class Kind(enum.Enum):
    READY = "ready"
    CRASHED = "crashed"  # the function process exited; it is restarted in place
    RESTARTED = "restarted"
    RESTART_FAILED = "restart failed"
    DRAINING = "draining"
    DRAIN_SILENT = "draining, silent"  # the sidecar does not answer while draining
    DRAIN_TIMED_OUT = "drain timed out"
    STOPPED = "stopped"
    FAILED = "failed"  # could not start, or gave up: replaced by a fresh instance
    START_CANCELLED = "start cancelled"
    SCALED = "scale"
    POKED = "poked"
    SWEPT = "swept"  # what a failed instance left in a store was removed (.janitor)
    ROLLED = "rolled"  # its code changed: new instances start, the old ones drain
    NOT_ROLLED = "not rolled"  # its code changed but does not load: the old code serves on
    ERROR = "error"  # an invocation was answered with a 5xx (rate-limited per error code)

    @property
    def troubled(self) -> bool:
        """Whether the event means something went wrong (its logs are worth keeping)."""
        return self in (Kind.CRASHED, Kind.FAILED, Kind.RESTART_FAILED, Kind.ERROR, Kind.NOT_ROLLED)


@dataclass(frozen=True)
class Event:
    kind: Kind
    detail: str = ""
    request_id: str | None = None  # the invocation it happened in, when there was one

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}" if self.detail else self.kind.value
