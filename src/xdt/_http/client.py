"""A small keep-alive HTTP/1.1 client for the platform's own hops (activator → sidecar,
sidecar egress → gateway).

Both ends of those hops are ours, so this needs only ``POST`` with a body and answers framed by
``Content-Length`` or chunked encoding. It exists because it is the measured hot path: aiohttp's
client costs about 300 µs per request on this machine, this one about a third of that, which
is most of the platform's overhead per invocation (``xdt bench platform``). Function code and
``command`` functions (any HTTP server) are still reached through aiohttp.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from .._core.errors import PeerGone

__all__ = ["ConnectionPool", "HttpAnswer"]

_UNSAFE_PATH = re.compile(r"[\x00-\x20\x7f]")
_UNSAFE_HEADER = re.compile(r"[\r\n\x00]")


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class ConnectionPool:
    """Persistent connections to one ``host:port``, one request at a time each."""

    def __init__(
        self, host: str, port: int, *, unix_path: str | None = None, max_idle: int = 64
    ) -> None:
        self.host, self.port = host, port
        self.unix_path = unix_path  # connect here instead (the Host header still names host)
        self.max_idle = max_idle
        self._idle: list[_Connection] = []
        self._host_header = f"{host}:{port}".encode()

    async def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> HttpAnswer:
        """POST ``body``; the whole answer. Raises :class:`PeerGone`, and ValueError for a
        path or header that would break the request's framing (CR, LF; a space in the path):
        on a pooled keep-alive connection that would let one caller inject a request."""
        if _UNSAFE_PATH.search(path) or any(
            _UNSAFE_HEADER.search(f"{k}{v}") for k, v in (headers or {}).items()
        ):
            raise ValueError(f"refusing a request with CR, LF or space in it: {path!r}")
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()).encode()
        head = (
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + self._host_header
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n"
        )  # fmt: skip
        while self._idle:
            connection = self._idle.pop()
            if connection[0].at_eof() or connection[1].is_closing():
                connection[1].close()
                continue
            try:
                return await self._exchange(connection, head, body)
            except _StaleConnection:
                continue  # closed by the server while idle, before reading a byte: retry
        try:
            if self.unix_path is not None:
                connection = await asyncio.open_unix_connection(self.unix_path)
            else:
                connection = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise PeerGone(f"cannot connect to {self.host}:{self.port}: {exc.strerror}") from None
        try:
            return await self._exchange(connection, head, body)
        except _StaleConnection:
            raise PeerGone(f"{self.host}:{self.port} closed the connection at once") from None

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()

    async def _exchange(self, connection: _Connection, head: bytes, body: bytes) -> HttpAnswer:
        reader, writer = connection
        try:
            writer.writelines((head, body))
            await writer.drain()
            try:
                raw_head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise _StaleConnection from None
                raise
            status, headers = _parse_head(raw_head)
            if headers.get("transfer-encoding", "").lower() == "chunked":
                answer_body = await _read_chunked(reader)
            else:
                answer_body = await reader.readexactly(int(headers.get("content-length", "0")))
        except BaseException as exc:
            writer.close()
            if isinstance(exc, _StaleConnection):
                raise
            if isinstance(exc, asyncio.IncompleteReadError | ConnectionError | ValueError):
                raise PeerGone(
                    f"{self.host}:{self.port} went away mid-answer ({type(exc).__name__})"
                ) from None
            if isinstance(exc, asyncio.LimitOverrunError):
                raise PeerGone(f"{self.host}:{self.port} sent oversized headers") from None
            raise
        if headers.get("connection", "").lower() == "close" or len(self._idle) >= self.max_idle:
            writer.close()
        else:
            self._idle.append(connection)
        return HttpAnswer(status, headers, answer_body)


class _StaleConnection(Exception):
    pass


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            await _skip_trailers(reader)
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _skip_trailers(reader: asyncio.StreamReader) -> None:
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass
