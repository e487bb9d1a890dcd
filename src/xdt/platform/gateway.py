"""The gateway: the platform's HTTP front door, where every invocation enters.

- ``/invoke/<function>[/<path>]`` (any method) — the request goes to an instance of the
  function: its body, method, ``/<path>`` with the query string, and the headers that pass
  (:mod:`xdt._http.contract`); the function's status, headers and body come back. Every
  answer carries ``X-Request-Id``: the caller's, or one assigned here;
- ``GET /status`` — JSON: ``{"functions": {"<name>": {"ready": 2, "draining": 0, ...}}}``;
- ``GET /usage`` — JSON: what each function used (invocations, billed milliseconds, bytes by
  transfer mode, Redis and S3 requests), fresh from every instance: the cost model's input;
- ``GET /metrics`` — Prometheus text;
- ``GET /healthz`` — 200 while the platform runs and its embedded stores serve, else 503;
- ``GET /readyz`` — 200 while it takes new invocations (every deployment exists, and it is not
  shutting down), else 503.

Only the platform's own hops (``X-Xdt-Hop``, :mod:`xdt._http.headers`) may send or ask for a
reference; while the platform shuts down, new invocations from outside get 503 with
``Retry-After`` and calls between functions are still served, so that requests in flight end.

Errors the platform makes (unknown function, body too large, overloaded, timeout, instance
failure) carry a typed code (see :mod:`xdt._http.server`); a function's own answer passes unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from .._core.errors import BadRequest, Forbidden, FunctionNotFound, Overloaded, XdtError
from .._http.contract import (
    METHOD_HEADER,
    PATH_HEADER,
    REQUEST_ID_HEADER,
    TRACEPARENT_HEADER,
    Trace,
    passing,
)
from .._http.headers import (
    ERROR_HEADER,
    HOP_HEADER,
    TRANSFER_HEADER,
    TRANSFER_HEADERS,
    TRANSFER_HEADERS_ARE_INTERNAL,
)
from .._http.metrics import CONTENT_TYPE
from .._http.server import error_response, read_body, stream_answer

if TYPE_CHECKING:
    from .embedded import Platform

__all__ = ["create_app"]

INLINE_LIMIT = "platform.inline_limit"  # what a 413 names: the setting to raise


def _forwarded(
    request: web.Request, trace: Trace, internal: bool, hop: str
) -> list[tuple[str, str]]:
    """The headers the gateway sends an instance: the caller's that pass, its method and its
    path below ``/invoke/<function>``, the trace, the transfer headers of a platform hop, and
    the hop secret (the ingress serves the platform's own hops only)."""
    own = (REQUEST_ID_HEADER.lower(), TRACEPARENT_HEADER)
    headers = [(k, v) for k, v in passing(request.headers.items()) if k.lower() not in own]
    prefix = f"/invoke/{request.match_info['function']}"
    raw = request.raw_path
    rest = (
        raw[len(prefix) :] if raw.startswith(prefix) else "/" + request.match_info.get("path", "")
    )
    if not rest.startswith("/"):
        rest = "/" + rest
    headers += [(METHOD_HEADER, request.method), (PATH_HEADER, rest), *trace.headers().items()]
    if internal:
        headers += [(h, v) for h in TRANSFER_HEADERS if (v := request.headers.get(h))]
    headers.append((HOP_HEADER, hop))
    if any("\r" in v or "\n" in v for _, v in headers):
        raise BadRequest("a header value holds a line break")
    return headers


def create_app(platform: Platform) -> web.Application:
    limit = platform.spec.platform.inline_limit
    hop = platform.keyring.hop_secret()

    async def invoke(request: web.Request) -> web.StreamResponse:
        name = request.match_info["function"]
        deployment = platform.deployments.get(name)
        internal = platform.keyring.is_hop(request.headers.get(HOP_HEADER))
        trace = Trace.from_headers(request.headers)
        reached = False  # whether the deployment took it (and counts its answer)
        try:
            if not internal:
                if any(request.headers.get(h) for h in TRANSFER_HEADERS):
                    raise Forbidden(TRANSFER_HEADERS_ARE_INTERNAL, function=name)
                if not platform.accepting:
                    refused = error_response(
                        Overloaded("the platform is shutting down: it takes no new invocations"),
                        function=name, request_id=trace.request_id,
                    )  # fmt: skip
                    refused.headers["Retry-After"] = "1"
                    platform.refused[(refused.status, Overloaded.code)] += 1
                    return refused
            if deployment is None:
                known = ", ".join(sorted(platform.deployments)) or "none"
                raise FunctionNotFound(
                    f"no function named {name!r} is deployed (deployed: {known})", function=name
                )
            body = await read_body(request, limit, function=name, limit_name=INLINE_LIMIT)
            forwarded = _forwarded(request, trace, internal, hop)
            reached = True
            answer = await deployment.invoke(body, forwarded)
        except XdtError as exc:
            if not reached:
                platform.refused[(exc.status, exc.code)] += 1
            return error_response(exc, function=name, request_id=trace.request_id)
        # The instance's answer as it gave it: the function's status and headers, an error
        # code the platform made, and (to a caller's sidecar) the mark of a reference.
        headers = CIMultiDict(passing(answer.fields))
        headers.setdefault("Content-Type", "application/octet-stream")
        for header in (ERROR_HEADER, TRANSFER_HEADER):
            value = answer.header(header)
            if value is not None:
                headers[header] = value
        headers[REQUEST_ID_HEADER] = trace.request_id
        if answer.stream is not None:  # big: a chunk at a time, never held whole
            try:
                return await stream_answer(
                    request, answer.status, headers, answer.stream, answer.stream.length
                )
            finally:
                answer.stream.close()
        return web.Response(status=answer.status, body=answer.body, headers=headers)

    async def status(request: web.Request) -> web.Response:
        return web.json_response(platform.status())

    async def usage(request: web.Request) -> web.Response:
        return web.json_response(await platform.usage())

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=platform.metrics(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(request: web.Request) -> web.Response:
        down = platform.stores.down() if platform.stores is not None else []
        if down:  # every transfer in that mode fails until it is back
            return web.Response(status=503, text="store down: " + "; ".join(down))
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        if platform.accepting:
            return web.Response(text="ready")
        return web.Response(
            status=503, text="not ready: shutting down", headers={"Retry-After": "1"}
        )

    app = web.Application(client_max_size=limit + 1)
    app.router.add_route("*", "/invoke/{function}", invoke)
    app.router.add_route("*", "/invoke/{function}/{path:.*}", invoke)
    app.router.add_get("/status", status)
    app.router.add_get("/usage", usage)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
