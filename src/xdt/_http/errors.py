"""Errors as HTTP answers, and answers as errors — the same way everywhere (gateway, sidecar,
SDK, CLI). No aiohttp here: the blocking SDK and the CLI use it too.

A platform-made error answer has the status of its type, an ``X-Xdt-Error`` header with its
code and a JSON body, :func:`xdt._core.errors.to_wire`: ``{"error": code, "message": ...,
"function": ..., "status": ..., "request_id": ...}``, and ``"traceback"`` when the function's
code raised and ``platform.error_detail`` is ``full``. A client turns it back into the same
exception type (:func:`error_from_answer`). A function's own non-2xx answer carries no
header; it reaches callers as :class:`~xdt.FunctionFailed` (5xx) or :class:`~xdt.BadRequest`
(4xx) with the function's text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from .._core.errors import XdtError, invocation_error, to_wire
from .headers import ERROR_HEADER

__all__ = ["error_body", "error_from_answer"]

_MAX_TEXT = 1000  # of a function's own error answer, quoted in the exception


def error_body(error: XdtError) -> bytes:
    """The JSON body of the answer for ``error``."""
    return json.dumps(to_wire(error)).encode()


def error_from_answer(
    status: int, headers: Mapping[str, str], body: bytes, *, function: str | None = None
) -> XdtError:
    """The exception for a non-2xx answer (``headers``: any mapping; names are matched
    without regard to case)."""
    code = next((v for k, v in headers.items() if k.lower() == ERROR_HEADER.lower()), None)
    text = body.decode(errors="replace").strip()
    if code is None:  # the function's own answer
        message = f"the function answered HTTP {status}"
        if text:
            message += f": {text[:_MAX_TEXT]}"
        return invocation_error(status, None, message, function=function)
    try:
        fields = json.loads(body)
    except ValueError:
        fields = None
    request_id = stack_trace = None
    if isinstance(fields, dict):
        text = fields["message"] if isinstance(fields.get("message"), str) else text
        if isinstance(fields.get("function"), str):
            function = fields["function"]
        request_id, stack_trace = fields.get("request_id"), fields.get("traceback")
    error = invocation_error(status, code, text, function=function)
    error.request_id = request_id if isinstance(request_id, str) else None
    error.stack_trace = stack_trace if isinstance(stack_trace, str) else None
    return error
