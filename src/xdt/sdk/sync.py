"""The SDK for plain ``def`` handlers: the calls of :mod:`xdt.sdk`, blocking.

    from xdt import sync

    def handler(body: bytes) -> bytes:
        parts = sync.scatter("count", split(body))
        return merge(parts)

Concurrent calls (``scatter``, ``gather``, ``broadcast``) run on a small thread pool; each
call is one HTTP request to the instance's sidecar (``$XDT_EGRESS``), no event loop needed.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import urllib.parse
from collections.abc import Sequence

from .._core.errors import InstanceFailed
from .._http.errors import error_from_answer
from .._http.headers import BY_REFERENCE, TRANSFER_HEADER
from ._transport import egress_url, put_path

__all__ = ["broadcast", "gather", "get", "invoke", "put", "release", "scatter"]

_POOL = concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix="xdt-sync")


def invoke(function: str, data: bytes | bytearray | memoryview = b"") -> bytes:
    return _post(f"/invoke/{function}", bytes(data), function=function)


def scatter(function: str, items: Sequence[bytes | bytearray | memoryview]) -> list[bytes]:
    return list(_POOL.map(lambda item: invoke(function, item), items))


def put(
    data: bytes | bytearray | memoryview, *, pulls: int | None = 1, ttl: float | None = None
) -> str:
    return _post(put_path(pulls, ttl), bytes(data)).decode()


def get(reference: str) -> bytes:
    return _post("/objects/get", reference.encode())


def release(reference: str) -> None:
    _post("/objects/release", reference.encode())


def gather(references: Sequence[str]) -> list[bytes]:
    return list(_POOL.map(get, references))


def broadcast(function: str, data: bytes | bytearray | memoryview, n: int) -> list[bytes]:
    # As in xdt.sdk: a payload small enough for the function's mode to send inline is not
    # stored; its "reference" is the bytes themselves.
    reference = _post(put_path(None, None, inline_small=True), bytes(data)).decode()
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


def _post(
    path: str, body: bytes, *, function: str | None = None, by_reference: bool = False
) -> bytes:
    egress = urllib.parse.urlsplit(egress_url())
    headers = {"Content-Type": "application/octet-stream"}
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
