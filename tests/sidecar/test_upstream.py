"""The sidecar's way to a Python runtime (``xdt.sidecar.upstream``): it uses a runtime socket
only when the function's own uid serves it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from _support.waiting import eventually
from xdt import InstanceFailed
from xdt.runtime import serve
from xdt.sidecar.upstream import RuntimeUpstream


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
