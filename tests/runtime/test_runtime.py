"""The Python function runtime (``xdt.runtime``): only the sidecar's uid may connect."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from _support.waiting import eventually
from xdt._core.errors import PeerGone
from xdt.channel import Channel, Kind
from xdt.runtime import serve


@asynccontextmanager
async def running(path: str, peer_uid: int | None) -> AsyncIterator[None]:
    task = asyncio.create_task(serve(bytes.upper, path, threads=2, peer_uid=peer_uid))
    await eventually(lambda: os.path.exists(path))
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _ping(path: str) -> Kind:
    channel = await Channel.connect(path)
    try:
        await channel.send(Kind.PING)
        return (await channel.receive()).kind
    finally:
        channel.close()


async def test_the_sidecars_uid_is_served(tmp_path: Path) -> None:
    path = str(tmp_path / "rt.sock")
    async with running(path, peer_uid=None):  # by default: our own uid
        assert os.stat(path).st_mode & 0o777 == 0o600  # and only its owner may connect
        assert await _ping(path) is Kind.PONG
        channel = await Channel.connect(path)
        await channel.send(Kind.INVOKE, None, b"shout")
        message = await channel.receive()
        channel.close()
        assert (message.kind, message.data()) == (Kind.RESULT, b"SHOUT")


async def test_any_other_uid_is_refused_and_the_runtime_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "rt.sock")
    async with running(path, peer_uid=os.getuid() + 1):  # the sidecar's uid is another
        for _ in range(2):
            with pytest.raises(PeerGone):
                await _ping(path)
    assert "refused a connection to the runtime socket" in capsys.readouterr().err
