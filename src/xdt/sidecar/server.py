"""The sidecar: the trusted process in front of one function instance (Knative's queue-proxy).

Three listeners, all on loopback by default:

- *ingress* (HTTP) — invocations from the activator: admitted through the :class:`Breaker`,
  counted by :class:`RequestStats`, forwarded to the function; also ``/xdt/ready`` (the
  readiness probe, which probes the function), ``/xdt/stats`` (scraped by the autoscaler every
  second) and ``/metrics`` (Prometheus text);
- *egress* (HTTP, the address in the function's ``$XDT_EGRESS``) — the function's own outbound
  calls: ``POST /invoke/<fn>`` goes to the activator, ``POST /objects`` puts an object and
  answers its sealed reference, ``POST /objects/get`` pulls one by reference;
- the *object server* of the transfer core, for peer sidecars holding a reference.

Only the sidecar holds the key ring; the function process never sees it. Who may connect
(:mod:`.guard`): the ingress Unix socket admits only the sidecar's own uid (the platform's);
the egress Unix socket also the function's uid; the TCP egress answers only under a random
path prefix that only ``$XDT_EGRESS`` carries.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from .._core.buffers import BufferPool
from .._core.errors import (
    BadRequest,
    FunctionNotFound,
    InstanceFailed,
    InvocationTimeout,
    Overloaded,
    XdtError,
)
from .._core.peercred import PeerCheck, bind_unix
from .._core.refs import DEFAULT_TENANT, KeyRing
from .._core.store import ObjectStore, StoreConfig
from .._http.client import ConnectionPool, PeerGone
from .._http.server import (
    ACCEPT_HEADER,
    ERROR_HEADER,
    TRANSFER_HEADER,
    error_code,
    error_response,
    read_body,
    status_for,
)
from .._util.concurrency import RequestStats
from .._util.heap import give_back, give_back_when_idle
from .._util.names import is_function_name
from ..channel import Channel, Kind, Message, as_bytes
from ..modes.base import StoreSettings
from ..pull import ObjectServer, PullClient, ServerConfig
from .breaker import Breaker, BreakerFull
from .guard import PeerCheckedUnixSite, behind_secret
from .payloads import Payload, Transfers, close
from .upstream import Answer, HttpUpstream, RuntimeUpstream, Upstream

__all__ = ["Sidecar", "SidecarConfig"]


@dataclass(frozen=True)
class SidecarConfig:
    function: str
    upstream: str  # "unix:/path/to/runtime.sock" (Python runtime) or "http:PORT" (command)
    activator_url: str  # where the function's outbound invocations go
    concurrency: int = 0  # containerConcurrency; 0 = unlimited (no breaker)
    timeout: float = 300.0
    tenant: str = DEFAULT_TENANT
    host: str = "127.0.0.1"
    inline_limit: int = 6 << 20
    object_quota: int = 1 << 30
    ingress_socket: str | None = None  # also serve ingress here: the activator's short way in
    instance: str = "sidecar"  # names this sidecar's objects in S3
    egress_socket: str | None = None  # the Python SDK's same-host way out (memfd fast path)
    transfer: str = "xdt"  # the function's transfer mode (see transfers.py)
    xdt_threshold: int = 64 << 10
    object_ttl: float = 60.0
    redis_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_bucket: str = "xdt-transfers"
    s3_region: str = "us-east-1"
    # The function's own uid and gid when it runs under one (isolation); None: ours.
    function_uid: int | None = None
    function_gid: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SidecarConfig:
        return cls(**json.loads(text))


def _make_upstream(config: SidecarConfig, store: ObjectStore, inbound: BufferPool) -> Upstream:
    kind, _, where = config.upstream.partition(":")
    function_uid = os.getuid() if config.function_uid is None else config.function_uid
    if kind == "unix":
        return RuntimeUpstream(
            where,
            function=config.function,
            lend=inbound,
            keep=store.pool,
            max_answer=max(config.inline_limit, config.object_quota),
            peer_uid=function_uid,
        )
    if kind == "http":
        return HttpUpstream(
            int(where), function=config.function, host=config.host, peer_uid=function_uid
        )
    raise ValueError(f"upstream {config.upstream!r} is neither unix:PATH nor http:PORT")


class Sidecar:
    def __init__(self, config: SidecarConfig, keyring: KeyRing) -> None:
        self.config = config
        self.keyring = keyring
        self.store = ObjectStore(StoreConfig(quota_bytes=config.object_quota))
        self.pulls = PullClient(keyring, tenant=config.tenant)
        # Pulled payloads are lent on to the function from this pool, and come back to it:
        # it only ever holds this function's own inbound data.
        self.upstream = _make_upstream(config, self.store, self.pulls.pool)
        self.stats = RequestStats()
        self.breaker = (
            Breaker(queue_depth=10 * config.concurrency, max_concurrency=config.concurrency)
            if config.concurrency > 0
            else None
        )
        self.objects = ObjectServer(self.store, keyring, ServerConfig(host=config.host))
        self.transfers = Transfers(
            function=config.function,
            mode=config.transfer,
            tenant=config.tenant,
            keyring=keyring,
            store=self.store,
            server=self.objects,
            client=self.pulls,
            stores=StoreSettings(
                config.redis_url, config.s3_endpoint_url, config.s3_bucket, config.s3_region
            ),
            sender=config.instance,
            inline_limit=config.inline_limit,
            xdt_threshold=config.xdt_threshold,
            ttl=config.object_ttl,
        )
        self.requests_total = 0
        self.rejected_total = 0
        self.ingress_port = 0
        self.egress_port = 0
        self.egress_secret = secrets.token_urlsafe(18)  # 144 bits: the TCP egress's path prefix
        own = os.getuid()  # the platform's: it started us
        self._ingress_check = PeerCheck({own}, "ingress socket")
        function_uid = own if config.function_uid is None else config.function_uid
        self._egress_check = PeerCheck({own, function_uid}, "egress socket")
        self._runners: list[web.AppRunner] = []
        self._local_server: asyncio.Task[None] | None = None
        self._local_tasks: set[asyncio.Task[None]] = set()
        self._local_listener: socket.socket | None = None
        self._idle_task: asyncio.Task[None] | None = None
        activator = urllib.parse.urlsplit(config.activator_url)
        self._activator = ConnectionPool(activator.hostname or "127.0.0.1", activator.port or 80)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.objects.start()
        self.ingress_port = await self._serve(self._ingress_app(), self.config.ingress_socket)
        limit = max(self.config.inline_limit, self.config.object_quota)
        egress = behind_secret(self._egress_app(), self.egress_secret, limit=limit)
        self.egress_port = await self._serve(egress)
        if self.config.egress_socket is not None:
            self._local_server = asyncio.create_task(self._serve_local(self.config.egress_socket))
        self._idle_task = asyncio.create_task(
            give_back_when_idle(self.stats.idle_since, trim=self._give_back)
        )

    def _give_back(self) -> None:
        """Idle a while: the warm memory that nothing else trims goes back to the kernel."""
        self.pulls.pool.trim()
        give_back()

    async def close(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
        for task in [self._local_server, *self._local_tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in [self._local_server, *self._local_tasks] if t is not None),
            return_exceptions=True,
        )
        for runner in self._runners:
            await runner.cleanup()
        self._activator.close()
        await self.transfers.close()
        await self.upstream.close()
        await self.pulls.close()
        await self.objects.close()
        self.store.close()

    def ports(self) -> dict[str, object]:
        return {
            "ingress": self.ingress_port,
            "egress": self.egress_port,
            "egress_path": f"/{self.egress_secret}",
            "objects": self.objects.address,
        }

    async def _serve(self, app: web.Application, unix_path: str | None = None) -> int:
        # handler_cancellation: a caller that goes away stops its request here too.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True
        )
        await runner.setup()
        if unix_path is not None:  # skips the TCP stack: p50 774 → 705 µs in xdt bench platform
            await PeerCheckedUnixSite(runner, unix_path, self._ingress_check).start()
        site = web.TCPSite(runner, self.config.host, 0)
        await site.start()
        self._runners.append(runner)
        server = site._server
        assert isinstance(server, asyncio.Server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    def _app(self, limit: int) -> web.Application:
        return web.Application(client_max_size=limit + 1)

    # -- ingress -----------------------------------------------------------------------------

    def _ingress_app(self) -> web.Application:
        app = self._app(self.config.inline_limit)
        app.router.add_post("/invoke", self._invoke)
        app.router.add_get("/xdt/ready", self._ready)
        app.router.add_get("/xdt/stats", self._stats)
        app.router.add_get("/xdt/held", self._held)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _invoke(self, request: web.Request) -> web.StreamResponse:
        self.stats.request_in()  # before the breaker: queued requests are demand too
        self.requests_total += 1
        by_reference = request.headers.get(TRANSFER_HEADER) == "ref"
        answer_by_reference = request.headers.get(ACCEPT_HEADER) == "ref"
        try:
            body = await read_body(request, self.config.inline_limit, function=self.config.function)

            async def work() -> Answer:
                payload = await self.transfers.inbound(body, by_reference)
                return await self.upstream.invoke(payload)

            answer = await self._admit(work)
            headers = {"Content-Type": answer.content_type}
            if answer_by_reference and answer.status == 200:
                answer_body, as_reference = await self.transfers.outbound(
                    answer.body, what="the answer"
                )
                if as_reference:
                    headers[TRANSFER_HEADER] = "ref"
            else:
                answer_body = as_bytes(answer.body)
        except XdtError as exc:
            return error_response(exc, function=self.config.function)
        finally:
            self.stats.request_out()
        return web.Response(status=answer.status, body=answer_body, headers=headers)

    async def _admit(self, work: Callable[[], Awaitable[Answer]]) -> Answer:
        """Run ``work`` (resolve the payload, call the function) once the breaker admits it,
        within the function's timeout."""
        try:
            async with asyncio.timeout(self.config.timeout):
                if self.breaker is None:
                    return await work()
                async with self.breaker.slot():
                    return await work()
        except BreakerFull as exc:
            self.rejected_total += 1
            raise Overloaded(
                f"function {self.config.function!r} is overloaded: {exc}; retry later",
                function=self.config.function,
            ) from None
        except TimeoutError:
            raise InvocationTimeout(
                f"function {self.config.function!r} did not answer within "
                f"{self.config.timeout:g} s (its timeout)",
                function=self.config.function,
            ) from None

    async def _ready(self, request: web.Request) -> web.Response:
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

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _held(self, request: web.Request) -> web.Response:
        """What draining waits on, without resetting the autoscaler's report: requests in
        flight, live objects here, and objects put in S3 that nobody has taken yet."""
        store = self.store.stats
        return web.json_response(
            {
                "concurrency": self.stats.concurrency,
                "objects": store.objects + await self.transfers.unclaimed(),
                "bytes_held": store.bytes_held,
            }
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        store = self.store.stats
        fn = self.config.function
        lines = [
            "# TYPE xdt_sidecar_concurrency gauge",
            f'xdt_sidecar_concurrency{{function="{fn}"}} {self.stats.concurrency}',
            "# TYPE xdt_sidecar_requests_total counter",
            f'xdt_sidecar_requests_total{{function="{fn}"}} {self.requests_total}',
            "# TYPE xdt_sidecar_rejected_total counter",
            f'xdt_sidecar_rejected_total{{function="{fn}"}} {self.rejected_total}',
            "# TYPE xdt_sidecar_objects gauge",
            f'xdt_sidecar_objects{{function="{fn}"}} {store.objects}',
            "# TYPE xdt_sidecar_object_bytes gauge",
            f'xdt_sidecar_object_bytes{{function="{fn}"}} {store.bytes_held}',
            "# TYPE xdt_sidecar_pulls_total counter",
            f'xdt_sidecar_pulls_total{{function="{fn}"}} {store.pulls}',
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    # -- egress ------------------------------------------------------------------------------

    def _egress_app(self) -> web.Application:
        app = self._app(max(self.config.inline_limit, self.config.object_quota))
        app.router.add_post("/invoke/{function}", self._invoke_out)
        app.router.add_post("/objects", self._put)
        app.router.add_post("/objects/get", self._get)
        app.router.add_post("/objects/release", self._release)
        return app

    async def call(
        self, target: str, payload: Payload, *, forwarded: bool = False
    ) -> tuple[int, dict[str, str], Payload]:
        """Invoke ``target`` for this function: its payload goes by this function's mode (or,
        ``forwarded``, is a reference the function passes on); (status, headers, answer)."""
        if not is_function_name(target):
            close(payload)
            raise FunctionNotFound(
                f"{target!r} is not a function name (lower-case letters, digits and '-')"
            )
        headers = {ACCEPT_HEADER: "ref"}
        if forwarded:
            body, as_reference = as_bytes(payload), True
        else:
            body, as_reference = await self.transfers.outbound(payload)
        if as_reference:
            headers[TRANSFER_HEADER] = "ref"
        try:
            answer = await self._activator.post(f"/invoke/{target}", body, headers)
        except PeerGone as exc:
            raise InstanceFailed(f"the activator is unreachable: {exc}", function=target) from None
        passed = {name: value for name in _PASSED_HEADERS if (value := answer.header(name))}
        if answer.status == 200 and answer.header(TRANSFER_HEADER) == "ref":
            return answer.status, passed, await self.transfers.inbound(answer.body, True)
        return answer.status, passed, answer.body

    async def _invoke_out(self, request: web.Request) -> web.StreamResponse:
        """``POST /invoke/<fn>`` from the function (any language): the answer as bytes."""
        target = request.match_info["function"]
        try:
            payload = await read_body(
                request, max(self.config.inline_limit, self.config.object_quota), function=target
            )
            forwarded = request.headers.get(TRANSFER_HEADER) == "ref"
            status, headers, answer = await self.call(target, payload, forwarded=forwarded)
        except XdtError as exc:
            return error_response(exc, function=target)
        return web.Response(status=status, body=as_bytes(answer), headers=headers)

    # -- the local egress: the Python SDK's memfd fast path ----------------------------------

    async def _serve_local(self, path: str) -> None:
        # Owned by us, group the function's: it may connect (connecting needs write), others not.
        listener = bind_unix(path, mode=0o660, group=self.config.function_gid)
        self._local_listener = listener
        loop = asyncio.get_running_loop()
        try:
            while True:
                sock, _ = await loop.sock_accept(listener)
                if not self._egress_check.admits(sock):
                    sock.close()
                    continue
                limit = max(self.config.inline_limit, self.config.object_quota)
                channel = Channel(sock, self.pulls.pool, max_payload=limit)
                task = asyncio.create_task(self._local_connection(channel))
                self._local_tasks.add(task)
                task.add_done_callback(self._local_tasks.discard)
        finally:
            listener.close()

    async def _local_connection(self, channel: Channel) -> None:
        try:
            while True:
                message = await channel.receive()
                try:
                    kind, meta, payload = await self._local_call(message)
                except XdtError as exc:
                    kind, payload = Kind.ERROR, b""
                    meta = {"status": status_for(exc), "code": error_code(exc), "body": str(exc)}
                except (TypeError, KeyError, AttributeError) as exc:  # a malformed call
                    message.close()
                    kind, payload = Kind.ERROR, b""
                    meta = {"status": 400, "code": "bad_request", "body": f"bad call: {exc}"}
                await channel.send(kind, meta, payload)
        except (ConnectionError, ValueError):
            pass  # the function closed the connection, or sent garbage
        finally:
            channel.close()

    async def _local_call(self, message: Message) -> tuple[Kind, dict[str, Any] | None, Payload]:
        meta, op = message.meta, message.meta.get("op")
        if message.kind is not Kind.CALL or op not in _LOCAL_OPS:
            message.close()
            raise BadRequest(f"not a call this sidecar knows: {message.kind.name} {op!r}")
        if op == "invoke":
            target = str(meta.get("function", ""))
            status, headers, answer = await self.call(
                target, message.payload, forwarded=bool(meta.get("forwarded"))
            )
            if status == 200:
                return Kind.RESULT, None, answer
            body = as_bytes(answer).decode(errors="replace")
            error = {"status": status, "code": headers.get(ERROR_HEADER), "body": body}
            return Kind.ERROR, error, b""
        if op == "put":
            pulls, ttl = meta.get("pulls", 1), meta.get("ttl")
            try:
                self._check_put_terms(pulls, ttl)
            except BadRequest:
                message.close()
                raise
            token = await self.transfers.put(message.payload, pulls=pulls, ttl=ttl)
            return Kind.RESULT, None, token.encode()
        token = message.data().decode("ascii", errors="replace").strip()
        if op == "get":
            return Kind.RESULT, None, await self.transfers.get(token)
        released = await self.transfers.release(token)
        return Kind.RESULT, None, b"1" if released else b"0"

    async def _put(self, request: web.Request) -> web.Response:
        try:
            pulls_text = request.query.get("pulls", "1")
            pulls = None if pulls_text in ("", "none", "unlimited") else _whole(pulls_text)
            ttl = float(request.query["ttl"]) if "ttl" in request.query else None
        except ValueError:
            return error_response(BadRequest(self._put_terms_message()))
        try:
            self._check_put_terms(pulls, ttl)
            body = await read_body(request, self.config.object_quota, limit_name="the object quota")
            token = await self.transfers.put(body, pulls=pulls, ttl=ttl)
        except XdtError as exc:
            return error_response(exc)
        return web.Response(status=201, text=token)

    def _check_put_terms(self, pulls: object, ttl: object) -> None:
        """Raises BadRequest unless ``pulls`` is None or a whole number ≥ 1 and ``ttl`` None
        or seconds within the store's limit (both faces of the egress take these)."""
        good_pulls = pulls is None or (type(pulls) is int and pulls >= 1)
        good_ttl = ttl is None or (
            isinstance(ttl, int | float)
            and not isinstance(ttl, bool)
            and 0 < ttl <= self.store.config.max_ttl
        )
        if not (good_pulls and good_ttl):
            raise BadRequest(self._put_terms_message())

    def _put_terms_message(self) -> str:
        return (
            "pulls must be a whole number ≥ 1 or unlimited, ttl a number of seconds above 0 and "
            f"at most {self.store.config.max_ttl:g}"
        )

    async def _get(self, request: web.Request) -> web.Response:
        try:
            return web.Response(body=as_bytes(await self.transfers.get(await _token(request))))
        except XdtError as exc:
            return error_response(exc)

    async def _release(self, request: web.Request) -> web.Response:
        try:
            released = await self.transfers.release(await _token(request))
        except XdtError as exc:
            return error_response(exc)
        return web.json_response({"released": released})


def _whole(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"not a whole number: {text!r}")
    return int(text)


async def _token(request: web.Request) -> str:
    # Any length: an inline-mode "reference" is its bytes (the egress app caps the body).
    return (await request.read()).decode("ascii", errors="replace").strip()


_PASSED_HEADERS = ("Content-Type", ERROR_HEADER)
_LOCAL_OPS = ("invoke", "put", "get", "release")
