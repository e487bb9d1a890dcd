"""aiohttp server helpers: error answers, and request bodies read within a size and a deadline."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from .._core.errors import BadRequest, PayloadTooLarge, RequestTimeout, XdtError
from .errors import error_body
from .headers import ERROR_HEADER
from .listen import DEFAULT_LIMITS, Limits

__all__ = ["error_response", "read_body"]


def error_response(error: XdtError, *, function: str | None = None) -> web.Response:
    """The answer for ``error`` (see :mod:`.errors`); ``function`` fills in the function it
    concerns when the error does not name one."""
    if error.function is None and function is not None:
        error.function = function
    return web.Response(
        status=error.status,
        body=error_body(error),
        content_type="application/json",
        headers={ERROR_HEADER: error.code},
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
    deadline = limits.body_deadline(sent)
    try:
        async with asyncio.timeout(deadline):
            body = await request.read()
    except TimeoutError:
        # aiohttp closes the connection after the answer: the body was not read to its end.
        raise RequestTimeout(
            f"the request body did not arrive within {deadline:g} s "
            f"({limits.body_timeout:g} s, plus 1 s per {limits.min_body_rate} bytes declared)",
            function=function,
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"the request body is over {limit_name} of {limit} bytes", function=function
        ) from None
    except (ConnectionError, aiohttp.ClientPayloadError) as exc:
        raise BadRequest(f"the request body was cut short: {exc}", function=function) from None
    if len(body) > limit:  # a chunked body the server's own cap (the larger one) let through
        raise PayloadTooLarge(
            f"the request body is {len(body)} bytes, over {limit_name} of {limit} bytes",
            function=function,
        )
    return body
