"""Who may talk to a sidecar (``xdt.sidecar.guard``): the TCP egress's secret path, with a
real aiohttp server. (The Unix sockets' peer check: tests/_http/test_listen.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from xdt._core.errors import Forbidden
from xdt._http.server import ERROR_HEADER
from xdt.sidecar.guard import behind_secret

SECRET = "s3cr3t-path_0123456789"


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
