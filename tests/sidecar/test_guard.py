"""Who may talk to a sidecar (``xdt.sidecar.guard``): the TCP egress's secret path, and the
ingress Unix socket's peer check, with a real aiohttp server."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from _support.users import STDLIB_PYTHON
from xdt._core.errors import Forbidden
from xdt._core.peercred import PeerCheck
from xdt._http.server import ERROR_HEADER
from xdt.sidecar.guard import PeerCheckedUnixSite, behind_secret

SECRET = "s3cr3t-path_0123456789"
OTHER_UID = 2_000_000_000 + 4343


async def _echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


def _app() -> web.Application:
    app = web.Application()
    app.router.add_post("/invoke/{function}", _echo)
    return app


@pytest.fixture
async def egress() -> AsyncIterator[str]:
    runner = web.AppRunner(behind_secret(_app(), SECRET, limit=1 << 20))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    await runner.cleanup()


@pytest.mark.parametrize(
    "path",
    ["/invoke/f", f"/{SECRET[:-1]}/invoke/f", f"/{SECRET}x/invoke/f", "/", f"//{SECRET}/invoke/f"],
)
async def test_the_egress_refuses_any_path_but_the_secret_one(egress: str, path: str) -> None:
    async with aiohttp.ClientSession() as session, session.post(egress + path, data=b"x") as answer:
        assert answer.status == 403
        assert answer.headers[ERROR_HEADER] == Forbidden.code
        assert "secret path in $XDT_EGRESS" in (await answer.json())["message"]


async def test_the_egress_serves_under_the_secret_path(egress: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{egress}/{SECRET}/invoke/f", data=b"payload") as answer:
            assert (answer.status, await answer.read()) == (200, b"payload")
        async with session.post(f"{egress}/{SECRET}/nothing", data=b"x") as answer:
            assert answer.status == 404  # the secret alone opens nothing that is not there


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
    runner = web.AppRunner(_app())
    await runner.setup()
    check = PeerCheck({os.getuid()}, "ingress", lines.append)
    await PeerCheckedUnixSite(runner, path, check).start()
    try:
        assert os.stat(path).st_mode & 0o777 == 0o600  # only its owner may even connect
        os.chmod(path, 0o666)  # …opened up: the peer check still refuses
        assert await _client(path, user=OTHER_UID, group=OTHER_UID, extra_groups=[]) == "closed"
        assert await _client(path) == "HTTP/1.1 200 OK"  # and the server keeps serving
    finally:
        await runner.cleanup()
    assert len(lines) == 1 and f"uid {OTHER_UID}" in lines[0]
