"""``xdt bench transfer``: one object from a producer process to a consumer process.

Each case times, in the consumer, the whole of: ask for the object → hold every byte → read each
byte once (an XXH3 pass, the same in every path) → give the buffer back. Paths:

- ``memcpy``: no transfer: one warm copy of the size within the consumer, then the same read.
  The floor every same-host path is held against: no pair of processes moves bytes faster.
- ``raw-tcp``: the baseline. A plain blocking TCP socket on a persistent connection: the consumer
  sends a tiny request, the producer answers with the bytes, the consumer ``recv_into``s a reused
  buffer. Every ratio is against this path, measured in the same run.
- ``aio-tcp``: the same exchange with both ends on an event loop (``loop.sock_*`` calls). Not a
  target, a yardstick: the floor any asyncio sidecar pays for a round trip, so that small-object
  latency can be read as "protocol cost" (xdt over aio) and "event-loop cost" (aio over raw).
- ``xdt-tcp``: :class:`~xdt.PullClient` over TCP, fast path off (sealed reference, PULL frame,
  bytes streamed from the memfd's mapping, checksum, DONE).
- ``xdt-local``: the same-host fast path: same-host Unix socket, the object as a sealed memfd.

The producer is a child process (``python -m xdt.bench.transfer``) holding one object per size
with unlimited pulls, serving the raw baseline (a thread), the aio yardstick (its event loop)
and an :class:`~xdt.ObjectServer`.

Across test hosts (``hosts=True``, :mod:`xdt.platform.hosts`; root) the producer runs on host 2
and the consumer on host 1: every path but ``memcpy`` crosses both hosts' links and the bridge,
shaped by ``link``; ``xdt-local`` has no meaning there and is left out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass

import xxhash

from .._core.refs import KEYRING_ENV, KeyRing
from .._core.store import ObjectStore, StoreConfig
from .._util.loops import run
from .._util.tasks import TaskSet
from ..platform.hosts import HostNetwork, Link, inside
from ..pull import ClientConfig, ObjectServer, PullClient, ServerConfig
from .targets import Outcome, keyed, load_targets

__all__ = ["PATHS", "Case", "default_runs", "run_transfer_bench"]

_HOST_ENV = "XDT_BENCH_HOST"  # where the producer listens: 127.0.0.1, or its test host's address

PATHS = ("memcpy", "raw-tcp", "aio-tcp", "xdt-tcp", "xdt-local")
DEFAULT_SIZES = (1 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20)
_REQUEST = struct.Struct("!Q")


@dataclass(frozen=True, slots=True)
class Case:
    path: str
    size_bytes: int
    median_s: float
    min_s: float
    max_s: float
    runs: int
    loop: str

    link: str | None = None  # across test hosts: their links ("10 Gbit/s", "unshaped")
    link_bits: int | None = None  # the shaped rate, bits per second

    @property
    def key(self) -> tuple[object, ...]:
        """As :attr:`xdt.bench.targets.Address.key` names it; cases across test hosts have
        keys of their own (the one-host targets do not judge them)."""
        base = ("transfer", self.path, self.size_bytes)
        return base if self.link is None else (*base, "across hosts")

    @property
    def link_share(self) -> float | None:
        """Bits per second over the shaped rate: how close the path comes to line rate."""
        return self.size_bytes * 8 / self.median_s / self.link_bits if self.link_bits else None

    @property
    def gbps(self) -> float:
        return self.size_bytes / self.median_s / 1e9

    def record(self, baseline: Case | None) -> dict[str, object]:
        record: dict[str, object] = asdict(self)
        record["gb_per_s"] = round(self.gbps, 4)
        if self.link_share is not None:
            record["link_share"] = round(self.link_share, 4)
        if baseline is not None:
            record["speed_vs_raw_tcp"] = round(baseline.median_s / self.median_s, 4)
        return record


def default_runs(size: int) -> int:
    """Enough runs for a stable median, about a second of work per case."""
    return max(7, min(200, (1 << 30) // max(size, 1)))


def _read_once(view: memoryview) -> int:
    return xxhash.xxh3_64_intdigest(view)


# -- producer (child process) ------------------------------------------------------------------


def _payload(size: int) -> bytes:
    block = os.urandom(min(size, 1 << 20))
    return (block * (size // max(len(block), 1) + 1))[:size]


def _serve_raw(listener: socket.socket, payloads: dict[int, bytes]) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            request = bytearray(_REQUEST.size)
            while True:
                got = 0
                while got < len(request):
                    count = conn.recv_into(memoryview(request)[got:])
                    if not count:
                        break
                    got += count
                if got < len(request):
                    break
                (size,) = _REQUEST.unpack(request)
                conn.sendall(payloads[size])


async def _serve_aio(listener: socket.socket, payloads: dict[int, bytes]) -> None:
    loop = asyncio.get_running_loop()
    answering = TaskSet()
    while True:
        conn, _ = await loop.sock_accept(listener)
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        answering.spawn(_answer_aio(loop, conn, payloads))


async def _answer_aio(
    loop: asyncio.AbstractEventLoop, conn: socket.socket, payloads: dict[int, bytes]
) -> None:
    request = bytearray(_REQUEST.size)
    with conn:
        while True:
            got = 0
            while got < len(request):
                count = await loop.sock_recv_into(conn, memoryview(request)[got:])
                if not count:
                    return
                got += count
            (size,) = _REQUEST.unpack(request)
            await loop.sock_sendall(conn, payloads[size])


async def _produce(sizes: list[int]) -> None:
    keyring = KeyRing.from_env()
    host = os.environ.get(_HOST_ENV, "127.0.0.1")
    payloads = {size: _payload(size) for size in sizes}
    raw = socket.create_server((host, 0))
    threading.Thread(target=_serve_raw, args=(raw, payloads), daemon=True).start()
    aio = socket.create_server((host, 0))
    aio.setblocking(False)
    serving_aio = asyncio.ensure_future(_serve_aio(aio, payloads))
    store = ObjectStore(StoreConfig(quota_bytes=sum(sizes) + (1 << 20), max_ttl=86400.0))
    async with ObjectServer(store, keyring, ServerConfig(host=host)) as server:
        refs = {}
        for size in sizes:
            obj = await store.put(payloads[size], pulls=None, ttl=86400.0)
            refs[str(size)] = server.seal(obj)
        ports = {"raw": raw.getsockname()[1], "aio": aio.getsockname()[1]}
        print(json.dumps({"host": host, "ports": ports, "refs": refs}), flush=True)
        # Serve until the consumer closes our stdin.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    serving_aio.cancel()
    raw.close()
    aio.close()


# -- consumer (this process) -------------------------------------------------------------------


Once = Callable[[], Awaitable[None]]


async def _measure(once: Once, runs: int) -> list[float]:
    await once()  # warm the connection and the buffers
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await once()
        samples.append(time.perf_counter() - start)
    return samples


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _raw_once(sock: socket.socket, size: int) -> Once:
    """Blocking socket calls: the fastest a plain Python consumer can be."""
    view = memoryview(bytearray(max(size, 1)))[:size]
    request = _REQUEST.pack(size)

    async def once() -> None:
        sock.sendall(request)
        got = 0
        while got < size:
            count = sock.recv_into(view[got:])
            if not count:
                raise ConnectionError("producer closed the raw connection")
            got += count
        _read_once(view)

    return once


def _aio_once(sock: socket.socket, size: int) -> Once:
    """The same exchange with both ends on an event loop: what any asyncio service pays."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    view = memoryview(bytearray(max(size, 1)))[:size]
    request = _REQUEST.pack(size)

    async def once() -> None:
        await loop.sock_sendall(sock, request)
        got = 0
        while got < size:
            count = await loop.sock_recv_into(sock, view[got:])
            if not count:
                raise ConnectionError("producer closed the aio connection")
            got += count
        _read_once(view)

    return once


def _memcpy_once(size: int) -> Once:
    """One warm copy and the read: buffers made (and touched) before timing."""
    source = memoryview(_payload(size))
    target = memoryview(bytearray(max(size, 1)))[:size]

    async def once() -> None:
        target[:] = source
        _read_once(target)

    return once


def _xdt_once(client: PullClient, token: str) -> Once:
    async def once() -> None:
        with await client.pull(token) as pulled:
            _read_once(pulled.view())

    return once


def run_transfer_bench(
    sizes: Sequence[int] = DEFAULT_SIZES,
    *,
    runs: int | None = None,
    paths: Sequence[str] = PATHS,
    loop: str = "asyncio",
    on_case: Callable[[Case], None] | None = None,
    hosts: bool = False,
    link: Link | None = None,
) -> list[Case]:
    """Start a producer, measure every (size, path), stop the producer; returns the cases.
    ``hosts``: the producer on one test host, the consumer on another, ``link`` shaping
    their links (raises :class:`~xdt.HostsError` where test hosts cannot be made)."""
    if not hosts:
        return _run(sizes, runs, paths, loop, on_case)
    network = HostNetwork(2, link=link)
    network.start()
    try:
        across = [p for p in paths if p != "xdt-local"]
        cases = _run(sizes, runs, across, loop, on_case, network)
    finally:
        network.close()
    rate = link.rate if link is not None else None
    described = (link or Link()).describe()
    return [dataclasses.replace(c, link=described, link_bits=rate) for c in cases]


def _run(
    sizes: Sequence[int],
    runs: int | None,
    paths: Sequence[str],
    loop: str,
    on_case: Callable[[Case], None] | None,
    network: HostNetwork | None = None,
) -> list[Case]:
    keyring = KeyRing.generate()
    env = {**os.environ, KEYRING_ENV: keyring.to_text(), "XDT_BENCH_LOOP": loop}
    if network is not None:
        env[_HOST_ENV] = network.host(2).address
    producer = subprocess.Popen(
        [sys.executable, "-m", "xdt.bench.transfer", *map(str, sizes)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
        preexec_fn=network.host(2).enter() if network is not None else None,
    )
    try:
        assert producer.stdout is not None
        line = producer.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark producer process failed to start (see its stderr)")
        hello = json.loads(line)
        consume = functools.partial(_consume, keyring, hello, sizes, runs, paths, loop, on_case)
        if network is None:
            return run(consume(), loop)
        with inside(network.host(1).netns):  # this thread's sockets: host 1's
            return run(consume(), loop)
    finally:
        if producer.stdin is not None:
            producer.stdin.close()
        try:
            producer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            producer.kill()
            producer.wait()
        if producer.stdout is not None:
            producer.stdout.close()


async def _consume(
    keyring: KeyRing,
    hello: dict[str, object],
    sizes: Sequence[int],
    runs: int | None,
    paths: Sequence[str],
    loop: str,
    on_case: Callable[[Case], None] | None,
) -> list[Case]:
    refs, ports, host = hello["refs"], hello["ports"], hello["host"]
    assert isinstance(refs, dict) and isinstance(ports, dict) and isinstance(host, str)
    cases = []
    async with (
        PullClient(keyring, ClientConfig(local=False)) as tcp,
        PullClient(keyring, ClientConfig(local=True)) as local,
    ):
        for size in sizes:
            count = runs or default_runs(size)
            for path in paths:
                if path == "memcpy":
                    samples = await _measure(_memcpy_once(size), count)
                elif path in ("raw-tcp", "aio-tcp"):
                    with _connect(host, ports[path[:3]]) as sock:
                        make = _raw_once if path == "raw-tcp" else _aio_once
                        samples = await _measure(make(sock, size), count)
                else:
                    client = tcp if path == "xdt-tcp" else local
                    samples = await _measure(_xdt_once(client, refs[str(size)]), count)
                case = Case(
                    path=path,
                    size_bytes=size,
                    median_s=statistics.median(samples),
                    min_s=min(samples),
                    max_s=max(samples),
                    runs=count,
                    loop=loop,
                )
                cases.append(case)
                if on_case is not None:
                    on_case(case)
    return cases


def describe_targets(cases: Sequence[Case]) -> list[Outcome]:
    """The targets of ``targets.toml`` that these cases cover, with what they reached."""
    return load_targets().judge(keyed(cases, lambda c: c.key), "transfer")


if __name__ == "__main__":
    run(_produce([int(arg) for arg in sys.argv[1:]]), os.environ.get("XDT_BENCH_LOOP", "asyncio"))
