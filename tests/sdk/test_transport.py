"""The SDK's socket transport: at most MAX_OPEN_CHANNELS calls at once; the rest wait."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from xdt.channel import Channel, Kind
from xdt.sdk import _transport


async def test_calls_beyond_the_channel_cap_wait_for_a_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_transport, "MAX_OPEN_CHANNELS", 2)
    path = str(tmp_path / "egress.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    open_now = most = 0

    async def serve_one(sock: socket.socket) -> None:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        channel = Channel(sock)
        try:
            while True:
                message = await channel.receive()
                await asyncio.sleep(0.05)  # a slow call: the others pile up meanwhile
                await channel.send(Kind.RESULT, None, message.data().upper())
        except Exception:
            pass
        finally:
            open_now -= 1
            channel.close()

    async def accept() -> None:
        while True:
            sock, _ = await loop.sock_accept(listener)
            asyncio.create_task(serve_one(sock))  # noqa: RUF006 - ended with the listener

    server = asyncio.create_task(accept())
    transport = _transport.SocketTransport(path)
    try:
        answers = await asyncio.gather(
            *(transport.call("get", {}, f"x{i}".encode(), function=None) for i in range(7))
        )
        assert answers == [f"X{i}".encode() for i in range(7)]
        assert most == 2  # never more channels than the cap, and the cap was reached
    finally:
        await transport.close()
        server.cancel()
        listener.close()
