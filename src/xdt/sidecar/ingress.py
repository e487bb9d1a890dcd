"""The sidecar's ingress: invocations from the activator, and what the platform asks of it.

- ``POST /invoke`` — admitted through the :class:`~.breaker.Breaker`, counted by the
  time-weighted :class:`~xdt._util.concurrency.RequestStats`, its payload resolved (a reference
  becomes bytes), forwarded to the function with the caller's method, path, query and
  headers (``X-Xdt-Method``, ``X-Xdt-Path``: :mod:`xdt._http.contract`) and its request id,
  within the function's timeout; the function's status and headers go back, and a caller's
  sidecar that accepts one gets a big answer back as a reference;
- ``GET /xdt/ready`` — the readiness probe, which probes the function;
- ``GET /xdt/stats`` — scraped by the autoscaler every second (resets the concurrency report);
- ``GET /xdt/held`` — what draining waits on: requests in flight and unclaimed objects;
- ``GET /xdt/usage`` — what this instance used, for the bill (:mod:`.usage`);
- ``GET /metrics`` — Prometheus text.

On Knative (``config.knative``) Knative's queue-proxy is in front and its routing is the
gateway: any method and path but ``/xdt/…`` is an invocation, taken as it came (the function
sees that method and path), without a hop; the metrics are at ``/xdt/metrics``; and once
:meth:`Ingress.drain` began (SIGTERM) new invocations get 503 and the probe fails.

Any local process can reach the TCP port, so all but the probe and the metrics serve only the
platform's own hops (``X-Xdt-Hop``): anyone else gets 403 — it can neither invoke around the
gateway's caps and queue, nor reset the autoscaler's report. An answer is written within the
handler, a MiB at a time and within 30 s plus 1 s per MiB: while it is being written it counts
as a request in flight, so the breaker bounds how many answers an instance holds, and
draining waits for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDict

from .._core.buffers import as_bytes
from .._core.errors import (
    BadRequest,
    Forbidden,
    FunctionFailed,
    InvocationTimeout,
    Overloaded,
    XdtError,
)
from .._core.refs import KeyRing
from .._core.store import ObjectStore
from .._http.contract import (
    CURRENT_TRACE,
    MAX_REQUEST_HEADERS,
    METHOD_HEADER,
    PATH_HEADER,
    REQUEST_ID_HEADER,
    TRACEPARENT_HEADER,
    Request,
    Trace,
    passing,
)
from .._http.headers import (
    ACCEPT_HEADER,
    ACCEPT_IS_INTERNAL,
    BY_REFERENCE,
    CALL_HEADER,
    HOP_HEADER,
    TRANSFER_HEADER,
)
from .._http.metrics import CONTENT_TYPE, Metric, render
from .._http.server import ANSWER_CHUNK, chunks_of, error_response, read_body, stream_answer
from .._util.concurrency import RequestStats
from .breaker import Breaker
from .config import SidecarConfig
from .payloads import Payloads
from .upstream import FunctionAnswer, Upstream
from .usage import KeepAliveClock, Usage, billed_ms

__all__ = ["Ingress"]

_OPEN_PATHS = frozenset({"/xdt/ready", "/metrics", "/xdt/metrics"})  # what anyone may ask
_ADMIN = "/xdt/"  # on Knative: the sidecar's own paths; every other one is the function's


class Ingress:
    def __init__(
        self,
        config: SidecarConfig,
        payloads: Payloads,
        upstream: Upstream,
        store: ObjectStore,
        stats: RequestStats,
        *,
        faces_down: Callable[[], list[str]] = list,
        keyring: KeyRing,
    ) -> None:
        self.keyring = keyring  # tells the platform's own hops (X-Xdt-Hop) from anyone else
        self.config = config
        self.faces_down = faces_down  # the sidecar's faces that stopped serving
        self.payloads = payloads
        self.upstream = upstream
        self.store = store
        self.stats = stats
        self.breaker = (
            Breaker(
                queue_depth=10 * config.concurrency,
                max_concurrency=config.concurrency,
                function=config.function,
            )
            if config.concurrency > 0
            else None
        )
        self.requests_total = 0
        self.rejected_total = 0
        self.invocations = 0  # answered (any status), each billed by its duration
        self.billed_ms = 0
        self.keep_alive = KeepAliveClock()
        store.on_holding = self.keep_alive.holding
        self.draining = False  # SIGTERM on Knative: no new invocations, the probe fails
        # Invocations anywhere in their life — a body still arriving, queued, running, an
        # answer being written: what a drain waits for (``stats`` counts only admitted ones).
        self.open = 0

    def drain(self) -> None:
        """Take no new invocation (503) and fail the readiness probe; those in flight go on."""
        self.draining = True

    def usage(self) -> Usage:
        """Everything this instance used since it started (see :mod:`.usage`)."""
        usage = self.payloads.usage()
        usage.invocations, usage.billed_ms = self.invocations, self.billed_ms
        usage.keep_alive_s = self.keep_alive.seconds
        return usage

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.config.transfer.inline_limit + 1,
            middlewares=[self._platform_hops_only],
        )
        app.router.add_get("/xdt/ready", self.ready)
        app.router.add_get("/xdt/stats", self.report)
        app.router.add_get("/xdt/held", self.held)
        app.router.add_get("/xdt/usage", self.report_usage)
        if self.config.knative is None:
            app.router.add_post("/invoke", self.invoke)
            app.router.add_get("/metrics", self.metrics)
        else:
            app.router.add_get("/xdt/metrics", self.metrics)
            app.router.add_route("*", "/{path:.*}", self.invoke)  # after /xdt/…: any other
        return app

    @web.middleware
    async def _platform_hops_only(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        open_path = request.path in _OPEN_PATHS or (
            self.config.knative is not None and not request.path.startswith(_ADMIN)
        )
        if not open_path and not self.keyring.is_hop(request.headers.get(HOP_HEADER)):
            message = (
                "a sidecar's ingress serves only the platform: invoke functions through the "
                "gateway, POST /invoke/<function>"
            )
            return error_response(Forbidden(message, function=self.config.function))
        return await handler(request)

    async def invoke(self, request: web.Request) -> web.StreamResponse:
        self.open += 1
        try:
            return await self._invoke(request)
        finally:
            self.open -= 1

    async def _invoke(self, request: web.Request) -> web.StreamResponse:
        function = self.config.function
        by_reference = request.headers.get(TRANSFER_HEADER) == BY_REFERENCE
        answer_by_reference = request.headers.get(ACCEPT_HEADER) == BY_REFERENCE
        trace = Trace.from_headers(request.headers)
        CURRENT_TRACE.set(trace)  # this request's task: its log lines carry the id
        if (
            answer_by_reference
            and self.config.knative is not None
            and not self.keyring.proves_call(request.headers.get(CALL_HEADER), function)
        ):
            # On Knative anyone may invoke; only a sidecar's call may leave its answer here as
            # an object (else any client could fill the quota and hold the pod's drain).
            forbidden = Forbidden(ACCEPT_IS_INTERNAL, function=function)
            return error_response(forbidden, function=function, request_id=trace.request_id)
        if self.draining:
            refused = Overloaded(
                f"this instance of {function!r} is shutting down: send the request again",
                function=function,
            )
            return error_response(refused, function=function, request_id=trace.request_id)
        try:
            call = _call_of(request, trace, direct=self.config.knative is not None)
            # Counted once the body is here: a request that declares a body and never sends
            # it is no demand (200 of them scaled a function from 1 to 3), and it times out.
            body = await read_body(request, self.config.transfer.inline_limit, function=function)
        except XdtError as exc:
            return error_response(exc, function=function, request_id=trace.request_id)
        self.stats.request_in()  # before the breaker: queued requests are demand too
        self.keep_alive.busy(self.stats.concurrency)
        self.requests_total += 1
        started: float | None = None  # admitted: from here it is billed (not while queued)
        billed = False
        try:

            async def work() -> FunctionAnswer:
                nonlocal started
                started = time.monotonic()
                payload = await self.payloads.inbound(body, by_reference)
                return await self.upstream.invoke(payload, call, trace)

            answer = await self._admit(work)
            headers = CIMultiDict(answer.headers)
            headers.setdefault("Content-Type", "application/octet-stream")
            headers[REQUEST_ID_HEADER] = trace.request_id
            if answer_by_reference and answer.status == 200:
                answer_body, as_reference = await self.payloads.outbound(
                    answer.body, what="the answer"
                )
                if as_reference:
                    headers[TRANSFER_HEADER] = BY_REFERENCE
            else:
                answer_body = as_bytes(answer.body)
            billed = self._bill(started)  # the answer is ready: the function's part is done
            if len(answer_body) <= ANSWER_CHUNK:
                return web.Response(status=answer.status, body=answer_body, headers=headers)
            return await stream_answer(
                request, answer.status, headers, chunks_of(answer_body), len(answer_body)
            )
        except XdtError as exc:
            if isinstance(exc, FunctionFailed) and self.config.error_detail != "full":
                exc.stack_trace = None  # in the instance log only
            return error_response(exc, function=function, request_id=trace.request_id)
        finally:
            if not billed:
                self._bill(started)
            self.stats.request_out()
            self.keep_alive.busy(self.stats.concurrency)

    def _bill(self, started: float | None) -> bool:
        if started is not None:  # None: refused or timed out in the breaker's queue
            self.invocations += 1
            self.billed_ms += billed_ms(time.monotonic() - started)
        return True

    async def _admit(self, work: Callable[[], Awaitable[FunctionAnswer]]) -> FunctionAnswer:
        """Run ``work`` (resolve the payload, call the function) once the breaker admits it,
        within the function's timeout."""
        try:
            async with asyncio.timeout(self.config.timeout):
                if self.breaker is None:
                    return await work()
                async with self.breaker.slot():
                    return await work()
        except Overloaded:
            self.rejected_total += 1
            raise
        except TimeoutError:
            raise InvocationTimeout(
                f"function {self.config.function!r} did not answer within "
                f"{self.config.timeout:g} s (its timeout)",
                function=self.config.function,
            ) from None

    async def ready(self, request: web.Request) -> web.Response:
        """Ready when the function answers and every face of the sidecar serves: an instance
        whose egress stopped is not one to send work to."""
        if self.draining:
            return web.Response(status=503, text="not ready: shutting down")
        down = self.faces_down()
        if down:
            return web.Response(status=503, text=f"not ready: down: {', '.join(down)}")
        ok = await self.upstream.ready()
        return web.Response(status=200 if ok else 503, text="ready" if ok else "not ready")

    def snapshot(self) -> dict[str, float | int]:
        """What the autoscaler scrapes: the time-weighted concurrency since the last scrape."""
        report = self.stats.report()
        store = self.store.stats
        return {
            "average_concurrency": report.average_concurrency,
            "request_count": report.request_count,
            "concurrency": report.concurrency,
            "period": report.period,
            "objects": store.objects,
            "bytes_held": store.bytes_held,
            "requests_total": self.requests_total,
            "rejected_total": self.rejected_total,
        }

    async def report(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def held(self, request: web.Request) -> web.Response:
        """What draining waits on, without resetting the autoscaler's report: requests in
        flight, and objects this sidecar put that nobody has taken yet."""
        return web.json_response(
            {
                "concurrency": self.stats.concurrency,
                "objects": await self.payloads.unclaimed(),
                "bytes_held": self.store.stats.bytes_held,
            }
        )

    async def report_usage(self, request: web.Request) -> web.Response:
        return web.json_response(self.usage().record())

    async def metrics(self, request: web.Request) -> web.Response:
        store, fn = self.store.stats, self.config.function
        families = [
            Metric("xdt_sidecar_concurrency", "gauge", "Requests in the sidecar now.")
            .add(self.stats.concurrency, function=fn),
            Metric("xdt_sidecar_requests_total", "counter", "Invocations that reached the sidecar.")
            .add(self.requests_total, function=fn),
            Metric("xdt_sidecar_rejected_total", "counter", "Invocations refused by the breaker.")
            .add(self.rejected_total, function=fn),
            Metric("xdt_sidecar_objects", "gauge", "Live objects in the sidecar's store.")
            .add(store.objects, function=fn),
            Metric("xdt_sidecar_object_bytes", "gauge", "Bytes of live objects in the store.")
            .add(store.bytes_held, function=fn),
            Metric("xdt_sidecar_pulls_total", "counter", "Pulls of the store's objects completed.")
            .add(store.pulls, function=fn),
            Metric("xdt_sidecar_payload_bytes_total", "counter", "Payload bytes the sidecar sent.")
            .add(self.payloads.bytes_inline, function=fn, how="inline")
            .add(self.payloads.bytes_by_reference, function=fn, how="reference"),
        ]  # fmt: skip
        return web.Response(text=render(families), headers={"Content-Type": CONTENT_TYPE})


def _call_of(request: web.Request, trace: Trace, *, direct: bool = False) -> Request:
    """The caller's request as the function gets it (body apart): the method and path the
    gateway took it with (``direct``, on Knative: the request's own, unless a caller's
    sidecar names them), the headers that pass, the request id and trace context."""
    named = request.headers.get(PATH_HEADER)
    if named is None and direct:
        named = request.raw_path  # as sent: aiohttp's parsed path reads "//x" as a host
    path, _, query = (named or "/").partition("?")
    own = (REQUEST_ID_HEADER.lower(), TRACEPARENT_HEADER)
    pairs = [(k.lower(), v) for k, v in passing(request.headers.items()) if k.lower() not in own]
    pairs += [(k.lower(), v) for k, v in trace.headers().items()]
    if sum(len(k) + len(v) for k, v in pairs) > MAX_REQUEST_HEADERS:
        raise BadRequest(
            f"the request's headers are over {MAX_REQUEST_HEADERS >> 10} KiB: send less in them"
        )
    headers: dict[str, str] = {}
    for name, value in pairs:
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    method = request.headers.get(METHOD_HEADER) or (request.method if direct else "POST")
    return Request(b"", method, path if path.startswith("/") else "/", query, headers)
