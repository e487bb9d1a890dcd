"""The transfer modes: one invocation path, four data paths behind one interface.

:class:`~.base.DataPath` is the interface (see :mod:`.base` for what every path does alike);
:mod:`.inline`, :mod:`.memory` (the ``xdt`` mode), :mod:`.redis` (``elasticache``) and
:mod:`.s3` implement it. The sidecar picks the path by deployment configuration
(:mod:`xdt.sidecar.payloads`); function code never does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .._core.errors import SourceUnavailable
from .._core.refs import KeyRing, Reference, TransferMode
from .._core.store import ObjectStore
from ..pull import ObjectServer, PullClient
from .base import (
    DEFAULT_STORE_SETTINGS,
    DEFAULT_TRANSFER_SETTINGS,
    DataPath,
    StoreSettings,
    TransferSettings,
)
from .inline import InlinePath, is_inline
from .memory import MemoryPath

__all__ = [
    "DEFAULT_STORE_SETTINGS",
    "DEFAULT_TRANSFER_SETTINGS",
    "MODES",
    "DataPath",
    "DataPaths",
    "PathMaker",
    "StoreSettings",
    "TransferSettings",
]

MODES: tuple[str, ...] = tuple(mode.label for mode in TransferMode)
"""Every transfer mode's name, as a spec writes it: inline, xdt, elasticache, s3."""


@dataclass(frozen=True)
class PathMaker:
    """What a sidecar's data paths are made of; :meth:`make` builds the one for a mode (the
    storage modes' clients are imported only when a mode first needs them)."""

    keyring: KeyRing
    sender: str  # sealed into storage references: names this sidecar's objects
    stores: StoreSettings
    inline_limit: int
    store: ObjectStore
    server: ObjectServer
    client: PullClient
    function: str | None = None
    credentials: Mapping[str, str] | None = None  # S3's, if not the environment's

    def make(self, mode: TransferMode) -> DataPath:
        if mode is TransferMode.INLINE:
            return InlinePath(self.inline_limit, function=self.function)
        if mode is TransferMode.XDT:
            return MemoryPath(self.store, self.server, self.client)
        if mode is TransferMode.ELASTICACHE:
            if self.stores.redis_url is None:
                raise SourceUnavailable(
                    "this platform has no Redis configured (platform.redis_url) for "
                    "elasticache references"
                )
            from .redis import RedisPath

            return RedisPath(self.stores.redis_url, self.keyring, self.sender)
        from .s3 import S3Path

        return S3Path(self.stores, self.keyring, self.sender, credentials=self.credentials)


class DataPaths:
    """One holder's data paths (a sidecar's, the gateway's), each made on first use — the
    Redis or S3 client is loaded only when a mode, or a reference handed in, needs it — and
    the path a reference names."""

    def __init__(self, maker: PathMaker) -> None:
        self.maker = maker
        self._made: dict[TransferMode, DataPath] = {}

    def __getitem__(self, mode: TransferMode) -> DataPath:
        path = self._made.get(mode)
        if path is None:
            path = self._made[mode] = self.maker.make(mode)
        return path

    def made(self) -> list[DataPath]:
        """The paths made so far."""
        return list(self._made.values())

    def route(self, token: str, *, tenant: str | None) -> tuple[DataPath, Reference | None]:
        """The path behind ``token``, and its reference opened for ``tenant`` (None: for the
        platform itself, any tenant's); an inline one has none: it is its bytes."""
        if is_inline(token):
            return self[TransferMode.INLINE], None
        ref = self.maker.keyring.open(token, tenant=tenant)
        return self[ref.mode], ref

    async def close(self) -> None:
        for path in self._made.values():
            await path.close()
