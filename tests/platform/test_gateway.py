"""The gateway (``xdt.platform.gateway``): the platform's front door, in one process.

A real Platform object (not started) with real deployments, whose one instance is a stand-in
sidecar ingress (an aiohttp server that records what reaches it and answers as told): what
the gateway refuses itself, what it passes on, and what it hands back.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from xdt import KeyRing, Reference
from xdt._http.client import ConnectionPool
from xdt._http.headers import ACCEPT_HEADER, ERROR_HEADER, HOP_HEADER, TRANSFER_HEADER
from xdt.platform.deployment import Deployment
from xdt.platform.embedded import Platform
from xdt.platform.gateway import create_app
from xdt.platform.instances import Instance, State
from xdt.platform.spec import parse_spec


@dataclass
class Ingress:
    """A sidecar's ingress as the gateway sees it."""

    seen: list[dict[str, str]] = field(default_factory=list)
    answer: Callable[[web.Request], Awaitable[web.Response]] | None = None
    port: int = 0


async def serve_ingress(ingress: Ingress) -> web.AppRunner:
    async def invoke(request: web.Request) -> web.Response:
        ingress.seen.append(dict(request.headers))
        if ingress.answer is not None:
            return await ingress.answer(request)
        return web.Response(body=(await request.read()).upper(), content_type="text/x-shout")

    app = web.Application()
    app.router.add_post("/invoke", invoke)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    ingress.port = server.sockets[0].getsockname()[1]
    return runner


class NoProcesses:
    """The instance manager of a deployment whose instances the test wires by hand."""

    def create(self, function: object) -> Instance:
        raise AssertionError("the test wires instances itself")


@dataclass
class Front:
    client: TestClient[web.Request, web.Application]
    ingress: Ingress
    platform: Platform


@pytest.fixture
async def front() -> AsyncIterator[Front]:
    spec = parse_spec(
        {
            "platform": {"inline_limit": "1KiB"},
            "functions": [{"name": "shout", "handler": "m:shout", "initial_scale": 0}],
        },
        folder=Path("/srv"),
    )
    platform = Platform(spec)
    platform.accepting = True  # as once every deployment exists
    (function,) = spec.functions
    deployment = Deployment(function, spec.platform, NoProcesses())  # type: ignore[arg-type]
    platform.deployments["shout"] = deployment
    ingress = Ingress()
    runner = await serve_ingress(ingress)
    instance = Instance("shout-1", function, Path("/dev/null"), state=State.READY)
    instance.pool = ConnectionPool("127.0.0.1", ingress.port, stream_over=1 << 20)  # as set up
    deployment.instances.append(instance)
    deployment.throttler.add(instance)
    client = TestClient(TestServer(create_app(platform)))
    await client.start_server()
    yield Front(client, ingress, platform)
    await client.close()
    instance.pool.close()
    await runner.cleanup()


async def test_an_invocation_goes_to_an_instance_and_its_answer_comes_back(front: Front) -> None:
    answer = await front.client.post("/invoke/shout", data=b"hi")
    assert answer.status == 200 and await answer.read() == b"HI"
    assert answer.headers["Content-Type"] == "text/x-shout"
    assert ACCEPT_HEADER not in front.ingress.seen[0]  # an outside caller takes bytes
    assert front.platform.deployments["shout"].answers == {"200": 1}


async def test_the_transfer_headers_pass_both_ways_and_no_other_of_xdts(front: Front) -> None:
    async def by_reference(request: web.Request) -> web.Response:
        mine = {TRANSFER_HEADER: "ref", HOP_HEADER: "a-secret", "X-Custom": "yes"}
        return web.Response(text="a-token", headers=mine)

    front.ingress.answer = by_reference
    hop = front.platform.keyring.hop_secret()
    headers = {TRANSFER_HEADER: "ref", ACCEPT_HEADER: "ref", HOP_HEADER: hop}
    answer = await front.client.post("/invoke/shout", data=b"tok", headers=headers)
    seen = front.ingress.seen[0]
    assert (seen[TRANSFER_HEADER], seen[ACCEPT_HEADER], seen[HOP_HEADER]) == ("ref", "ref", hop)
    assert answer.headers[TRANSFER_HEADER] == "ref" and HOP_HEADER not in answer.headers
    assert answer.headers["X-Custom"] == "yes"  # the function's own headers reach the caller


async def test_an_unknown_function_is_a_404_naming_the_deployed_ones(front: Front) -> None:
    answer = await front.client.post("/invoke/nope", data=b"x")
    body = json.loads(await answer.read())
    assert answer.status == 404 and answer.headers[ERROR_HEADER] == "function_not_found"
    assert body["function"] == "nope" and "deployed: shout" in body["message"]


async def test_a_body_over_the_inline_limit_is_a_413_naming_the_limit(front: Front) -> None:
    answer = await front.client.post("/invoke/shout", data=b"x" * 1025)
    assert answer.status == 413 and answer.headers[ERROR_HEADER] == "payload_too_large"
    assert front.ingress.seen == []  # refused before any instance saw it


async def test_a_platform_error_of_the_instance_keeps_its_code(front: Front) -> None:
    async def overloaded(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": "overloaded", "message": "busy"},
            status=503,
            headers={ERROR_HEADER: "overloaded"},
        )

    front.ingress.answer = overloaded
    answer = await front.client.post("/invoke/shout", data=b"x")
    assert answer.status == 503 and answer.headers[ERROR_HEADER] == "overloaded"
    assert front.platform.deployments["shout"].answers == {"overloaded": 1}


async def test_an_instance_that_is_gone_and_never_replaced_is_a_502(
    front: Front, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("xdt.platform.deployment._MAX_DELIVERIES", 3)
    instance = front.platform.deployments["shout"].instances[0]
    assert instance.pool is not None
    instance.pool = ConnectionPool("127.0.0.1", 1)  # nothing listens on port 1
    answer = await front.client.post("/invoke/shout", data=b"x")
    body = json.loads(await answer.read())
    assert answer.status == 502 and body["error"] == "instance_failed"
    assert "in 3 tries" in body["message"] and "shout-1" in body["message"]


async def test_metrics_status_and_health(front: Front) -> None:
    """/metrics parses with prometheus_client's own parser: answers by status and code, a
    latency histogram per function, and what the gateway refused before any function."""
    await front.client.post("/invoke/shout", data=b"x")
    await front.client.post("/invoke/shout", data=b"y")
    await front.client.post("/invoke/nope", data=b"z")  # a 404 of the gateway's own
    answer = await front.client.get("/metrics")
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await answer.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert all(f.documentation for f in families.values())  # every family has its HELP
    (sample,) = families["xdt_requests"].samples
    assert sample.labels == {"function": "shout", "status": "200", "code": ""}
    assert sample.value == 2
    latency = families["xdt_request_duration_seconds"]
    assert latency.type == "histogram"
    counts = {s.name: s.value for s in latency.samples if "le" not in s.labels}
    assert counts["xdt_request_duration_seconds_count"] == 2
    assert counts["xdt_request_duration_seconds_sum"] > 0
    buckets = [s.value for s in latency.samples if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == 2  # cumulative, +Inf holds all
    (refused,) = families["xdt_gateway_refused"].samples
    assert refused.labels == {"status": "404", "code": "function_not_found"}
    assert refused.value == 1
    assert families["xdt_instances_ready"].samples[0].value == 1
    status = await (await front.client.get("/status")).json()
    assert status["functions"]["shout"]["transfer"] == "xdt"
    assert (await front.client.get("/healthz")).status == 200


@pytest.mark.parametrize("hop", [None, "", "not-the-secret", "a" * 44])
async def test_only_the_platforms_own_hops_may_ask_for_a_reference(
    front: Front, hop: str | None
) -> None:
    """An outside client asking for a reference answer once made a function's sidecar hold
    256 × 1 MiB (and its own calls then hit the quota). Refused, before any instance is
    asked."""
    headers = {ACCEPT_HEADER: "ref"} | ({HOP_HEADER: hop} if hop is not None else {})
    answer = await front.client.post("/invoke/shout", data=b"x", headers=headers)
    assert answer.status == 403 and answer.headers[ERROR_HEADER] == "forbidden"
    assert "platform's own hops" in (await answer.json())["message"]
    assert front.ingress.seen == []


async def test_a_reference_from_outside_goes_on_only_if_it_is_of_the_callees_tenant(
    front: Front,
) -> None:
    """A caller outside may send a reference (an upload's, or one a function gave out): it is
    opened here for the callee's tenant, and anything else refused before any instance."""
    keyring = front.platform.keyring

    def sealed(tenant: str, ttl: float = 60.0) -> bytes:
        ref = Reference(os.urandom(16), "127.0.0.1:1", 5, 0, time.time() + ttl, tenant)
        return keyring.seal(ref).encode()

    refused = [
        (b"not a reference", "reference_malformed"),
        (sealed("someone-else"), "wrong_tenant"),
        (sealed("default", ttl=-1), "reference_expired"),
        (KeyRing.generate().seal(Reference(os.urandom(16), "h:1", 5, 0, time.time() + 60))
         .encode(), "reference_tampered"),
    ]  # fmt: skip
    for body, code in refused:
        answer = await front.client.post(
            "/invoke/shout", data=body, headers={TRANSFER_HEADER: "ref"}
        )
        assert answer.headers[ERROR_HEADER] == code, await answer.text()
    answer = await front.client.post("/invoke/shout", data=b"x", headers={TRANSFER_HEADER: "yes"})
    assert answer.headers[ERROR_HEADER] == "bad_request"
    assert front.ingress.seen == []

    good = sealed("default")
    answer = await front.client.post("/invoke/shout", data=good, headers={TRANSFER_HEADER: "ref"})
    assert answer.status == 200
    (seen,) = front.ingress.seen
    assert seen[TRANSFER_HEADER] == "ref" and seen[HOP_HEADER] == keyring.hop_secret()


async def test_shutting_down_refuses_new_invocations_and_serves_the_platforms_own(
    front: Front,
) -> None:
    assert (await front.client.get("/readyz")).status == 200
    front.platform.accepting = False  # close() has begun
    ready = await front.client.get("/readyz")
    assert ready.status == 503 and ready.headers["Retry-After"] == "1"
    answer = await front.client.post("/invoke/shout", data=b"new")
    assert answer.status == 503 and answer.headers["Retry-After"] == "1"
    assert "shutting down" in (await answer.json())["message"]
    assert front.ingress.seen == []
    # A call between functions (a request in flight fanning out) still gets through.
    hop = {HOP_HEADER: front.platform.keyring.hop_secret(), ACCEPT_HEADER: "ref"}
    inner = await front.client.post("/invoke/shout", data=b"inner", headers=hop)
    assert inner.status == 200 and await inner.read() == b"INNER"


async def test_a_big_answer_is_passed_on_as_the_caller_reads_it_never_held(front: Front) -> None:
    """Three callers that did not read a 200 MiB answer once grew the gateway by 1.2 GB. Now a
    caller that reads nothing holds back the instance too: the gateway keeps a chunk, not
    the answer; and one that reads gets every byte."""
    size, chunk = 64 << 20, 1 << 20
    written = [0]

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = size
        await response.prepare(request)
        for _ in range(size // chunk):
            await response.write(b"z" * chunk)
            written[0] += chunk
        await response.write_eof()
        return response

    front.ingress.answer = big
    url = front.client.make_url("/invoke/shout")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(b"POST /invoke/shout HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
    async with asyncio.timeout(10):
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    await asyncio.sleep(1.0)  # the caller reads nothing meanwhile
    assert written[0] < size // 2  # socket buffers and a chunk in flight, not the answer
    got = 0
    async with asyncio.timeout(30):
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Content-Length: %d" % size in head
        while got < size:
            got += len(await reader.read(1 << 20))
    assert got == size and written[0] == size
    writer.close()


async def test_a_request_no_instance_took_waits_for_the_replacement(front: Front) -> None:
    """Right after a sidecar died its port refuses connections: the request never reached
    it, so it is not failed with 502 but waits, as a buffered one does, for the instance that
    replaces it."""
    from xdt._util.process import free_port

    deployment = front.platform.deployments["shout"]
    (good,) = deployment.instances
    deployment.throttler.remove(good)
    dead = Instance("shout-2", good.function, Path("/dev/null"), state=State.READY)
    dead.pool = ConnectionPool("127.0.0.1", free_port())  # nobody listens there
    deployment.throttler.add(dead)

    async def replace() -> None:
        await asyncio.sleep(0.3)
        deployment.throttler.remove(dead)
        deployment.throttler.add(good)

    replacing = asyncio.create_task(replace())
    answer = await front.client.post("/invoke/shout", data=b"still here")
    await replacing
    assert answer.status == 200 and await answer.read() == b"STILL HERE"
    assert deployment.undelivered >= 2 and len(front.ingress.seen) == 1
