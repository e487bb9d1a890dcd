"""aiohttp server helpers: error answers, request bodies read within a size and a deadline,
and big answers written a chunk at a time within a deadline."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping

import aiohttp
from aiohttp import web

from .._core.errors import BadRequest, PayloadTooLarge, PeerGone, RequestTimeout, XdtError
from .contract import REQUEST_ID_HEADER
from .errors import error_body
from .headers import ERROR_HEADER
from .listen import DEFAULT_LIMITS, Limits

__all__ = ["ANSWER_CHUNK", "ANSWER_DEADLINE", "chunks_of", "error_response", "read_body",
           "read_body_into", "stream_answer"]  # fmt: skip

ANSWER_CHUNK = 1 << 20
# A caller must take a big answer within 30 s plus 1 s per MiB (1 MiB/s on average), or it is
# dropped: a reader that never reads, or reads a few KiB a second, must not hold the memory of
# the answer (12 such readers once held 2.5 GB in one sidecar).
ANSWER_DEADLINE = Limits(body_timeout=30.0, min_body_rate=1 << 20)


def error_response(
    error: XdtError, *, function: str | None = None, request_id: str | None = None
) -> web.Response:
    """The answer for ``error`` (see :mod:`.errors`); ``function`` and ``request_id`` fill in
    the function it concerns and the invocation it happened in when the error does not say."""
    if error.function is None and function is not None:
        error.function = function
    if error.request_id is None and request_id is not None:
        error.request_id = request_id
    headers = {ERROR_HEADER: error.code}
    if error.request_id is not None:
        headers[REQUEST_ID_HEADER] = error.request_id
    return web.Response(
        status=error.status,
        body=error_body(error),
        content_type="application/json",
        headers=headers,
    )


async def read_body(
    request: web.Request,
    limit: int,
    *,
    function: str | None = None,
    limit_name: str = "the inline limit",
    limits: Limits = DEFAULT_LIMITS,
) -> bytes:
    """The whole request body, or :class:`~xdt.PayloadTooLarge` over ``limit`` bytes,
    :class:`~xdt.RequestTimeout` when it did not arrive within ``limits.body_deadline``, or
    :class:`~xdt.BadRequest` when the client went away mid-body (nothing partial is used)."""
    sent = request.content_length
    if sent is not None and sent > limit:
        raise PayloadTooLarge(
            f"the request body is {sent} bytes, over {limit_name} of {limit} bytes",
            function=function,
        )
    try:
        async with _reading(limits, sent, function):
            body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"the request body is over {limit_name} of {limit} bytes", function=function
        ) from None
    if len(body) > limit:  # a chunked body the server's own cap (the larger one) let through
        raise PayloadTooLarge(
            f"the request body is {len(body)} bytes, over {limit_name} of {limit} bytes",
            function=function,
        )
    return body


async def read_body_into(
    request: web.Request, into: memoryview, *, limits: Limits = DEFAULT_LIMITS
) -> None:
    """Exactly ``len(into)`` bytes of request body — its Content-Length, checked by the
    caller — written into ``into`` as they arrive, never held whole in between: the errors of
    :func:`read_body`, and :class:`~xdt.BadRequest` for a body shorter than declared."""
    filled, size = 0, into.nbytes
    async with _reading(limits, size, None):
        while filled < size:
            chunk = await request.content.readany()
            if not chunk:
                break
            into[filled : filled + len(chunk)] = chunk  # aiohttp stops at Content-Length
            filled += len(chunk)
    if filled < size:
        raise BadRequest(f"the request body was cut short: {filled} of {size} bytes came")


@contextlib.asynccontextmanager
async def _reading(
    limits: Limits, declared: int | None, function: str | None
) -> AsyncIterator[None]:
    """Reading a body within ``limits.body_deadline``; what goes wrong, typed."""
    deadline = limits.body_deadline(declared)
    try:
        async with asyncio.timeout(deadline):
            yield
    except TimeoutError:
        # aiohttp closes the connection after the answer: the body was not read to its end.
        raise RequestTimeout(
            f"the request body did not arrive within {deadline:g} s "
            f"({limits.body_timeout:g} s, plus 1 s per {limits.min_body_rate} bytes declared)",
            function=function,
        ) from None
    except (ConnectionError, aiohttp.ClientPayloadError) as exc:
        raise BadRequest(f"the request body was cut short: {exc}", function=function) from None


async def stream_answer(
    request: web.Request,
    status: int,
    headers: Mapping[str, str],
    chunks: AsyncIterable[bytes | memoryview],
    length: int,
) -> web.StreamResponse:
    """Write an answer of ``length`` bytes from ``chunks`` within :data:`ANSWER_DEADLINE`. If
    the caller is too slow, or the source of the chunks fails (:class:`~xdt.PeerGone`), the
    caller's connection is closed short of its Content-Length: it cannot take a part for the
    whole."""
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    try:
        async with asyncio.timeout(ANSWER_DEADLINE.body_deadline(length)):
            await response.prepare(request)
            async for chunk in chunks:
                await response.write(chunk)
            await response.write_eof()
    except (PeerGone, TimeoutError, ConnectionError):
        if request.transport is not None:
            request.transport.abort()
    return response


async def chunks_of(data: bytes | memoryview) -> AsyncGenerator[memoryview, None]:
    """``data`` in :data:`ANSWER_CHUNK` views: nothing is copied into the transport at once."""
    view = memoryview(data)
    for start in range(0, len(data), ANSWER_CHUNK):
        yield view[start : start + ANSWER_CHUNK]
