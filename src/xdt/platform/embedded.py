"""The embedded platform: gateway + activator, autoscaler loops and instance manager in one
process (``xdt up``), instances as child processes.

One loop drives the autoscaler: every ``bucket_size`` (1 s) the platform scrapes each ready
sidecar's ``/xdt/stats`` — a sample of them above three instances, scaled up to all, as
Knative's scraper does — and records the total concurrency plus the requests buffered in the
activator; every ``tick_interval`` (2 s), just after that scrape, each function's KPA decides
how many instances it wants, and the deployment starts or drains instances to match.

Isolated (:mod:`.isolation`: as root, by default), each function runs under a uid of its own;
the run folder (sockets, logs, the functions' private folders) is then searchable, not
listable, by others, and its logs are the platform's alone.

Use ``async with Platform(spec) as platform:`` (``platform.url`` is the gateway); ``xdt up``
runs one in the foreground until Ctrl-C, and :class:`~xdt.testing.LaunchedPlatform`
runs ``xdt up`` as a child process.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from .._core.errors import HandlerLoadError, IsolationError
from .._core.refs import KEYRING_ENV, KeyRing, TransferMode
from .._http.headers import HOP_HEADER
from .._http.listen import Limits, make_runner, port_of, serve_tcp
from .._http.metrics import Metric, render
from .._util.names import http_url
from .._util.polling import until
from .._util.procfs import owner_record, runs
from .autoscaler import sample_size
from .codeversion import code_version
from .deployment import Deployment
from .events import Event, Kind
from .gateway import create_app
from .hosts import HostNetwork
from .instances import Instance, InstanceManager, State, check_import
from .isolation import (
    Identity,
    allocate,
    check_reachable,
    isolation_wanted,
    stop_processes_of,
)
from .janitor import Janitor
from .objects import GatewayObjects
from .preflight import check_functions
from .sandbox import available, sandbox_wanted
from .spec import Spec
from .status import HostsStatus, PlatformStatus, UsageReport
from .stores import EmbeddedStores, embedded_credentials

__all__ = ["Platform"]

SCRAPE_TIMEOUT = 3.0  # Knative's scraper gives a pod 3 s
SHUTDOWN_GRACE = 10.0  # how long stopping waits for requests in flight
GATEWAY_LIMITS = Limits(max_connections=2048)  # the platform's front door (see _http.listen)
RUN_PREFIX = "xdt-"  # run folders: $TMPDIR/xdt-XXXXXXXX
OWNER_FILE = "platform.json"  # in a run folder: the pid and start time of its platform


def remove_stale_run_folders(root: Path | None = None) -> list[Path]:
    """Remove the run folders (sockets, logs, private homes) that platforms killed without a
    chance to stop (SIGKILL) left behind: ours (same uid), whose platform process is gone —
    its pid no longer runs, or runs a later process. The folders removed."""
    removed: list[Path] = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{RUN_PREFIX}*"):
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.stat().st_uid != os.getuid():
                continue
            owner = json.loads((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not a run folder of ours, or one being made right now
        if isinstance(owner, dict) and isinstance(owner.get("pid"), int) and not runs(owner):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class Platform:
    def __init__(
        self,
        spec: Spec,
        keyring: KeyRing | None = None,
        *,
        on_event: Callable[[str, str | None, Event], None] | None = None,
    ) -> None:
        self.spec = spec
        self.keyring = keyring or _keyring_for(spec)
        self.on_event = on_event
        self.url = ""
        self.inner_url = ""  # where instances call the gateway: url, or with hosts their side
        self.deployments: dict[str, Deployment] = {}
        self.started_at = time.monotonic()
        self._run_dir: Path | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        # Whether new invocations from outside are taken (readiness): from when every
        # deployment exists until shutdown begins. Calls between functions are always taken.
        self.accepting = False
        self._session: aiohttp.ClientSession | None = None
        self._loops: list[asyncio.Task[None]] = []
        self.kept_logs: Path | None = None
        self.refused: collections.Counter[tuple[int, str]] = collections.Counter()  # /metrics
        self.cleaned: list[Path] = []  # run folders of platforms that died without stopping
        self.stores: EmbeddedStores | None = None
        self._janitor: Janitor | None = None
        self._usage_lock = asyncio.Lock()
        self._usage_read: tuple[float, UsageReport] | None = None  # (began at, the reading)
        self.identities: dict[str, Identity] | None = None  # None: not isolated
        self.sandboxed = False  # isolated functions in bubblewrap (xdt.platform.sandbox)
        self.objects: GatewayObjects | None = None  # callers' uploads and downloads
        self.hosts: HostNetwork | None = None  # platform.hosts: the test hosts
        self._inner_listener: asyncio.Server | None = None  # the gateway, for the hosts

    async def __aenter__(self) -> Platform:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.close(grace=0)  # a half-started platform leaves nothing behind
            raise

    async def _start(self) -> None:
        settings = self.spec.platform
        if isolation_wanted(settings):
            self.sandboxed = sandbox_wanted(settings.sandbox, isolated=True)
            if self.sandboxed and available() is None:
                raise IsolationError(
                    "platform.sandbox: on runs each function in a bubblewrap sandbox, and "
                    "bwrap (Debian's bubblewrap) or setpriv is not installed: apt-get install "
                    "bubblewrap, or set sandbox: auto or off"
                )
            # Before anything starts: a function that cannot read its own files under its
            # uid is a clear error now, not a crash loop later.
            self.identities = allocate(self.spec.functions)
            for function in self.spec.functions:
                identity = self.identities[function.name]
                check_reachable(function, identity, sandboxed=self.sandboxed)
        self.cleaned = remove_stale_run_folders()
        if settings.hosts:
            self.hosts = HostNetwork(settings.hosts, settings.store_host, settings.link)
            await asyncio.to_thread(self.hosts.start)
        # Short: Unix socket paths (runtime sockets live here) are limited to 107 bytes.
        self._run_dir = Path(tempfile.mkdtemp(prefix=RUN_PREFIX))
        (self._run_dir / OWNER_FILE).write_text(json.dumps(owner_record()))
        if self.identities is not None:
            # Function uids must reach their sockets here by name; they may not list it.
            self._run_dir.chmod(0o711)
        await check_functions(
            self.spec.functions, self.identities, sandboxed=self.sandboxed, run_dir=self._run_dir
        )
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
        )
        self._runner = make_runner(create_app(self), GATEWAY_LIMITS)
        await self._runner.setup()
        # Bound now (sidecars are told this URL), served once every deployment exists: a
        # client that connects earlier waits in the backlog instead of getting a 404.
        self._listener = await serve_tcp(
            self._runner, settings.host, settings.port, GATEWAY_LIMITS, what="the gateway",
            reuse_address=True, start_serving=False,
        )  # fmt: skip
        self.url = http_url(settings.host, port_of(self._listener))
        # What instances call other functions through: this URL, or with test hosts the
        # gateway on the machine's address on their network (their 127.0.0.1 is their own).
        self.inner_url = self.url
        if self.hosts is not None:
            self._inner_listener = await serve_tcp(
                self._runner, self.hosts.machine_address, 0, GATEWAY_LIMITS,
                what="the gateway (test hosts' side)", start_serving=False,
            )  # fmt: skip
            self.inner_url = http_url(self.hosts.machine_address, port_of(self._inner_listener))
        self.stores = EmbeddedStores(self.spec, on_event=self._store_event, **self._store_place())
        store_settings = await self.stores.start()
        embedded_s3 = settings.s3_endpoint_url is None and TransferMode.S3 in self.spec.modes()
        manager = InstanceManager(
            self.spec,
            self.keyring,
            self._run_dir,
            self.inner_url,
            self._session,
            self._instance_event,
            stores=store_settings,
            sidecar_env=embedded_credentials() if embedded_s3 else None,
            identities=self.identities,
            sandboxed=self.sandboxed,
            hosts=self.hosts,
        )
        self.objects = GatewayObjects(
            self.spec, self.keyring, manager.objects_dir, store_settings,
            function_uids=[i.uid for i in (self.identities or {}).values()],
            credentials=embedded_credentials() if embedded_s3 else None,
            host=self.hosts.machine_address if self.hosts else None,
            hosts_network=self.hosts.network if self.hosts else None,
        )  # fmt: skip
        await self.objects.start()
        self._janitor = Janitor(
            self.spec, store_settings,
            credentials=embedded_credentials() if embedded_s3 else None,
            on_removed=self._swept,
        )  # fmt: skip
        for function in self.spec.functions:
            self.deployments[function.name] = Deployment(
                function, settings, manager, mode=self.spec.mode_of(function)
            )
        for deployment in self.deployments.values():
            deployment.reconcile()
        self._loops = [asyncio.create_task(self._autoscale(settings.autoscaler.bucket_size))]
        if self._inner_listener is not None:
            await self._inner_listener.start_serving()
        await self._listener.start_serving()
        self.accepting = True

    def _store_place(self) -> dict[str, Any]:
        """Where the embedded stores run: this machine's loopback; with test hosts, the
        machine's address on their network, or the store host (platform.store_host)."""
        if self.hosts is None:
            return {}
        if self.hosts.store is not None:
            return {"host": self.hosts.store.address, "enter": self.hosts.store.enter()}
        return {"host": self.hosts.machine_address}

    @property
    def in_flight(self) -> int:
        """Requests being served or buffered, on every function."""
        return sum(d.in_flight + d.throttler.queued for d in self.deployments.values())

    async def close(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop: no new invocations from outside (503 with ``Retry-After``, and ``/readyz``
        says so); no more scaling; up to ``grace`` seconds for the requests in flight (the
        gateway still serves calls between functions, so theirs work); then every instance,
        then the gateway. Instance logs are kept if any instance crashed or failed
        (:attr:`kept_logs`), else removed with the run directory."""
        self.accepting = False
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await until(lambda: not self.in_flight, timeout=grace)  # requests end in many places
        await asyncio.gather(*(d.close() for d in self.deployments.values()))
        if self._janitor is not None:
            await self._janitor.close()  # before the stores: an embedded S3 goes with them
        if self.identities is not None:
            # What a function started and left running (a daemon outside its process group)
            # goes too: its uid is this platform's alone.
            stop_processes_of(identity.uid for identity in self.identities.values())
        if self.objects is not None:
            await self.objects.close()
        if self.stores is not None:
            await self.stores.close()
        if self._listener is not None:
            self._listener.close()
        if self._inner_listener is not None:
            self._inner_listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        if self._run_dir is not None:
            troubled = any(d.troubled for d in self.deployments.values())
            if troubled:
                for leftover in self._run_dir.iterdir():  # sockets, private folders
                    if leftover.name != "logs":
                        if leftover.is_dir() and not leftover.is_symlink():
                            shutil.rmtree(leftover, ignore_errors=True)
                        else:
                            leftover.unlink(missing_ok=True)
                self.kept_logs = self._run_dir / "logs"  # no owner file: not stale, kept
            else:
                shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None
        if self.hosts is not None:
            await asyncio.to_thread(self.hosts.close)  # every process in them has stopped

    # -- loops -------------------------------------------------------------------------------

    async def _autoscale(self, bucket: float) -> None:
        """Scrape every bucket; decide every tick, right after that bucket's scrape, so a
        decision never misses the newest bucket (Knative runs the two on separate timers)."""
        loop = asyncio.get_running_loop()
        tick = self.spec.platform.autoscaler.tick_interval
        next_scrape = next_tick = loop.time()
        while True:
            next_scrape += bucket
            await asyncio.sleep(max(0.0, next_scrape - loop.time()))
            now = time.monotonic()
            await asyncio.gather(*(self._scrape_one(d, now) for d in self.deployments.values()))
            if loop.time() >= next_tick + tick - bucket / 2:
                next_tick += tick
                for deployment in self.deployments.values():
                    deployment.tick(time.monotonic())

    async def _scrape_one(self, deployment: Deployment, now: float) -> None:
        ready = [i for i in deployment.instances if i.state is State.READY]
        total = 0.0
        if ready:
            sample = random.sample(ready, sample_size(len(ready)))
            reports = await asyncio.gather(*(self._stats(i) for i in sample))
            seen = [r for r in reports if r is not None]
            if seen:
                total = sum(seen) / len(seen) * len(ready)
        deployment.observe(now, total)

    async def _stats(self, instance: Instance) -> float | None:
        assert self._session is not None
        try:
            async with self._session.get(
                f"{instance.ingress_url}/xdt/stats",
                headers={HOP_HEADER: self.keyring.hop_secret()},
                timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT),
            ) as response:
                stats = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        instance.objects, instance.bytes_held = stats["objects"], stats["bytes_held"]
        concurrency: float = stats["average_concurrency"]
        return concurrency

    def _store_event(self, server: str, event: Event) -> None:
        if self.on_event is not None:
            self.on_event("stores", server, event)

    def _instance_event(self, instance: Instance, event: Event) -> None:
        self.deployments[instance.function.name].on_instance_event(instance, event)
        if event.kind is Kind.FAILED and self._janitor is not None:
            self._janitor.instance_failed(instance.id, instance.function.name)
        if self.on_event is not None:
            self.on_event(instance.function.name, instance.id, event)

    def _swept(self, function: str, instance: str, count: int) -> None:
        event = Event(Kind.SWEPT, f"removed {count} S3 keys it left when it failed")
        if function in self.deployments:
            self.deployments[function].record(event, instance)
        if self.on_event is not None:
            self.on_event(function, instance, event)

    # -- reporting ---------------------------------------------------------------------------

    async def watch(self, interval: float = 1.0) -> None:
        """Until cancelled: roll each function whose code changed (:mod:`.codeversion`) to
        its new code, once that code loads (:func:`.instances.check_import`); code that does
        not load is refused with its error, and the old code goes on serving. A change to the
        spec file itself is said, not applied: it takes a restart."""
        spec_file = self.spec.path

        def look() -> tuple[dict[str, str], bytes | None]:
            """Each function's code version, and the spec file's text (one pass, off the loop)."""
            by_folder: dict[Path, str] = {}  # functions that share a folder share its hash
            for f in self.spec.functions:
                if f.folder not in by_folder:
                    by_folder[f.folder] = code_version(f, spec_file)
            try:
                text = spec_file.read_bytes() if spec_file is not None else None
            except OSError:
                text = None
            return {f.name: by_folder[f.folder] for f in self.spec.functions}, text

        seen, spec_seen = await asyncio.to_thread(look)
        while True:
            await asyncio.sleep(interval)
            now, spec_now = await asyncio.to_thread(look)
            for function in self.spec.functions:
                if now[function.name] != seen[function.name]:
                    await self.roll(function.name, f"its code changed to {now[function.name]}")
            seen = now
            if spec_now != spec_seen:
                spec_seen = spec_now
                if self.on_event is not None:
                    self.on_event(
                        "spec", None,
                        Event(Kind.NOT_ROLLED, f"{spec_file} changed: the spec is read at start, "
                              "so restart xdt up to apply it (functions, settings)"),
                    )  # fmt: skip

    async def roll(self, name: str, reason: str) -> bool:
        """Roll function ``name`` to the code now in its folder; whether it was rolled."""
        function = self.spec.function(name)
        deployment = self.deployments.get(name)
        if function is None or deployment is None or self._run_dir is None:
            return False
        if function.handler is not None:
            identity = self.identities.get(name) if self.identities else None
            try:
                await check_import(
                    function, identity, sandboxed=self.sandboxed, run_dir=self._run_dir
                )
            except HandlerLoadError as exc:
                event = Event(Kind.NOT_ROLLED, f"{reason}, but it does not load: {exc}")
                deployment.record(event)
                if self.on_event is not None:
                    self.on_event(name, None, event)
                return False
        deployment.roll(reason)
        if self.on_event is not None:
            self.on_event(name, None, Event(Kind.ROLLED, reason))
        return True

    async def roll_all(self, reason: str) -> None:
        for name in list(self.deployments):
            await self.roll(name, reason)

    @property
    def logs_dir(self) -> Path | None:
        """Where the instance logs are (while it runs; after, :attr:`kept_logs`)."""
        return self._run_dir / "logs" if self._run_dir is not None else None

    def status(self) -> PlatformStatus:
        return {
            "url": self.url,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "stores": self.stores.started if self.stores is not None else [],
            "stores_down": self.stores.down() if self.stores is not None else [],
            "isolation": self.identities is not None,
            "sandbox": self.sandboxed,
            "logs": str(self.logs_dir) if self.logs_dir is not None else "",
            "objects": self.objects.status() if self.objects is not None else None,
            "hosts": self._hosts_status(),
            "functions": {name: d.status() for name, d in self.deployments.items()},
        }

    def _hosts_status(self) -> HostsStatus | None:
        if self.hosts is None or self.hosts.index is None:
            return None
        return self.hosts.describe(self.inner_url)

    async def usage(self) -> UsageReport:
        """What each function used since the platform started, with its billed memory,
        read fresh from every instance. One reading at a time: a caller gets the first one
        that began after it asked, so a flood of requests costs one reading per reading's
        time, not one each."""
        asked = time.monotonic()
        async with self._usage_lock:
            if self._usage_read is not None and self._usage_read[0] >= asked:
                return self._usage_read[1]
            began = time.monotonic()
            report = await self._read_usage()
            self._usage_read = (began, report)
            return report

    async def _read_usage(self) -> UsageReport:
        names = list(self.deployments)
        used = await asyncio.gather(*(self.deployments[n].usage() for n in names))
        return {
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "functions": {
                name: {
                    "memory_bytes": self.deployments[name].spec.memory,
                    "transfer": self.deployments[name].mode.label,
                    **usage.record(),  # type: ignore[typeddict-item]  # its fields
                }
                for name, usage in zip(names, used, strict=True)
            },
        }

    def metrics(self) -> str:
        """The platform's Prometheus metrics, one sample per function."""
        gauges: list[tuple[str, str, Callable[[Deployment], int]]] = [
            ("xdt_instances_ready", "Instances serving.", lambda d: d.ready_count),
            ("xdt_instances_draining", "Instances draining.", lambda d: d.count(State.DRAINING)),
            ("xdt_instances_desired", "Instances the autoscaler wants.", lambda d: d.desired),
            ("xdt_requests_in_flight", "Requests at instances.", lambda d: d.throttler.in_flight),
            ("xdt_requests_queued", "Requests buffered in the activator.",
             lambda d: d.throttler.queued),
            ("xdt_panic_mode", "1 while the autoscaler panics.", lambda d: int(d.panicking)),
            ("xdt_objects_held", "Unclaimed objects in the function's sidecars.",
             lambda d: sum(i.objects for i in d.instances)),
        ]  # fmt: skip
        families = []
        for name, text, value in gauges:
            metric = Metric(name, "gauge", text)
            for function, deployment in self.deployments.items():
                metric.add(value(deployment), function=function)
            families.append(metric)
        held = Metric("xdt_object_bytes_held", "gauge", "Bytes of unclaimed objects in the "
                      "function's sidecars (as they last said).")  # fmt: skip
        answers = Metric(
            "xdt_requests_total", "counter", "Invocations answered, by HTTP status and error code."
        )
        latency = Metric(
            "xdt_request_duration_seconds", "histogram",
            "Time from the gateway taking an invocation to its answer, buffering included.",
        )  # fmt: skip
        moved = Metric(
            "xdt_payload_bytes_total", "counter",
            "Payload bytes the function's sidecars sent, by how they travelled (as last said).",
        )  # fmt: skip
        for function, deployment in self.deployments.items():
            held.add(sum(i.bytes_held for i in deployment.instances), function=function)
            for (status, code), count in sorted(deployment.outcomes.items()):
                answers.add(count, function=function, status=str(status), code=code)
            latency.add_histogram(deployment.latency, function=function)
            used = sum((i.usage for i in deployment.instances), deployment.retired)
            for way, count in sorted(used.sent_bytes.items()):
                moved.add(count, function=function, way=way)
        refused = Metric(
            "xdt_gateway_refused_total", "counter",
            "Invocations the gateway refused before any function (no such function, too "
            "large, forbidden, shutting down), by HTTP status and error code.",
        )  # fmt: skip
        for (status, code), count in sorted(self.refused.items()):
            refused.add(count, status=str(status), code=code)
        return render([*families, held, answers, latency, moved, refused, *self._object_metrics()])

    def _object_metrics(self) -> list[Metric]:
        if self.objects is None:
            return []
        now = self.objects.status()
        held = Metric("xdt_gateway_objects_held", "gauge", "Callers' uploads the gateway holds.")
        held.add(now["objects"])
        held_bytes = Metric(
            "xdt_gateway_object_bytes_held", "gauge", "Bytes of the uploads the gateway holds."
        )
        held_bytes.add(now["bytes_held"])
        done = Metric(
            "xdt_gateway_object_requests_total", "counter",
            "Requests to the gateway's /objects, by what was done (refused: a function's).",
        )  # fmt: skip
        for what in ("uploads", "downloads", "releases", "refused"):
            done.add(now[what], operation=what.removesuffix("s"))
        return [held, held_bytes, done]


def _keyring_for(spec: Spec) -> KeyRing:
    """The spec's key file, else ``$XDT_KEYRING``, else a fresh key ring for this run only.
    A key ring that is there but malformed is an error, never silently replaced."""
    if spec.platform.key_file is not None:
        return KeyRing.from_file(spec.platform.key_file)
    if os.environ.get(KEYRING_ENV) is not None:
        return KeyRing.from_env()
    return KeyRing.generate()
