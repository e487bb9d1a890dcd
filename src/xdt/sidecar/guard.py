"""Who may talk to a sidecar's HTTP faces.

- :class:`PeerCheckedUnixSite`: aiohttp's ``UnixSite`` whose connections are admitted only
  from expected uids (``SO_PEERCRED``, :mod:`xdt._core.peercred`) — the ingress socket, for the
  platform's own uid only;
- :func:`behind_secret`: the TCP egress on loopback, which any local process can reach, serves
  only under a per-instance random path prefix (``$XDT_EGRESS`` carries it); anything else
  gets 403.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from aiohttp import web

from .._core.errors import Forbidden
from .._core.peercred import PeerCheck, bind_unix
from .._http.server import error_response

__all__ = ["PeerCheckedUnixSite", "behind_secret"]


class _Admission(asyncio.Protocol):
    """Stands in for the real protocol until the peer is known: an admitted connection is
    handed over to ``factory()``'s protocol, the others are closed before a byte is read."""

    def __init__(self, factory: Any, check: PeerCheck) -> None:
        self.factory = factory
        self.check = check

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is None or not self.check.admits(sock):
            assert isinstance(transport, asyncio.Transport)
            transport.abort()
            return
        protocol = self.factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # refused: nothing was set up


class PeerCheckedUnixSite(web.BaseSite):
    """Serves the runner on a Unix socket at ``path`` (file mode 0600: only its owner may
    connect) and admits only peers that ``check`` admits."""

    __slots__ = ("_check", "_path")

    def __init__(self, runner: web.BaseRunner, path: str, check: PeerCheck) -> None:
        super().__init__(runner)
        self._path = path
        self._check = check

    @property
    def name(self) -> str:
        return f"http://unix:{self._path}:"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        listener = bind_unix(self._path)
        self._server = await asyncio.get_running_loop().create_unix_server(
            lambda: _Admission(server, self._check), sock=listener, backlog=self._backlog
        )


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
