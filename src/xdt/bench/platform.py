"""``xdt bench platform``: what the embedded platform costs an invocation.

Against a baseline measured in the same run — one plain aiohttp server answering the same
request (one HTTP hop, ``direct``) — it times invocations of an echo function through the
whole platform (``xdt``: client → gateway/activator → sidecar → Python runtime and back):

- warm latency, 1 KiB in and 1 KiB out, p50 and p99 over sequential requests (the two
  targets alternate in blocks, so drift on the machine hits both alike);
- throughput at 1, 8 and 64 concurrent clients;
- cold start: a function at zero, from the request to its answer (instance start included).

The platform runs as ``xdt up`` in a child process and the baseline server in another, so the
client's event loop competes with them only for the CPU, as a real client would.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

from .._util.process import stop
from ..testing import LaunchedPlatform

__all__ = ["PlatformBench", "run_platform_bench"]

BODY_SIZE = 1 << 10
TARGETS = ("direct", "xdt")
_FUNCTIONS = """
async def echo(body: bytes) -> bytes:
    return body
"""


@dataclass(frozen=True)
class Latency:
    target: str
    p50_s: float
    p99_s: float
    mean_s: float
    runs: int

    @property
    def key(self) -> tuple[object, ...]:
        """As :attr:`xdt.bench.targets.Address.key` names it."""
        return ("platform", self.target, None)


@dataclass(frozen=True)
class Throughput:
    target: str
    concurrency: int
    requests_per_s: float
    requests: int
    errors: int


@dataclass
class PlatformBench:
    latency: list[Latency] = field(default_factory=list)
    throughput: list[Throughput] = field(default_factory=list)
    cold_starts_s: list[float] = field(default_factory=list)
    isolation: bool = False  # functions under uids of their own
    sandbox: bool = False  # ... each in a bubblewrap sandbox

    def latency_of(self, target: str) -> Latency:
        return next(result for result in self.latency if result.target == target)

    @property
    def p50_ratio(self) -> float:
        """xdt's warm p50 over the direct hop's (the target is ≤ 3)."""
        return self.latency_of("xdt").p50_s / self.latency_of("direct").p50_s

    def records(self) -> list[dict[str, object]]:
        records: list[dict[str, object]] = [
            {"kind": "latency", **asdict(result)} for result in self.latency
        ]
        records += [{"kind": "throughput", **asdict(result)} for result in self.throughput]
        if self.cold_starts_s:
            records.append(
                {
                    "kind": "cold_start",
                    "median_s": statistics.median(self.cold_starts_s),
                    "min_s": min(self.cold_starts_s),
                    "max_s": max(self.cold_starts_s),
                    "runs": len(self.cold_starts_s),
                    "isolation": self.isolation,
                    "sandbox": self.sandbox,
                }
            )
        return records


Progress = Callable[[str], None]


def run_platform_bench(
    *,
    requests: int = 2000,
    duration: float = 3.0,
    concurrencies: Sequence[int] = (1, 8, 64),
    cold_starts: int = 5,
    sandbox: str = "auto",
    progress: Progress = lambda what: None,
) -> PlatformBench:
    """``sandbox`` is the spec's ``platform.sandbox`` (auto, on, off): its cost shows in the
    cold start."""
    with tempfile.TemporaryDirectory(prefix="xdt-bench-") as folder:
        root = Path(folder)
        root.chmod(0o755)  # functions run under uids of their own: they must read it
        (root / "bench_functions.py").write_text(_FUNCTIONS)
        functions = [
            "  - {name: echo, handler: bench_functions:echo, min_scale: 1, max_scale: 1}"
        ] + [
            f"  - {{name: cold-{i}, handler: bench_functions:echo, initial_scale: 0}}"
            for i in range(cold_starts)
        ]
        spec = f"platform: {{sandbox: {sandbox}}}\nfunctions:\n" + "\n".join(functions) + "\n"
        (root / "xdt.yaml").write_text(spec)
        progress("starting the baseline server and the platform")
        direct = _start_direct_server()
        try:
            platform = LaunchedPlatform(root / "xdt.yaml", root / "up.log")
            try:
                urls = {
                    "direct": f"http://127.0.0.1:{direct[1]}/",
                    "xdt": f"{platform.url}/invoke/echo",
                }
                cold = [f"{platform.url}/invoke/cold-{i}" for i in range(cold_starts)]
                bench = asyncio.run(
                    _measure(urls, cold, requests, duration, concurrencies, progress)
                )
                status = platform.status()
                bench.isolation, bench.sandbox = status["isolation"], status["sandbox"]
                return bench
            finally:
                platform.stop()
        finally:
            stop(direct[0], grace=10)


async def _measure(
    urls: dict[str, str],
    cold: list[str],
    requests: int,
    duration: float,
    concurrencies: Sequence[int],
    progress: Progress,
) -> PlatformBench:
    body = os.urandom(BODY_SIZE)
    result = PlatformBench()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call(url: str) -> bool:
            async with session.post(url, data=body) as answer:
                return answer.status == 200 and await answer.read() == body

        await _until_ready(call, urls["xdt"])
        progress("warm latency")
        for url in urls.values():  # warm connections and caches
            for _ in range(200):
                await call(url)
        samples: dict[str, list[float]] = {target: [] for target in urls}
        block = 100
        for _ in range(max(1, requests // block)):
            for target, url in urls.items():
                for _ in range(block):
                    started = time.perf_counter()
                    if not await call(url):
                        raise RuntimeError(f"{target} answered wrongly")
                    samples[target].append(time.perf_counter() - started)
        for target, times in samples.items():
            times.sort()
            result.latency.append(
                Latency(
                    target,
                    p50_s=statistics.median(times),
                    p99_s=times[min(len(times) - 1, int(len(times) * 0.99))],
                    mean_s=statistics.fmean(times),
                    runs=len(times),
                )
            )
        for concurrency in concurrencies:
            for target, url in urls.items():
                progress(f"throughput: {target} at concurrency {concurrency}")
                result.throughput.append(
                    await _throughput(call, target, url, concurrency, duration)
                )
        for index, url in enumerate(cold):
            progress(f"cold start {index + 1}/{len(cold)}")
            started = time.perf_counter()
            if not await call(url):
                raise RuntimeError("a cold function answered wrongly")
            result.cold_starts_s.append(time.perf_counter() - started)
    return result


async def _throughput(
    call: Callable[[str], Awaitable[bool]], target: str, url: str, clients: int, duration: float
) -> Throughput:
    done = errors = 0
    deadline = time.perf_counter() + duration

    async def client() -> None:
        nonlocal done, errors
        while time.perf_counter() < deadline:
            try:
                ok = await call(url)
            except aiohttp.ClientError:
                ok = False
            done += ok
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return Throughput(target, clients, done / elapsed, done, errors)


async def _until_ready(call: Callable[[str], Awaitable[bool]], url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if await call(url):
                return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no answer from {url} within 60 s")
        await asyncio.sleep(0.05)


# -- the baseline: one aiohttp server, echoing -------------------------------------------------


def _start_direct_server() -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "xdt.bench.platform"], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError("the baseline server did not start")
    return process, int(line)


def _serve_direct() -> None:
    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    app = web.Application()
    app.router.add_post("/", echo)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    web.run_app(app, sock=listener, print=None, access_log=None)


if __name__ == "__main__":
    _serve_direct()
