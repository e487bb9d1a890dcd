"""The sidecar: the trusted process in front of one function instance (Knative's queue-proxy).

It wires its parts together and runs them:

- the :class:`~.ingress.Ingress` (HTTP: a TCP port on ``faces.host``, and a Unix socket for
  the activator's short way in, admitting only the platform's own uid);
- the :class:`~.egress.Egress`, the function's own way out (HTTP under a random path prefix
  that only ``$XDT_EGRESS`` carries, and a Unix socket admitting only the function's uid);
- the object server of the pull protocol (:mod:`xdt.pull`), for peer sidecars holding a
  reference, and its pull client, for references this function receives;
- the :class:`~.payloads.Payloads` of the function's transfer mode, and its
  :class:`~.upstream.Upstream` (the Python runtime or any HTTP server).

Only the sidecar holds the key ring; the function process never sees it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets

from aiohttp import web

from .._core.buffers import DEFAULT_POOL_LIMITS
from .._core.loans import LOANS
from .._core.peercred import PeerCheck
from .._core.refs import KeyRing
from .._core.store import ObjectStore, StoreConfig
from .._http.listen import Limits, make_runner, port_of, serve_tcp, serve_unix
from .._util.concurrency import RequestStats
from .._util.heap import give_back, give_back_when_idle
from .._util.tasks import TaskSet
from ..modes import PathMaker
from ..pull import ClientConfig, ObjectServer, PullClient, ServerConfig
from .calls import Calls
from .config import SidecarConfig
from .egress import Egress
from .guard import behind_secret
from .ingress import Ingress
from .payloads import Payloads
from .upstream import HttpUpstream, RuntimeUpstream, Upstream

__all__ = ["Sidecar"]

_ERROR_ROOM = 64 << 10
# Per listener (each a Unix socket and a TCP port): the activator keeps a few pooled
# connections per instance; the function's own calls are bounded by its concurrency.
INGRESS_LIMITS = Limits(max_connections=512)
EGRESS_LIMITS = Limits(max_connections=256)


def _make_upstream(config: SidecarConfig, store: ObjectStore, pulls: PullClient) -> Upstream:
    kind, _, where = config.upstream.partition(":")
    function_uid = config.runs_as.uid if config.runs_as else os.getuid()
    if kind == "unix":
        # Pulled payloads are lent on to the function from the pull client's pool, and come
        # back to it: it only ever holds this function's own inbound data.
        return RuntimeUpstream(
            where,
            function=config.function,
            lend=pulls.pool,
            keep=store.pool,
            max_answer=config.max_body,
            peer_uid=function_uid,
        )
    if kind == "http":
        # Bound to every address (a Knative pod's sidecar), it still reaches its function on
        # the pod's loopback.
        host = config.faces.host if config.faces.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return HttpUpstream(int(where), function=config.function, host=host, peer_uid=function_uid)
    raise ValueError(f"upstream {config.upstream!r} is neither unix:PATH nor http:PORT")


class Sidecar:
    def __init__(self, config: SidecarConfig, keyring: KeyRing) -> None:
        self.config = config
        self.keyring = keyring
        warm = dataclasses.replace(DEFAULT_POOL_LIMITS, idle_seconds=config.keep_warm)
        self.store = ObjectStore(StoreConfig(quota_bytes=config.object_quota, pool=warm))
        objects_dir = config.faces.objects_dir
        self.pulls = PullClient(
            keyring,
            ClientConfig(local_dir=objects_dir, pool=warm, io_timeout=config.pull_timeout),
            tenant=config.tenant,
        )
        # Mappings of lent memfds keep the lender's memory alive as long as warm buffers do.
        # (The channel's loans are per process: one sidecar is one process.)
        self.pulls.loans.idle_seconds = LOANS.idle_seconds = config.keep_warm
        faces = config.faces
        self.objects = ObjectServer(
            self.store,
            keyring,
            ServerConfig(
                host=faces.host, port=faces.objects_port, advertise=faces.advertise,
                local_dir=objects_dir,
            ),
        )  # fmt: skip
        self.upstream = _make_upstream(config, self.store, self.pulls)
        paths = PathMaker(
            keyring=keyring,
            sender=config.instance,
            stores=config.stores,
            inline_limit=config.transfer.inline_limit,
            store=self.store,
            server=self.objects,
            client=self.pulls,
            function=config.function,
        )
        self.payloads = Payloads(
            config.transfer, paths, function=config.function, tenant=config.tenant
        )
        self.stats = RequestStats()
        self.ingress = Ingress(
            config, self.payloads, self.upstream, self.store, self.stats,
            faces_down=self.faces_down, keyring=keyring,
        )  # fmt: skip
        own = os.getuid()  # the platform's: it started us
        function_uid = config.runs_as.uid if config.runs_as else own
        self.egress = Egress(
            config,
            self.payloads,
            # An answer is inline (the inline limit at most) or a reference; an error's JSON
            # is small.
            Calls(config, keyring, max_answer=config.transfer.inline_limit + _ERROR_ROOM),
            lend=self.pulls.pool,
            check=PeerCheck({own, function_uid}, "egress socket"),
            max_ttl=self.store.config.max_ttl,
        )
        self._ingress_check = PeerCheck({own}, "ingress socket")
        self.egress_secret = secrets.token_urlsafe(18)  # 144 bits: the TCP egress's path prefix
        self.ingress_port = 0
        self.egress_port = 0
        self._runners: list[web.AppRunner] = []
        self._listeners: list[asyncio.Server] = []
        self._tasks = TaskSet()
        self._faces: list[asyncio.Task[None]] = []  # serving tasks that must never end

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.objects.start()
        faces = self.config.faces
        self.ingress_port = await self._serve(
            self.ingress.app(), INGRESS_LIMITS, "ingress", faces.ingress_socket, faces.ingress_port
        )
        if faces.egress_tcp:
            egress = behind_secret(
                self.egress.app(), self.egress_secret, limit=self.config.max_body
            )
            self.egress_port = await self._serve(egress, EGRESS_LIMITS, "egress")
        if self.config.faces.egress_socket is not None:
            served = self._tasks.spawn(self.egress.serve_socket(self.config.faces.egress_socket))
            served.set_name("egress socket")
            self._faces.append(served)
        self._tasks.spawn(
            give_back_when_idle(self.stats.idle_since, self.config.keep_warm, trim=self._give_back)
        )

    def _give_back(self) -> None:
        """Idle a while: the warm memory that nothing else trims goes back to the kernel."""
        self.pulls.pool.trim()
        self.store.pool.trim()  # (on its own timer too, which may come up to keep_warm later)
        self.pulls.loans.trim()
        LOANS.trim()
        give_back()

    async def close(self) -> None:
        await self._tasks.cancel()
        for listener in self._listeners:
            listener.close()
        for runner in self._runners:
            await runner.cleanup()
        self.egress.calls.close()
        await self.payloads.close()
        await self.upstream.close()
        await self.pulls.close()
        await self.objects.close()
        self.store.close()

    def ports(self) -> dict[str, object]:
        """The handshake the instance manager reads: where each face listens."""
        return {
            "ingress": self.ingress_port,
            "egress": self.egress_port,
            "egress_path": f"/{self.egress_secret}",
            "objects": self.objects.address,
        }

    async def _serve(
        self,
        app: web.Application,
        limits: Limits,
        face: str,
        unix_path: str | None = None,
        port: int = 0,
    ) -> int:
        runner = make_runner(app, limits)
        await runner.setup()
        self._runners.append(runner)
        what = f"the {face} of {self.config.instance}"
        if unix_path is not None:  # skips the TCP stack: p50 774 → 705 µs in xdt bench platform
            self._listeners.append(
                await serve_unix(runner, unix_path, limits, check=self._ingress_check, what=what)
            )
        listener = await serve_tcp(runner, self.config.faces.host, port, limits, what=what)
        self._listeners.append(listener)
        return port_of(listener)

    def faces_down(self) -> list[str]:
        """The faces that are not serving (empty: all are): what readiness reports."""
        down = [f"listener {s.sockets[0].getsockname() if s.sockets else '?'}"
                for s in self._listeners if not s.is_serving()]  # fmt: skip
        down += [f"task {t.get_name()}" for t in self._faces if t.done()]
        return down
