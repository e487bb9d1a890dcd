"""What function code imports: calls to other functions through the instance's own sidecar.

    import xdt

    async def handler(body: bytes) -> bytes:
        thumbnails = await xdt.scatter("resize", split(body))   # N invocations at once
        return merge(thumbnails)

Inside the xdt Python runtime the SDK reaches its sidecar on a Unix socket
(``$XDT_EGRESS_SOCKET``), big payloads passed as sealed memfds, so no byte is streamed between
the function and its sidecar; elsewhere (or from any language) the same calls are plain HTTP
to ``$XDT_EGRESS``. A producer that can write its payload in place asks for :func:`buffer`
and passes it instead of bytes: then not even one copy is made on the way out.

The same code moves its data inline, through Redis, through S3 or directly sidecar to sidecar:
the function's ``transfer`` setting decides, never the code. Calls:

- ``invoke(fn, data) -> bytes`` and ``scatter(fn, [d1, d2, …]) -> list[bytes]``;
- ``put(data, pulls=1, ttl=None) -> str`` and ``get(ref) -> bytes``: a reference carried by
  hand (an opaque string: put it in payloads, forward it, return it); ``release(ref)``;
- ``broadcast(fn, data, n) -> list[bytes]``: one object, ``n`` invocations reading it;
- ``gather([ref, …]) -> list[bytes]``: many references pulled at once.

:mod:`xdt.sdk.sync` has the same calls for plain ``def`` handlers. The sidecar's egress address
comes from ``$XDT_EGRESS``, which the platform sets in every function process; its path is a
secret of this instance's (without it the egress answers 403), so calls go *under* it. A failed call
raises the typed error the platform reported (:class:`~xdt.FunctionNotFound`,
:class:`~xdt.FunctionFailed`, :class:`~xdt.ReferenceExpired`, :class:`~xdt.Overloaded`, …).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .._core.buffers import Buffer
from ._transport import (
    BLANK,
    EGRESS_ENV,
    EGRESS_SOCKET_ENV,
    Data,
    close_transport,
    egress_url,
    transport,
)

__all__ = [
    "EGRESS_ENV",
    "EGRESS_SOCKET_ENV",
    "aclose",
    "broadcast",
    "buffer",
    "egress_url",
    "gather",
    "get",
    "invoke",
    "put",
    "release",
    "scatter",
]


def buffer(size: int) -> Buffer:
    """A memfd-backed buffer of ``size`` bytes to fill in place — ``buffer.writable()[:size]``
    — then pass to :func:`invoke`, :func:`put` (or :func:`scatter`) instead of bytes: it goes
    to the sidecar as is, sealed, without a copy. It belongs to the call it is passed to.

    It starts zeroed: never-used memory, made ahead of need once a buffer of its size has been
    given away (so the next one costs no page faults)."""
    made = BLANK.acquire(max(size, 1))
    made.size = size
    return made


async def invoke(function: str, data: Data = b"") -> bytes:
    """Invoke ``function`` with ``data`` as its request body; its answer body."""
    return await transport().call("invoke", {"function": function}, data, function=function)


async def scatter(function: str, items: Sequence[Data]) -> list[bytes]:
    """Invoke ``function`` once per item, concurrently; the answers in order."""
    return list(await asyncio.gather(*(invoke(function, item) for item in items)))


async def put(data: Data, *, pulls: int | None = 1, ttl: float | None = None) -> str:
    """Store ``data`` for someone else to :func:`get`; the reference (an opaque string).
    ``pulls``: how many gets it allows (None: any number until it expires or is released);
    ``ttl``: seconds until it expires (default: the platform's ``object_ttl``)."""
    return await _put(data, pulls=pulls, ttl=ttl)


async def _put(
    data: Data, *, pulls: int | None, ttl: float | None, inline_small: bool = False
) -> str:
    meta: dict[str, object] = {"pulls": pulls, "inline_small": inline_small}
    if ttl is not None:
        meta["ttl"] = float(ttl)
    return (await transport().call("put", meta, data, function=None)).decode()


async def get(reference: str) -> bytes:
    """The bytes behind a reference (counts one of its pulls)."""
    return await transport().call("get", {}, reference.encode(), function=None)


async def release(reference: str) -> None:
    """Free the object behind a reference now, rather than at its last pull or expiry."""
    await transport().call("release", {}, reference.encode(), function=None)


async def gather(references: Sequence[str]) -> list[bytes]:
    """Every reference's bytes, pulled concurrently, in order."""
    return list(await asyncio.gather(*(get(reference) for reference in references)))


async def broadcast(function: str, data: Data, n: int) -> list[bytes]:
    """Invoke ``function`` ``n`` times on the same ``data``, stored once (one object, one
    buffer, n pulls); the answers in order. The object is released when all have answered.
    A payload small enough to travel inline in this function's mode (``xdt_threshold``, or
    ``storage_threshold`` in the storage modes) is not stored: its "reference" is the bytes
    themselves, sent n times."""
    reference = await _put(data, pulls=None, ttl=None, inline_small=True)
    try:
        meta = {"function": function, "forwarded": True}
        calls = (
            transport().call("invoke", meta, reference.encode(), function=function)
            for _ in range(n)
        )
        return list(await asyncio.gather(*calls))
    finally:
        await release(reference)


async def aclose() -> None:
    """Close this event loop's connections (optional; for tidy shutdowns and tests)."""
    await close_transport()
