"""One interface, four data paths: where a payload waits between its sender and its receiver.

A :class:`DataPath` stores a payload and gives back a reference; any sidecar holding the key
ring fetches it by that reference, whichever path made it (the reference says which, so a
receiver needs no configuration of the sender's choice). Every path behaves the same way:

- ``put`` takes over a :class:`~xdt._core.buffers.Buffer` it is given (closing it when it
  does not keep it), and refuses what it cannot hold with a typed error;
- ``get`` returns bytes checked against the reference's length and checksum (or a sealed memfd
  holding them, which the caller then owns), and counts one pull;
- ``release`` frees the object early, and says False when it was gone or is not its to free;
- ``unclaimed`` counts what this sender put that no receiver has taken yet and that lives only
  as long as this sender does (scale-down waits for it).

============  ====================================  =========================================
path          where the bytes wait                  who frees them
============  ====================================  =========================================
inline        in the invocation (the "reference"    nobody: it is the bytes, base64url, and
              is ``inline:`` + the bytes)           travels inside the invocations
memory (xdt)  the sender sidecar's memory (memfd)   the last pull, release, or expiry
redis         a Redis server (SET ... PX ttl)       the last pull, release, or expiry
s3            an S3 bucket (put_object)             the last pull, release, or the sender's
                                                    sweeper at expiry
============  ====================================  =========================================
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Protocol

from .._core.buffers import Buffer, as_bytes
from .._core.checksum import checksum
from .._core.errors import TransferCorrupted
from .._core.refs import Reference, TransferMode

__all__ = [
    "DEFAULT_STORE_SETTINGS",
    "DEFAULT_TRANSFER_SETTINGS",
    "Data",
    "DataPath",
    "Payload",
    "StorageCounts",
    "StoreSettings",
    "TransferSettings",
    "checked",
    "plain",
    "size_of",
    "stored_reference",
]

Payload = bytes | Buffer  # a Buffer: a memfd, passed between local processes as it is
Data = bytes | bytearray | memoryview | Buffer


@dataclass(frozen=True)
class TransferSettings:
    """How a sidecar moves its function's payloads. The one home of these defaults: the
    platform spec's keys of the same names default to them."""

    mode: TransferMode = TransferMode.XDT
    inline_limit: int = 6 << 20  # the largest invocation body (AWS Lambda's synchronous 6 MB)
    xdt_threshold: int = 64 << 10  # xdt mode: payloads up to this travel inline
    # elasticache and s3: payloads up to this travel inline too, as small control messages
    # and answers do beside the paper's baselines (vSwarm stores the frames, the video, the
    # dataset, not a recognition's few-byte reply); 0 stores every non-empty payload.
    storage_threshold: int = 64 << 10
    object_ttl: float = 60.0  # how long an unclaimed transferred object lives

    @property
    def inline_up_to(self) -> int:
        """The biggest payload an invocation carries as itself in this mode: all up to the
        inline limit in inline mode, small ones in the others (``xdt_threshold`` in xdt mode,
        ``storage_threshold`` in the storage modes)."""
        if self.mode is TransferMode.INLINE:
            return self.inline_limit
        return self.xdt_threshold if self.mode is TransferMode.XDT else self.storage_threshold


DEFAULT_TRANSFER_SETTINGS = TransferSettings()


@dataclass(frozen=True)
class StoreSettings:
    """Where the storage modes' servers are (``None``: not configured). ``redis_url`` may
    hold a password: it travels only on a sidecar's stdin, never in an error."""

    redis_url: str | None = None
    s3_endpoint_url: str | None = None  # None with a bucket: AWS S3 itself
    s3_bucket: str = "xdt-transfers"
    s3_region: str = "us-east-1"


DEFAULT_STORE_SETTINGS = StoreSettings()


@dataclass
class StorageCounts:
    """What a data path asked of its store — requests by operation (``SET``, ``EVALSHA``,
    ``PutObject``, ``UploadPart``, …) — and bytes × seconds its objects stayed there: what a
    storage bill is made of. Paths without a store leave it empty."""

    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    byte_seconds: float = 0.0


class DataPath(Protocol):
    """What a sidecar does with a payload that does not travel inline (see the module)."""

    mode: TransferMode
    counts: StorageCounts

    async def put(self, data: Data, *, tenant: str, pulls: int | None, ttl: float) -> str:
        """Store ``data`` (taking over a Buffer); its reference. ``pulls=None``: unlimited
        until expiry."""
        ...

    async def get(self, token: str, ref: Reference | None) -> Payload:
        """The checked bytes behind ``token`` (``ref``: the opened reference; None for an
        inline one); counts one pull. Raises typed xdt errors."""
        ...

    async def release(self, token: str, ref: Reference | None) -> bool:
        """Free the object now; False if it was already gone or is not this sender's."""
        ...

    async def unclaimed(self) -> int:
        """Objects this sender put here that no receiver has taken yet, and that go when this
        sender goes."""
        ...

    async def close(self) -> None: ...


def size_of(data: Data) -> int:
    return data.size if isinstance(data, Buffer) else memoryview(data).nbytes


def plain(data: Data) -> bytes | bytearray | memoryview:
    """``data`` as something bytes-like: a Buffer's bytes are copied out and it is closed."""
    return as_bytes(data) if isinstance(data, Buffer) else data


def stored_reference(
    object_id: bytes,
    data: bytes | bytearray | memoryview,
    *,
    source: str,
    tenant: str,
    ttl: float,
    mode: TransferMode,
) -> Reference:
    """The reference to ``data``, stored under ``object_id`` by a storage mode."""
    return Reference(
        object_id=object_id,
        source=source,
        size=memoryview(data).nbytes,
        checksum=checksum(data),
        expires_at=time.time() + ttl,
        tenant=tenant,
        mode=mode,
    )


def checked(ref: Reference, data: bytes) -> bytes:
    """``data`` if it has the reference's length and checksum; :class:`TransferCorrupted`
    otherwise (what a store gave back is never trusted to be what was put)."""
    if len(data) != ref.size or checksum(data) != ref.checksum:
        raise TransferCorrupted(
            f"the object from {ref.mode.label} has {len(data)} bytes or a "
            "checksum that do not match its reference; it was not delivered"
        )
    return data
