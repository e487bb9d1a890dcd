"""The transfer checksum: XXH3-64 over an object's bytes.

It detects corruption, not forgery: references are authenticated by their AEAD, and a
function that claims a wrong checksum for its own sealed memfd (see
:func:`xdt._core.buffers.sealed_buffer`) only fails its own transfers' checks. XXH3 runs at
~27 GB/s here and lets go of the GIL; crc32 was the bottleneck at ~1 GB/s.
"""

from __future__ import annotations

import xxhash

__all__ = ["Checksum", "checksum"]


def checksum(data: bytes | bytearray | memoryview) -> int:
    """XXH3-64 of ``data``."""
    return xxhash.xxh3_64_intdigest(data)


class Checksum:
    """The same XXH3-64, fed a piece at a time: a receiver hashes each piece as it arrives,
    while it is still in the CPU's cache (256 MiB over TCP: ~10 ms less than one pass over
    the whole buffer afterwards, which reads it back from memory)."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = xxhash.xxh3_64()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._state.update(data)

    def value(self) -> int:
        return self._state.intdigest()
