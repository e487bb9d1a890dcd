"""The gateway: the platform's HTTP front door, where every invocation enters.

- ``POST /invoke/<function>`` — the body goes to an instance of the function, the answer back;
- ``GET /status`` — JSON: ``{"functions": {"<name>": {"ready": 2, "draining": 0, ...}}}``;
- ``GET /metrics`` — Prometheus text;
- ``GET /healthz`` — 200 while the platform runs.

Errors the platform makes (unknown function, body too large, overloaded, timeout, instance
failure) carry a typed code (see :mod:`xdt._http.server`); a function's own answer passes unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .._core.errors import FunctionNotFound, XdtError
from .._http.headers import ERROR_HEADER, TRANSFER_HEADER, TRANSFER_HEADERS
from .._http.metrics import CONTENT_TYPE
from .._http.server import error_response, read_body

if TYPE_CHECKING:
    from .embedded import Platform

__all__ = ["create_app"]


def create_app(platform: Platform) -> web.Application:
    limit = platform.spec.platform.inline_limit

    async def invoke(request: web.Request) -> web.StreamResponse:
        name = request.match_info["function"]
        deployment = platform.deployments.get(name)
        try:
            if deployment is None:
                known = ", ".join(sorted(platform.deployments)) or "none"
                raise FunctionNotFound(
                    f"no function named {name!r} is deployed (deployed: {known})", function=name
                )
            body = await read_body(request, limit, function=name)
            passed = {h: v for h in TRANSFER_HEADERS if (v := request.headers.get(h))}
            answer = await deployment.invoke(body, passed)
        except XdtError as exc:
            return error_response(exc, function=name)
        # The instance's answer as it gave it: its content type, an error code the platform
        # made, and (to a caller's sidecar) the mark of a reference.
        headers = {"Content-Type": answer.header("content-type") or "application/octet-stream"}
        for name in (ERROR_HEADER, TRANSFER_HEADER):
            value = answer.header(name)
            if value is not None:
                headers[name] = value
        return web.Response(status=answer.status, body=answer.body, headers=headers)

    async def status(request: web.Request) -> web.Response:
        return web.json_response(platform.status())

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=platform.metrics(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=limit + 1)
    app.router.add_post("/invoke/{function}", invoke)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app
