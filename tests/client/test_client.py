"""``xdt.Client`` and ``xdt.AsyncClient`` against a real `xdt up`: answers, typed errors,
timeouts, the request id, connection reuse, and no platform at all."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from patterns import describe, make

import xdt
import xdt.client as xdt_client
from _support.platform import RunningPlatform
from xdt.platform.status import ObjectsStatus

FUNCTIONS = [
    {"name": "upper", "handler": "fns:upper"},
    {"name": "digest", "handler": "patterns:digest"},
    {"name": "put-only", "handler": "patterns:put_only"},
    {"name": "explode", "handler": "contract:explode"},
    {"name": "refuse", "handler": "contract:refuse"},
    {"name": "describe", "handler": "contract:describe"},
    {"name": "slow", "handler": "fns:slow"},
]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """One platform for the module's tests (each starting its own cost ~2 s)."""
    running = RunningPlatform(
        tmp_path_factory.mktemp("client"),
        {"platform": {"inline_limit": "1MiB"}, "functions": FUNCTIONS},
    )
    yield running
    running.stop()


def _objects(platform: RunningPlatform) -> ObjectsStatus:
    objects = platform.status()["objects"]
    assert objects is not None
    return objects


def test_the_sync_client_calls_reuses_its_connection_and_raises_typed(
    platform: RunningPlatform,
) -> None:
    with xdt.Client(platform.url, timeout=30) as client:
        assert client.invoke("upper", b"hi") == b"HI"
        first = client._local.connection.sock
        assert client.invoke("upper", b"again") == b"AGAIN"
        assert client._local.connection.sock is first  # kept alive, not reconnected
        answer = client.request(
            "describe", b"{}", method="PATCH", path="/a?status=202", request_id="cl-1",
            headers={"X-Custom": "c"},
        )  # fmt: skip
        assert answer.status == 202 and answer.request_id == "cl-1"
        assert b'"method": "PATCH"' in answer.body and b'"x-custom": "c"' in answer.body
        with pytest.raises(xdt.FunctionFailed, match="broken on purpose") as failed:
            client.invoke("explode", b"x", request_id="cl-2")
        assert failed.value.request_id == "cl-2" and "in _deeper" in (
            failed.value.stack_trace or ""
        )
        with pytest.raises(xdt.BadRequest, match="not a colour"):
            client.invoke("refuse", b"plaid")
        with pytest.raises(xdt.FunctionNotFound):
            client.invoke("nope")
        with pytest.raises(xdt.InvocationTimeout, match=r"within 0\.3 s"):
            client.invoke("slow", b"3", timeout=0.3)
        assert client.invoke("upper", b"still") == b"STILL"  # after a timeout: a fresh one
        results: list[bytes] = []
        threads = [
            threading.Thread(target=lambda i=i: results.append(client.invoke("upper", b"t%d" % i)))
            for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(results) == [b"T0", b"T1", b"T2", b"T3"]


async def test_the_async_client_calls_concurrently_and_raises_typed(
    platform: RunningPlatform,
) -> None:
    async with xdt.AsyncClient(platform.url, timeout=30) as client:
        answers = await asyncio.gather(*(client.invoke("upper", b"a%d" % i) for i in range(8)))
        assert answers == [b"A%d" % i for i in range(8)]
        with pytest.raises(xdt.FunctionFailed) as failed:
            await client.invoke("explode", b"x", request_id="as-1")
        assert failed.value.request_id == "as-1"
        with pytest.raises(xdt.InvocationTimeout):
            await client.invoke("slow", b"3", timeout=0.3)


def test_no_platform_is_peer_gone_naming_the_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with (
        xdt.Client(url) as client,
        pytest.raises(xdt.PeerGone, match=f"no platform answering at {url}"),
    ):
        client.invoke("upper", b"x")
    with pytest.raises(ValueError, match="not a function name"):
        xdt.Client(url).invoke("Not A Name")


def test_big_inputs_go_by_reference_and_references_come_back_as_bytes(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    before = _objects(platform)
    data = make(5 << 20, seed=11)
    (tmp_path / "input.bin").write_bytes(data)
    with xdt.Client(platform.url, timeout=60, upload_above=1 << 20) as client:
        assert client.invoke("digest", data) == describe(data).encode()
        with open(tmp_path / "input.bin", "rb") as file:  # streamed from the file
            assert client.invoke("digest", file) == describe(data).encode()
        reference = client.put(data[:1000], function="digest", pulls=2, ttl=30)
        assert client.invoke("digest", reference=reference) == describe(data[:1000]).encode()
        assert client.get(reference) == data[:1000]
        with pytest.raises(xdt.PullBudgetExhausted):
            client.get(reference)
        kept = client.put(b"kept", pulls=None)
        assert client.release(kept) is True
        with pytest.raises(xdt.ObjectNotFound):
            client.get(kept)
        # A reference a function gave out, downloaded.
        made = client.invoke("put-only", json.dumps({"size": 3 << 20, "seed": 4}).encode())
        assert client.get(made.decode()) == make(3 << 20, seed=4)
    after = _objects(platform)
    assert after["uploads"] - before["uploads"] == 4
    assert after["downloads"] - before["downloads"] == 2


async def test_the_async_client_uploads_and_downloads(platform: RunningPlatform) -> None:
    data = make(3 << 20, seed=12)
    async with xdt.AsyncClient(platform.url, timeout=60, upload_above=1 << 20) as client:
        assert await client.invoke("digest", data) == describe(data).encode()
        reference = await client.put(data, pulls=1)
        assert await client.get(reference) == data
        with pytest.raises(xdt.PullBudgetExhausted):
            await client.get(reference)
        assert await client.release(await client.put(b"x")) is True


def test_a_file_is_sent_as_the_bytes_it_held_when_the_call_began(tmp_path: Path) -> None:
    """A file that grows mid-call once sent its growth after the declared Content-Length,
    where the gateway read it as the connection's next request (an injected invocation)."""
    path = tmp_path / "input.bin"
    path.write_bytes(b"0123456789")
    with open(path, "rb") as file:
        file.seek(2)
        sent = xdt_client._File(file)
        assert sent.size == 8
        with open(path, "ab") as grower:
            grower.write(b"POST /invoke/upper HTTP/1.1\r\nContent-Length: 8\r\n\r\nINJECTED")
        assert b"".join(iter(lambda: sent.read(3), b"")) == b"23456789"
    with open(path, "rb", buffering=0) as file:  # (unbuffered: no stale bytes read)
        sent = xdt_client._File(file)
        path.write_bytes(b"0123")  # shrunk below what was declared
        with pytest.raises(ValueError, match="shrank while it was sent"):
            b"".join(iter(lambda: sent.read(3), b""))
    read, write = os.pipe()
    with open(read, "rb") as pipe, pytest.raises(ValueError, match="regular file"):
        xdt_client.body_size(pipe)
    os.close(write)


def test_a_request_that_was_sent_is_never_sent_again() -> None:
    """A stand-in gateway that takes the request, begins its answer and resets: the client
    says the platform went away — it does not send the request a second time (the function
    would run twice, a reference be pulled twice)."""
    received: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            with contextlib.suppress(OSError):
                for _ in range(2):
                    conn, _ = listener.accept()
                    with conn:
                        request = b""
                        while not request.endswith(b"order-42"):  # the whole request first
                            piece = conn.recv(65536)
                            if not piece:
                                break
                            request += piece
                        received.append(request)
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                        conn.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )  # close with a reset

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with xdt.Client(url, timeout=10) as client:
            client._local.used_at = time.monotonic()
            with pytest.raises(xdt.PeerGone, match="went away mid-answer"):
                client.invoke("charge", b"order-42")
        time.sleep(0.3)
    assert len(received) == 1 and received[0].endswith(b"order-42")


def test_a_connection_idle_long_is_made_anew(platform: RunningPlatform) -> None:
    with xdt.Client(platform.url, timeout=30) as client:
        assert client.invoke("upper", b"a") == b"A"
        first = client._local.connection.sock
        assert client.invoke("upper", b"b") == b"B" and client._local.connection.sock is first
        client._local.used_at -= xdt_client.IDLE_REUSE + 1  # as if idle that long
        assert client.invoke("upper", b"c") == b"C"
        assert client._local.connection.sock is not first
