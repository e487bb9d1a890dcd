"""Who may talk to a sidecar's HTTP faces.

- the Unix sockets admit only expected uids (``SO_PEERCRED``, checked by
  :func:`xdt._http.listen.serve_unix` before a byte is read) — the ingress socket, the
  platform's own uid only;
- :func:`behind_secret`: the TCP egress on loopback, which any local process can reach, serves
  only under a per-instance random path prefix (``$XDT_EGRESS`` carries it); anything else
  gets 403.
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from .._core.errors import Forbidden
from .._http.server import error_response

__all__ = ["behind_secret"]


def behind_secret(app: web.Application, secret: str, *, limit: int) -> web.Application:
    """``app`` served under ``/<secret>``; any other path is refused with 403. ``limit`` is
    the largest request body (the outer application's setting is the one aiohttp applies)."""
    prefix = f"/{secret}"
    outer = web.Application(client_max_size=limit + 1, middlewares=[_requires(secret)])
    outer.add_subapp(prefix, app)
    return outer


def _requires(secret: str) -> Any:
    expected = secret.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        first = request.rel_url.raw_path.split("/", 2)[1] if request.rel_url.raw_path else ""
        # Compared in constant time: the answer's timing says nothing about the secret.
        if not hmac.compare_digest(first.encode(), expected):
            message = (
                "this sidecar's egress answers only under the secret path in $XDT_EGRESS: "
                "POST $XDT_EGRESS/invoke/<function>, not /invoke/<function> on its port"
            )
            return error_response(Forbidden(message))
        response: web.StreamResponse = await handler(request)
        return response

    return middleware
