"""Errors over HTTP, the same way everywhere (gateway, sidecar, SDK, CLI).

A platform-made error answer has the status of its type, an ``X-Xdt-Error`` header with a
stable code, and a JSON body ``{"error": code, "message": ..., "function": ...}``. A client turns
it back into the same exception type (:func:`error_from_answer`). A function's own non-2xx
answer carries no header; it reaches callers as :class:`~xdt.FunctionFailed` (5xx) or
:class:`~xdt.BadRequest` (4xx) with the function's text.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping

import aiohttp
from aiohttp import web

from .._core.errors import (
    BadRequest,
    InvocationError,
    PayloadTooLarge,
    ReferenceExpired,
    ReferenceRejected,
    StoreError,
    TransferError,
    XdtError,
    invocation_error,
)

__all__ = [
    "ACCEPT_HEADER",
    "ERROR_HEADER",
    "TRANSFER_HEADER",
    "error_code",
    "error_from_answer",
    "error_response",
    "read_body",
    "status_for",
]

ERROR_HEADER = "X-Xdt-Error"
TRANSFER_HEADER = "X-Xdt-Transfer"  # "ref": the body is a sealed reference, not the payload
ACCEPT_HEADER = "X-Xdt-Accept"  # "ref": the caller's sidecar resolves references in answers


def error_code(error: XdtError) -> str:
    """``ReferenceExpired`` → ``"reference_expired"``; invocation errors have their own."""
    return _code_of(type(error))


def _code_of(cls: type[XdtError]) -> str:
    if issubclass(cls, InvocationError):
        return cls.code
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


def status_for(error: XdtError) -> int:
    if isinstance(error, InvocationError):
        return error.status
    if isinstance(error, ReferenceExpired):
        return 410
    if isinstance(error, ReferenceRejected):
        return 403
    if isinstance(error, TransferError):
        return 502
    if isinstance(error, StoreError):
        return 507
    return 500


def error_response(error: XdtError, *, function: str | None = None) -> web.Response:
    if function is None and isinstance(error, InvocationError):
        function = error.function
    body = {"error": error_code(error), "message": str(error), "function": function}
    return web.json_response(
        body, status=status_for(error), headers={ERROR_HEADER: error_code(error)}
    )


def error_from_answer(
    status: int, headers: Mapping[str, str], body: bytes, *, function: str | None = None
) -> XdtError:
    """The exception for a non-2xx answer."""
    code = headers.get(ERROR_HEADER)
    message = body.decode(errors="replace").strip()
    if code is not None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            message = str(json.loads(body)["message"])
        cls = _by_code().get(code)
        if cls is not None and not issubclass(cls, InvocationError):
            return cls(message)
    elif not message:
        message = f"the function answered HTTP {status}"
    else:
        message = f"the function answered HTTP {status}: {message[:1000]}"
    return invocation_error(status, code, message, function=function)


def _subclasses(cls: type[XdtError]) -> Iterator[type[XdtError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _by_code() -> dict[str, type[XdtError]]:
    return {
        _code_of(cls): cls for cls in _subclasses(XdtError) if not issubclass(cls, InvocationError)
    }


async def read_body(
    request: web.Request,
    limit: int,
    *,
    function: str | None = None,
    limit_name: str = "the inline limit",
) -> bytes:
    """The whole request body, or :class:`~xdt.PayloadTooLarge` over ``limit`` bytes, or
    :class:`~xdt.BadRequest` when the client went away mid-body (nothing partial is used)."""
    sent = request.content_length
    if sent is not None and sent > limit:
        raise PayloadTooLarge(
            f"the request body is {sent} bytes, over {limit_name} of {limit} bytes",
            function=function,
        )
    try:
        body = await request.read()
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
