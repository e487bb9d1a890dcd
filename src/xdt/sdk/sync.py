"""The SDK for plain ``def`` handlers: the calls of :mod:`xdt.sdk`, blocking.

    from xdt import sync

    def handler(body: bytes) -> bytes:
        parts = sync.scatter("count", split(body))
        return merge(parts)

Inside the xdt Python runtime (a handler's worker thread) each call runs on the runtime's event
loop, exactly as the async SDK's: pooled channels on the sidecar's socket, big payloads passed
as memfds, fan-out calls concurrent on the loop. Anywhere else (a thread of a program of your
own with ``$XDT_EGRESS`` set) each call is one HTTP request to the sidecar, and the fan-out
calls run on a small thread pool.

Called from the runtime's event loop itself (an ``async def`` handler), it would wait on the
loop it blocks: it raises instead — use ``await xdt.invoke(...)`` there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import urllib.parse
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from .._core.buffers import Buffer
from .._core.errors import InstanceFailed, XdtError
from .._http.contract import CURRENT_TRACE, Trace
from .._http.errors import error_from_answer
from .._http.headers import BY_REFERENCE, TRANSFER_HEADER
from .._util.loops import serving_loop
from . import broadcast as _broadcast
from . import gather as _gather
from . import get as _get
from . import invoke as _invoke
from . import put as _put
from . import release as _release
from . import scatter as _scatter
from ._transport import Data, egress_url, put_path

__all__ = ["broadcast", "gather", "get", "invoke", "put", "release", "scatter"]

T = TypeVar("T")
_POOL = concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix="xdt-sync")


class _NoLoop:
    """What :func:`_on_loop` answers outside the runtime: take the HTTP way."""


_NO_LOOP = _NoLoop()


def _on_loop(call: Coroutine[Any, Any, T]) -> T | _NoLoop:
    """Run ``call`` on the runtime's loop and wait for it; :data:`_NO_LOOP` (call closed) if
    there is none."""
    loop = serving_loop()
    if loop is None:
        call.close()
        return _NO_LOOP
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None  # a worker thread: the usual case
    if running is loop:
        call.close()
        raise XdtError(
            "xdt.sync was called on the runtime's event loop (from an async def handler), "
            "where it would wait forever on itself; use `await xdt.invoke(...)` there"
        )
    traced = _traced(call, CURRENT_TRACE.get())  # the handler's request, seen on the loop
    return asyncio.run_coroutine_threadsafe(traced, loop).result()


async def _traced(call: Coroutine[Any, Any, T], trace: Trace | None) -> T:
    CURRENT_TRACE.set(trace)  # in the task run_coroutine_threadsafe made for this call only
    return await call


def invoke(function: str, data: Data = b"") -> bytes:
    answer = _on_loop(_invoke(function, data))
    if isinstance(answer, _NoLoop):
        return _post(f"/invoke/{function}", _bytes(data), function=function)
    return answer


def scatter(function: str, items: Sequence[Data]) -> list[bytes]:
    answers = _on_loop(_scatter(function, items))
    if isinstance(answers, _NoLoop):
        return list(_POOL.map(lambda item: invoke(function, item), items))
    return answers


def put(data: Data, *, pulls: int | None = 1, ttl: float | None = None) -> str:
    reference = _on_loop(_put(data, pulls=pulls, ttl=ttl))
    if isinstance(reference, _NoLoop):
        return _post(put_path(pulls, ttl), _bytes(data)).decode()
    return reference


def get(reference: str) -> bytes:
    answer = _on_loop(_get(reference))
    return _post("/objects/get", reference.encode()) if isinstance(answer, _NoLoop) else answer


def release(reference: str) -> None:
    if isinstance(_on_loop(_release(reference)), _NoLoop):
        _post("/objects/release", reference.encode())


def gather(references: Sequence[str]) -> list[bytes]:
    answers = _on_loop(_gather(references))
    return list(_POOL.map(get, references)) if isinstance(answers, _NoLoop) else answers


def broadcast(function: str, data: Data, n: int) -> list[bytes]:
    answers = _on_loop(_broadcast(function, data, n))
    if not isinstance(answers, _NoLoop):
        return answers
    # As in xdt.sdk: a payload small enough for the function's mode to send inline is not
    # stored; its "reference" is the bytes themselves.
    reference = _post(put_path(None, None, inline_small=True), _bytes(data)).decode()
    try:
        return list(
            _POOL.map(
                lambda _: _post(
                    f"/invoke/{function}", reference.encode(), function=function, by_reference=True
                ),
                range(n),
            )
        )
    finally:
        release(reference)


def _bytes(data: Data) -> bytes:
    if isinstance(data, Buffer):
        try:
            return data.view().tobytes()
        finally:
            data.close()
    return bytes(data)


def _post(
    path: str, body: bytes, *, function: str | None = None, by_reference: bool = False
) -> bytes:
    egress = urllib.parse.urlsplit(egress_url())
    headers = {"Content-Type": "application/octet-stream"}
    trace = CURRENT_TRACE.get()
    if trace is not None:
        headers.update(trace.headers())
    if by_reference:
        headers[TRANSFER_HEADER] = BY_REFERENCE
    connection = http.client.HTTPConnection(egress.hostname or "127.0.0.1", egress.port or 80)
    try:
        # $XDT_EGRESS has a path (the egress's secret): the calls go under it.
        connection.request("POST", egress.path.rstrip("/") + path, body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise InstanceFailed(
            f"this instance's sidecar is unreachable at {egress.geturl()}: {exc}",
            function=function,
        ) from None
    finally:
        connection.close()
    if response.status >= 300:
        raise error_from_answer(
            response.status, dict(response.getheaders()), answer, function=function
        )
    return answer
