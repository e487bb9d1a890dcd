"""The ``inline`` data path: the "reference" is the payload itself.

``inline:`` followed by the bytes in base64url: it travels inside the invocations like every
other inline byte, so nothing is stored, pulled or freed, and neither a pull budget nor an
expiry applies (whoever holds the text holds the bytes). Payloads over the inline limit are
refused, naming the limit and the modes that move bigger ones.
"""

from __future__ import annotations

import base64
import binascii

from .._core.errors import PayloadTooLarge, ReferenceMalformed
from .._core.refs import Reference, TransferMode
from .base import Data, StorageCounts, plain, size_of

__all__ = ["INLINE_PREFIX", "InlinePath", "decode_inline", "is_inline"]

INLINE_PREFIX = "inline:"


def is_inline(token: str) -> bool:
    return token.startswith(INLINE_PREFIX)


def decode_inline(token: str) -> bytes:
    """The bytes an inline reference is (:class:`~xdt.ReferenceMalformed` if it is not one):
    whoever holds one holds them, with no one to ask."""
    try:
        text = token.removeprefix(INLINE_PREFIX).encode("ascii")
        # validate: a character outside base64url, or after the padding, is refused, never
        # silently dropped.
        return base64.b64decode(text, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ReferenceMalformed("not an inline reference: bad base64url") from None


class InlinePath:
    mode = TransferMode.INLINE

    def __init__(self, limit: int, *, function: str | None = None) -> None:
        self.limit = limit
        self.function = function
        self.counts = StorageCounts()  # no store: nothing to count

    async def put(self, data: Data, *, tenant: str, pulls: int | None, ttl: float) -> str:
        size = size_of(data)
        if size > self.limit:
            if not isinstance(data, bytes | bytearray | memoryview):
                data.close()
            raise PayloadTooLarge(
                f"an inline put of {size} bytes is over the inline limit of {self.limit} "
                "bytes (platform.inline_limit); use transfer: xdt, elasticache or s3",
                function=self.function,
            )
        return INLINE_PREFIX + base64.urlsafe_b64encode(plain(data)).decode()

    async def get(self, token: str, ref: Reference | None) -> bytes:
        return decode_inline(token)

    async def release(self, token: str, ref: Reference | None) -> bool:
        return False  # nothing is held anywhere

    async def unclaimed(self) -> int:
        return 0

    async def close(self) -> None:
        pass
