"""The ``elasticache`` data path: a real Redis server (ElastiCache speaks the same protocol).

The payload is SET under ``xdt:<object id>`` with the reference's expiry (``PX``), so an
unclaimed one always goes away on its own. A pull runs one Lua script, atomically: a one-pull
object is ``GETDEL``-ed; an unlimited one (broadcast) is read; an N-pull one decrements its
budget key and is deleted with it at zero. The key is derived from the sealed object id, so a
reference can never be turned into a read of another key.
"""

from __future__ import annotations

import math
import os
from typing import Any

from .._core.errors import ObjectNotFound, SourceUnavailable
from .._core.refs import KeyRing, Reference, TransferMode
from .base import stored_reference

__all__ = ["RedisPath"]

_PULL = """
local budget = redis.call('GET', KEYS[2])
if not budget then return redis.call('GETDEL', KEYS[1]) end
if budget == 'unlimited' then return redis.call('GET', KEYS[1]) end
local left = redis.call('DECR', KEYS[2])
if left < 0 then redis.call('DEL', KEYS[1], KEYS[2]) return false end
local value = redis.call('GET', KEYS[1])
if left == 0 then redis.call('DEL', KEYS[1], KEYS[2]) end
return value
"""


def _keys(object_id: bytes) -> tuple[str, str]:
    return f"xdt:{object_id.hex()}", f"xdt:{object_id.hex()}:pulls"


class RedisPath:
    mode = TransferMode.ELASTICACHE

    def __init__(self, url: str, keyring: KeyRing, sender: str) -> None:
        import redis.asyncio  # only sidecars that use this mode load the client

        self.url = url
        self.keyring = keyring
        self.sender = sender  # sealed into its references: only it may release them early
        # No socket timeout (redis-py's default is 5 s, which a few hundred MiB outlast):
        # the invocation's own timeout bounds every call.
        self._redis: Any = redis.asyncio.Redis.from_url(url, socket_timeout=None)
        self._pull = self._redis.register_script(_PULL)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    async def put(
        self, data: bytes | bytearray | memoryview, *, tenant: str, pulls: int | None, ttl: float
    ) -> str:
        object_id = os.urandom(16)
        key, budget = _keys(object_id)
        ttl_ms = max(1, math.ceil(ttl * 1000))
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, bytes(data), px=ttl_ms)
                if pulls is None or pulls > 1:
                    pipe.set(budget, "unlimited" if pulls is None else str(pulls), px=ttl_ms)
                await pipe.execute()
        except self._errors as exc:
            raise SourceUnavailable(f"Redis at {self.url} refused the put: {exc}") from None
        ref = stored_reference(
            object_id, data, source=self.sender, tenant=tenant, ttl=ttl, mode=self.mode
        )
        return self.keyring.seal(ref)

    async def get(self, ref: Reference, token: str) -> bytes:
        try:
            value = await self._pull(keys=list(_keys(ref.object_id)))
        except self._errors as exc:
            raise SourceUnavailable(f"Redis at {self.url} failed the pull: {exc}") from None
        if value is None:
            raise ObjectNotFound(
                f"object {ref.object_hex} is no longer in Redis: its pull budget was used, or "
                "it was released or expired"
            )
        return bytes(value)

    async def release(self, ref: Reference) -> bool:
        if ref.source != self.sender:
            return False  # only its sender frees it early; the last pull or expiry does
        try:
            removed: int = await self._redis.delete(*_keys(ref.object_id))
        except self._errors as exc:
            raise SourceUnavailable(f"Redis at {self.url} failed the release: {exc}") from None
        return removed > 0

    async def close(self) -> None:
        await self._redis.aclose()
