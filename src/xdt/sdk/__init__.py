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
import os
import urllib.parse
import weakref
from collections.abc import Sequence

import aiohttp

from .._core.buffers import Buffer, BufferPool
from .._core.errors import InstanceFailed, XdtError
from .._http.server import ERROR_HEADER, TRANSFER_HEADER, error_from_answer
from ..channel import Channel, Kind, as_bytes

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

EGRESS_ENV = "XDT_EGRESS"
EGRESS_SOCKET_ENV = "XDT_EGRESS_SOCKET"
SMALL_PAYLOAD = 64 << 10  # xdt's default inline threshold

_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary()
)
_POOL = BufferPool(name="xdt-sdk")  # warm buffers big payloads are lent to the sidecar in
_channels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Channel]] = (
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


Data = bytes | bytearray | memoryview | Buffer


def buffer(size: int) -> Buffer:
    """A memfd-backed buffer of ``size`` bytes to fill in place — ``buffer.writable()[:size]``
    — then pass to :func:`invoke`, :func:`put` (or :func:`scatter`) instead of bytes: it goes
    to the sidecar as is, sealed, without a copy. It belongs to the call it is passed to."""
    made = Buffer(max(size, 1), name="xdt-payload")
    made.size = size
    return made


async def invoke(function: str, data: Data = b"") -> bytes:
    """Invoke ``function`` with ``data`` as its request body; its answer body."""
    return await _call("invoke", {"function": function}, data, function=function)


async def scatter(function: str, items: Sequence[Data]) -> list[bytes]:
    """Invoke ``function`` once per item, concurrently; the answers in order."""
    return list(await asyncio.gather(*(invoke(function, item) for item in items)))


async def put(data: Data, *, pulls: int | None = 1, ttl: float | None = None) -> str:
    """Store ``data`` for someone else to :func:`get`; the reference (an opaque string).
    ``pulls``: how many gets it allows (None: any number until it expires or is released);
    ``ttl``: seconds until it expires (default: the platform's ``object_ttl``)."""
    meta: dict[str, object] = {"pulls": pulls}
    if ttl is not None:
        meta["ttl"] = float(ttl)
    return (await _call("put", meta, data)).decode()


async def get(reference: str) -> bytes:
    """The bytes behind a reference (counts one of its pulls)."""
    return await _call("get", {}, reference.encode())


async def release(reference: str) -> None:
    """Free the object behind a reference now, rather than at its last pull or expiry."""
    await _call("release", {}, reference.encode())


async def gather(references: Sequence[str]) -> list[bytes]:
    """Every reference's bytes, pulled concurrently, in order."""
    return list(await asyncio.gather(*(get(reference) for reference in references)))


async def broadcast(function: str, data: Data, n: int) -> list[bytes]:
    """Invoke ``function`` ``n`` times on the same ``data``, stored once (one object, one
    buffer, n pulls); the answers in order. The object is released when all have answered.
    A payload small enough to travel inline (64 KiB) is simply sent n times: storing it would
    cost a round trip more than it saves."""
    size = data.size if isinstance(data, Buffer) else len(data)
    if size <= SMALL_PAYLOAD:
        small = as_bytes(data) if isinstance(data, Buffer) else bytes(data)
        return await scatter(function, [small] * n)
    reference = await put(data, pulls=None)
    try:
        meta = {"function": function, "forwarded": True}
        calls = (_call("invoke", meta, reference.encode(), function=function) for _ in range(n))
        return list(await asyncio.gather(*calls))
    finally:
        await release(reference)


async def _call(
    op: str, meta: dict[str, object], data: Data, *, function: str | None = None
) -> bytes:
    path = os.environ.get(EGRESS_SOCKET_ENV)
    if path is None:
        return await _call_http(op, meta, data, function=function)
    idle = _channels.setdefault(asyncio.get_running_loop(), [])
    try:
        channel = idle.pop() if idle else await Channel.connect(path, _POOL)
    except OSError as exc:
        _close(data)
        raise InstanceFailed(
            f"this instance's sidecar is unreachable at {path}: {exc}", function=function
        ) from None
    if isinstance(data, Buffer) and not data.sealed:
        data.seal()  # xdt.buffer(): given to the sidecar, which keeps it without a copy
    try:
        await channel.send(Kind.CALL, {"op": op, **meta}, data)
        message = await channel.receive()
    except (OSError, ValueError) as exc:
        channel.close()
        raise InstanceFailed(
            f"this instance's sidecar went away mid-call: {exc}", function=function
        ) from None
    idle.append(channel)
    if message.kind is Kind.RESULT:
        return message.data()
    message.close()
    error = message.meta
    headers = {ERROR_HEADER: error["code"]} if error.get("code") else {}
    body = str(error.get("body", "")).encode()
    raise error_from_answer(int(error.get("status", 500)), headers, body, function=function)


async def _call_http(
    op: str, meta: dict[str, object], data: Data, *, function: str | None
) -> bytes:
    body = as_bytes(data) if isinstance(data, Buffer) else bytes(data)
    if op == "invoke":
        headers = {TRANSFER_HEADER: "ref"} if meta.get("forwarded") else None
        return await _post(f"/invoke/{meta['function']}", body, function=function, headers=headers)
    if op == "put":
        pulls, ttl = meta.get("pulls"), meta.get("ttl")
        assert (pulls is None or isinstance(pulls, int)) and (ttl is None or isinstance(ttl, float))
        return await _post(put_path(pulls, ttl), body)
    return await _post(f"/objects/{op}", body)


async def _post(
    path: str, body: bytes, *, function: str | None = None, headers: dict[str, str] | None = None
) -> bytes:
    url = f"{egress_url()}{path}"
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


def put_path(pulls: int | None, ttl: float | None) -> str:
    """The egress path of a put over HTTP (``xdt.sdk`` without its socket, ``xdt.sdk.sync``)."""
    query = {"pulls": "unlimited" if pulls is None else str(pulls)}
    if ttl is not None:
        query["ttl"] = repr(float(ttl))
    return f"/objects?{urllib.parse.urlencode(query)}"


def _close(data: Data) -> None:
    if isinstance(data, Buffer):
        data.close()


async def aclose() -> None:
    """Close this event loop's connections (optional; for tidy shutdowns and tests)."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()
    for channel in _channels.pop(asyncio.get_running_loop(), []):
        channel.close()


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
