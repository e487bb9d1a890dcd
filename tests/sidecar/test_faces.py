"""A sidecar's two faces, in one process: its ingress in front of a real Python runtime, its
egress in front of a stand-in for the gateway (an aiohttp server that records what reaches it
and answers as told), with the real pull protocol and object store between them."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

import xdt
from _support.waiting import eventually
from xdt import KeyRing, PullClient
from xdt._core.errors import from_wire
from xdt._core.refs import TransferMode
from xdt._http.headers import ACCEPT_HEADER, ERROR_HEADER, HOP_HEADER, TRANSFER_HEADER
from xdt.channel import Channel, Kind
from xdt.modes import StoreSettings, TransferSettings
from xdt.runtime import serve
from xdt.sidecar import Faces, Sidecar, SidecarConfig

MiB = 1 << 20


HOLD = asyncio.Event()  # the runtime runs in this process: "hold" waits for the test


async def handler(body: bytes) -> bytes:
    """The function: ``hold`` waits for :data:`HOLD`, ``sleep S`` sleeps, ``big N`` answers N
    bytes, anything else is shouted."""
    if body == b"hold":
        await HOLD.wait()
        return b"held"
    if body.startswith(b"sleep "):
        await asyncio.sleep(float(body[6:]))
        return b"slept"
    if body.startswith(b"big "):
        return b"B" * int(body[4:])
    return body.upper()


@dataclass
class Gateway:
    """What the sidecar's egress talks to: records each call, answers with ``reply``."""

    url: str = ""
    seen: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    reply: Callable[[web.Request, bytes], Awaitable[web.Response]] | None = None


@dataclass
class Running:
    sidecar: Sidecar
    gateway: Gateway
    session: aiohttp.ClientSession
    keyring: KeyRing

    @property
    def ingress(self) -> str:
        return f"http://127.0.0.1:{self.sidecar.ingress_port}"

    @property
    def egress(self) -> str:
        return f"http://127.0.0.1:{self.sidecar.egress_port}/{self.sidecar.egress_secret}"


async def start_gateway(gateway: Gateway) -> web.AppRunner:
    async def invoke(request: web.Request) -> web.Response:
        body = await request.read()
        gateway.seen.append((request.match_info["function"], dict(request.headers), body))
        if gateway.reply is not None:
            return await gateway.reply(request, body)
        return web.Response(body=b"answer to " + body)

    app = web.Application(client_max_size=64 * MiB)
    app.router.add_post("/invoke/{function}", invoke)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    gateway.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    return runner


def config(folder: Path, gateway: Gateway, **changes: object) -> SidecarConfig:
    values: dict[str, object] = {
        "function": "shout",
        "instance": "shout-1",
        "tenant": "default",
        "upstream": f"unix:{folder / 'runtime.sock'}",
        "activator_url": gateway.url,
        "concurrency": 0,
        "timeout": 10.0,
        "object_quota": 256 * MiB,
        "transfer": TransferSettings(mode=TransferMode.XDT, inline_limit=MiB),
        "stores": StoreSettings(),
        "faces": Faces(egress_socket=str(folder / "egress.sock")),
    }
    values.update(changes)
    return SidecarConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    cleanups: list[Callable[[], Awaitable[object]]] = []

    async def start(**changes: object) -> Running:
        folder = tmp_path / f"sidecar{len(cleanups)}"
        folder.mkdir()
        runtime = asyncio.create_task(serve(handler, str(folder / "runtime.sock"), threads=4))

        async def stop_runtime() -> None:
            runtime.cancel()
            await asyncio.gather(runtime, return_exceptions=True)

        cleanups.append(stop_runtime)
        gateway = Gateway()
        cleanups.append((await start_gateway(gateway)).cleanup)
        keyring = KeyRing.generate()
        sidecar = Sidecar(config(folder, gateway, **changes), keyring)
        await sidecar.start()
        cleanups.append(sidecar.close)
        # As the gateway, which carries the platform's hop secret on every forward.
        session = aiohttp.ClientSession(headers={HOP_HEADER: keyring.hop_secret()})
        cleanups.append(session.close)
        await eventually(lambda: os.path.exists(folder / "egress.sock"))
        return Running(sidecar, gateway, session, keyring)

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


async def post(
    running: Running, url: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = io.BytesIO(body) if len(body) > MiB else body  # aiohttp wants big bodies as files
    async with running.session.post(url, data=data, headers=headers) as answer:
        return answer.status, dict(answer.headers), await answer.read()


# -- ingress -----------------------------------------------------------------------------------


async def test_an_invocation_reaches_the_function_and_is_counted(start: Start) -> None:
    running = await start()
    status, _, body = await post(running, f"{running.ingress}/invoke", b"hello")
    assert (status, body) == (200, b"HELLO")
    async with running.session.get(f"{running.ingress}/xdt/stats") as answer:
        stats = await answer.json()
    assert stats["requests_total"] == 1 and stats["request_count"] == 1
    async with running.session.get(f"{running.ingress}/xdt/ready") as answer:
        assert answer.status == 200


async def test_metrics_are_valid_prometheus_text(start: Start) -> None:
    running = await start()
    await post(running, f"{running.ingress}/invoke", b"x")
    async with running.session.get(f"{running.ingress}/metrics") as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await answer.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["xdt_sidecar_requests"].samples[0].value == 1  # the parser drops _total
    assert all(family.documentation for family in families.values())  # HELP on each


async def test_a_reference_in_is_resolved_and_a_big_answer_goes_out_as_one(
    start: Start,
) -> None:
    running = await start()
    hop = {HOP_HEADER: running.keyring.hop_secret()}  # the gateway's forward
    # A peer's object (this sidecar's own store stands in for a peer's: same protocol).
    token = await running.sidecar.payloads.put(b"from a peer " * 1000)
    status, _, body = await post(
        running, f"{running.ingress}/invoke", token.encode(), {TRANSFER_HEADER: "ref", **hop}
    )
    assert (status, body) == (200, b"FROM A PEER " * 1000)

    status, headers, body = await post(
        running, f"{running.ingress}/invoke", b"big 300000", {ACCEPT_HEADER: "ref", **hop}
    )
    assert status == 200 and headers[TRANSFER_HEADER] == "ref"
    async with PullClient(running.keyring) as client:
        with await client.pull(body.decode()) as pulled:
            assert pulled.tobytes() == b"B" * 300000
    # A caller that cannot resolve references (no X-Xdt-Accept) gets the bytes.
    status, headers, body = await post(running, f"{running.ingress}/invoke", b"big 300000")
    assert (status, len(body)) == (200, 300000) and TRANSFER_HEADER not in headers


@pytest.mark.parametrize("header", [TRANSFER_HEADER, ACCEPT_HEADER])
async def test_the_tcp_ingress_takes_transfer_headers_only_from_the_platforms_hops(
    start: Start, header: str
) -> None:
    """Any local process can reach the TCP ingress: one asking for a reference answer (to
    make the sidecar hold objects) or sending a reference is refused before the function."""
    running = await start()
    async with aiohttp.ClientSession() as outsider:
        for hop in ({}, {HOP_HEADER: "guessed"}, {HOP_HEADER: KeyRing.generate().hop_secret()}):
            url, headers = f"{running.ingress}/invoke", {header: "ref", **hop}
            async with outsider.post(url, data=b"big 300000", headers=headers) as answer:
                assert answer.status == 403 and answer.headers[ERROR_HEADER] == "forbidden"
    assert running.sidecar.store.stats.objects == 0
    assert running.sidecar.ingress.requests_total == 0


async def test_a_body_over_the_inline_limit_is_refused(start: Start) -> None:
    running = await start()
    status, headers, body = await post(running, f"{running.ingress}/invoke", b"x" * (MiB + 1))
    assert status == 413 and headers[ERROR_HEADER] == "payload_too_large"
    assert json.loads(body)["function"] == "shout"


async def test_the_breaker_admits_concurrency_plus_ten_times_it_queued(start: Start) -> None:
    running = await start(concurrency=1)
    HOLD.clear()
    calls = asyncio.gather(
        *(post(running, f"{running.ingress}/invoke", b"hold") for _ in range(13))
    )
    breaker = running.sidecar.ingress.breaker
    assert breaker is not None
    await eventually(lambda: running.sidecar.ingress.rejected_total == 2, within=30)
    assert breaker.in_flight == 11  # one running, ten queued
    HOLD.set()
    results = await asyncio.wait_for(calls, 30)
    assert sorted(status for status, _, _ in results) == [200] * 11 + [503] * 2
    refused = [json.loads(body) for status, _, body in results if status == 503]
    assert {r["error"] for r in refused} == {"overloaded"}
    assert all("1 running plus 10 queued" in r["message"] for r in refused)
    async with running.session.get(f"{running.ingress}/xdt/stats") as answer:
        assert (await answer.json())["rejected_total"] == 2


async def test_a_function_slower_than_its_timeout_is_a_504(start: Start) -> None:
    running = await start(timeout=0.3)
    status, headers, body = await post(running, f"{running.ingress}/invoke", b"sleep 5")
    assert status == 504 and headers[ERROR_HEADER] == "timeout"
    assert "within 0.3 s" in json.loads(body)["message"]


# -- egress: the HTTP face ---------------------------------------------------------------------


async def test_the_http_egress_answers_only_under_its_secret(start: Start) -> None:
    running = await start()
    port = running.sidecar.egress_port
    for path in ("/invoke/other", "/wrong-secret/invoke/other"):
        status, headers, body = await post(running, f"http://127.0.0.1:{port}{path}", b"x")
        assert status == 403 and headers[ERROR_HEADER] == "forbidden"
    assert running.gateway.seen == []
    status, _, body = await post(running, f"{running.egress}/invoke/other", b"hi")
    assert (status, body) == (200, b"answer to hi")
    function, headers, _ = running.gateway.seen[0]
    assert function == "other" and headers[ACCEPT_HEADER] == "ref"
    assert headers[HOP_HEADER] == running.keyring.hop_secret()  # the platform's own hop


async def test_put_get_release_over_http(start: Start) -> None:
    running = await start()
    status, _, token = await post(running, f"{running.egress}/objects?pulls=2&ttl=30", b"v" * 5000)
    assert status == 201
    for _ in range(2):
        assert (await post(running, f"{running.egress}/objects/get", token))[2] == b"v" * 5000
    status, headers, _ = await post(running, f"{running.egress}/objects/get", token)
    assert status == 403 and headers[ERROR_HEADER] == "pull_budget_exhausted"
    status, _, token = await post(running, f"{running.egress}/objects?pulls=unlimited", b"w")
    status, _, body = await post(running, f"{running.egress}/objects/release", token)
    assert json.loads(body) == {"released": True}


@pytest.mark.parametrize(
    "query",
    ["pulls=0", "pulls=-1", "pulls=abc", "pulls=1.5", "ttl=0", "ttl=-3", "ttl=inf", "ttl=nan",
     "ttl=999999999", "ttl=soon", "inline_small=yes"],
)  # fmt: skip
async def test_a_put_with_bad_terms_is_a_bad_request(start: Start, query: str) -> None:
    running = await start()
    status, headers, body = await post(running, f"{running.egress}/objects?{query}", b"x")
    assert status == 400 and headers[ERROR_HEADER] == "bad_request"
    assert "pulls must be a whole number" in json.loads(body)["message"]


async def test_a_call_slower_than_the_callers_timeout_times_out(start: Start) -> None:
    running = await start(timeout=0.3)
    answered = asyncio.Event()

    async def late(request: web.Request, body: bytes) -> web.Response:
        await answered.wait()
        return web.Response(text="too late")

    running.gateway.reply = late
    status, headers, body = await post(running, f"{running.egress}/invoke/slow", b"x")
    answered.set()
    assert status == 504 and headers[ERROR_HEADER] == "timeout"
    assert "the timeout of the calling function, 'shout'" in json.loads(body)["message"]


# -- egress: the socket face -------------------------------------------------------------------


async def call(
    running: Running, meta: dict[str, object], payload: bytes = b""
) -> tuple[Kind, bytes | dict[str, object]]:
    path = running.sidecar.config.faces.egress_socket
    assert path is not None
    channel = await Channel.connect(path)
    try:
        await channel.send(Kind.CALL, meta, payload)
        message = await channel.receive()
        if message.kind is Kind.ERROR:
            return message.kind, message.meta
        return message.kind, message.data()
    finally:
        channel.close()


async def test_the_socket_face_invokes_and_moves_big_payloads_by_reference(start: Start) -> None:
    running = await start()
    kind, answer = await call(running, {"op": "invoke", "function": "other"}, b"small")
    assert (kind, answer) == (Kind.RESULT, b"answer to small")
    big = os.urandom(3 * MiB)
    kind, answer = await call(running, {"op": "invoke", "function": "other"}, big)
    assert kind is Kind.RESULT
    _, headers, sent = running.gateway.seen[-1]
    assert headers[TRANSFER_HEADER] == "ref" and len(sent) < 1000  # a reference, not 3 MiB
    assert answer == b"answer to " + sent


async def test_a_callees_platform_error_arrives_as_its_own_type(start: Start) -> None:
    running = await start()

    async def missing(request: web.Request, body: bytes) -> web.Response:
        error = xdt.FunctionNotFound("no function named 'other' is deployed", function="other")
        return web.json_response(
            {"error": error.code, "message": str(error), "function": "other"},
            status=404,
            headers={ERROR_HEADER: error.code},
        )

    running.gateway.reply = missing
    kind, fields = await call(running, {"op": "invoke", "function": "other"}, b"x")
    assert kind is Kind.ERROR and isinstance(fields, dict)
    error = from_wire(fields)
    assert type(error) is xdt.FunctionNotFound and error.function == "other"


async def test_a_callees_own_503_is_not_taken_for_overload(start: Start) -> None:
    running = await start()

    async def busy(request: web.Request, body: bytes) -> web.Response:
        return web.Response(status=503, text="my database is down")

    running.gateway.reply = busy
    _, fields = await call(running, {"op": "invoke", "function": "other"}, b"x")
    assert isinstance(fields, dict)
    error = from_wire(fields)
    assert type(error) is xdt.FunctionFailed and error.status == 503
    assert "my database is down" in str(error)


@pytest.mark.parametrize(
    "meta",
    [
        {"op": "teleport"},
        {"op": 7},
        {"op": "invoke"},
        {"op": "invoke", "function": 3},
        {"op": "invoke", "function": "other", "forwarded": "yes"},
        {"op": "put", "pulls": 0},
        {"op": "put", "ttl": "soon"},
        {"op": "put", "pulls": True},
    ],
)
async def test_a_malformed_call_is_a_bad_request_and_the_face_keeps_serving(
    start: Start, meta: dict[str, object]
) -> None:
    running = await start()
    kind, fields = await call(running, meta, b"x")
    assert kind is Kind.ERROR and isinstance(fields, dict)
    assert type(from_wire(fields)) is xdt.BadRequest
    assert await call(running, {"op": "put", "pulls": 1}, b"fine")  # still serving


async def test_a_bug_in_an_operation_is_an_internal_error_not_the_callers_fault(
    start: Start, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await start()

    async def broken(token: str) -> bytes:
        raise KeyError("a bug of ours")

    monkeypatch.setattr(running.sidecar.payloads, "get", broken)
    kind, fields = await call(running, {"op": "get"}, b"inline:eA")
    assert kind is Kind.ERROR and isinstance(fields, dict)
    error = from_wire(fields)
    assert type(error) is xdt.InternalError and "its log has the traceback" in str(error)
    assert "KeyError: 'a bug of ours'" in capsys.readouterr().err  # logged, with where


async def test_garbage_on_the_socket_face_ends_only_that_connection(start: Start) -> None:
    running = await start()
    path = running.sidecar.config.faces.egress_socket
    assert path is not None
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b"\xff" * 64)
    try:
        answered = await asyncio.wait_for(reader.read(100), 5)
    except ConnectionResetError:  # closed with our garbage unread
        answered = b""
    assert answered == b""  # closed, nothing answered
    writer.close()
    kind, answer = await call(running, {"op": "invoke", "function": "other"}, b"ok")
    assert (kind, answer) == (Kind.RESULT, b"answer to ok")


Start = Callable[..., Awaitable[Running]]


async def test_the_socket_face_survives_running_out_of_descriptors(start: Start) -> None:
    """A flood that exhausts descriptors (EMFILE) once closed the SDK's listener for good;
    now accept backs off and goes on, and the instance stays ready."""
    import resource
    import socket

    running = await start()
    path = running.sidecar.config.faces.egress_socket
    assert path is not None
    waiting = []
    for _ in range(3):  # connected before the shortage: queued in the listener's backlog
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        waiting.append(sock)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")), hard))
        await asyncio.sleep(0.3)  # accept(2) fails with EMFILE meanwhile
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for sock in waiting:
        sock.close()
    kind, answer = await call(running, {"op": "invoke", "function": "other"}, b"ok")
    assert (kind, answer) == (Kind.RESULT, b"answer to ok")
    assert running.sidecar.faces_down() == []


async def test_at_its_channel_cap_the_socket_face_makes_new_channels_wait_not_fail(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the cap, a new channel was closed at once: the function's call failed with
    "sidecar went away mid-call" under ordinary load (31 of a 10,000-invocation soak). Now it
    waits until a channel closes, then is served."""
    from xdt.sidecar import egress

    monkeypatch.setattr(egress, "MAX_CHANNELS", 2)
    running = await start()
    path = running.sidecar.config.faces.egress_socket
    assert path is not None
    held = [await Channel.connect(path) for _ in range(2)]
    waiting = asyncio.create_task(call(running, {"op": "invoke", "function": "other"}, b"w"))
    await asyncio.sleep(0.5)
    assert not waiting.done()  # neither served nor refused: waiting for a channel
    held.pop().close()
    assert await asyncio.wait_for(waiting, 10) == (Kind.RESULT, b"answer to w")
    for channel in held:
        channel.close()


async def test_an_instance_whose_socket_face_is_down_is_not_ready(start: Start) -> None:
    running = await start()
    for task in running.sidecar._faces:
        task.cancel()  # what a bug or a crash of the face would leave
    await asyncio.sleep(0)
    await eventually(lambda: running.sidecar.faces_down() != [])
    async with running.session.get(f"{running.ingress}/xdt/ready") as answer:
        assert answer.status == 503 and "egress socket" in await answer.text()


async def test_a_request_whose_body_never_comes_is_not_counted_as_load(start: Start) -> None:
    """Phantom load: bodies declared and never sent once counted as concurrency (200 of them
    scaled a function from 1 to 3). Counted only once the body is in."""
    running = await start()
    host, port = running.ingress.removeprefix("http://").split(":")
    writers = []
    for _ in range(20):
        _, writer = await asyncio.open_connection(host, int(port))
        hop = running.keyring.hop_secret().encode()
        writer.write(b"POST /invoke HTTP/1.1\r\nHost: x\r\nX-Xdt-Hop: " + hop
                     + b"\r\nContent-Length: 1000\r\n\r\nab")  # fmt: skip
        writers.append(writer)
    await asyncio.sleep(0.2)
    async with running.session.get(f"{running.ingress}/xdt/stats") as answer:
        stats = await answer.json()
    assert stats["concurrency"] == 0 and stats["requests_total"] == 0
    for writer in writers:
        writer.close()


@pytest.mark.parametrize(("method", "path"), [("POST", "/invoke"), ("GET", "/xdt/stats"),
                                              ("GET", "/xdt/held")])  # fmt: skip
async def test_the_ingress_serves_only_the_platform_but_its_probe_and_metrics(
    start: Start, method: str, path: str
) -> None:
    """Any local process (a function too: the sandbox shares the network) reaches the TCP
    ingress. Invoking there went around the gateway's caps and queue; scraping /xdt/stats
    reset the autoscaler's window."""
    running = await start()
    async with aiohttp.ClientSession() as outsider:
        async with outsider.request(method, f"{running.ingress}{path}", data=b"x") as answer:
            assert answer.status == 403 and answer.headers[ERROR_HEADER] == "forbidden"
        for open_path in ("/xdt/ready", "/metrics"):
            async with outsider.get(f"{running.ingress}{open_path}") as answer:
                assert answer.status == 200
    assert running.sidecar.ingress.requests_total == 0


async def test_a_big_answer_counts_as_in_flight_until_it_is_written(start: Start) -> None:
    """An answer still being written to a slow reader was invisible to draining (the instance
    was stopped mid-answer) and to the breaker; now it is a request in flight until sent."""
    running = await start()
    host, port = running.ingress.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    hop = running.keyring.hop_secret().encode()
    writer.write(b"POST /invoke HTTP/1.1\r\nHost: x\r\nX-Xdt-Hop: " + hop
                 + b"\r\nContent-Length: 12\r\n\r\nbig 33554432")  # fmt: skip
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert b"Content-Length: 33554432" in head
    await asyncio.sleep(0.3)  # we read none of the body: 32 MiB cannot all be in buffers
    assert running.sidecar.stats.concurrency == 1
    got = 0
    async with asyncio.timeout(10):
        while got < 33554432:
            got += len(await reader.read(1 << 16))
    await eventually(lambda: running.sidecar.stats.concurrency == 0)
    writer.close()
