"""The gateway: the platform's HTTP front door, where every invocation enters.

- ``/invoke/<function>[/<path>]`` (any method) — the request goes to an instance of the
  function: its body, method, ``/<path>`` with the query string, and the headers that pass
  (:mod:`xdt._http.contract`); the function's status, headers and body come back. Every
  answer carries ``X-Request-Id``: the caller's, or one assigned here;
- ``POST /objects``, ``/objects/get``, ``/objects/release`` — objects for callers outside
  the platform: an upload of any size becomes a reference to invoke a function with
  (``X-Xdt-Transfer: ref``), and a reference's bytes are downloaded (:mod:`.objects`);
- ``GET /status`` — JSON: ``{"functions": {"<name>": {"ready": 2, "draining": 0, ...}}}``;
- ``GET /usage`` — JSON: what each function used (invocations, billed milliseconds, bytes by
  transfer mode, Redis and S3 requests), fresh from every instance: the cost model's input;
- ``GET /metrics`` — Prometheus text;
- ``GET /healthz`` — 200 while the platform runs and its embedded stores serve, else 503;
- ``GET /readyz`` — 200 while it takes new invocations (every deployment exists, and it is not
  shutting down), else 503.

Only the platform's own hops (``X-Xdt-Hop``, :mod:`xdt._http.headers`) may ask for a reference
as the answer; a caller outside may send one (``X-Xdt-Transfer: ref``) of the function's tenant,
checked here before anything runs. While the platform shuts down, new invocations from
outside get 503 with ``Retry-After`` and calls between functions are still served, so that
requests in flight end.

Errors the platform makes (unknown function, body too large, overloaded, timeout, instance
failure) carry a typed code (see :mod:`xdt._http.server`); a function's own answer passes unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from .._core.buffers import Buffer
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
    ACCEPT_HEADER,
    ACCEPT_IS_INTERNAL,
    BY_REFERENCE,
    ERROR_HEADER,
    HOP_HEADER,
    TRANSFER_HEADER,
    TRANSFER_HEADERS,
)
from .._http.metrics import CONTENT_TYPE
from .._http.server import chunks_of, error_response, read_body, stream_answer

if TYPE_CHECKING:
    from .embedded import Platform
    from .objects import GatewayObjects

__all__ = ["create_app"]

INLINE_LIMIT = "platform.inline_limit"  # what a 413 names: the setting to raise
MAX_REFERENCE = 4 << 10  # a sealed reference is under 800 characters


def _forwarded(
    request: web.Request, trace: Trace, internal: bool, hop: str
) -> list[tuple[str, str]]:
    """The headers the gateway sends an instance: the caller's that pass, its method and its
    path below ``/invoke/<function>``, the trace, the transfer headers (of a platform hop; of
    a caller outside, only ``X-Xdt-Transfer``, its reference checked), and the hop secret (the
    ingress serves the platform's own hops only)."""
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
    sent = TRANSFER_HEADERS if internal else (TRANSFER_HEADER,)
    headers += [(h, v) for h in sent if (v := request.headers.get(h))]
    headers.append((HOP_HEADER, hop))
    if any("\r" in v or "\n" in v for _, v in headers):
        raise BadRequest("a header value holds a line break")
    return headers


def _by_reference(request: web.Request) -> bool:
    """Whether a caller outside sends a reference (``X-Xdt-Transfer: ref``); it may not ask
    for one back (the callee's sidecar would hold the answer for it)."""
    if request.headers.get(ACCEPT_HEADER):
        raise Forbidden(ACCEPT_IS_INTERNAL)
    value = request.headers.get(TRANSFER_HEADER)
    if value is None:
        return False
    if value != BY_REFERENCE:
        raise BadRequest(f"{TRANSFER_HEADER} says {value!r}: its one value is {BY_REFERENCE!r}")
    return True


def _reference_text(body: bytes) -> str:
    try:
        return body.decode("ascii").strip()
    except UnicodeDecodeError:
        raise BadRequest("the body is not a reference (they are ASCII text)") from None


def create_app(platform: Platform) -> web.Application:
    limit = platform.spec.platform.inline_limit
    hop = platform.keyring.hop_secret()

    def objects() -> GatewayObjects:
        if platform.objects is None:  # (the gateway serves only once the platform started)
            raise Overloaded("the platform is starting: its objects are not served yet")
        return platform.objects

    async def invoke(request: web.Request) -> web.StreamResponse:
        name = request.match_info["function"]
        deployment = platform.deployments.get(name)
        internal = platform.keyring.is_hop(request.headers.get(HOP_HEADER))
        trace = Trace.from_headers(request.headers)
        reached = False  # whether the deployment took it (and counts its answer)
        try:
            by_reference = False
            if not internal:
                by_reference = _by_reference(request)
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
            if by_reference:  # refused now, with its reason, rather than by the callee
                platform.keyring.open(_reference_text(body), tenant=deployment.spec.tenant)
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

    async def put_object(request: web.Request) -> web.Response:
        try:
            await objects().check_caller(request)
            token = await objects().upload(request)
        except XdtError as exc:
            return error_response(exc)
        return web.Response(status=201, text=token)

    async def reference_in(request: web.Request) -> str:
        """The reference a caller outside sends as the body (a function is refused)."""
        await objects().check_caller(request)
        body = await read_body(request, MAX_REFERENCE, limit_name="the size of a reference")
        return _reference_text(body)

    async def get_object(request: web.Request) -> web.StreamResponse:
        try:
            token = await reference_in(request)
            async with objects().download(token) as payload:
                view = payload.view() if isinstance(payload, Buffer) else memoryview(payload)
                chunks = chunks_of(view)
                try:
                    headers = {"Content-Type": "application/octet-stream"}
                    return await stream_answer(request, 200, headers, chunks, view.nbytes)
                finally:  # every view of a memfd's mapping let go before it is closed
                    await chunks.aclose()
                    view.release()
        except XdtError as exc:
            return error_response(exc)

    async def release_object(request: web.Request) -> web.Response:
        try:
            released = await objects().release(await reference_in(request))
        except XdtError as exc:
            return error_response(exc)
        return web.json_response({"released": released})

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
    app.router.add_post("/objects", put_object)
    app.router.add_post("/objects/get", get_object)
    app.router.add_post("/objects/release", release_object)
    app.router.add_get("/status", status)
    app.router.add_get("/usage", usage)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
