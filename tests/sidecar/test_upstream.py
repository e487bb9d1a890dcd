"""The sidecar's way to its function (``xdt.sidecar.upstream``): it uses a runtime socket, or
an HTTP port, only when the function's own uid serves it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from _support.waiting import eventually
from xdt import InstanceFailed
from xdt.runtime import serve
from xdt.sidecar.upstream import HttpUpstream, RuntimeUpstream


async def test_a_runtime_served_by_another_uid_is_not_used(tmp_path: Path) -> None:
    path = str(tmp_path / "rt.sock")
    task = asyncio.create_task(serve(bytes.upper, path, threads=2))
    await eventually(lambda: os.path.exists(path))
    try:
        ours = RuntimeUpstream(path, function="f", peer_uid=os.getuid())
        assert await ours.ready()
        assert (await ours.invoke(b"x")).body == b"X"
        await ours.close()

        # Say the function's uid is another: a socket at that path served by us is not it.
        other = RuntimeUpstream(path, function="f", peer_uid=os.getuid() + 1)
        assert not await other.ready()
        with pytest.raises(InstanceFailed, match=f"served by uid {os.getuid()}, not the"):
            await other.invoke(b"x")
        await other.close()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_port_another_uid_listens_on_is_never_ready(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        ours = HttpUpstream(port, function="f", peer_uid=os.getuid())
        assert await ours.ready()
        # Say the function's uid is another: whoever took its port first is not the function.
        squatted = HttpUpstream(port, function="f", peer_uid=os.getuid() + 1)
        assert not await squatted.ready() and not await squatted.ready()
    finally:
        server.close()
        await server.wait_closed()
    (line,) = capsys.readouterr().err.splitlines()  # said once
    assert f"port {port} is listened on by uid {os.getuid()}, not only by function 'f'" in line
