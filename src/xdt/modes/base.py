"""One interface, four data paths: what a sidecar does with a payload that does not travel
inline in the invocation.

A :class:`DataPath` stores a payload somewhere and gives back a sealed reference; any sidecar
holding the key ring can later fetch it by that reference. The reference's mode says which
path it belongs to, so a receiver needs no configuration of the sender's choice:

============  ==================================  ======================================
mode          where the bytes wait                who frees them
============  ==================================  ======================================
xdt           the sender sidecar's memory (memfd)  the last pull, release, or expiry
elasticache   a Redis server (SET ... PX ttl)      the last pull (GET then DEL), or expiry
s3            an S3 bucket (put_object)            the last pull, release, or the sender's
                                                   sweeper at expiry
============  ==================================  ======================================
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from .._core.buffers import Buffer
from .._core.refs import Reference, TransferMode

__all__ = ["DataPath", "StoreSettings", "stored_reference"]


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
    from .._core.checksum import checksum

    return Reference(
        object_id=object_id,
        source=source,
        size=len(data),
        checksum=checksum(data),
        expires_at=time.time() + ttl,
        tenant=tenant,
        mode=mode,
    )


@dataclass(frozen=True)
class StoreSettings:
    """Where the storage modes' servers are (``None``: not configured)."""

    redis_url: str | None = None
    s3_endpoint_url: str | None = None  # None with a bucket: AWS S3 itself
    s3_bucket: str = "xdt-transfers"
    s3_region: str = "us-east-1"


class DataPath(Protocol):
    mode: TransferMode

    async def put(
        self, data: bytes | bytearray | memoryview, *, tenant: str, pulls: int | None, ttl: float
    ) -> str:
        """Store ``data``; its sealed reference. ``pulls=None``: unlimited until expiry."""
        ...

    async def get(self, ref: Reference, token: str) -> bytes | Buffer:
        """The bytes of an opened reference (or a sealed memfd holding them, which the caller
        then owns); counts one pull. Raises typed xdt errors."""
        ...

    async def release(self, ref: Reference) -> bool:
        """Free the object now; False if it was already gone."""
        ...

    async def close(self) -> None: ...
