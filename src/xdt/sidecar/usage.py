"""What an instance used, counted where it happens: the cost model's measured inputs.

A serverless bill charges an instance for the time its handler runs (Lambda rounds each
invocation up to the millisecond and multiplies by the function's memory setting), per
request, and, for data passed through storage, per storage request and stored byte-time.
Each sidecar counts, since it started:

- ``invocations`` and ``billed_ms``: every invocation its ingress served, from its arrival
  (the body read) to its answer being ready — the payload's pull and the answer's put
  included, in every mode alike — each rounded up to a whole millisecond;
- ``keep_alive_s``: time this instance held objects (xdt mode) while no invocation ran in it.
  On a platform that bills per invocation, a sender must be kept alive after it answered
  until its objects are pulled: that time is billed too (:class:`KeepAliveClock`);
- ``sent_bytes`` / ``received_bytes``: payload bytes by how they travelled (``inline``,
  ``xdt``, ``elasticache``, ``s3``);
- ``redis_commands``: commands its elasticache path sent; ``s3_requests``: HTTP requests its
  s3 path sent, by S3 operation (``PutObject``, ``GetObject``, ``UploadPart``, …), counted by
  boto3's own event hooks, retries and multipart parts included; ``s3_byte_seconds``: bytes ×
  seconds its objects stayed in the bucket (S3 Standard bills GB-months, pro rata).

The platform fetches these from every instance (``GET /xdt/usage``) and sums them per
function (``GET /usage`` at the gateway).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KeepAliveClock", "Usage", "billed_ms"]


def billed_ms(seconds: float) -> int:
    """An invocation's billed duration: rounded up to a whole millisecond (at least 1)."""
    return max(1, math.ceil(seconds * 1000 - 1e-9))


@dataclass
class Usage:
    """Counters of one instance, or (added up) of a function or a platform."""

    invocations: int = 0
    billed_ms: int = 0
    keep_alive_s: float = 0.0
    sent_bytes: collections.Counter[str] = field(default_factory=collections.Counter)
    received_bytes: collections.Counter[str] = field(default_factory=collections.Counter)
    redis_commands: int = 0
    s3_requests: collections.Counter[str] = field(default_factory=collections.Counter)
    s3_byte_seconds: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.invocations + other.invocations,
            self.billed_ms + other.billed_ms,
            self.keep_alive_s + other.keep_alive_s,
            self.sent_bytes + other.sent_bytes,
            self.received_bytes + other.received_bytes,
            self.redis_commands + other.redis_commands,
            self.s3_requests + other.s3_requests,
            self.s3_byte_seconds + other.s3_byte_seconds,
        )

    def __sub__(self, other: Usage) -> Usage:
        """What was used between two readings (``later - earlier``)."""
        return Usage(
            self.invocations - other.invocations,
            self.billed_ms - other.billed_ms,
            self.keep_alive_s - other.keep_alive_s,
            self.sent_bytes - other.sent_bytes,
            self.received_bytes - other.received_bytes,
            self.redis_commands - other.redis_commands,
            self.s3_requests - other.s3_requests,
            self.s3_byte_seconds - other.s3_byte_seconds,
        )

    def record(self) -> dict[str, Any]:
        """As JSON: counters as plain dicts, times rounded to microseconds."""
        fields = dataclasses.asdict(self)
        for name in ("sent_bytes", "received_bytes", "s3_requests"):
            fields[name] = dict(sorted(getattr(self, name).items()))
        fields["keep_alive_s"] = round(self.keep_alive_s, 6)
        fields["s3_byte_seconds"] = round(self.s3_byte_seconds, 3)
        return fields

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Usage:
        """The inverse of :meth:`record`; raises ValueError on a record of another shape."""
        try:
            return cls(
                invocations=int(record["invocations"]),
                billed_ms=int(record["billed_ms"]),
                keep_alive_s=float(record["keep_alive_s"]),
                sent_bytes=collections.Counter(
                    {str(k): int(v) for k, v in record["sent_bytes"].items()}
                ),
                received_bytes=collections.Counter(
                    {str(k): int(v) for k, v in record["received_bytes"].items()}
                ),
                redis_commands=int(record["redis_commands"]),
                s3_requests=collections.Counter(
                    {str(k): int(v) for k, v in record["s3_requests"].items()}
                ),
                s3_byte_seconds=float(record["s3_byte_seconds"]),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a usage record: {exc!r}") from None


class KeepAliveClock:
    """Seconds during which objects were held while no invocation ran: told of every change
    of either (:meth:`busy`, :meth:`holding`), it adds up the time spent idle-but-holding."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._running = 0
        self._holding = False
        self._since = clock()
        self._total = 0.0

    def busy(self, running: int) -> None:
        """Invocations now running in this instance."""
        self._advance()
        self._running = running

    def holding(self, holding: bool) -> None:
        """Whether this instance now holds any object."""
        self._advance()
        self._holding = holding

    @property
    def seconds(self) -> float:
        self._advance()
        return self._total

    def _advance(self) -> None:
        now = self._clock()
        if self._holding and self._running == 0:
            self._total += now - self._since
        self._since = now
