"""Where a function's calls go: the gateway (``/invoke/<fn>``, marked as the platform's hop) on
the embedded platform; each function's own service URL on Knative (``/``, no hop secret)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from xdt import KeyRing
from xdt._http.headers import HOP_HEADER
from xdt.modes import StoreSettings, TransferSettings
from xdt.sidecar.calls import Calls
from xdt.sidecar.config import KnativeMode, SidecarConfig

Seen = list[tuple[str, str, str | None]]  # (path, Host, hop)


@contextlib.asynccontextmanager
async def _server(port: int = 0) -> AsyncIterator[tuple[int, Seen]]:
    seen: Seen = []

    async def answer(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers["Host"], request.headers.get(HOP_HEADER)))
        return web.Response(body=b"ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield bound, seen
    finally:
        await runner.cleanup()


def _config(activator_url: str = "", knative: KnativeMode | None = None) -> SidecarConfig:
    return SidecarConfig(
        function="caller", instance="caller-1", tenant="default", upstream="http:1",
        activator_url=activator_url, concurrency=0, timeout=10, object_quota=1 << 20,
        transfer=TransferSettings(), stores=StoreSettings(), knative=knative,
    )  # fmt: skip


async def test_on_the_embedded_platform_calls_go_to_the_gateway_as_the_platforms_hop() -> None:
    keyring = KeyRing.generate()
    async with _server() as (port, seen):
        calls = Calls(
            _config(f"http://127.0.0.1:{port}"), hop=keyring.hop_secret(), max_answer=1024
        )
        answer = await calls.post("sink", b"hi", {})
        calls.close()
    assert answer.status == 200
    assert seen == [("/invoke/sink", f"127.0.0.1:{port}", keyring.hop_secret())]


async def test_on_knative_calls_go_to_each_functions_url_without_the_hop_secret() -> None:
    knative = KnativeMode(
        call_url="http://{function}.{namespace}.svc.cluster.local", namespace="prod"
    )
    calls = Calls(_config(knative=knative), hop="secret", max_answer=1024)
    assert calls.url_of("sink") == "http://sink.prod.svc.cluster.local"
    async with _server() as (port, seen):
        calls = Calls(
            _config(knative=KnativeMode(call_url=f"http://127.0.0.1:{port}")),
            hop="secret", max_answer=1024,
        )  # fmt: skip
        await calls.post("sink", b"hi", {})
        await calls.post("other", b"hi", {})
        calls.close()
    assert seen == [("/", f"127.0.0.1:{port}", None)] * 2


async def test_the_host_header_names_the_host_alone_on_the_default_port() -> None:
    # Knative's ingress routes by Host: "sink.prod.svc.cluster.local", not "…:80".
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", 80))
    except OSError as exc:
        pytest.skip(f"port 80 cannot be bound here ({exc.strerror})")
    finally:
        probe.close()
    async with _server(80) as (_, seen):
        calls = Calls(
            _config(knative=KnativeMode(call_url="http://127.0.0.1")), hop="h", max_answer=1024
        )
        await asyncio.wait_for(calls.post("sink", b"hi", {}), timeout=10)
        calls.close()
    assert seen == [("/", "127.0.0.1", None)]
