"""The gateway's objects: payloads a caller outside the platform uploads, to hand to functions
by reference, and references it downloads.

==============================================  ==============================================
``POST /objects?function=F`` (or ``tenant=T``;  the body, of any size up to
``pulls=N``, ``ttl=S`` as on the egress)        ``platform.object_quota``, as an object of
                                                F's tenant → 201, its reference
``POST /invoke/F``, ``X-Xdt-Transfer: ref``     F gets the bytes behind the reference in the
                                                body (any mode's, of F's tenant)
``POST /objects/get``, a reference              its bytes (one of its pulls), streamed
``POST /objects/release``, a reference          ``{"released": true}`` if it was held here
==============================================  ==============================================

The platform process holds uploads as a sidecar holds its function's objects: an object store
(``object_quota``, ``object_ttl``) and an object server that receivers' sidecars pull from —
on one host as the memfd itself, no copy. An upload is written into its object as it arrives
(its pages made as its bytes come: a declared size costs quota, not memory), within the body
deadline; nothing partial is ever published. So a client feeds a function an input of any
size without raising the inline limit.

Who may: callers outside the platform — the operator, scripts, remote clients. Not functions
(:class:`~xdt.Forbidden`): a function puts and gets through its sidecar's egress, which acts
for its tenant only; here it could read another tenant's reference. Isolated, a function runs
under a uid of its own, and the gateway tells its connections by the uid that owns them
(:func:`xdt._util.tcpowner.tcp_owner`, the kernel's record); a local connection whose owner
cannot be told is refused too. Unisolated, functions run as the operator, and are as trusted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import ipaddress
from collections.abc import AsyncIterator, Collection, Mapping
from pathlib import Path

from aiohttp import web

from .._core.buffers import DEFAULT_POOL_LIMITS
from .._core.errors import BadRequest, Forbidden, FunctionNotFound
from .._core.refs import DEFAULT_TENANT, KeyRing
from .._core.store import ObjectStore, StoreConfig
from .._http.server import read_body_into
from .._util.tcpowner import is_local_address, tcp_owner
from ..modes import DataPaths, PathMaker, StoreSettings
from ..modes.base import Payload
from ..pull import ClientConfig, ObjectServer, PullClient, ServerConfig
from ..sidecar.egress import PutTerms
from ..sidecar.payloads import close
from .spec import Spec
from .status import ObjectsStatus

__all__ = ["FUNCTIONS_USE_THEIR_EGRESS", "GatewayObjects"]

SENDER = "gateway"  # names the gateway's objects in storage references
FUNCTIONS_USE_THEIR_EGRESS = (
    "functions put and get objects through their own sidecar ($XDT_EGRESS/objects, or "
    "xdt.put / xdt.get), not the gateway's /objects"
)


class GatewayObjects:
    """Objects for callers outside the platform (see the module docstring). ``function_uids``:
    the uids functions run under (empty when they are not isolated)."""

    def __init__(
        self,
        spec: Spec,
        keyring: KeyRing,
        objects_dir: Path,
        stores: StoreSettings,
        *,
        function_uids: Collection[int] = (),
        credentials: Mapping[str, str] | None = None,
        host: str | None = None,
        hosts_network: ipaddress.IPv4Network | None = None,
    ) -> None:
        settings = spec.platform
        # With test hosts (xdt.platform.hosts) the server binds the machine's address on
        # their network, and any connection from that network is a function's host's.
        self.hosts_network = hosts_network
        self.spec = spec
        self.keyring = keyring
        self.function_uids = frozenset(function_uids)
        warm = dataclasses.replace(DEFAULT_POOL_LIMITS, idle_seconds=settings.keep_warm)
        self.store = ObjectStore(
            StoreConfig(
                quota_bytes=settings.object_quota, default_ttl=settings.object_ttl, pool=warm
            )
        )
        local = str(objects_dir)
        self.server = ObjectServer(
            self.store, keyring, ServerConfig(host=host or settings.instance_host, local_dir=local)
        )
        self.client = PullClient(keyring, ClientConfig(local_dir=local, pool=warm))
        self._paths = DataPaths(PathMaker(
            keyring=keyring,
            sender=SENDER,
            stores=stores,
            inline_limit=settings.inline_limit,
            store=self.store,
            server=self.server,
            client=self.client,
            credentials=credentials,
        ))  # fmt: skip
        # What callers did, for /metrics: uploads, downloads, releases, refused.
        self.counts: collections.Counter[str] = collections.Counter()

    async def start(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        await self._paths.close()
        await self.client.close()
        await self.server.close()
        self.store.close()

    def status(self) -> ObjectsStatus:
        stats = self.store.stats
        return {
            "objects": stats.objects,
            "bytes_held": stats.bytes_held,
            "bytes_reserved": stats.bytes_reserved,
            "address": self.server.address,
            "uploads": self.counts["uploads"],
            "downloads": self.counts["downloads"],
            "releases": self.counts["releases"],
            "refused": self.counts["refused"],
        }

    # -- who asks ----------------------------------------------------------------------------

    async def check_caller(self, request: web.Request) -> None:
        """:class:`~xdt.Forbidden` unless the caller is outside every function: a process of
        another uid whose socket is live, or a client on another host. A local connection
        whose owner cannot be told (closed already, or not found) is refused too: a function
        that sends its request and closes at once would leave a socket of no one's (uid 0)."""
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        us = transport.get_extra_info("sockname") if transport is not None else None
        if self._from_a_host(peer):
            raise self._refused("it comes from a test host, where functions run")
        if not self.function_uids:
            return
        if peer is None or us is None:
            raise self._refused("its connection is already gone")
        # Off the loop: where netlink is refused the lookup scans a table a client can grow.
        owner = await asyncio.to_thread(tcp_owner, peer[:2], us[:2])
        if owner is None:
            if not await asyncio.to_thread(is_local_address, peer[0]):
                return  # a client on another host: no function of ours
            raise self._refused("who holds its connection cannot be told")
        if not owner.live:
            raise self._refused(f"its connection is closed ({owner.state})")
        if owner.uid in self.function_uids:
            raise self._refused()

    def _from_a_host(self, peer: tuple[str, int] | None) -> bool:
        if self.hosts_network is None or peer is None:
            return False
        return ipaddress.ip_address(peer[0].partition("%")[0]) in self.hosts_network

    def _refused(self, why: str | None = None) -> Forbidden:
        self.counts["refused"] += 1
        return Forbidden(FUNCTIONS_USE_THEIR_EGRESS + (f" ({why})" if why else ""))

    def tenant_for(self, query: Mapping[str, str]) -> str:
        """The tenant an upload is for: its ``function``'s, or the ``tenant`` it names (one of
        this platform's), else the default one."""
        function_name, tenant = query.get("function"), query.get("tenant")
        if function_name is not None:
            function = self.spec.function(function_name)
            if function is None:
                raise FunctionNotFound(
                    f"no function named {function_name!r} is deployed", function=function_name
                )
            if tenant is not None and tenant != function.tenant:
                raise BadRequest("tenant= and function= name different tenants: name one")
            return function.tenant
        tenants = {f.tenant for f in self.spec.functions}
        if tenant is None:
            return DEFAULT_TENANT
        if tenant not in tenants:
            raise BadRequest(f"no function of this platform is of tenant {tenant!r}")
        return tenant

    # -- the operations ----------------------------------------------------------------------

    async def upload(self, request: web.Request) -> str:
        """The request's body as a new object; its sealed reference."""
        size = request.content_length
        if size is None:
            raise BadRequest(
                "an upload needs its Content-Length (curl --data-binary @FILE sends it); a "
                "chunked body of unknown size is not taken"
            )
        tenant = self.tenant_for(request.query)
        terms = PutTerms.from_query(request.query, max_ttl=self.store.config.max_ttl)
        allocation = await self.store.allocate(
            size, tenant=tenant, pulls=terms.pulls, ttl=terms.ttl, populate=False
        )
        try:
            with allocation.writable() as into:
                await read_body_into(request, into)
        except BaseException:
            allocation.abort()
            raise
        self.counts["uploads"] += 1
        return self.server.seal(allocation.publish())

    @contextlib.asynccontextmanager
    async def download(self, token: str) -> AsyncIterator[Payload]:
        """The bytes behind any reference of this platform (one of its pulls), for the block:
        bytes, or a memfd closed after it. Until then they hold their size of the quota —
        downloads are memory too, whichever mode they come from — and a download waits for
        room as an upload does."""
        # Any tenant's: the caller is outside them all (a function is refused before this).
        path, ref = self._paths.route(token, tenant=None)
        async with self.store.room(ref.size if ref is not None else len(token)):
            payload = await path.get(token, ref)
            try:
                self.counts["downloads"] += 1
                yield payload
            finally:
                close(payload)

    async def release(self, token: str) -> bool:
        path, ref = self._paths.route(token, tenant=None)
        released = await path.release(token, ref)
        self.counts["releases"] += released
        return released
