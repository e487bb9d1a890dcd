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
import urllib.parse
from typing import Any

from .._core.errors import ObjectNotFound, SourceUnavailable
from .._core.refs import KeyRing, Reference, TransferMode
from .base import Data, StorageCounts, checked, plain, stored_reference

__all__ = ["MAX_CONNECTIONS", "RedisPath"]

MAX_CONNECTIONS = 64  # per sidecar; more calls at once wait for one (ElastiCache allows 65,000)

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


def _where(url: str) -> str:
    """``host:port`` of a Redis URL: its password never goes into an error."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname or '?'}:{parts.port or 6379}"


class RedisPath:
    mode = TransferMode.ELASTICACHE

    def __init__(self, url: str, keyring: KeyRing, sender: str) -> None:
        import redis.asyncio  # only sidecars that use this mode load the client

        self.where = _where(url)
        self._password = urllib.parse.urlsplit(url).password
        self.keyring = keyring
        self.sender = sender  # sealed into its references: only it may release them early
        # No socket timeout (redis-py's default is 5 s, which a few hundred MiB outlast):
        # the invocation's own timeout bounds every call.
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # Once more on a fresh connection when a pooled one turns out closed: a restarted
        # server (the platform restarts an embedded one) leaves every pooled connection dead.
        # A blocking pool: with every connection busy a call waits for one (bounded by the
        # invocation's timeout) instead of failing with "Too many connections", which redis-py's
        # default pool (100) did to 44 % of a 64-client soak.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=None,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[redis.ConnectionError],
        )
        self._redis: Any = redis.asyncio.Redis(connection_pool=pool)
        self._pull = self._redis.register_script(_PULL)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.counts = StorageCounts()  # commands sent, by name

    async def put(self, data: Data, *, tenant: str, pulls: int | None, ttl: float) -> str:
        value = plain(data)
        object_id = os.urandom(16)
        key, budget = _keys(object_id)
        ttl_ms = max(1, math.ceil(ttl * 1000))
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, bytes(value), px=ttl_ms)
                if pulls is None or pulls > 1:
                    pipe.set(budget, "unlimited" if pulls is None else str(pulls), px=ttl_ms)
                self.counts.requests["SET"] += len(pipe)
                await pipe.execute()
        except self._errors as exc:
            raise SourceUnavailable(
                f"Redis at {self.where} refused the put: {self._why(exc)}"
            ) from None
        ref = stored_reference(
            object_id, value, source=self.sender, tenant=tenant, ttl=ttl, mode=self.mode
        )
        return self.keyring.seal(ref)

    async def get(self, token: str, ref: Reference | None) -> bytes:
        assert ref is not None
        self.counts.requests["EVALSHA"] += 1
        try:
            value = await self._pull(keys=list(_keys(ref.object_id)))
        except self._errors as exc:
            raise SourceUnavailable(
                f"Redis at {self.where} failed the pull: {self._why(exc)}"
            ) from None
        if value is None:
            raise ObjectNotFound(
                "the object is no longer in Redis: its pull budget was used, or "
                "it was released or expired"
            )
        return checked(ref, bytes(value))

    async def release(self, token: str, ref: Reference | None) -> bool:
        assert ref is not None
        if ref.source != self.sender:
            return False  # only its sender frees it early; the last pull or expiry does
        self.counts.requests["DEL"] += 1
        try:
            removed: int = await self._redis.delete(*_keys(ref.object_id))
        except self._errors as exc:
            raise SourceUnavailable(
                f"Redis at {self.where} failed the release: {self._why(exc)}"
            ) from None
        return removed > 0

    async def unclaimed(self) -> int:
        return 0  # Redis keeps them past this sender: their own PX frees them

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)

    def _why(self, exc: BaseException) -> str:
        """What went wrong, without the password, wherever redis-py may have put it."""
        return _redact(f"{type(exc).__name__}: {exc}", self._password)


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text
