"""The HTTP listeners (``xdt._http.listen``) with a real aiohttp server and raw sockets: the
Unix socket's peer check, the connection cap, idle and slow-header timeouts, header bounds,
and the body deadline of ``read_body``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from _support.users import STDLIB_PYTHON
from xdt._core.errors import XdtError
from xdt._core.peercred import PeerCheck
from xdt._http.listen import DEFAULT_LIMITS, Limits, make_runner, port_of, serve_tcp, serve_unix
from xdt._http.server import error_response, read_body

OTHER_UID = 2_000_000_000 + 4343
LIMITS = web.AppKey("limits", Limits)


async def _echo(request: web.Request) -> web.Response:
    try:
        body = await read_body(request, 1 << 20, limits=request.app[LIMITS])
    except XdtError as exc:
        return error_response(exc)
    return web.Response(body=body)


def _app(limits: Limits = DEFAULT_LIMITS) -> web.Application:
    app = web.Application()
    app[LIMITS] = limits
    app.router.add_post("/invoke/{function}", _echo)
    return app


CLIENT = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(sys.argv[1])
try:
    sock.sendall(b"POST /invoke/f HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 2\\r\\n\\r\\nhi")
    print(sock.recv(4096).split(b"\\r\\n")[0].decode() or "closed")
except (BrokenPipeError, ConnectionResetError):  # closed before, or with our bytes unread
    print("closed")
"""


async def _client(path: str, **options: object) -> str:
    process = await asyncio.create_subprocess_exec(
        STDLIB_PYTHON, "-c", CLIENT, path, stdout=subprocess.PIPE, **options
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    return out.decode().strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another uid needs root")
async def test_the_unix_site_admits_only_the_expected_uids(shared_path: Path) -> None:
    path = str(shared_path / "in.sock")
    lines: list[str] = []
    runner = make_runner(_app())
    await runner.setup()
    check = PeerCheck({os.getuid()}, "ingress", lines.append)
    listener = await serve_unix(runner, path, DEFAULT_LIMITS, check=check, what="test")
    try:
        assert os.stat(path).st_mode & 0o777 == 0o600  # only its owner may even connect
        os.chmod(path, 0o666)  # …opened up: the peer check still refuses
        assert await _client(path, user=OTHER_UID, group=OTHER_UID, extra_groups=[]) == "closed"
        assert await _client(path) == "HTTP/1.1 200 OK"  # and the server keeps serving
    finally:
        listener.close()
        await runner.cleanup()
    assert len(lines) == 1 and f"uid {OTHER_UID}" in lines[0]


async def _serve(limits: Limits) -> AsyncIterator[int]:
    runner = make_runner(_app(limits), limits)
    await runner.setup()
    listener = await serve_tcp(runner, "127.0.0.1", 0, limits, what="the test listener")
    try:
        yield port_of(listener)
    finally:
        listener.close()
        await runner.cleanup()


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


REQUEST = b"POST /invoke/f HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"


async def _status_line(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(10):
        return (await reader.readline()).strip()


async def test_over_the_cap_a_connection_gets_503_and_the_others_are_served() -> None:
    limits = Limits(max_connections=3)
    async for port in _serve(limits):
        held = [await _connect(port) for _ in range(3)]
        reader, writer = await _connect(port)
        assert await _status_line(reader) == b"HTTP/1.1 503 Service Unavailable"
        assert b"Retry-After: 1" in await reader.read()  # then closed
        writer.close()
        # The ones admitted are served...
        held[0][1].write(REQUEST)
        assert await _status_line(held[0][0]) == b"HTTP/1.1 200 OK"
        # ...and once one goes, a new connection is admitted again.
        held[1][1].close()
        await asyncio.sleep(0.1)
        reader, writer = await _connect(port)
        writer.write(REQUEST)
        assert await _status_line(reader) == b"HTTP/1.1 200 OK"
        for _, w in [*held, (reader, writer)]:
            w.close()


async def test_a_connection_that_never_finishes_its_headers_is_closed() -> None:
    """Slow-loris: a header byte every 50 ms keeps the connection busy, never complete; it is
    closed once idle_timeout has passed since it opened, whatever it keeps sending."""
    limits = Limits(idle_timeout=0.5)
    async for port in _serve(limits):
        reader, writer = await _connect(port)
        started = time.monotonic()
        writer.write(b"POST /invoke/f HTTP/1.1\r\nX-Slow: ")
        closed = False
        for _ in range(200):  # at most 10 s
            writer.write(b"a")
            await asyncio.sleep(0.05)
            if reader.at_eof() or writer.is_closing():
                closed = True
                break
            try:
                async with asyncio.timeout(0.001):
                    if await reader.read(100) == b"":
                        closed = True
                        break
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed = True
                break
        assert closed, "the slow-header connection was never closed"
        assert time.monotonic() - started < 5
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed() -> None:
    limits = Limits(idle_timeout=0.3)
    async for port in _serve(limits):
        reader, writer = await _connect(port)
        writer.write(REQUEST)
        assert await _status_line(reader) == b"HTTP/1.1 200 OK"
        async with asyncio.timeout(10):
            while await reader.read(4096):  # the answer's rest, then the end of the stream
                pass
        writer.close()


async def test_a_body_that_stalls_gets_408_request_timeout() -> None:
    limits = Limits(body_timeout=0.3)
    async for port in _serve(limits):
        reader, writer = await _connect(port)
        writer.write(b"POST /invoke/f HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
        assert await _status_line(reader) == b"HTTP/1.1 408 Request Timeout"
        rest = await reader.read(4096)
        assert b"X-Xdt-Error: request_timeout" in rest and b"did not arrive within" in rest
        writer.close()


async def test_too_many_headers_are_refused() -> None:
    limits = Limits(max_headers=8)
    async for port in _serve(limits):
        reader, writer = await _connect(port)
        headers = b"".join(b"X-H%d: v\r\n" % i for i in range(20))
        writer.write(
            b"POST /invoke/f HTTP/1.1\r\nHost: x\r\n" + headers + b"Content-Length: 0\r\n\r\n"
        )
        line = await _status_line(reader)
        assert b" 400 " in line, line
        writer.close()


def test_the_body_deadline_grows_with_the_declared_size() -> None:
    limits = Limits(body_timeout=30, min_body_rate=1 << 20)
    assert limits.body_deadline(None) == 30
    assert limits.body_deadline(6 << 20) == 36
