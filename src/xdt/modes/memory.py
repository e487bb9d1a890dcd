"""The ``xdt`` data path: the object stays in this sidecar's memory; the receiver's sidecar
pulls it straight from here (:mod:`xdt.pull`)."""

from __future__ import annotations

from .._core.buffers import Buffer
from .._core.refs import Reference, TransferMode
from .._core.store import ObjectStore
from ..pull import ObjectServer, PullClient

__all__ = ["XdtPath"]


class XdtPath:
    mode = TransferMode.XDT

    def __init__(self, store: ObjectStore, server: ObjectServer, client: PullClient) -> None:
        self.store, self.server, self.client = store, server, client

    async def put(
        self, data: bytes | bytearray | memoryview, *, tenant: str, pulls: int | None, ttl: float
    ) -> str:
        obj = await self.store.put(data, tenant=tenant, pulls=pulls, ttl=ttl)
        return self.server.seal(obj)

    async def adopt(self, buffer: Buffer, *, tenant: str, pulls: int | None, ttl: float) -> str:
        """Publish a sealed memfd a local function passed, without copying it."""
        obj = await self.store.adopt(buffer, tenant=tenant, pulls=pulls, ttl=ttl)
        return self.server.seal(obj)

    async def get(self, ref: Reference, token: str) -> bytes | Buffer:
        # The buffer itself, not a copy: it goes on to the function's runtime as a memfd.
        return (await self.client.pull(token, tenant=ref.tenant)).detach()

    async def release(self, ref: Reference) -> bool:
        if ref.source != self.server.address:
            return False  # only the holder can free it; elsewhere it expires
        return self.store.release(ref.object_id)

    async def close(self) -> None:
        pass  # the store, server and client belong to the sidecar
