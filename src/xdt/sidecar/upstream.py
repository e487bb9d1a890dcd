"""The function behind a sidecar: one small interface, two kinds.

- :class:`RuntimeUpstream`: a Python handler in the xdt runtime, over a Unix socket with the
  same-host wire of :mod:`xdt.channel` (pooled connections, one request each at a time; big
  payloads pass as sealed memfds both ways);
- :class:`HttpUpstream`: any HTTP server on ``$PORT`` (Knative's container contract).

``invoke`` takes the payload and the rest of the request (:class:`~xdt._http.contract.Request`
without its body: method, path, query, headers, and the trace) and returns the function's
:class:`FunctionAnswer` — its status and the headers that pass back (:mod:`xdt._http.contract`)
— or raises :class:`~xdt.FunctionFailed` (the handler raised: with its traceback), a 4xx error
the handler raised (:class:`~xdt.BadRequest`), or :class:`~xdt.InstanceFailed` (the function
process is gone or not listening).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sys
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import yarl

from .._core.buffers import Buffer, BufferPool, as_bytes
from .._core.errors import (
    FunctionFailed,
    InstanceFailed,
    InvocationError,
    PeerGone,
    ProtocolError,
    error_for_code,
)
from .._core.peercred import peer_of
from .._http.contract import Pairs, Request, Trace, answer_of, passing
from .._util.procfs import tcp_listeners
from ..channel import Channel, Kind
from ..modes.base import Payload

__all__ = ["FunctionAnswer", "HttpUpstream", "RuntimeUpstream", "Upstream"]


@dataclass(frozen=True, slots=True)
class FunctionAnswer:
    """What the function answered: its status, its body (bytes, or a memfd from the Python
    runtime), and the headers that pass back to the caller."""

    status: int
    body: Payload
    headers: Pairs = ()

    @property
    def content_type(self) -> str:
        found = (v for k, v in self.headers if k.lower() == "content-type")
        return next(found, "application/octet-stream")


DEFAULT_REQUEST = Request()


class Upstream(Protocol):
    async def invoke(
        self, body: Payload, request: Request = DEFAULT_REQUEST, trace: Trace | None = None
    ) -> FunctionAnswer: ...
    async def ready(self) -> bool: ...
    async def close(self) -> None: ...


class RuntimeUpstream:
    """``lend``: warm buffers to lend the runtime big payloads from; ``keep``: where a big
    answer the runtime lends us is copied to (the object store's pool: an answer that goes
    on by reference is adopted from there without another copy). ``peer_uid``: the uid the
    runtime runs under; a socket at ``socket_path`` served by any other uid is not used (the
    function owns the folder of its socket and could put another function's there)."""

    def __init__(
        self,
        socket_path: str,
        *,
        function: str,
        lend: BufferPool | None = None,
        keep: BufferPool | None = None,
        max_answer: int | None = None,
        max_idle: int = 64,
        peer_uid: int | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.peer_uid = peer_uid
        self.function = function
        self.max_idle = max_idle
        self.lend = lend or BufferPool(name="xdt-lend")
        self.keep = keep or BufferPool(name="xdt-answer")
        self.max_answer = max_answer  # the biggest answer taken from the function
        self._idle: list[Channel] = []

    async def invoke(
        self, body: Payload, request: Request = DEFAULT_REQUEST, trace: Trace | None = None
    ) -> FunctionAnswer:
        try:
            channel = await self._checkout()
        except BaseException:
            if isinstance(body, Buffer):
                body.close()
            raise
        meta = request.meta() if request is not DEFAULT_REQUEST else {}
        if trace is not None:
            meta.update(trace.meta())
        try:
            await channel.send(Kind.INVOKE, meta or None, body)
            message = await channel.receive()
        except BaseException as exc:
            channel.close()  # mid-request state is unknown: never reuse this connection
            if isinstance(exc, PeerGone | ProtocolError):
                # The process is gone, and with it every pooled connection: a restarted
                # runtime must not be reached through its predecessor's sockets.
                self._drop_idle()
                raise InstanceFailed(
                    f"the process of function {self.function!r} exited or broke the connection "
                    "while handling the request",
                    function=self.function,
                ) from None
            raise
        payload = message.payload
        if isinstance(payload, Buffer) and payload.lent:
            # Copy it out before the channel can carry another request: the runtime reuses
            # what it lent once its next message arrives.
            kept = self.keep.acquire(payload.size)
            kept.fill(payload.view())
            payload.close()
            message.payload = payload = kept
        self._checkin(channel)
        if message.kind is Kind.RESULT:
            status, headers = answer_of(message.meta)
            return FunctionAnswer(status, payload, headers)
        message.close()
        if message.kind is Kind.FAILED:
            raise self._failure(message.meta)
        raise InstanceFailed(
            f"the runtime answered {message.kind.name} to INVOKE", function=self.function
        )

    def _failure(self, meta: dict[str, object]) -> InvocationError:
        """The error a FAILED answer stands for: a 4xx the handler raised on purpose (as
        raised), else FunctionFailed with the handler's traceback."""
        text = meta.get("error")
        text = text if isinstance(text, str) else "?"
        status, code = meta.get("status"), meta.get("code")
        if type(status) is int and 400 <= status <= 499 and isinstance(code, str):
            error = error_for_code(code, text, function=self.function, status=status)
            if isinstance(error, InvocationError):
                return error
        failed = FunctionFailed(f"function {self.function!r} raised {text}", function=self.function)
        stack = meta.get("traceback")
        failed.stack_trace = stack if isinstance(stack, str) else None
        return failed

    async def ready(self) -> bool:
        try:
            channel = await self._connect()
        except OSError:
            return False
        try:
            await channel.send(Kind.PING)
            return (await channel.receive()).kind is Kind.PONG
        except (OSError, PeerGone, ProtocolError):
            return False
        finally:
            channel.close()

    async def close(self) -> None:
        self._drop_idle()

    def _drop_idle(self) -> None:
        for channel in self._idle:
            channel.close()
        self._idle.clear()

    async def _checkout(self) -> Channel:
        if self._idle:
            return self._idle.pop()
        try:
            channel = await self._connect(self.lend)
            channel.max_payload = self.max_answer
            return channel
        except OSError as exc:
            raise InstanceFailed(
                f"function {self.function!r} is not accepting connections: {exc.strerror}",
                function=self.function,
            ) from None

    async def _connect(self, pool: BufferPool | None = None) -> Channel:
        channel = await Channel.connect(self.socket_path, pool)
        if self.peer_uid is not None:
            try:
                uid = peer_of(channel.sock).uid
            except OSError:
                channel.close()
                raise
            if uid != self.peer_uid:
                channel.close()
                served = f"{self.socket_path} is served by uid {uid}"
                raise PermissionError(errno.EPERM, f"{served}, not the function's {self.peer_uid}")
        return channel

    def _checkin(self, channel: Channel) -> None:
        if len(self._idle) < self.max_idle:
            self._idle.append(channel)
        else:
            channel.close()


class HttpUpstream:
    """``peer_uid``: the uid the function runs under. The port is ready only when sockets of
    that uid alone listen on it: another function that took the port first would otherwise
    get this one's requests and answer for it."""

    def __init__(
        self, port: int, *, function: str, host: str = "127.0.0.1", peer_uid: int | None = None
    ) -> None:
        self.host, self.port = host, port
        self.function = function
        self.peer_uid = peer_uid
        self._warned = False
        self.url = f"http://{host}:{port}/"
        self._session: aiohttp.ClientSession | None = None

    async def invoke(
        self, body: Payload, request: Request = DEFAULT_REQUEST, trace: Trace | None = None
    ) -> FunctionAnswer:
        session = self._session_now()
        query = f"?{request.query_string}" if request.query_string else ""
        # As the caller wrote it (already %-encoded): not quoted again.
        url = yarl.URL(self.url[:-1] + request.path + query, encoded=True)
        try:
            async with session.request(
                request.method, url, data=as_bytes(body), headers=list(request.headers.items()),
                allow_redirects=False, skip_auto_headers=("Content-Type", "User-Agent"),
            ) as response:  # fmt: skip
                payload = await response.read()
                return FunctionAnswer(response.status, payload, passing(response.headers.items()))
        except aiohttp.ClientError as exc:
            raise InstanceFailed(
                f"function {self.function!r} (HTTP on port {self.port}) failed mid-request: {exc}",
                function=self.function,
            ) from None

    async def ready(self) -> bool:
        # Knative's default readiness probe for a container: a TCP connect to its port.
        try:
            _, writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        if self.peer_uid is None:
            return True
        owners = set(tcp_listeners(self.port))
        if owners == {self.peer_uid}:
            return True
        if not self._warned:
            self._warned = True
            uids = ", ".join(str(uid) for uid in sorted(owners)) or "none"
            print(f"xdt: port {self.port} is listened on by uid {uids}, not only by function "
                  f"{self.function!r}'s uid {self.peer_uid}: not using it",
                  file=sys.stderr, flush=True)  # fmt: skip
        return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=False),
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=False,
            )
        return self._session
