"""Calling a running platform from outside it: :class:`Client` (plain code) and
:class:`AsyncClient` (``asyncio``).

::

    with xdt.Client("http://127.0.0.1:8080") as client:
        answer = client.invoke("wordcount", b"the text")
        counts = client.invoke("wordcount", open("big.txt", "rb"))   # any size: see below
        ref = client.put(open("video.mp4", "rb"), function="decode")  # an input, by reference
        frames = client.invoke("decode", reference=ref)
        result = client.get(client.invoke("render", frames))          # a reference it returned

Inputs bigger than ``upload_above`` (6 MiB, the platform's default inline limit) are uploaded
to the gateway's ``/objects`` first and passed by reference: a client feeds a function an
input of any size (up to the platform's ``object_quota``) without raising the inline limit,
and a file is streamed, never read whole. :meth:`Client.get` downloads the bytes behind a
reference a function gave out.

Each keeps its connections open between calls (one per thread for :class:`Client`, a pool for
:class:`AsyncClient`), and raises what the platform answered as xdt's own typed exceptions:
:class:`xdt.FunctionFailed` (with ``stack_trace`` and ``request_id`` when the platform gives
them), :class:`xdt.FunctionNotFound`, :class:`xdt.PayloadTooLarge`, :class:`xdt.Overloaded`,
the reference errors (:class:`xdt.ReferenceExpired`, :class:`xdt.PullBudgetExhausted`, …),
:class:`xdt.InvocationTimeout` — also when no answer came within the client's ``timeout`` —
and :class:`xdt.PeerGone` when no platform answers at the URL, or it went away mid-answer.

The URL is ``url``, else ``$XDT_URL``, else ``http://127.0.0.1:8080``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import stat
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

from .._core.errors import InvocationTimeout, PeerGone
from .._http.contract import REQUEST_ID_HEADER
from .._http.errors import error_from_answer
from .._http.headers import BY_REFERENCE, TRANSFER_HEADER
from .._util.names import is_function_name
from ..modes.inline import decode_inline, is_inline

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "DEFAULT_TIMEOUT",
    "UPLOAD_ABOVE",
    "Answer",
    "AsyncClient",
    "Body",
    "Client",
    "body_size",
    "default_url",
]

DEFAULT_TIMEOUT = 310.0  # seconds: a little over a function's default timeout (300 s)
UPLOAD_ABOVE = 6 << 20  # the platform's default inline limit
_BLOCK = 1 << 20  # a file is sent in pieces this big
IDLE_REUSE = 30.0  # seconds: a connection idle longer is made anew (the gateway's idle: 60 s)

Body = bytes | bytearray | memoryview | BinaryIO
"""What a client sends: bytes, or a regular file open for reading in binary mode (sent from
where it stands: the bytes it holds when the call begins)."""


def default_url() -> str:
    return os.environ.get("XDT_URL", "http://127.0.0.1:8080")


@dataclass(frozen=True)
class Answer:
    """A function's answer: its status, headers (names as sent) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def request_id(self) -> str | None:
        wanted = REQUEST_ID_HEADER.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


class _File:
    """A file sent as exactly the bytes it held, from where it stood, when the call began:
    one that grows meanwhile must not send more than its Content-Length said (the surplus
    would be read as the connection's next request), nor one that shrinks fewer."""

    def __init__(self, file: BinaryIO) -> None:
        try:
            info = os.fstat(file.fileno())
            start = file.tell()
        except (OSError, AttributeError, ValueError) as exc:
            raise ValueError(
                "a file to send must be a regular file open for reading in binary mode"
            ) from exc
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("a file to send must be a regular file (a pipe has no size)")
        self.file, self.start, self.size = file, start, max(0, info.st_size - start)
        self._left = self.size

    def rewind(self) -> None:
        self.file.seek(self.start)
        self._left = self.size

    def read(self, size: int = -1) -> bytes:
        if self._left == 0:
            return b""
        piece = self.file.read(self._left if size < 0 else min(size, self._left))
        if not piece:
            raise ValueError(
                f"the file ended {self._left} bytes short of the {self.size} it held when the "
                "call began: it shrank while it was sent"
            )
        self._left -= len(piece)
        return piece


@dataclass(frozen=True)
class _Call:
    """One request to the gateway, ready to send: what every client method comes down to."""

    method: str
    target: str  # path and query
    body: bytes | bytearray | memoryview | _File
    headers: dict[str, str]
    function: str | None  # what errors name


def _call(
    method: str, target: str, body: Body, headers: Mapping[str, str], function: str | None
) -> _Call:
    """The call, its body ready to send and its Content-Length said."""
    sendable = body if isinstance(body, bytes | bytearray | memoryview) else _File(body)
    length = {"Content-Length": str(body_size(sendable))}
    return _Call(method, target, sendable, {**headers, **length}, function)


def body_size(body: Body | _File) -> int:
    """How many bytes ``body`` sends (a file: from where it stands to its end, now)."""
    if isinstance(body, bytes | bytearray | memoryview):
        return memoryview(body).nbytes
    return (body if isinstance(body, _File) else _File(body)).size


def _invoke_call(
    function: str,
    body: Body,
    *,
    method: str,
    path: str,
    headers: Mapping[str, str] | None,
    request_id: str | None,
    reference: str | None,
) -> _Call:
    if not is_function_name(function):
        raise ValueError(f"{function!r} is not a function name (lower-case letters, digits, '-')")
    if path and not path.startswith("/"):
        path = "/" + path
    sent = {"Content-Type": "application/octet-stream", **(headers or {})}
    if request_id is not None:
        sent[REQUEST_ID_HEADER] = request_id
    if reference is not None:
        sent[TRANSFER_HEADER] = BY_REFERENCE
        body = reference.encode()
    return _call(method, f"/invoke/{function}{path}", body, sent, function)


def _put_call(
    body: Body, function: str | None, tenant: str | None, pulls: int | None, ttl: float | None
) -> _Call:
    query = {"pulls": "unlimited" if pulls is None else str(pulls)}
    if function is not None:
        query["function"] = function
    if tenant is not None:
        query["tenant"] = tenant
    if ttl is not None:
        query["ttl"] = repr(float(ttl))
    headers = {"Content-Type": "application/octet-stream"}
    return _call("POST", f"/objects?{urllib.parse.urlencode(query)}", body, headers, function)


def _reference_call(operation: str, reference: str) -> _Call:
    headers = {"Content-Type": "text/plain"}
    return _call("POST", f"/objects/{operation}", reference.encode(), headers, None)


def _timed_out(call: _Call, wait: float) -> InvocationTimeout:
    what = repr(call.function) if call.function else "the platform"
    return InvocationTimeout(
        f"no answer from {what} within {wait:g} s (the client's timeout)", function=call.function
    )


def _unreachable(url: str, exc: Exception, call: _Call, *, answering: bool) -> PeerGone:
    """``answering``: a platform was connected to, and went away."""
    if answering:
        return PeerGone(
            f"the platform at {url} went away mid-answer ({type(exc).__name__}: {exc})",
            function=call.function,
        )
    return PeerGone(
        f"no platform answering at {url} ({exc}); start one with `xdt up`, or name it (url, "
        "or $XDT_URL)",
        function=call.function,
    )


def _checked(call: _Call, answer: Answer) -> Answer:
    if answer.status >= 300:
        raise error_from_answer(answer.status, answer.headers, answer.body, function=call.function)
    return answer


class Client:
    """The platform at ``url``, called from plain (threaded) code."""

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        upload_above: int = UPLOAD_ABOVE,
    ) -> None:
        self.url = (url or default_url()).rstrip("/")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{self.url!r}: the platform's URL is http://host:port")
        self._host, self._port = parts.hostname, parts.port or 80
        self.timeout = timeout
        self.upload_above = upload_above
        self._local = threading.local()  # one kept-alive connection per thread
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def invoke(
        self,
        function: str,
        data: Body = b"",
        *,
        reference: str | None = None,
        path: str = "",
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """``function``'s answer to ``data`` (or to the bytes behind ``reference``); raises
        its failure typed. ``data`` over :attr:`upload_above` goes by reference."""
        return self.request(
            function, data, reference=reference, path=path, headers=headers,
            request_id=request_id, timeout=timeout,
        ).body  # fmt: skip

    def request(
        self,
        function: str,
        data: Body = b"",
        *,
        reference: str | None = None,
        method: str = "POST",
        path: str = "",
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Answer:
        """The whole answer (status, headers, body) of a 2xx; raises any other typed."""
        if reference is None and body_size(data) > self.upload_above:
            reference = self.put(data, function=function, timeout=timeout)
        call = _invoke_call(
            function, data, method=method, path=path, headers=headers, request_id=request_id,
            reference=reference,
        )  # fmt: skip
        return self._send(call, timeout)

    def put(
        self,
        data: Body,
        *,
        function: str | None = None,
        tenant: str | None = None,
        pulls: int | None = 1,
        ttl: float | None = None,
        timeout: float | None = None,
    ) -> str:
        """Upload ``data`` as an object for ``function``'s tenant (or ``tenant``, else the
        default one); its reference, good for ``pulls`` reads (None: any number) until
        ``ttl`` seconds pass (the platform's ``object_ttl`` by default)."""
        return self._send(_put_call(data, function, tenant, pulls, ttl), timeout).body.decode()

    def get(self, reference: str, *, timeout: float | None = None) -> bytes:
        """The bytes behind ``reference`` (one of its pulls; an inline one is its bytes)."""
        if is_inline(reference):
            return decode_inline(reference)
        return self._send(_reference_call("get", reference), timeout).body

    def release(self, reference: str, *, timeout: float | None = None) -> bool:
        """Free the object now; whether the gateway held it (elsewhere, it expires)."""
        if is_inline(reference):
            return False  # held nowhere
        answer = self._send(_reference_call("release", reference), timeout)
        return bool(json.loads(answer.body)["released"])

    def _send(self, call: _Call, timeout: float | None) -> Answer:
        wait = self.timeout if timeout is None else timeout
        for attempt in range(2):
            connection, reused = self._connection()
            connection.timeout = wait
            if connection.sock is not None:
                connection.sock.settimeout(wait)
            if isinstance(call.body, _File) and attempt:
                call.body.rewind()
            sending = True
            try:
                connection.request(call.method, call.target, body=call.body, headers=call.headers)
                sending = False
                response = connection.getresponse()
                body = response.read()
            except TimeoutError:
                connection.close()
                raise _timed_out(call, wait) from None
            except (OSError, http.client.HTTPException) as exc:
                connected = connection.sock is not None
                connection.close()
                # Sent again only if it never got out whole: a kept-alive connection the
                # server had closed. Once sent, the function may have run (or a pull been
                # spent): never twice. Connections idle long are not reused (see _connection).
                if reused and attempt == 0 and sending:
                    continue
                raise _unreachable(self.url, exc, call, answering=connected) from None
            except ValueError:  # the file changed size mid-call: the connection is unusable
                connection.close()
                raise
            self._local.used_at = time.monotonic()
            return _checked(call, Answer(response.status, dict(response.getheaders()), body))
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it was used before. One idle for
        :data:`IDLE_REUSE` is closed and made anew: the gateway closes idle connections after
        60 s, and a request sent as it does may or may not have reached it."""
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(
                self._host, self._port, timeout=self.timeout, blocksize=_BLOCK
            )
            self._local.connection = connection
            with self._lock:
                self._all.append(connection)
        elif time.monotonic() - getattr(self._local, "used_at", 0.0) > IDLE_REUSE:
            connection.close()
        return connection, connection.sock is not None

    def close(self) -> None:
        with self._lock:
            for connection in self._all:
                connection.close()
            self._all.clear()
        self._local = threading.local()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _pieces(
    body: bytes | bytearray | memoryview | _File,
) -> bytes | bytearray | memoryview | AsyncIterator[bytes | memoryview]:
    """A big body as pieces that the event loop sends one at a time (aiohttp would write
    bytes whole, holding the loop); a file read a piece at a time on a thread."""
    if isinstance(body, bytes | bytearray | memoryview) and body_size(body) <= _BLOCK:
        return body

    async def pieces() -> AsyncIterator[bytes | memoryview]:
        if isinstance(body, _File):
            while piece := await asyncio.to_thread(body.read, _BLOCK):
                yield piece
            return
        view = memoryview(body).cast("B")
        for start in range(0, view.nbytes, _BLOCK):
            yield view[start : start + _BLOCK]

    return pieces()


class AsyncClient:
    """The platform at ``url``, called from ``asyncio`` code; use ``async with``, or
    ``await client.aclose()`` when done. The same methods as :class:`Client`, awaited."""

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        upload_above: int = UPLOAD_ABOVE,
    ) -> None:
        self.url = (url or default_url()).rstrip("/")
        self.timeout = timeout
        self.upload_above = upload_above
        self._session: aiohttp.ClientSession | None = None

    async def invoke(
        self,
        function: str,
        data: Body = b"",
        *,
        reference: str | None = None,
        path: str = "",
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> bytes:
        answer = await self.request(
            function, data, reference=reference, path=path, headers=headers,
            request_id=request_id, timeout=timeout,
        )  # fmt: skip
        return answer.body

    async def request(
        self,
        function: str,
        data: Body = b"",
        *,
        reference: str | None = None,
        method: str = "POST",
        path: str = "",
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Answer:
        if reference is None and body_size(data) > self.upload_above:
            reference = await self.put(data, function=function, timeout=timeout)
        call = _invoke_call(
            function, data, method=method, path=path, headers=headers, request_id=request_id,
            reference=reference,
        )  # fmt: skip
        return await self._send(call, timeout)

    async def put(
        self,
        data: Body,
        *,
        function: str | None = None,
        tenant: str | None = None,
        pulls: int | None = 1,
        ttl: float | None = None,
        timeout: float | None = None,
    ) -> str:
        answer = await self._send(_put_call(data, function, tenant, pulls, ttl), timeout)
        return answer.body.decode()

    async def get(self, reference: str, *, timeout: float | None = None) -> bytes:
        if is_inline(reference):
            return decode_inline(reference)
        return (await self._send(_reference_call("get", reference), timeout)).body

    async def release(self, reference: str, *, timeout: float | None = None) -> bool:
        if is_inline(reference):
            return False
        answer = await self._send(_reference_call("release", reference), timeout)
        return bool(json.loads(answer.body)["released"])

    async def _send(self, call: _Call, timeout: float | None) -> Answer:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        wait = self.timeout if timeout is None else timeout
        answering = False
        try:
            async with self._session.request(
                call.method, f"{self.url}{call.target}", data=_pieces(call.body),
                headers=call.headers,
                timeout=aiohttp.ClientTimeout(total=wait),
            ) as response:  # fmt: skip
                answering = True
                body = await response.read()
                answer = Answer(response.status, dict(response.headers), body)
        except TimeoutError:
            raise _timed_out(call, wait) from None
        except aiohttp.ClientError as exc:
            raise _unreachable(self.url, exc, call, answering=answering) from None
        return _checked(call, answer)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
