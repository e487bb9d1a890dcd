"""How a sidecar moves payloads: its function's transfer mode, applied at both of its faces.

Outbound (a request the function sends, or an answer it returns to a caller's sidecar) a
payload travels inline in the HTTP body up to :attr:`TransferSettings.inline_up_to` bytes,
and is otherwise stored by the mode's data path and replaced by its reference, marked with
``X-Xdt-Transfer: ref``::

    inline       always inline; over the inline limit → 413 naming the limit and the modes
    xdt          inline up to xdt_threshold (64 KiB), above it an object in this sidecar
    elasticache  inline up to storage_threshold (64 KiB), above it by reference through Redis
    s3           likewise, through S3

Inbound, a reference is resolved into bytes whatever its mode (the reference says which), so
the function always sees ordinary bytes. A caller's sidecar marks its requests with
``X-Xdt-Accept: ref``: only then is an answer turned into a reference (an external client
gets bytes). References carried by hand (``xdt.put`` / ``xdt.get``) use the same paths.
"""

from __future__ import annotations

import collections

from .._core.buffers import Buffer
from .._core.errors import PayloadTooLarge, ReferenceMalformed
from .._core.refs import KeyRing, TransferMode
from ..modes import DataPaths, PathMaker, TransferSettings
from ..modes.base import Data, Payload, plain, size_of
from .usage import Usage

__all__ = ["Payloads", "close"]


def close(payload: object) -> None:
    if isinstance(payload, Buffer):
        payload.close()


class Payloads:
    """The function's payloads, by its :class:`TransferSettings`. Data paths are made on
    first use: a sidecar loads the Redis or S3 client only when its mode, or a reference it is
    handed, needs one."""

    def __init__(
        self, settings: TransferSettings, paths: PathMaker, *, function: str, tenant: str
    ) -> None:
        self.settings = settings
        self.function, self.tenant = function, tenant
        self._paths = DataPaths(paths)
        # Payload bytes by how they travelled: "inline" in the invocation, else the mode label
        # of the path that stored them (sent) or that they were fetched from (received).
        self.sent: collections.Counter[str] = collections.Counter()
        self.received: collections.Counter[str] = collections.Counter()

    @property
    def bytes_inline(self) -> int:
        return self.sent[TransferMode.INLINE.label]

    @property
    def bytes_by_reference(self) -> int:
        return sum(self.sent.values()) - self.bytes_inline

    @property
    def keyring(self) -> KeyRing:
        return self._paths.maker.keyring

    # -- the invocation path -----------------------------------------------------------------

    async def outbound(self, payload: Data, *, what: str) -> tuple[bytes, bool]:
        """(body to send, whether it is a reference) for a payload leaving this sidecar.
        ``what`` names it in an error: "the call to 'resize'", "the answer"."""
        size = size_of(payload)
        if size <= self.settings.inline_up_to:
            self.sent[TransferMode.INLINE.label] += size
            return bytes(plain(payload)), False
        if self.settings.mode is TransferMode.INLINE:
            close(payload)
            raise PayloadTooLarge(
                f"{what} of function {self.function!r} is {size} bytes, over the inline limit "
                f"of {self.settings.inline_limit} bytes (platform.inline_limit; transfer: "
                "inline); deploy it with transfer: xdt, elasticache or s3 to move bigger "
                "payloads",
                function=self.function,
            )
        token = await self.put(payload, pulls=1)
        return token.encode(), True

    async def inbound(self, body: bytes, by_reference: bool) -> Payload:
        """The payload an arriving body stands for (a memfd the caller owns, after a
        same-host pull)."""
        if not by_reference:
            self.received[TransferMode.INLINE.label] += len(body)
            return body
        try:
            token = body.decode("ascii")
        except UnicodeDecodeError:
            raise ReferenceMalformed("the body marked as a reference is not one") from None
        return await self.get(token)

    # -- references by hand ------------------------------------------------------------------

    async def put(
        self,
        data: Data,
        *,
        pulls: int | None = 1,
        ttl: float | None = None,
        inline_small: bool = False,
    ) -> str:
        """Store ``data`` by this function's mode; its reference. Takes over a Buffer.
        ``inline_small``: a payload that would travel inline in an invocation becomes an
        inline reference (the bytes themselves; for broadcast, which otherwise stores an
        object to save sending small bytes n times)."""
        mode = self.settings.mode
        if inline_small and size_of(data) <= self.settings.inline_up_to:
            mode = TransferMode.INLINE
        ttl = ttl or self.settings.object_ttl
        size = size_of(data)
        token = await self._paths[mode].put(data, tenant=self.tenant, pulls=pulls, ttl=ttl)
        if mode is not TransferMode.INLINE:  # an inline one moves inside a body, counted there
            self.sent[mode.label] += size
        return token

    async def get(self, token: str) -> Payload:
        """The payload behind a reference: checked bytes, or a sealed memfd the caller owns."""
        path, ref = self._paths.route(token, tenant=self.tenant)
        payload = await path.get(token, ref)
        if path.mode is not TransferMode.INLINE:  # it came inside a body, counted there
            self.received[path.mode.label] += size_of(payload)
        return payload

    def usage(self) -> Usage:
        """The bytes moved and the storage requests made (see :mod:`.usage`)."""
        usage = Usage(sent_bytes=self.sent.copy(), received_bytes=self.received.copy())
        for path in self._paths.made():
            if path.mode is TransferMode.ELASTICACHE:
                usage.redis_commands += path.counts.requests.total()
            elif path.mode is TransferMode.S3:
                usage.s3_requests.update(path.counts.requests)
                usage.s3_byte_seconds += path.counts.byte_seconds
        return usage

    async def release(self, token: str) -> bool:
        path, ref = self._paths.route(token, tenant=self.tenant)
        return await path.release(token, ref)

    async def unclaimed(self) -> int:
        """Objects this sidecar put that no receiver has taken yet and that go with it: what
        draining waits for."""
        return sum([await path.unclaimed() for path in self._paths.made()])

    async def close(self) -> None:
        await self._paths.close()
