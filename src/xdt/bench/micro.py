"""``xdt bench micro``: every transfer mode × pattern × size, function to function.

For each mode and size a platform runs (``xdt up`` with ``platform.transfer`` set) with a
driver function and the functions it calls. The bench asks the driver to run a case; the driver
times, inside the platform, from the moment it starts the call to the moment it has the
answer — and the answer comes only after the callee's code holds every byte (it returns a
digest of them). Payloads are made and cached before timing. Patterns:

- ``1to1``: ``invoke(sink, payload)``;
- ``scatter``: ``scatter(sink, [4 distinct payloads])``;
- ``gather``: four producers ``put`` their (cached) payload and answer references, one
  consumer ``gather``s them;
- ``broadcast``: ``broadcast(sink, payload, 4)`` (one object, four pulls);
- ``1to1-view`` and ``broadcast-view``: zero copy end to end. The driver writes the payload in
  place into ``xdt.buffer(size)`` (timed: there is no cached copy to send) and the callee takes
  a ``memoryview``: on one host in xdt mode, the memfd the driver wrote is the one the callees
  map, and no byte is copied on the way.

While a case runs, a sampler reads the memory of every platform process every 10 ms and
reports the peaks with the case:

- ``peak_rss_bytes``: summed RSS. It counts a memfd page once in every process that maps it;
- ``peak_pss_bytes``: summed PSS, which splits such pages between those processes;
- ``peak_memory_bytes``: the footprint — every process's own pages (anonymous memory and its
  share of mapped files) plus the memfds the platform's processes hold, each counted once
  whether one process or several map it (read from their descriptors, not the machine-wide
  ``Shmem``, so other processes on the machine do not move it);
- ``idle_memory_bytes``: that footprint at rest, just before the case's first call, so
  ``peak_memory_bytes - idle_memory_bytes`` is what the case itself costs (its payloads, the
  buffers it warms), not the Python processes of the platform.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .._util.units import format_size
from ..modes import DEFAULT_TRANSFER_SETTINGS, MODES
from ..platform.hosts import Link
from ..testing import LaunchedPlatform
from ._link import LinkSampler
from ._memory import MemorySampler
from .targets import Outcome, keyed, load_targets

__all__ = [
    "DEFAULT_SIZES",
    "MODES",
    "PATTERNS",
    "QUICK_SIZES",
    "CaseFailed",
    "MicroCase",
    "describe_targets",
    "run_micro_bench",
]

PATTERNS = ("1to1", "scatter", "gather", "broadcast", "1to1-view", "broadcast-view")
DEFAULT_SIZES = (1 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20, 256 << 20)
QUICK_SIZES = (1 << 10, 1 << 20, 64 << 20)
INLINE_LIMIT = DEFAULT_TRANSFER_SETTINGS.inline_limit
FAN = 4
# Cases under 1 MiB take about a millisecond, where one scheduling hiccup moves a median of 5
# by half: they run at least 25 times (a few seconds even through moto).
SMALL_CASE = 1 << 20
SMALL_RUNS = 25

_FUNCTIONS = """
import ctypes
import time

import xdt

_cache = {}


def payload(size: int, index: int = 0) -> bytes:
    key = (size, index)
    if key not in _cache:
        if any(cached != size for cached, _ in _cache):
            _cache.clear()  # one size at a time: no case pays for the last one's payloads
        _cache[key] = bytes([index % 251]) * size
    return _cache[key]


def sink(body: bytes) -> bytes:
    return str(len(body)).encode()


def sink_view(body: memoryview) -> bytes:
    return str(len(body)).encode()


def written_in_place(size: int, index: int = 0):
    # What payload() holds, made where it will travel: one pass over fresh memory, no copy.
    buffer = xdt.buffer(size)
    if size:
        place = ctypes.c_char.from_buffer(buffer.writable())
        ctypes.memset(ctypes.addressof(place), index % 251, size)
        del place
    return buffer


async def produce(body: bytes) -> bytes:
    size, index = map(int, body.split())
    return (await xdt.put(payload(size, index))).encode()


async def consume(body: bytes) -> bytes:
    parts = await xdt.gather(body.decode().split())
    return str(sum(len(p) for p in parts)).encode()


async def driver(body: bytes) -> bytes:
    pattern, size_text = body.decode().split()
    size = int(size_text)
    viewing = pattern.endswith("-view")
    data = [] if viewing else [payload(size, i) for i in range(4 if pattern == "scatter" else 1)]
    started = time.perf_counter()
    if pattern == "1to1-view":
        answers = [await xdt.invoke("sink-view", written_in_place(size))]
    elif pattern == "broadcast-view":
        answers = await xdt.broadcast("sink-view", written_in_place(size), 4)
    elif pattern == "1to1":
        answers = [await xdt.invoke("sink", data[0])]
    elif pattern == "scatter":
        answers = await xdt.scatter("sink", data)
    elif pattern == "broadcast":
        answers = await xdt.broadcast("sink", data[0], 4)
    else:  # gather
        orders = [f"{size} {i}".encode() for i in range(4)]
        refs = await xdt.scatter("produce", orders)
        answers = [await xdt.invoke("consume", b" ".join(refs))]
    elapsed = time.perf_counter() - started
    return f"{elapsed} {' '.join(a.decode() for a in answers)}".encode()
"""


@dataclass(frozen=True)
class MicroCase:
    mode: str
    pattern: str
    size_bytes: int
    median_s: float
    min_s: float
    max_s: float
    runs: int
    peak_rss_bytes: int
    peak_pss_bytes: int  # shared pages (memfds mapped by several processes) split between them
    peak_memory_bytes: int  # the footprint (see the module docstring)
    idle_memory_bytes: int  # the footprint at rest before the case
    hosts: int = 0  # test hosts the platform ran on (--hosts); 0: one host
    link_bits: int | None = None  # their links' shaped rate, bits per second
    # Across hosts: the fastest host 1 (driver, consumer) or 2 (sinks) took bytes in over
    # its link, over any 100 ms of the case: whether a gather fills the receiver's link.
    peak_receive_bits: float | None = None

    @property
    def key(self) -> tuple[object, ...]:
        """As :attr:`xdt.bench.targets.Address.key` names it. Cases across test hosts have
        keys of their own: the one-host targets do not judge them."""
        base = ("micro", self.mode, self.pattern, self.size_bytes)
        return base if not self.hosts else (*base, f"{self.hosts} hosts")

    @property
    def link_share(self) -> float | None:
        """The receiver's payload bits per second over its link's shaped rate (None
        unshaped): how close a cross-host case comes to line rate. Times are end to end —
        the call, the pull, the answer — so this is a floor of what the pull itself reached."""
        if not self.link_bits:
            return None
        return self.gb_per_s * 8e9 / self.link_bits

    @property
    def case_memory_bytes(self) -> int:
        """What the case added to the platform's footprint at its peak."""
        return max(0, self.peak_memory_bytes - self.idle_memory_bytes)

    @property
    def gb_per_s(self) -> float:
        """Payload bytes that reached callees per second (×4 for the fan patterns)."""
        moved = self.size_bytes * (1 if self.pattern.startswith("1to1") else FAN)
        return moved / self.median_s / 1e9

    def record(self) -> dict[str, object]:
        share = self.link_share
        return {
            **asdict(self),
            "gb_per_s": round(self.gb_per_s, 4),
            "link_share": None if share is None else round(share, 4),
        }


def _spec(mode: str, hosts: int = 0, link: Link | None = None) -> str:
    """One instance of each function. Across test hosts: the driver and the consumer on
    host 1, the sinks on host 2, the producers one on each other host (gather pulls from
    them all: 4 producers with --hosts 5), the stores on a host of their own: every byte of
    every mode crosses a link."""
    scale = {name: 1 for name in ("driver", "sink", "sink_view", "produce", "consume")}
    pins = {"driver": "1", "consume": "1", "sink": "2", "sink_view": "2"}
    if hosts >= 3:
        pins["produce"] = "[" + ", ".join(str(n) for n in range(2, hosts + 1)) + "]"
        scale["produce"] = hosts - 1
    functions = "\n".join(
        f"  - {{name: {name.replace('_', '-')}, handler: micro_functions:{name}, "
        f"min_scale: {count}, max_scale: {count}"
        + (f", host: {pins.get(name, '2')}" if hosts else "")
        + "}"
        for name, count in scale.items()
    )
    placed = ""
    if hosts:
        placed = f"  hosts: {hosts}\n  store_host: true\n"
        if link is not None and (link.rate or link.delay):
            rate, _, delay = link.as_text().partition(",")
            shaped = [f"rate: {rate}"] if rate else []
            shaped += [f"delay: {delay}"] if delay else []
            placed += f"  link: {{{', '.join(shaped)}}}\n"
    return (
        f"platform:\n  transfer: {mode}\n  object_quota: 4GiB\n  inline_limit: {INLINE_LIMIT}\n"
        f"{placed}functions:\n{functions}\n"
    )


def run_micro_bench(
    *,
    modes: Sequence[str] = MODES,
    patterns: Sequence[str] = PATTERNS,
    sizes: Sequence[int] = DEFAULT_SIZES,
    runs: int = 5,
    on_case: Callable[[MicroCase], None] = lambda case: None,
    on_start: Callable[[str], None] = lambda what: None,
    on_failure: Callable[[str], None] = lambda what: None,
    hosts: int = 0,
    link: Link | None = None,
    on_platform: Callable[[LaunchedPlatform], None] = lambda platform: None,
) -> list[MicroCase]:
    """Every case; ``hosts`` > 0 runs each platform across that many test hosts (2 at
    least) with every ``link`` shaped. ``on_platform`` sees each platform once it is ready."""
    cases: list[MicroCase] = []
    with tempfile.TemporaryDirectory(prefix="xdt-micro-") as folder:
        root = Path(folder)
        root.chmod(0o755)  # isolated functions (their own uids) read their code from here
        (root / "micro_functions.py").write_text(_FUNCTIONS)
        for mode in modes:
            (root / "xdt.yaml").write_text(_spec(mode, hosts, link))
            for size in sizes:
                if mode == "inline" and size > INLINE_LIMIT:
                    continue  # over the limit by definition: refused, not measured
                # A platform per size, and another for the zero-copy patterns: no case is
                # credited with the memory a case of another size or kind left warm (freed
                # heap blocks, pools), nor charged with it.
                for family in _families(patterns):
                    on_start(f"starting the platform with transfer: {mode} for {format_size(size)}")
                    platform = LaunchedPlatform(root / "xdt.yaml", root / f"up-{mode}.log")
                    try:
                        platform.wait_ready()
                        on_platform(platform)
                        for pattern in family:
                            try:
                                case = _measure(platform, mode, pattern, size, runs, link)
                            except CaseFailed as failure:
                                on_failure(f"{mode} {failure}")
                                continue
                            cases.append(case)
                            on_case(case)
                    finally:
                        platform.stop()
    return cases


def _families(patterns: Sequence[str]) -> list[list[str]]:
    """The patterns that send bytes, then the zero-copy ones: each set on a platform of its own."""
    views = [p for p in patterns if p.endswith("-view")]
    return [family for family in ([p for p in patterns if p not in views], views) if family]


class CaseFailed(RuntimeError):
    """The driver could not run a case; the message has the platform's answer."""


def _call(url: str, body: bytes, timeout: float = 600) -> bytes:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            result: bytes = answer.read()
            return result
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.loads(detail)["message"]
        raise CaseFailed(f"{body.decode()}: HTTP {error.code}: {detail}") from None


def _measure(
    platform: LaunchedPlatform,
    mode: str,
    pattern: str,
    size: int,
    runs: int,
    link: Link | None = None,
) -> MicroCase:
    url = f"{platform.url}/invoke/driver"
    order = f"{pattern} {size}".encode()
    sampler = MemorySampler(platform.process.pid)
    idle = sampler.footprint()
    times: list[float] = []
    if size < SMALL_CASE:
        runs = max(runs, SMALL_RUNS)
    hosts = platform.status()["hosts"]
    receiver = "h1" if pattern == "gather" else "h2"  # the consumer is on 1, the sinks on 2
    received = LinkSampler(hosts, receiver) if hosts is not None else contextlib.nullcontext()
    with sampler, received:  # from the warm-up on: the buffers a case warms are its cost
        _call(url, order)  # warm: caches the payloads, connections and buffer pools
        for _ in range(runs):
            elapsed, *answers = _call(url, order).decode().split()
            if [int(a) for a in answers] != _expected(pattern, size):
                raise RuntimeError(f"{mode} {pattern} {size}: callees got {answers}")
            times.append(float(elapsed))
    return MicroCase(
        mode, pattern, size, statistics.median(times), min(times), max(times), runs,
        sampler.peak_rss, sampler.peak_pss, sampler.peak_memory, idle,
        hosts=sum(name != "store" for name in hosts["hosts"]) if hosts else 0,
        link_bits=link.rate if hosts and link else None,
        peak_receive_bits=received.peak_bits if isinstance(received, LinkSampler) else None,
    )  # fmt: skip


def _expected(pattern: str, size: int) -> list[int]:
    if pattern == "gather":
        return [FAN * size]
    return [size] * (1 if pattern.startswith("1to1") else FAN)


def describe_targets(cases: Sequence[MicroCase]) -> list[Outcome]:
    """The targets of ``targets.toml`` that these cases cover, with what they reached."""
    return load_targets().judge(keyed(cases, lambda c: c.key), "micro")


def plot(cases: Sequence[MicroCase], path: Path) -> None:
    """Time against size, one line per mode, one panel per pattern (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patterns = [p for p in PATTERNS if any(c.pattern == p for c in cases)]
    figure, axes = plt.subplots(1, len(patterns), figsize=(4.2 * len(patterns), 3.8), sharey=True)
    axes_list = list(axes) if len(patterns) > 1 else [axes]
    for axis, pattern in zip(axes_list, patterns, strict=True):
        for mode in MODES:
            points = sorted(
                (c.size_bytes, c.median_s) for c in cases if c.mode == mode and c.pattern == pattern
            )
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=mode)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        sizes = sorted({c.size_bytes for c in cases})
        axis.set_xticks(sizes, [format_size(size).replace(" ", "") for size in sizes])
        axis.tick_params(axis="x", labelrotation=45)
        axis.set_title(pattern)
        axis.set_xlabel("payload")
        axis.grid(True, which="both", alpha=0.3)
    axes_list[0].set_ylabel("median end-to-end time (s)")
    axes_list[0].legend()
    figure.suptitle("xdt bench micro: function-to-function transfer time by mode")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
