"""The warm heap: kept for big payloads while busy, given back when idle."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from xdt._util.heap import give_back_when_idle

_FREED_BUT_KEPT = """
import sys
from xdt._util.heap import give_back, keep_warm

def rss_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024

keep_warm()
payload = b"x" * (256 << 20)  # a big request's bytes, every page touched
del payload  # freed: the warm heap keeps its pages for the next one
kept = rss_mib()
returned = give_back()
print(kept, rss_mib(), returned)
"""


def test_the_warm_heap_keeps_freed_pages_until_given_back() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _FREED_BUT_KEPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    kept, after, returned = result.stdout.split()
    assert int(kept) >= 256  # kept warm after the bytes were freed
    assert int(kept) - int(after) >= 200  # and given back to the kernel
    assert returned == "True"


async def test_idle_memory_is_given_back_once_per_idle_spell() -> None:
    trims: list[float] = []
    idle_since = time.monotonic() - 1.0  # idle for a second already
    task = asyncio.create_task(
        give_back_when_idle(lambda: idle_since, idle_seconds=0.05, trim=lambda: trims.append(0))
    )
    try:
        for _ in range(100):  # bounded: at most ~1 s
            if trims:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # several more checks: still the same idle spell
        assert len(trims) == 1
        idle_since = time.monotonic()  # a request came and went: a new spell
        for _ in range(100):
            if len(trims) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(trims) == 2
    finally:
        task.cancel()


async def test_a_busy_process_keeps_its_warm_memory() -> None:
    trims: list[float] = []
    task = asyncio.create_task(
        give_back_when_idle(time.monotonic, idle_seconds=0.05, trim=lambda: trims.append(0))
    )
    await asyncio.sleep(0.3)  # always active: "idle since now"
    task.cancel()
    assert trims == []
