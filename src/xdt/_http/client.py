"""A small keep-alive HTTP/1.1 client for the platform's own hops (activator → sidecar,
sidecar egress → gateway).

Both ends of those hops are ours, so this needs only ``POST`` with a body and answers framed by
``Content-Length``, chunked encoding, or (HTTP/1.1's last resort) the end of the connection.
Connecting is bounded by ``connect_timeout``, an answer's body by ``max_answer``; callers bound
the whole exchange (an invocation's timeout) and a cancelled exchange closes its connection.
An answer bigger than ``stream_over`` is not read here: it comes back as an :class:`AnswerBody`
still on its connection, for the caller to pass on chunk by chunk (the gateway, so that it
never holds a whole big answer: three unread 200 MiB answers once grew it by 1.2 GB).
It exists because it is the measured hot path: aiohttp's
client costs about 300 µs per request on this machine, this one about a third of that, which
is most of the platform's overhead per invocation (``xdt bench platform``). Function code and
``command`` functions (any HTTP server) are still reached through aiohttp.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from .._core.errors import PeerGone, ProtocolError
from .._util.names import netloc

__all__ = ["AnswerBody", "ConnectionPool", "HttpAnswer", "RequestHeaders"]

_UNSAFE_PATH = re.compile(r"[\x00-\x20\x7f]")
_UNSAFE_HEADER = re.compile(r"[\r\n\x00]")


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
RequestHeaders = Mapping[str, str] | Sequence[tuple[str, str]]
STREAM_CHUNK = 1 << 20


class AnswerBody:
    """The body of a big answer, still on its connection: iterate over it (chunks of at most
    1 MiB, each within ``io_timeout``), then :meth:`close` — which gives the connection back
    to its pool if every byte was read, and closes it otherwise."""

    def __init__(
        self,
        pool: ConnectionPool,
        connection: _Connection,
        length: int,
        io_timeout: float,
        *,
        reusable: bool = True,
    ) -> None:
        self.pool = pool
        self.reusable = reusable  # the peer did not say Connection: close
        self.length = length
        self.remaining = length
        self.io_timeout = io_timeout
        self._connection: _Connection | None = connection

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.remaining and self._connection is not None:
            reader = self._connection[0]
            try:
                async with asyncio.timeout(self.io_timeout):
                    chunk = await reader.read(min(self.remaining, STREAM_CHUNK))
            except (TimeoutError, ConnectionError) as exc:
                self.close()
                raise PeerGone(
                    f"{self.pool.host}:{self.pool.port} stalled or went away mid-answer "
                    f"({type(exc).__name__})"
                ) from None
            if not chunk:
                self.close()
                raise PeerGone(
                    f"{self.pool.host}:{self.pool.port} went away with {self.remaining} bytes "
                    "of its answer unsent"
                )
            self.remaining -= len(chunk)
            yield chunk

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self.pool._release(connection, reusable=self.reusable and self.remaining == 0)


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]  # names lower-cased (of a repeated header, the last)
    body: bytes
    stream: AnswerBody | None = None  # instead of ``body``: an answer over ``stream_over``
    fields: tuple[tuple[str, str], ...] = ()  # every header line, in order, as sent

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


class ConnectionPool:
    """Persistent connections to one ``host:port``, one request at a time each."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        unix_path: str | None = None,
        max_idle: int = 64,
        connect_timeout: float = 5.0,
        max_answer: int | None = None,
        stream_over: int | None = None,
        io_timeout: float = 30.0,
        idle_timeout: float = 30.0,
    ) -> None:
        self.host, self.port = host, port
        self.unix_path = unix_path  # connect here instead (the Host header still names host)
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self.max_answer = max_answer  # None: any size (the peer is one of ours)
        self.stream_over = stream_over  # answers framed bigger than this: an AnswerBody
        self.io_timeout = io_timeout  # for each chunk of an AnswerBody
        # A connection idle this long is closed, not reused: well inside the servers' own
        # idle timeout (60 s, xdt._http.listen), so the server never closes one as we send.
        self.idle_timeout = idle_timeout
        self._idle: list[tuple[float, _Connection]] = []  # (idle since, connection)
        # As browsers write it: a name-based router (Knative's ingress) matches the host alone
        # on the default port.
        self._host_header = netloc(host, None if port == 80 else port).encode()

    async def post(
        self,
        path: str,
        body: bytes,
        headers: RequestHeaders | None = None,
    ) -> HttpAnswer:
        """POST ``body``; the whole answer. Raises :class:`~xdt.PeerGone` (cannot connect:
        ``delivered`` False; or the peer left before answering: ``delivered`` None, as it may
        have acted on the request, which is therefore never sent again),
        :class:`~xdt.ProtocolError` (an answer that is not HTTP, or over ``max_answer``), and
        ValueError for a path or header that would break the request's framing (CR, LF; a
        space in the path): on a pooled keep-alive connection that would let one caller
        inject a request."""
        pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
        if _UNSAFE_PATH.search(path) or any(_UNSAFE_HEADER.search(f"{k}{v}") for k, v in pairs):
            raise ValueError(f"refusing a request with CR, LF or space in it: {path!r}")
        extra = "".join(f"{k}: {v}\r\n" for k, v in pairs).encode()
        head = (
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + self._host_header
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n"
        )  # fmt: skip
        fresh_since = time.monotonic() - self.idle_timeout
        while self._idle:
            since, connection = self._idle.pop()
            if since < fresh_since or connection[0].at_eof() or connection[1].is_closing():
                connection[1].close()  # idle too long, or closed by the server meanwhile
                continue
            return await self._exchange(connection, head, body)
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.unix_path is not None:
                    connection = await asyncio.open_unix_connection(self.unix_path)
                else:
                    connection = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise _undelivered(
                f"cannot connect to {self.host}:{self.port}: {exc.strerror}"
            ) from None
        except TimeoutError:
            raise _undelivered(
                f"cannot connect to {self.host}:{self.port}: no answer within "
                f"{self.connect_timeout:g} s"
            ) from None
        return await self._exchange(connection, head, body)

    def close(self) -> None:
        for _, (_, writer) in self._idle:
            writer.close()
        self._idle.clear()

    async def _exchange(self, connection: _Connection, head: bytes, body: bytes) -> HttpAnswer:
        reader, writer = connection
        try:
            writer.writelines((head, body))
            await writer.drain()
            raw_head = await reader.readuntil(b"\r\n\r\n")
            status, headers, fields = _parse_head(raw_head)
            keep_alive = headers.get("connection", "").lower() != "close"
            length = self._streamed_length(status, headers)
            if length is not None:
                rest = AnswerBody(self, connection, length, self.io_timeout, reusable=keep_alive)
                return HttpAnswer(status, headers, b"", rest, fields)
            answer_body, reusable = await self._read_body(reader, status, headers)
        except BaseException as exc:
            writer.close()
            if isinstance(exc, ProtocolError):
                raise
            if isinstance(exc, asyncio.IncompleteReadError | ConnectionError):
                raise PeerGone(
                    f"{self.host}:{self.port} went away mid-answer ({type(exc).__name__})"
                ) from None
            if isinstance(exc, ValueError | asyncio.LimitOverrunError):
                raise ProtocolError(
                    f"{self.host}:{self.port} sent an answer that is not HTTP/1.1 as xdt "
                    f"speaks it ({type(exc).__name__}: {exc})"
                ) from None
            raise
        self._release(connection, reusable=reusable and keep_alive)
        return HttpAnswer(status, headers, answer_body, None, fields)

    def _release(self, connection: _Connection, *, reusable: bool) -> None:
        if reusable and len(self._idle) < self.max_idle and not connection[1].is_closing():
            self._idle.append((time.monotonic(), connection))
        else:
            connection[1].close()

    def _streamed_length(self, status: int, headers: dict[str, str]) -> int | None:
        """The Content-Length of an answer to hand over as an AnswerBody, or None."""
        length = headers.get("content-length")
        if self.stream_over is None or status < 200 or length is None or not length.isdigit():
            return None
        if headers.get("transfer-encoding") or int(length) <= self.stream_over:
            return None
        self._check_size(int(length))
        return int(length)

    async def _read_body(
        self, reader: asyncio.StreamReader, status: int, headers: dict[str, str]
    ) -> tuple[bytes, bool]:
        """The answer's body, and whether the connection can carry another request."""
        if status < 200 or status in (204, 304):
            return b"", True
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return await _read_chunked(reader, self.max_answer), True
        length = headers.get("content-length")
        if length is None:  # framed by the end of the connection (RFC 9112, 6.3)
            limit = -1 if self.max_answer is None else self.max_answer + 1
            body = await reader.read(limit)
            self._check_size(len(body))
            return body, False
        if not length.isdigit():
            raise ProtocolError(f"{self.host}:{self.port} sent Content-Length {length[:20]!r}")
        self._check_size(int(length))
        return await reader.readexactly(int(length)), True

    def _check_size(self, size: int) -> None:
        if self.max_answer is not None and size > self.max_answer:
            raise ProtocolError(
                f"{self.host}:{self.port} answered {size} bytes, over the {self.max_answer} "
                "this hop takes"
            )


def _undelivered(message: str) -> PeerGone:
    error = PeerGone(message)
    error.delivered = False  # nobody took the connection: the request went nowhere
    return error


def _parse_head(raw: bytes) -> tuple[int, dict[str, str], tuple[tuple[str, str], ...]]:
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    fields: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields.append((name.strip(), value.strip()))
            headers[name.strip().lower()] = value.strip()
    return status, headers, tuple(fields)


async def _read_chunked(reader: asyncio.StreamReader, limit: int | None) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            await _skip_trailers(reader)
            return b"".join(parts)
        total += size
        if limit is not None and total > limit:
            raise ProtocolError(f"a chunked answer over the {limit} bytes this hop takes")
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _skip_trailers(reader: asyncio.StreamReader) -> None:
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass
