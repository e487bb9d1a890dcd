"""The wire between a sidecar and the Python runtime: length-prefixed messages on a Unix socket.

One request at a time per connection (the sidecar pools connections), so no request ids::

    kind (1 byte) | length (8 bytes, big-endian) | payload

The sidecar sends INVOKE (the request body) or PING; the runtime answers RESULT (the response
body), FAILED (the handler raised: UTF-8 error text) or PONG. A closed connection before the
answer means the function process died.
"""

from __future__ import annotations

import asyncio
import enum
import struct

__all__ = ["HEADER", "Kind", "read_message", "write_message"]

HEADER = struct.Struct("!BQ")


class Kind(enum.IntEnum):
    INVOKE = 1
    RESULT = 2
    FAILED = 3
    PING = 4
    PONG = 5


async def read_message(reader: asyncio.StreamReader, *, max_size: int) -> tuple[Kind, bytes]:
    """Raises :class:`asyncio.IncompleteReadError` on EOF and :class:`ValueError` on a bad
    frame."""
    kind, length = HEADER.unpack(await reader.readexactly(HEADER.size))
    if length > max_size:
        raise ValueError(f"message of {length} bytes is over the {max_size}-byte limit")
    return Kind(kind), await reader.readexactly(length)


async def write_message(
    writer: asyncio.StreamWriter, kind: Kind, payload: bytes | bytearray | memoryview = b""
) -> None:
    writer.writelines((HEADER.pack(kind, len(payload)), payload))
    await writer.drain()
