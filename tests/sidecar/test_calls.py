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
from xdt._http.headers import CALL_HEADER, HOP_HEADER
from xdt.modes import StoreSettings, TransferSettings
from xdt.sidecar.calls import Calls
from xdt.sidecar.config import KnativeMode, SidecarConfig

Seen = list[tuple[str, str, str | None, str | None]]  # (path, Host, hop, call proof)


@contextlib.asynccontextmanager
async def _server(port: int = 0) -> AsyncIterator[tuple[int, Seen]]:
    seen: Seen = []

    async def answer(request: web.Request) -> web.Response:
        headers = request.headers
        seen.append(
            (request.path, headers["Host"], headers.get(HOP_HEADER), headers.get(CALL_HEADER))
        )
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
        calls = Calls(_config(f"http://127.0.0.1:{port}"), keyring, max_answer=1024)
        answer = await calls.post("sink", b"hi", {})
        calls.close()
    assert answer.status == 200
    assert seen == [("/invoke/sink", f"127.0.0.1:{port}", keyring.hop_secret(), None)]


async def test_on_knative_calls_go_to_each_functions_url_with_a_proof_not_the_hop() -> None:
    keyring = KeyRing.generate()
    knative = KnativeMode("http://{function}.{namespace}.svc.cluster.local", namespace="prod")
    calls = Calls(_config(knative=knative), keyring, max_answer=1024)
    assert calls.url_of("sink") == "http://sink.prod.svc.cluster.local"
    async with _server() as (port, seen):
        local = KnativeMode(call_url=f"http://127.0.0.1:{port}")
        calls = Calls(_config(knative=local), keyring, max_answer=1024)
        await calls.post("sink", b"hi", {})
        await calls.post("other", b"hi", {})
        calls.close()
    assert [seen_ for seen_ in seen if seen_[:3] == ("/", f"127.0.0.1:{port}", None)] == seen
    sink_proof, other_proof = seen[0][3], seen[1][3]
    assert keyring.proves_call(sink_proof, "sink")
    assert not keyring.proves_call(sink_proof, "other")  # for that function only
    assert keyring.proves_call(other_proof, "other")
    assert not KeyRing.generate().proves_call(sink_proof, "sink")  # this platform's only


def test_a_call_proof_is_good_for_a_minute_and_cannot_be_forged() -> None:
    keyring = KeyRing.generate()
    proof = keyring.call_proof("sink", now=1_000_000)
    assert keyring.proves_call(proof, "sink", now=1_000_059)
    assert not keyring.proves_call(proof, "sink", now=1_000_061)  # a replay, too late
    assert not keyring.proves_call(proof, "sink", now=999_939)
    when, _, mac = proof.partition(".")
    assert not keyring.proves_call(f"{int(when) + 1}.{mac}", "sink", now=1_000_000)
    for forged in (None, "", "x", "1.", ".abc", "99999999999999.abc", f"{when}.{mac}x"):
        assert not keyring.proves_call(forged, "sink", now=1_000_000)
    rotated = keyring.rotated()  # a ring being rotated in agrees with the old one
    assert rotated.proves_call(proof, "sink", now=1_000_000)


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
        config = _config(knative=KnativeMode(call_url="http://127.0.0.1"))
        calls = Calls(config, KeyRing.generate(), max_answer=1024)
        await asyncio.wait_for(calls.post("sink", b"hi", {}), timeout=10)
        calls.close()
    assert [host for _, host, _, _ in seen] == ["127.0.0.1"]
