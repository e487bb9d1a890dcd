"""``xdt.Client`` and ``xdt.AsyncClient`` against a real `xdt up`: answers, typed errors,
timeouts, the request id, connection reuse, and no platform at all."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from patterns import describe, make

import xdt
from _support.platform import RunningPlatform

Start = Callable[[dict[str, Any]], RunningPlatform]

FUNCTIONS = [
    {"name": "upper", "handler": "fns:upper"},
    {"name": "digest", "handler": "patterns:digest"},
    {"name": "put-only", "handler": "patterns:put_only"},
    {"name": "explode", "handler": "contract:explode"},
    {"name": "refuse", "handler": "contract:refuse"},
    {"name": "describe", "handler": "contract:describe"},
    {"name": "slow", "handler": "fns:slow"},
]


def test_the_sync_client_calls_reuses_its_connection_and_raises_typed(
    start_platform: Start,
) -> None:
    platform = start_platform({"functions": FUNCTIONS})
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


async def test_the_async_client_calls_concurrently_and_raises_typed(start_platform: Start) -> None:
    platform = start_platform({"functions": FUNCTIONS})
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
    start_platform: Start, tmp_path: Path
) -> None:
    platform = start_platform({"platform": {"inline_limit": "1MiB"}, "functions": FUNCTIONS})
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
    held = platform.status()["objects"]
    assert held is not None and (held["uploads"], held["downloads"]) == (4, 2)


async def test_the_async_client_uploads_and_downloads(start_platform: Start) -> None:
    platform = start_platform({"platform": {"inline_limit": "1MiB"}, "functions": FUNCTIONS})
    data = make(3 << 20, seed=12)
    async with xdt.AsyncClient(platform.url, timeout=60, upload_above=1 << 20) as client:
        assert await client.invoke("digest", data) == describe(data).encode()
        reference = await client.put(data, pulls=1)
        assert await client.get(reference) == data
        with pytest.raises(xdt.PullBudgetExhausted):
            await client.get(reference)
        assert await client.release(await client.put(b"x")) is True
