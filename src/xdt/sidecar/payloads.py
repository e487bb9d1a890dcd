"""How a sidecar moves payloads: the function's transfer mode, applied at both of its faces.

Outbound (a request the function sends, or an answer it returns to a caller's sidecar) a
payload either travels inline in the HTTP body or is stored by the mode's data path and
replaced by its sealed reference, marked with ``X-Xdt-Transfer: ref``::

    inline       always inline; over the inline limit → 413 naming the limit and the modes
    xdt          inline up to xdt_threshold (64 KiB), above it an object in this sidecar
    elasticache  by reference through Redis (every non-empty payload, as the baseline does)
    s3           by reference through S3 (likewise)

Inbound, a reference is resolved into bytes whatever its mode (the reference says which), so
the function always sees ordinary bytes. A caller's sidecar marks its requests with
``X-Xdt-Accept: ref``: only then is an answer turned into a reference (an external client
gets bytes).

References carried by hand (``xdt.put`` / ``xdt.get``) use the same paths; in ``inline`` mode
such a "reference" is the bytes themselves, base64url-encoded after ``inline:``, so they
travel inside the invocations like every other inline byte.
"""

from __future__ import annotations

import base64
import binascii

from .._core.buffers import Buffer
from .._core.checksum import checksum
from .._core.errors import PayloadTooLarge, ReferenceMalformed, TransferCorrupted
from .._core.refs import KeyRing, TransferMode
from .._core.store import ObjectStore
from .._http.server import ACCEPT_HEADER, TRANSFER_HEADER
from ..channel import as_bytes
from ..modes.base import DataPath, StoreSettings
from ..modes.memory import XdtPath
from ..pull import ObjectServer, PullClient

__all__ = ["ACCEPT_HEADER", "INLINE_PREFIX", "TRANSFER_HEADER", "Payload", "Transfers"]

Payload = bytes | Buffer  # a Buffer: a sealed memfd from or for a local process


def size_of(payload: Payload | bytearray | memoryview) -> int:
    return payload.size if isinstance(payload, Buffer) else len(payload)


def close(payload: object) -> None:
    if isinstance(payload, Buffer):
        payload.close()


def _plain(data: Payload | bytearray | memoryview) -> bytes | bytearray | memoryview:
    return as_bytes(data) if isinstance(data, Buffer) else data


INLINE_PREFIX = "inline:"

_MODES = {
    "xdt": TransferMode.XDT,
    "elasticache": TransferMode.ELASTICACHE,
    "s3": TransferMode.S3,
}


class Transfers:
    def __init__(
        self,
        *,
        function: str,
        mode: str,
        tenant: str,
        keyring: KeyRing,
        store: ObjectStore,
        server: ObjectServer,
        client: PullClient,
        stores: StoreSettings,
        sender: str,
        inline_limit: int,
        xdt_threshold: int,
        ttl: float,
    ) -> None:
        if mode != "inline" and mode not in _MODES:
            raise ValueError(f"unknown transfer mode {mode!r}")
        self.function, self.mode, self.tenant = function, mode, tenant
        self.keyring = keyring
        self.stores = stores
        self.sender = sender
        self.inline_limit = inline_limit
        self.xdt_threshold = xdt_threshold
        self.ttl = ttl
        self._paths: dict[TransferMode, DataPath] = {
            TransferMode.XDT: XdtPath(store, server, client)
        }
        self.bytes_by_reference = 0
        self.bytes_inline = 0

    # -- the invocation path -----------------------------------------------------------------

    async def outbound(self, payload: Payload, *, what: str = "the request") -> tuple[bytes, bool]:
        """(body to send, whether it is a reference) for a payload leaving this sidecar."""
        size = size_of(payload)
        if self.mode == "inline":
            if size > self.inline_limit:
                close(payload)
                raise PayloadTooLarge(
                    f"{what} of function {self.function!r} is {size} bytes, over the "
                    f"inline limit of {self.inline_limit} bytes (transfer: inline); deploy it "
                    "with transfer: xdt, elasticache or s3 to move bigger payloads",
                    function=self.function,
                )
            self.bytes_inline += size
            return as_bytes(payload), False
        threshold = self.xdt_threshold if self.mode == "xdt" else 0
        if size <= threshold:
            self.bytes_inline += size
            return as_bytes(payload), False
        token = await self.put(payload, pulls=1)
        self.bytes_by_reference += size
        return token.encode(), True

    async def inbound(self, body: bytes, by_reference: bool) -> Payload:
        """The payload an arriving body stands for (a memfd the caller owns, after a
        same-host pull)."""
        if not by_reference:
            return body
        try:
            token = body.decode("ascii")
        except UnicodeDecodeError:
            raise ReferenceMalformed("the body marked as a reference is not one") from None
        return await self.get(token)

    # -- references by hand ------------------------------------------------------------------

    async def put(
        self,
        data: Payload | bytearray | memoryview,
        *,
        pulls: int | None = 1,
        ttl: float | None = None,
    ) -> str:
        """Store ``data`` by this function's mode; its reference. Takes over a Buffer."""
        if self.mode == "inline":
            size = size_of(data)
            if size > self.inline_limit:
                close(data)
                raise PayloadTooLarge(
                    f"an inline put of {size} bytes is over the inline limit of "
                    f"{self.inline_limit} bytes; use transfer: xdt, elasticache or s3",
                    function=self.function,
                )
            return INLINE_PREFIX + base64.urlsafe_b64encode(_plain(data)).decode()
        ttl = ttl or self.ttl
        if isinstance(data, Buffer):
            if self.mode == "xdt" and not data.lent:
                # Ours (sealed by a local function, or a buffer of our store's pool): the
                # object is that buffer, not a copy of it.
                xdt_path = self._paths[TransferMode.XDT]
                assert isinstance(xdt_path, XdtPath)
                return await xdt_path.adopt(data, tenant=self.tenant, pulls=pulls, ttl=ttl)
            if self.mode == "xdt":  # lent: copy it into the store, and give it back
                try:
                    path = self._path(TransferMode.XDT)
                    return await path.put(data.view(), tenant=self.tenant, pulls=pulls, ttl=ttl)
                finally:
                    data.close()
            data = as_bytes(data)
        path = self._path(_MODES[self.mode])
        return await path.put(data, tenant=self.tenant, pulls=pulls, ttl=ttl)

    async def get(self, token: str) -> Payload:
        """The payload behind a reference: bytes, or a sealed memfd the caller owns."""
        if token.startswith(INLINE_PREFIX):
            try:
                return base64.urlsafe_b64decode(token[len(INLINE_PREFIX) :])
            except (binascii.Error, ValueError):
                raise ReferenceMalformed("not an inline reference: bad base64url") from None
        ref = self.keyring.open(token, tenant=self.tenant)
        data = await self._path(ref.mode).get(ref, token)
        # The pull protocol checks its own; the storage modes are checked here.
        if (
            isinstance(data, bytes)
            and ref.mode is not TransferMode.XDT
            and (len(data) != ref.size or checksum(data) != ref.checksum)
        ):
            raise TransferCorrupted(
                f"object {ref.object_hex} from {ref.mode.name.lower()} has {len(data)} bytes "
                "or a checksum that do not match its reference"
            )
        return data

    async def release(self, token: str) -> bool:
        if token.startswith(INLINE_PREFIX):
            return False
        ref = self.keyring.open(token, tenant=self.tenant)
        return await self._path(ref.mode).release(ref)

    async def unclaimed(self) -> int:
        """Objects this sidecar put in S3 that no receiver has taken yet."""
        from ..modes.s3 import S3Path

        path = self._paths.get(TransferMode.S3)
        return await path.unclaimed() if isinstance(path, S3Path) else 0

    async def close(self) -> None:
        for path in self._paths.values():
            await path.close()

    def _path(self, mode: TransferMode) -> DataPath:
        path = self._paths.get(mode)
        if path is None:
            path = self._paths[mode] = self._make(mode)
        return path

    def _make(self, mode: TransferMode) -> DataPath:
        from .._core.errors import SourceUnavailable

        if mode is TransferMode.ELASTICACHE:
            if self.stores.redis_url is None:
                raise SourceUnavailable(
                    "this platform has no Redis configured (platform.redis_url) for "
                    "elasticache references"
                )
            from ..modes.redis import RedisPath

            return RedisPath(self.stores.redis_url, self.keyring, self.sender)
        if mode is TransferMode.S3:
            from ..modes.s3 import S3Path

            return S3Path(self.stores, self.keyring, self.sender)
        raise ReferenceMalformed(f"no data path for mode {mode!r}")
