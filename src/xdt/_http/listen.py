"""HTTP listeners with bounds: how many connections, how long each may idle, how big a header.

Every aiohttp face of xdt — the gateway, a sidecar's ingress and its TCP egress — is served
with :func:`serve_tcp` or :func:`serve_unix` and a :class:`Limits`:

- ``max_connections`` per listener: a connection over it is answered ``503`` with
  ``Retry-After: 1`` and closed before a byte of it is read (one log line per 10 s at most);
- ``idle_timeout``: a connection with no complete request headers that long after it opened or
  after its last answer is closed. aiohttp's keep-alive timer does this, and it also covers a
  request whose headers are still trickling in (a slow-loris client);
- headers: at most ``max_headers`` lines of ``max_field_size`` bytes (aiohttp's parser);
- bodies: :func:`~.server.read_body` gives up after :meth:`Limits.body_deadline` (a base, plus
  time for the declared size at a minimum rate) with :class:`~xdt.RequestTimeout`.

Unix listeners can also check their peer's uid (``SO_PEERCRED``) before anything is read.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web, web_response

from .._core.peercred import PeerCheck, bind_unix
from .._util.logs import RateLimitedLog, RateLimitFilter

__all__ = ["DEFAULT_LIMITS", "Limits", "make_runner", "port_of", "serve_tcp", "serve_unix"]

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 41\r\nConnection: close\r\n\r\ntoo many connections: retry in a second\r\n"
)


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 1024
    idle_timeout: float = 60.0  # no complete request headers for this long: closed
    body_timeout: float = 30.0  # a body's deadline: this, ...
    min_body_rate: int = 1 << 20  # ... plus its declared size at this many bytes per second
    max_headers: int = 32
    max_field_size: int = 8190  # bytes per header line (aiohttp's default)

    def body_deadline(self, declared: int | None) -> float:
        """Seconds a body of ``declared`` bytes (None: chunked, unknown) may take to arrive."""
        return self.body_timeout + (declared or 0) / self.min_body_rate


DEFAULT_LIMITS = Limits()
_log = RateLimitedLog()
# Every answer, the parser's own error answers too, says "Server: xdt" rather than aiohttp's
# and Python's versions, which tell an attacker which published bugs to try. aiohttp reads
# this module global for each answer; it offers no setting for it.
setattr(web_response, "SERVER_SOFTWARE", "xdt")  # noqa: B010 - not exported: mypy
# aiohttp logs each malformed request with its traceback: one per kind per 10 s is plenty.
logging.getLogger("aiohttp.server").addFilter(RateLimitFilter(RateLimitedLog()))


def make_runner(app: web.Application, limits: Limits = DEFAULT_LIMITS) -> web.AppRunner:
    """A runner for ``app`` with xdt's settings: no access log, no signal handling, handlers
    cancelled when their client goes away (a queue slot is given back at once), and the
    timeouts and header bounds of ``limits``."""
    return web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,
        keepalive_timeout=limits.idle_timeout,
        max_headers=limits.max_headers,
        max_field_size=limits.max_field_size,
    )


class _Admission(asyncio.Protocol):
    """Stands in for aiohttp's protocol until the connection is admitted — under the cap, and
    from an expected uid when there is a check — then hands the transport over."""

    def __init__(
        self, server: web.Server, limits: Limits, check: PeerCheck | None, what: str
    ) -> None:
        self.server = server
        self.limits = limits
        self.check = check
        self.what = what

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.check is not None:
            sock = transport.get_extra_info("socket")
            if sock is None or not self.check.admits(sock):
                transport.abort()
                return
        if len(self.server.connections) >= self.limits.max_connections:
            _log(f"busy:{self.what}", f"xdt: {self.what} is at its cap of "
                 f"{self.limits.max_connections} connections: turning new ones away")  # fmt: skip
            transport.write(_BUSY)
            transport.close()
            return
        protocol = self.server()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # turned away: nothing was set up


def _server_of(runner: web.BaseRunner) -> web.Server:
    server = runner.server
    if not isinstance(server, web.Server):
        raise RuntimeError("set the runner up before serving it")
    return server


async def serve_tcp(
    runner: web.BaseRunner, host: str, port: int, limits: Limits, *, what: str, **kwargs: Any
) -> asyncio.Server:
    """Serve ``runner`` on ``host:port`` (0: any free port) within ``limits``; ``kwargs`` go
    to ``loop.create_server`` (e.g. ``reuse_address``)."""
    server = _server_of(runner)
    return await asyncio.get_running_loop().create_server(
        lambda: _Admission(server, limits, None, what), host, port, backlog=1024, **kwargs
    )


async def serve_unix(
    runner: web.BaseRunner, path: str, limits: Limits, *, check: PeerCheck, what: str
) -> asyncio.Server:
    """Serve ``runner`` on a Unix socket at ``path`` (mode 0600) within ``limits``, admitting
    only peers ``check`` admits."""
    server = _server_of(runner)
    listener = bind_unix(path)
    return await asyncio.get_running_loop().create_unix_server(
        lambda: _Admission(server, limits, check, what), sock=listener, backlog=1024
    )


def port_of(server: asyncio.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port
