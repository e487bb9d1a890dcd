"""Calling a running platform from outside it: :class:`Client` (plain code) and
:class:`AsyncClient` (``asyncio``).

::

    with xdt.Client("http://127.0.0.1:8080") as client:
        answer = client.invoke("wordcount", b"the text")

Each keeps its connections open between calls (one per thread for :class:`Client`, a pool for
:class:`AsyncClient`), and raises what the platform answered as xdt's own typed exceptions:
:class:`xdt.FunctionFailed` (with ``stack_trace`` and ``request_id`` when the platform gives
them), :class:`xdt.FunctionNotFound`, :class:`xdt.PayloadTooLarge`, :class:`xdt.Overloaded`,
:class:`xdt.InvocationTimeout` — also when no answer came within the client's ``timeout`` —
and :class:`xdt.PeerGone` when no platform answers at the URL, or it went away mid-answer.

The URL is ``url``, else ``$XDT_URL``, else ``http://127.0.0.1:8080``.
"""

from __future__ import annotations

import http.client
import os
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from .._core.errors import InvocationTimeout, PeerGone
from .._http.contract import REQUEST_ID_HEADER
from .._http.errors import error_from_answer
from .._util.names import is_function_name

if TYPE_CHECKING:
    import aiohttp

__all__ = ["DEFAULT_TIMEOUT", "Answer", "AsyncClient", "Client", "default_url"]

DEFAULT_TIMEOUT = 310.0  # seconds: a little over a function's default timeout (300 s)


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
        return next((v for k, v in self.headers.items() if k.lower() == "x-request-id"), None)


def _target(url: str, function: str, path: str) -> str:
    if not is_function_name(function):
        raise ValueError(f"{function!r} is not a function name (lower-case letters, digits, '-')")
    if path and not path.startswith("/"):
        path = "/" + path
    return f"{url.rstrip('/')}/invoke/{function}{path}"


def _headers(headers: Mapping[str, str] | None, request_id: str | None) -> dict[str, str]:
    sent = {"Content-Type": "application/octet-stream", **(headers or {})}
    if request_id is not None:
        sent[REQUEST_ID_HEADER] = request_id
    return sent


def _timed_out(function: str, wait: float) -> InvocationTimeout:
    return InvocationTimeout(
        f"no answer from {function!r} within {wait:g} s (the client's timeout)", function=function
    )


def _unreachable(url: str, exc: Exception, function: str) -> PeerGone:
    return PeerGone(
        f"no platform answering at {url} ({exc}); start one with `xdt up`, or name it (url, "
        "or $XDT_URL)",
        function=function,
    )


class Client:
    """The platform at ``url``, called from plain (threaded) code."""

    def __init__(self, url: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = (url or default_url()).rstrip("/")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{self.url!r}: the platform's URL is http://host:port")
        self._host, self._port = parts.hostname, parts.port or 80
        self.timeout = timeout
        self._local = threading.local()  # one kept-alive connection per thread
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def invoke(
        self,
        function: str,
        data: bytes = b"",
        *,
        path: str = "",
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """``function``'s answer to ``data``; raises its failure typed."""
        return self.request(
            function, data, path=path, headers=headers, request_id=request_id, timeout=timeout
        ).body

    def request(
        self,
        function: str,
        data: bytes = b"",
        *,
        method: str = "POST",
        path: str = "",
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Answer:
        """The whole answer (status, headers, body) of a 2xx; raises any other typed."""
        target = urllib.parse.urlsplit(_target(self.url, function, path))
        wait = self.timeout if timeout is None else timeout
        sent = _headers(headers, request_id)
        for attempt in range(2):  # a kept-alive connection the server closed: once more
            connection = self._connection()
            connection.timeout = wait
            if connection.sock is not None:
                connection.sock.settimeout(wait)
            reused = connection.sock is not None
            try:
                connection.request(method, target.path + (f"?{target.query}" if target.query
                                   else ""), body=data, headers=sent)  # fmt: skip
                response = connection.getresponse()
                body = response.read()
            except TimeoutError:
                connection.close()
                raise _timed_out(function, wait) from None
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                if (
                    reused
                    and attempt == 0
                    and isinstance(
                        exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError
                    )
                ):
                    continue
                raise _unreachable(self.url, exc, function) from None
            answer = Answer(response.status, dict(response.getheaders()), body)
            if response.status >= 300:
                raise error_from_answer(response.status, answer.headers, body, function=function)
            return answer
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
            self._local.connection = connection
            with self._lock:
                self._all.append(connection)
        return connection

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


class AsyncClient:
    """The platform at ``url``, called from ``asyncio`` code; use ``async with``, or
    ``await client.aclose()`` when done."""

    def __init__(self, url: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = (url or default_url()).rstrip("/")
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def invoke(
        self,
        function: str,
        data: bytes = b"",
        *,
        path: str = "",
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> bytes:
        answer = await self.request(
            function, data, path=path, headers=headers, request_id=request_id, timeout=timeout
        )
        return answer.body

    async def request(
        self,
        function: str,
        data: bytes = b"",
        *,
        method: str = "POST",
        path: str = "",
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Answer:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        wait = self.timeout if timeout is None else timeout
        try:
            async with self._session.request(
                method, _target(self.url, function, path), data=data,
                headers=_headers(headers, request_id), timeout=aiohttp.ClientTimeout(total=wait),
            ) as response:  # fmt: skip
                body = await response.read()
                answer = Answer(response.status, dict(response.headers), body)
        except TimeoutError:
            raise _timed_out(function, wait) from None
        except aiohttp.ClientError as exc:
            raise _unreachable(self.url, exc, function) from None
        if answer.status >= 300:
            raise error_from_answer(answer.status, answer.headers, body, function=function)
        return answer

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
