"""What function code imports: calls to other functions through the instance's own sidecar.

    import xdt

    async def handler(body: bytes) -> bytes:
        thumbnails = await xdt.scatter("resize", split(body))   # N invocations at once
        return merge(thumbnails)

The same code moves its data inline, through Redis, through S3 or directly sidecar to sidecar:
the function's ``transfer`` setting decides, never the code. Calls:

- ``invoke(fn, data) -> bytes`` and ``scatter(fn, [d1, d2, …]) -> list[bytes]``;
- ``put(data, pulls=1, ttl=None) -> str`` and ``get(ref) -> bytes``: a reference carried by
  hand (an opaque string: put it in payloads, forward it, return it); ``release(ref)``;
- ``broadcast(fn, data, n) -> list[bytes]``: one object, ``n`` invocations reading it;
- ``gather([ref, …]) -> list[bytes]``: many references pulled at once.

:mod:`xdt.sync` has the same calls for plain ``def`` handlers. The sidecar's egress address
comes from ``$XDT_EGRESS``, which the platform sets in every function process. A failed call
raises the typed error the platform reported (:class:`~xdt.FunctionNotFound`,
:class:`~xdt.FunctionFailed`, :class:`~xdt.ReferenceExpired`, :class:`~xdt.Overloaded`, …).
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
import weakref
from collections.abc import Sequence

import aiohttp

from .._errors import InstanceFailed, XdtError
from .._http import TRANSFER_HEADER, error_from_answer

__all__ = [
    "EGRESS_ENV",
    "aclose",
    "broadcast",
    "egress_url",
    "gather",
    "get",
    "invoke",
    "put",
    "release",
    "scatter",
]

EGRESS_ENV = "XDT_EGRESS"

_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary()
)


def egress_url() -> str:
    url = os.environ.get(EGRESS_ENV)
    if not url:
        raise XdtError(
            f"${EGRESS_ENV} is not set: xdt.invoke works inside a function run by the xdt "
            "platform (`xdt up`), whose sidecar sets it"
        )
    return url.rstrip("/")


async def invoke(function: str, data: bytes | bytearray | memoryview = b"") -> bytes:
    """Invoke ``function`` with ``data`` as its request body; its answer body."""
    return await _post(f"/invoke/{function}", bytes(data), function=function)


async def scatter(function: str, items: Sequence[bytes | bytearray | memoryview]) -> list[bytes]:
    """Invoke ``function`` once per item, concurrently; the answers in order."""
    return list(await asyncio.gather(*(invoke(function, item) for item in items)))


async def put(
    data: bytes | bytearray | memoryview, *, pulls: int | None = 1, ttl: float | None = None
) -> str:
    """Store ``data`` for someone else to :func:`get`; the reference (an opaque string).
    ``pulls``: how many gets it allows (None: any number until it expires or is released);
    ``ttl``: seconds until it expires (default: the platform's ``object_ttl``)."""
    query = {"pulls": "unlimited" if pulls is None else str(pulls)}
    if ttl is not None:
        query["ttl"] = repr(float(ttl))
    reference = await _post(f"/objects?{urllib.parse.urlencode(query)}", bytes(data))
    return reference.decode()


async def get(reference: str) -> bytes:
    """The bytes behind a reference (counts one of its pulls)."""
    return await _post("/objects/get", reference.encode())


async def release(reference: str) -> None:
    """Free the object behind a reference now, rather than at its last pull or expiry."""
    await _post("/objects/release", reference.encode())


async def gather(references: Sequence[str]) -> list[bytes]:
    """Every reference's bytes, pulled concurrently, in order."""
    return list(await asyncio.gather(*(get(reference) for reference in references)))


async def broadcast(function: str, data: bytes | bytearray | memoryview, n: int) -> list[bytes]:
    """Invoke ``function`` ``n`` times on the same ``data``, stored once (one object, one
    buffer, n pulls); the answers in order. The object is released when all have answered."""
    reference = await put(data, pulls=None)
    try:
        calls = (
            _post(f"/invoke/{function}", reference.encode(), function=function, by_reference=True)
            for _ in range(n)
        )
        return list(await asyncio.gather(*calls))
    finally:
        await release(reference)


async def _post(
    path: str, body: bytes, *, function: str | None = None, by_reference: bool = False
) -> bytes:
    url = f"{egress_url()}{path}"
    headers = {TRANSFER_HEADER: "ref"} if by_reference else None
    try:
        async with _session().post(url, data=body, headers=headers) as response:
            answer = await response.read()
            if response.status >= 300:
                raise error_from_answer(
                    response.status, response.headers, answer, function=function
                )
            return answer
    except aiohttp.ClientError as exc:
        raise InstanceFailed(
            f"this instance's sidecar is unreachable at {url}: {exc}", function=function
        ) from None


async def aclose() -> None:
    """Close this event loop's connection pool (optional; for tidy shutdowns and tests)."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()


def _session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
        )
        _sessions[loop] = session
    return session
