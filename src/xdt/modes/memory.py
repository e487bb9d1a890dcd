"""The ``xdt`` data path: the object stays in this sidecar's memory; the receiver's sidecar
pulls it straight from here (:mod:`xdt.pull`)."""

from __future__ import annotations

from .._core.buffers import Buffer
from .._core.refs import Reference, TransferMode
from .._core.store import ObjectStore
from ..pull import ObjectServer, PullClient
from .base import Data, Payload, StorageCounts

__all__ = ["MemoryPath"]


class MemoryPath:
    mode = TransferMode.XDT

    def __init__(self, store: ObjectStore, server: ObjectServer, client: PullClient) -> None:
        self.store, self.server, self.client = store, server, client
        self.counts = StorageCounts()  # the sidecar's own memory: no store to pay per request

    async def put(self, data: Data, *, tenant: str, pulls: int | None, ttl: float) -> str:
        if isinstance(data, Buffer) and not data.lent:
            # Ours (sealed by a local function, or a buffer of our store's pool): the object
            # is that buffer, not a copy of it.
            obj = await self.store.adopt(data, tenant=tenant, pulls=pulls, ttl=ttl)
        elif isinstance(data, Buffer):  # lent by a local process: copy it in, give it back
            try:
                obj = await self.store.put(data.view(), tenant=tenant, pulls=pulls, ttl=ttl)
            finally:
                data.close()
        else:
            obj = await self.store.put(data, tenant=tenant, pulls=pulls, ttl=ttl)
        return self.server.seal(obj)

    async def get(self, token: str, ref: Reference | None) -> Payload:
        assert ref is not None
        # The buffer itself, not a copy: it goes on to the function's runtime as a memfd.
        return (await self.client.pull(token, tenant=ref.tenant)).detach()

    async def release(self, token: str, ref: Reference | None) -> bool:
        assert ref is not None
        if ref.source != self.server.address:
            return False  # only the holder can free it; elsewhere it expires
        return self.store.release(ref.object_id)

    async def unclaimed(self) -> int:
        return len(self.store)

    async def close(self) -> None:
        pass  # the store, server and client belong to the sidecar
