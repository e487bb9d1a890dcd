"""Where a function's calls to other functions go.

- On the embedded platform: the gateway (its activator), one pool of keep-alive connections,
  ``POST /invoke/<function>``, marked with the platform's hop secret so that the gateway knows
  the call for one between functions.
- On Knative: each function's own service URL (``KnativeMode.call_url``, Knative's
  cluster-local ``http://<function>.<namespace>.svc.cluster.local`` by default), ``POST /``,
  a pool per function; Knative's ingress, activator and queue-proxy route it as any request.
  No hop secret travels: it would cross the cluster's network in the clear. A call proof
  does (``X-Xdt-Call``: for that function, good for a minute), so that the callee's sidecar
  knows the call for a sidecar's and may answer with a reference.
"""

from __future__ import annotations

import urllib.parse

from .._core.refs import KeyRing
from .._http.client import ConnectionPool, HttpAnswer
from .._http.headers import CALL_HEADER, HOP_HEADER
from .config import SidecarConfig

__all__ = ["Calls"]


class Calls:
    """``post(target, body, headers)`` to wherever ``target`` is served; ``max_answer``
    bounds an answer's size."""

    def __init__(self, config: SidecarConfig, keyring: KeyRing, *, max_answer: int) -> None:
        self.knative = config.knative
        self.max_answer = max_answer
        self._keyring = keyring
        self._hop = keyring.hop_secret()
        self._pools: dict[str, ConnectionPool] = {}
        self._gateway: ConnectionPool | None = None
        if self.knative is None:
            self._gateway = self._pool(config.activator_url)

    def _pool(self, url: str) -> ConnectionPool:
        where = urllib.parse.urlsplit(url)
        if where.scheme != "http" or not where.hostname:
            raise ValueError(f"calls go over plain HTTP to a host: not {url!r}")
        return ConnectionPool(where.hostname, where.port or 80, max_answer=self.max_answer)

    async def post(self, target: str, body: bytes, headers: dict[str, str]) -> HttpAnswer:
        if self._gateway is not None:
            return await self._gateway.post(
                f"/invoke/{target}", body, {**headers, HOP_HEADER: self._hop}
            )
        pool = self._pools.get(target)
        if pool is None:
            pool = self._pools[target] = self._pool(self.url_of(target))
        proof = {CALL_HEADER: self._keyring.call_proof(target)}
        return await pool.post("/", body, {**headers, **proof})

    def url_of(self, target: str) -> str:
        """Where a call to ``target`` goes on Knative: its service URL."""
        assert self.knative is not None
        return self.knative.call_url.format(function=target, namespace=self.knative.namespace)

    def close(self) -> None:
        if self._gateway is not None:
            self._gateway.close()
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
