"""How the SDK reaches its instance's sidecar: one small interface, two transports.

- :class:`SocketTransport`: the Python runtime's same-host way (``$XDT_EGRESS_SOCKET``), the
  channel of :mod:`xdt.channel`: big payloads pass as memfds, never through the socket;
- :class:`HttpTransport`: plain HTTP to ``$XDT_EGRESS`` (under its secret path), for a
  process without the socket.

Both carry the egress's four operations (:mod:`xdt.sidecar.egress`) and raise the typed
error the sidecar answered with. aiohttp is imported only by the HTTP transport, when used.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.parse
import weakref
from typing import TYPE_CHECKING, Any, Protocol

from .._core.buffers import Buffer, BufferPool, as_bytes
from .._core.checksum import checksum
from .._core.errors import InstanceFailed, PeerGone, ProtocolError, XdtError, from_wire
from .._http.contract import CURRENT_TRACE
from .._http.errors import error_from_answer
from .._http.headers import BY_REFERENCE, TRANSFER_HEADER
from .._util.heap import trims_when_idle
from ..channel import Channel, Kind

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "BLANK",
    "EGRESS_ENV",
    "EGRESS_SOCKET_ENV",
    "Data",
    "HttpTransport",
    "SocketTransport",
    "Transport",
    "egress_url",
    "put_path",
    "transport",
]

EGRESS_ENV = "XDT_EGRESS"
EGRESS_SOCKET_ENV = "XDT_EGRESS_SOCKET"

Data = bytes | bytearray | memoryview | Buffer
Meta = dict[str, Any]

# Warm buffers big payloads are lent (or copied and given) to the sidecar in; given back when
# the process is idle.
_POOL = BufferPool(name="xdt-sdk")
trims_when_idle(_POOL.trim)
# xdt.buffer()'s: made ahead, never reused (each is given away sealed), so always blank.
BLANK = BufferPool(name="xdt-payload")
trims_when_idle(BLANK.trim)


class Transport(Protocol):
    async def call(self, op: str, meta: Meta, data: Data, *, function: str | None) -> bytes:
        """One egress operation (``invoke``, ``put``, ``get``, ``release``); its answer."""
        ...

    async def close(self) -> None: ...


def egress_url() -> str:
    url = os.environ.get(EGRESS_ENV)
    if not url:
        raise XdtError(
            f"${EGRESS_ENV} is not set: xdt.invoke works inside a function run by the xdt "
            "platform (`xdt up`), whose sidecar sets it"
        )
    return url.rstrip("/")


def put_path(pulls: int | None, ttl: float | None, *, inline_small: bool = False) -> str:
    """The HTTP face's path of a put (see :mod:`xdt.sidecar.egress`)."""
    query = {"pulls": "unlimited" if pulls is None else str(pulls)}
    if ttl is not None:
        query["ttl"] = repr(float(ttl))
    if inline_small:
        query["inline_small"] = "1"
    return f"/objects?{urllib.parse.urlencode(query)}"


def _close(data: Data) -> None:
    if isinstance(data, Buffer):
        data.close()


# A pooled channel idle this long is closed, not reused: well inside the sidecar's own idle
# timeout (120 s, xdt.sidecar.egress), so a reused channel is one the sidecar still keeps.
CHANNEL_IDLE_TIMEOUT = 60.0
# Calls at once over the socket: the sidecar serves 256 channels (xdt.sidecar.egress) and keeps
# further ones waiting in its listen backlog; a loop's calls beyond this wait here instead.
MAX_OPEN_CHANNELS = 256


class SocketTransport:
    """Pooled channels to the sidecar's socket, one call at a time each; at most
    :data:`MAX_OPEN_CHANNELS` calls at once (more wait), the sidecar's own cap."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._idle: list[tuple[float, Channel]] = []  # (idle since, channel), oldest first
        self._open = asyncio.Semaphore(MAX_OPEN_CHANNELS)

    async def _channel(self) -> Channel:
        fresh_since = time.monotonic() - CHANNEL_IDLE_TIMEOUT
        while self._idle:
            since, channel = self._idle.pop()
            if since >= fresh_since and not channel.peer_closed():
                return channel
            channel.close()
        return await Channel.connect(self.path, _POOL)

    async def call(self, op: str, meta: Meta, data: Data, *, function: str | None) -> bytes:
        async with self._open:
            return await self._call(op, meta, data, function=function)

    async def _call(self, op: str, meta: Meta, data: Data, *, function: str | None) -> bytes:
        try:
            channel = await self._channel()
        except OSError as exc:
            _close(data)
            raise InstanceFailed(
                f"this instance's sidecar is unreachable at {self.path}: {exc}", function=function
            ) from None
        if isinstance(data, Buffer) and not data.sealed:
            # xdt.buffer(): given to the sidecar, which keeps it without a copy. Hashed here,
            # where its pages are mapped and warm: the sidecar would fault each one in.
            data.checksum = checksum(data.view())
            data.seal()
        try:
            trace = CURRENT_TRACE.get()
            if trace is not None and op == "invoke":
                meta = {**meta, **trace.meta()}
            await channel.send(Kind.CALL, {"op": op, **meta}, data)
            message = await channel.receive()
        except (PeerGone, ProtocolError) as exc:
            channel.close()
            raise InstanceFailed(
                f"this instance's sidecar went away mid-call: {exc}", function=function
            ) from None
        self._idle.append((time.monotonic(), channel))
        if message.kind is Kind.RESULT:
            return message.data()
        message.close()
        if message.kind is Kind.ERROR:
            raise from_wire(message.meta)
        raise ProtocolError(f"the sidecar answered a call with {message.kind.name}")

    async def close(self) -> None:
        for _, channel in self._idle:
            channel.close()
        self._idle.clear()


class HttpTransport:
    """aiohttp to ``$XDT_EGRESS``, one keep-alive session per event loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._session: aiohttp.ClientSession | None = None

    async def call(self, op: str, meta: Meta, data: Data, *, function: str | None) -> bytes:
        body = as_bytes(data) if isinstance(data, Buffer) else bytes(data)
        headers: dict[str, str] = {}
        if op == "invoke":
            path = f"/invoke/{meta['function']}"
            if meta.get("forwarded"):
                headers[TRANSFER_HEADER] = BY_REFERENCE
            trace = CURRENT_TRACE.get()
            if trace is not None:
                headers.update(trace.headers())
        elif op == "put":
            path = put_path(
                meta["pulls"], meta.get("ttl"), inline_small=meta.get("inline_small", False)
            )
        else:
            path = f"/objects/{op}"
        return await self._post(path, body, headers, function=function)

    async def _post(
        self, path: str, body: bytes, headers: dict[str, str], *, function: str | None
    ) -> bytes:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=False,
            )
        url = f"{self.url}{path}"
        try:
            async with self._session.post(url, data=body, headers=headers) as response:
                answer = await response.read()
                if response.status >= 300:
                    raise error_from_answer(
                        response.status, response.headers, answer, function=function
                    )
                return answer
        except aiohttp.ClientError as exc:
            raise InstanceFailed(
                f"this instance's sidecar is unreachable at {url}: {exc}", function=function
            ) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


_transports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Transport] = (
    weakref.WeakKeyDictionary()
)


def transport() -> Transport:
    """This event loop's transport: the socket when the runtime gave one, else HTTP."""
    loop = asyncio.get_running_loop()
    found = _transports.get(loop)
    if found is None:
        path = os.environ.get(EGRESS_SOCKET_ENV)
        found = SocketTransport(path) if path else HttpTransport(egress_url())
        _transports[loop] = found
    return found


async def close_transport() -> None:
    """Close this event loop's transport, if it has one."""
    found = _transports.pop(asyncio.get_running_loop(), None)
    if found is not None:
        await found.close()
