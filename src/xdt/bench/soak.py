"""``xdt bench soak``: a long mixed workload with a hostile client beside it, and what is left.

A platform runs the functions of :mod:`xdt.bench.soak_functions` in one transfer mode, with
its storage modes pointed at a Redis server and an S3 server of the soak's own
(:class:`~xdt.testing.LocalStores`), so that it can count what they hold at the end. Clients
(``concurrency`` threads) send a fixed count of orders: payloads of 1 KiB to 64 MiB, every
pattern (1to1, scatter, gather, broadcast, shuffle), at most ``MAX_BYTES_IN_FLIGHT`` of payload
in flight at once (64 MiB × fan-out × 64 clients would not fit in a small machine), and check
every answer against the digests they compute themselves. Beside them a hostile client tries,
all along, what a stranger on the host would: ask for reference answers, hand forged references
to a function, send garbage and half requests to the gateway and to the object servers.

Afterwards, once unclaimed objects have had their time to expire, it counts what leaked:
objects still held by sidecars, keys in Redis, objects in S3. The figures a run is judged by:
no wrong answer, no lost invocation (each one ends as a verified answer or a typed error), no
leak, no attack that got through.

:class:`Load` is the client side on its own: the fault tests drive a platform with it while
they kill its parts.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import secrets
import shutil
import socket
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._util.polling import until_sync
from .._util.units import format_size
from ..modes import MODES
from ..testing import LaunchedPlatform, LocalStores
from . import soak_functions
from ._memory import MemorySampler

__all__ = [
    "DEFAULT_INVOCATIONS",
    "PATTERNS",
    "SIZES",
    "HostileClient",
    "Load",
    "Order",
    "Outcome",
    "SoakResult",
    "classify",
    "held_objects",
    "is_typed",
    "mixed_orders",
    "run_soak",
    "soak_spec",
]

DEFAULT_INVOCATIONS = 10_000
PATTERNS = ("1to1", "scatter", "gather", "broadcast", "shuffle")
# (size, weight): mostly small, as invocations are; every tenth at 8 MiB or more.
SIZES = ((1 << 10, 30), (16 << 10, 20), (256 << 10, 20), (1 << 20, 20), (8 << 20, 8), (64 << 20, 2))
FAN = 4
SEEDS = 8  # distinct payloads per size: enough to catch one answered for another
MAX_BYTES_IN_FLIGHT = 1 << 30
FUNCTION_TIMEOUT = 60.0  # the spec's timeout for every soak function
CLIENT_TIMEOUT = FUNCTION_TIMEOUT + 30  # a request still open then has hung
OBJECT_TTL = 15.0  # unclaimed objects (of failed invocations) expire in time for the count


def object_ttl(mode: str) -> float:
    """The soak's object TTL in ``mode``: moto, the S3 emulator, takes tens of seconds per
    call under 64 clients (p50 19 s measured), so that s3 objects expired before their
    receivers pulled them with 15 s; they get the platform's default, 60 s."""
    return 60.0 if mode == "s3" else OBJECT_TTL


OK, WRONG = "ok", "wrong"

_RAISED = re.compile(r"raised (\w+)")
_DETAIL = 400


@dataclass(frozen=True)
class Order:
    """One invocation of the driver: ``pattern`` over payloads of ``size`` from ``seed``."""

    pattern: str
    size: int
    seed: int
    fan: int = FAN

    def body(self) -> bytes:
        return json.dumps(
            {"pattern": self.pattern, "size": self.size, "seed": self.seed, "fan": self.fan}
        ).encode()

    @property
    def payload_bytes(self) -> int:
        """Bytes of payload it puts in flight."""
        return self.size * (1 if self.pattern == "1to1" else self.fan)

    def expected(self) -> list[str]:
        return _expected(self.pattern, self.size, self.seed, self.fan)


_expected_cache: dict[tuple[str, int, int, int], list[str]] = {}
_expected_lock = threading.Lock()


def _expected(pattern: str, size: int, seed: int, fan: int) -> list[str]:
    key = (pattern, size, seed, fan)
    with _expected_lock:  # one client computes it; the others wait rather than redo it
        if key not in _expected_cache:
            _expected_cache[key] = soak_functions.expected(pattern, size, seed, fan)
        return _expected_cache[key]


def mixed_orders(
    count: int,
    *,
    seed: int = 0,
    patterns: Sequence[str] = PATTERNS,
    sizes: Sequence[tuple[int, int]] = SIZES,
) -> list[Order]:
    """``count`` orders drawn (reproducibly from ``seed``) from every pattern and size."""
    rng = random.Random(seed)
    values, weights = [s for s, _ in sizes], [w for _, w in sizes]
    return [
        Order(rng.choice(patterns), rng.choices(values, weights)[0], rng.randrange(SEEDS) * FAN)
        for _ in range(count)
    ]


@dataclass(frozen=True)
class Outcome:
    order: Order
    result: str  # OK, WRONG, or the error: its code, e.g. "function_failed (InstanceFailed)"
    seconds: float
    detail: str = ""  # an error's message, as the platform wrote it (cut short)


def classify(status: int, headers: dict[str, str], body: bytes) -> str:
    """An error answer as a short name: the platform's code (``X-Xdt-Error``), with the root
    cause a failing driver named (``function_failed (SourceUnavailable)``); ``http <status>`` for
    an answer without a code — which xdt never makes, so the tests count it as untyped."""
    code = next((v for k, v in headers.items() if k.lower() == "x-xdt-error"), None)
    if code is None:
        return f"http {status}"
    if code == "function_failed":
        with contextlib.suppress(ValueError, TypeError, KeyError):
            # "function 'soak' raised FunctionFailed: function 'put' raised QuotaExceeded: …"
            # names the root cause last.
            raised = _RAISED.findall(json.loads(body)["message"])
            if raised:
                return f"{code} ({raised[-1]})"
    return code


def run_order(url: str, order: Order, *, timeout: float = CLIENT_TIMEOUT) -> Outcome:
    """Send one order to the driver; check its answer."""
    started = time.monotonic()
    try:
        status, headers, body = _invoke(url, order.body(), timeout)
    except TimeoutError:
        return Outcome(order, "client_timeout", time.monotonic() - started)
    except OSError as error:  # the gateway itself refused or dropped the connection
        return Outcome(order, f"connection ({type(error).__name__})", time.monotonic() - started)
    seconds = time.monotonic() - started
    if status != 200:
        detail = body[:_DETAIL].decode(errors="replace")
        with contextlib.suppress(ValueError, TypeError, KeyError):
            detail = str(json.loads(body)["message"])[:_DETAIL]
        return Outcome(order, classify(status, headers, body), seconds, detail)
    try:
        answers = json.loads(body)
    except ValueError:
        return Outcome(order, WRONG, seconds)
    return Outcome(order, OK if answers == order.expected() else WRONG, seconds)


def _invoke(
    url: str,
    body: bytes,
    timeout: float,
    *,
    function: str = "soak",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """POST to a function through the gateway: (status, headers, body), error answers too.
    OSError when the gateway could not be reached or dropped the connection."""
    request = urllib.request.Request(
        f"{url}/invoke/{function}", data=body, headers=headers or {}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, dict(answer.headers.items()), answer.read()
    except urllib.error.HTTPError as answer:
        with answer:
            return answer.code, dict(answer.headers.items()), answer.read()
    except urllib.error.URLError as error:
        reason = error.reason
        raise reason if isinstance(reason, OSError) else OSError(str(reason)) from None


class _ByteBudget:
    """At most ``limit`` payload bytes in flight; an order bigger than that runs alone."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def taken(self, size: int) -> Iterator[None]:
        size = min(size, self.limit)
        with self._changed:
            self._changed.wait_for(lambda: self.used + size <= self.limit)
            self.used += size
        try:
            yield
        finally:
            with self._changed:
                self.used -= size
                self._changed.notify_all()


class Load:
    """Runs orders against a platform's gateway from ``concurrency`` threads. Each order
    ends as one :class:`Outcome`; :meth:`run` returns them all, in the order they ended.
    :meth:`stop` lets the threads finish the order they are in and take no more."""

    def __init__(
        self,
        url: str,
        orders: Iterable[Order],
        *,
        concurrency: int = 16,
        max_bytes_in_flight: int = MAX_BYTES_IN_FLIGHT,
        on_outcome: Callable[[Outcome], None] = lambda outcome: None,
    ) -> None:
        self.url = url
        self.concurrency = concurrency
        self.outcomes: list[Outcome] = []
        self._orders = iter(orders)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._budget = _ByteBudget(max_bytes_in_flight)
        self._on_outcome = on_outcome
        self._threads = [
            threading.Thread(target=self._client, daemon=True, name=f"soak-client-{i}")
            for i in range(concurrency)
        ]

    def _next(self) -> Order | None:
        with self._lock:
            return None if self._stopped.is_set() else next(self._orders, None)

    def _client(self) -> None:
        while (order := self._next()) is not None:
            with self._budget.taken(order.payload_bytes):
                outcome = run_order(self.url, order)
            with self._lock:
                self.outcomes.append(outcome)
            self._on_outcome(outcome)

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def join(self, timeout: float | None = None) -> list[Outcome]:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return list(self.outcomes)

    @property
    def running(self) -> bool:
        """Some client is still in an order (after :meth:`join` timed out: a hang)."""
        return any(thread.is_alive() for thread in self._threads)

    def run(self) -> list[Outcome]:
        return self.start().join()


# -- the hostile client ----------------------------------------------------------------------


@dataclass
class AttackTally:
    tried: int = 0
    refused: int = 0  # the platform said no (a coded error, a 4xx, or it closed on us)
    got_through: int = 0  # it did what the attack wanted: this must stay 0


_HALF_REQUEST = b"POST /invoke/soak HTTP/1.1\r\nHost: x\r\n"  # and never the rest
_LYING_BODY = (  # declares 100 MiB, sends 1 KiB
    b"POST /invoke/digest HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n" + b"x" * 1024
)


class HostileClient:
    """A stranger on the host, all along the run: each round tries every attack once, against
    the gateway and against every instance's object server (addresses from ``/status``)."""

    ATTACKS = (
        "reference answer", "forged reference", "garbage http", "half request",
        "lying body", "garbage pull",
    )  # fmt: skip

    def __init__(self, platform: LaunchedPlatform, *, pause: float = 0.2) -> None:
        self.platform = platform
        self.pause = pause
        self.tally = {attack: AttackTally() for attack in self.ATTACKS}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="soak-hostile")
        host, port = platform.url.removeprefix("http://").rsplit(":", 1)
        self._gateway = (host, int(port))

    def __enter__(self) -> HostileClient:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._thread.join(timeout=60)

    @property
    def got_through(self) -> int:
        return sum(t.got_through for t in self.tally.values())

    def _run(self) -> None:
        rng = random.Random(1)
        gateway = self._gateway
        attacks: list[tuple[str, Callable[[], list[bool]]]] = [
            ("reference answer", self._reference_answer),
            ("forged reference", self._forged_reference),
            ("garbage http", lambda: self._raw(gateway, rng.randbytes(300) + b"\r\n\r\n")),
            ("half request", lambda: self._raw(gateway, _HALF_REQUEST)),
            ("lying body", lambda: self._raw(gateway, _LYING_BODY)),
            ("garbage pull", lambda: self._garbage_pulls(rng)),
        ]
        while not self._stopped.is_set():
            for attack, action in attacks:
                if self._stopped.is_set():
                    return
                tally = self.tally[attack]
                for refused in action():
                    tally.tried += 1
                    if refused:
                        tally.refused += 1
                    else:
                        tally.got_through += 1
            self._stopped.wait(self.pause)

    def _reference_answer(self) -> list[bool]:
        """Only the platform's own hops may ask for an answer by reference."""
        order = json.dumps({"size": 4 << 20, "seed": 0}).encode()
        try:
            status, _, _ = _invoke(
                self.platform.url, order, CLIENT_TIMEOUT, function="put",
                headers={"X-Xdt-Accept": "ref"},
            )  # fmt: skip
        except OSError:
            return [True]
        return [status in (403, 429, 503)]

    def _forged_reference(self) -> list[bool]:
        """A function handed a forged reference must not get bytes for it."""
        forged = "xdt1." + secrets.token_urlsafe(120)
        try:
            status, _, body = _invoke(
                self.platform.url, forged.encode(), CLIENT_TIMEOUT, function="take"
            )
        except OSError:
            return [True]
        if status != 200:
            return [True]
        return ["refused" in json.loads(body)]

    def _raw(self, address: tuple[str, int], data: bytes) -> list[bool]:
        """Send ``data`` and close at once: a well-behaved server answers 4xx or just drops
        it; it never answers 2xx."""
        try:
            with socket.create_connection(address, timeout=5) as raw:
                raw.sendall(data)
                raw.shutdown(socket.SHUT_WR)
                answer = raw.recv(64)
        except OSError:
            return [True]
        return [not re.match(rb"HTTP/1\.[01] 2", answer)]

    def _garbage_pulls(self, rng: random.Random) -> list[bool]:
        """Bytes that are no PULL, to every object server: a sidecar answers garbage with an
        error frame or closes; it never sends an object's bytes."""
        try:
            status = self.platform.status()
        except OSError:
            return []
        results = []
        for function in status["functions"].values():
            for instance in function["instances"]:
                host, _, port = instance["objects_address"].rpartition(":")
                if not port.isdigit():
                    continue
                try:
                    with socket.create_connection((host, int(port)), timeout=5) as raw:
                        raw.sendall(rng.randbytes(512))
                        raw.shutdown(socket.SHUT_WR)
                        answer = _read_some(raw, 1 << 20)
                except OSError:
                    results.append(True)
                    continue
                results.append(len(answer) < 4096)  # an error frame, never a payload
        return results


def _read_some(raw: socket.socket, limit: int) -> bytes:
    got = b""
    with contextlib.suppress(OSError):
        while len(got) < limit and (chunk := raw.recv(65536)):
            got += chunk
    return got


# -- the whole soak --------------------------------------------------------------------------


def soak_spec(mode: str, stores: LocalStores | None) -> str:
    """The spec of a soak platform, in ``mode``."""
    scale = {
        "soak": "min_scale: 1, max_scale: 2",
        "digest": "min_scale: 1, max_scale: 3",
        "put": "min_scale: 1, max_scale: 3",
        "gather-digest": "min_scale: 1, max_scale: 2",
        "mapper": "min_scale: 1, max_scale: 3",
        "reducer": "min_scale: 1, max_scale: 2",
        "take": "min_scale: 1, max_scale: 1",
    }
    functions = "\n".join(
        f"  - {{name: {name}, handler: 'soak_functions:{name.replace('-', '_')}', {s}, "
        f"timeout: {FUNCTION_TIMEOUT:g}}}"
        for name, s in scale.items()
    )
    where = "".join(f"  {k}: {v}\n" for k, v in (stores.spec() if stores else {}).items())
    return (
        f"platform:\n  transfer: {mode}\n  object_quota: 2GiB\n  object_ttl: {object_ttl(mode):g}\n"
        f"{where}functions:\n{functions}\n"
    )


@dataclass
class SoakResult:
    mode: str
    invocations: int
    succeeded: int
    wrong: int
    errors: dict[str, int]
    leaked_objects: int  # still held by sidecars once every unclaimed object expired
    leaked_store_keys: int  # Redis keys and S3 objects left then
    peak_rss_bytes: int  # summed over the platform's processes (a shared page in each)
    peak_memory_bytes: int  # the footprint: private pages, and each memfd once (bench.micro)
    seconds: float
    concurrency: int
    payload_bytes: int  # sent by drivers to their callees, all invocations
    latency_s: dict[str, float] = field(default_factory=dict)  # p50, p99, max
    examples: dict[str, str] = field(default_factory=dict)  # an error's message, per type
    hostile: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        """Invocations with no verified answer and no typed error: none may be."""
        ended = self.succeeded + self.wrong + sum(self.errors.values())
        untyped = sum(n for error, n in self.errors.items() if not is_typed(error))
        return self.invocations - ended + untyped

    @property
    def clean(self) -> bool:
        return (
            self.wrong == 0
            and self.lost == 0
            and self.leaked_objects == 0
            and self.leaked_store_keys == 0
            and all(t["got_through"] == 0 for t in self.hostile.values())
        )

    def record(self) -> dict[str, object]:
        return {
            "mode": self.mode, "invocations": self.invocations, "succeeded": self.succeeded,
            "wrong": self.wrong, "lost": self.lost, "errors": self.errors,
            "leaked_objects": self.leaked_objects, "leaked_store_keys": self.leaked_store_keys,
            "peak_rss_bytes": self.peak_rss_bytes, "peak_memory_bytes": self.peak_memory_bytes,
            "seconds": round(self.seconds, 2),
            "invocations_per_s": round(self.invocations / self.seconds, 1),
            "concurrency": self.concurrency, "payload_bytes": self.payload_bytes,
            "latency_s": self.latency_s, "hostile": self.hostile, "examples": self.examples,
        }  # fmt: skip


def is_typed(result: str) -> bool:
    """A verified answer, or an error the platform named (not a bare status, a dropped
    connection or a client that gave up waiting)."""
    return not result.startswith(("http ", "connection", "client_timeout"))


def latency(outcomes: Sequence[Outcome]) -> dict[str, float]:
    times = sorted(o.seconds for o in outcomes)
    if not times:
        return {}
    return {
        "p50": round(statistics.median(times), 4),
        "p99": round(times[min(len(times) - 1, int(len(times) * 0.99))], 4),
        "max": round(times[-1], 4),
    }


def held_objects(platform: LaunchedPlatform) -> int:
    return sum(f["objects"] for f in platform.status()["functions"].values())


def run_soak(
    *,
    invocations: int = DEFAULT_INVOCATIONS,
    mode: str = "xdt",
    concurrency: int = 64,
    seed: int = 0,
    hostile: bool = True,
    on_outcome: Callable[[Outcome], None] = lambda outcome: None,
    on_phase: Callable[[str], None] = lambda what: None,
) -> SoakResult:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
    orders = mixed_orders(invocations, seed=seed)
    if mode == "inline":  # inline carries nothing over its limit: the mix stays under it
        orders = [o for o in orders if o.size <= 1 << 20]
    with tempfile.TemporaryDirectory(prefix="xdt-soak-") as folder:
        root = Path(folder)
        root.chmod(0o755)  # isolated functions (their own uids) read their code from here
        shutil.copy(soak_functions.__file__, root / "soak_functions.py")
        on_phase("starting the stores")
        stores = LocalStores(root) if mode in ("elasticache", "s3") else None
        try:
            (root / "xdt.yaml").write_text(soak_spec(mode, stores))
            on_phase(f"starting the platform with transfer: {mode}")
            platform = LaunchedPlatform(root / "xdt.yaml", root / "up.log")
            try:
                platform.wait_ready()
                return _soak(platform, stores, mode, orders, concurrency, hostile, on_outcome,
                             on_phase)  # fmt: skip
            finally:
                platform.stop()
        finally:
            if stores is not None:
                stores.stop()


def _soak(
    platform: LaunchedPlatform,
    stores: LocalStores | None,
    mode: str,
    orders: list[Order],
    concurrency: int,
    hostile: bool,
    on_outcome: Callable[[Outcome], None],
    on_phase: Callable[[str], None],
) -> SoakResult:
    on_phase(f"{len(orders)} invocations, {concurrency} at a time")
    started = time.monotonic()
    sampler = MemorySampler(platform.process.pid, interval=0.25)
    attacker = HostileClient(platform) if hostile else contextlib.nullcontext()
    with sampler, attacker:
        outcomes = Load(platform.url, orders, concurrency=concurrency, on_outcome=on_outcome).run()
    seconds = time.monotonic() - started
    ttl = object_ttl(mode)
    on_phase(f"waiting up to {ttl + 10:g} s for unclaimed objects to expire")

    def store_keys() -> int:
        return stores.redis_keys() + len(stores.s3_objects()) if stores is not None else 0

    until_sync(
        lambda: held_objects(platform) == 0 and store_keys() == 0,
        timeout=ttl + 10, interval=0.5,
    )  # fmt: skip
    results = Counter(o.result for o in outcomes)
    return SoakResult(
        mode=mode,
        invocations=len(orders),
        succeeded=results.pop(OK, 0),
        wrong=results.pop(WRONG, 0),
        errors=dict(results.most_common()),
        leaked_objects=held_objects(platform),
        leaked_store_keys=store_keys(),
        peak_rss_bytes=sampler.peak_rss,
        peak_memory_bytes=sampler.peak_memory,
        seconds=seconds,
        concurrency=concurrency,
        payload_bytes=sum(o.order.payload_bytes for o in outcomes),
        latency_s=latency(outcomes),
        examples={o.result: o.detail for o in reversed(outcomes) if o.result not in (OK, WRONG)},
        hostile=(
            {a: vars(t).copy() for a, t in attacker.tally.items()}
            if isinstance(attacker, HostileClient)
            else {}
        ),
    )


def describe(result: SoakResult) -> str:
    """One line: what a person checks first."""
    verdict = "clean" if result.clean else "NOT clean"
    return (
        f"{result.mode}: {result.succeeded}/{result.invocations} verified, {result.wrong} wrong, "
        f"{result.lost} lost, {sum(result.errors.values())} typed errors, "
        f"{result.leaked_objects} objects and {result.leaked_store_keys} store keys leaked, "
        f"peak memory {format_size(result.peak_memory_bytes)}: {verdict}"
    )
