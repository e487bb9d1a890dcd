"""Handlers for the HTTP contract tests: what of a request reaches a function, what comes back."""

from __future__ import annotations

import json

import xdt


def describe(request: xdt.Request) -> xdt.Response:
    """The request as the function saw it, as JSON; the status the query asks for."""
    print(f"serving {request.method} {request.path}")
    seen = {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": request.headers,
        "body": request.body.decode(),
        "request_id": request.request_id,
    }
    status = int(request.query.get("status", "200"))
    return xdt.Response(
        json.dumps(seen).encode(), status=status, headers={"X-Answer": "yes", "X-Xdt-Error": "x"}
    )


def refuse(body: bytes) -> bytes:
    raise xdt.BadRequest(f"{body.decode()!r} is not a colour")


def explode(body: bytes) -> bytes:
    print("about to fail")
    return _deeper(body)


def _deeper(body: bytes) -> bytes:
    raise ValueError(f"broken on purpose: {body.decode()}")


def whoami(request: xdt.Request) -> bytes:
    print("whoami was asked")
    return (request.request_id or "").encode()


def relay_sync(body: bytes) -> bytes:
    """A plain def that calls another function: the call carries this request's id."""
    return xdt.sync.invoke("whoami", body)


async def relay_async(body: bytes) -> bytes:
    return await xdt.invoke("whoami", body)


def too_big_call(body: bytes) -> bytes:
    """A call xdt refuses (over the inline limit): the function fails, it is no 413 of ours."""
    return xdt.sync.invoke("whoami", b"x" * (8 << 20))
