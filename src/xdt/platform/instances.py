"""Instances: one sidecar process and one function process each, started, probed, restarted,
drained and stopped here.

An instance's life::

    STARTING ──(ready probe passes)──► READY ──(scale-down)──► DRAINING ──► STOPPED
        │                                 │ function process crashed          ▲
        │                                 └──► RESTARTING ──► READY           │
        └──(cannot start / sidecar died)─────────────────────────────► FAILED ┘

- The sidecar starts first on free loopback ports and prints them (one JSON line); the
  function process then starts with ``$XDT_EGRESS`` (its sidecar's egress, with the secret
  path only this function knows) and, for a ``command``, ``$PORT``. Only the sidecar holds
  the key ring and store passwords, which it reads from a pipe.
- Isolated (:mod:`.isolation`), the function process runs under its function's own uid, with
  a private folder for ``$HOME`` and ``$TMPDIR`` (and the runtime's socket) that goes when the
  instance stops; the sidecar stays under the platform's uid.
- READY means the sidecar's ``/xdt/ready`` probe, which probes the function, passed.
- A crashed function process is restarted in place (the sidecar and its objects stay), with a
  growing delay if it keeps crashing, like a Kubernetes container restart.
- DRAINING gets no new requests and stops only when it has no in-flight request **and** its
  sidecar holds no live object (pulled, released or expired) — the keep-alive that lets a
  receiver pull from a sender the autoscaler has already given up — or ``drain_timeout`` passes.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import enum
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp

from .._core.errors import HandlerLoadError, InstanceStartError
from .._core.refs import KEYRING_ENV, KeyRing
from .._http.client import ConnectionPool
from .._http.headers import HOP_HEADER
from .._util.logs import StampedLines
from .._util.names import http_url
from .._util.polling import until
from .._util.process import (
    become,
    chain,
    die_with_parent,
    free_port,
    isolated_child,
    limit_memory,
    terminate,
)
from .._util.tasks import TaskSet
from ..modes import StoreSettings
from ..sidecar.config import Faces, Launch, RunsAs, SidecarConfig
from ..sidecar.usage import Usage
from .codeversion import code_version
from .events import Event, Kind
from .hosts import Host, HostNetwork
from .isolation import Identity, command_root, make_private_folder, remove_private_folder
from .sandbox import Sandbox
from .spec import FunctionSpec, Spec
from .status import InstanceStatus

__all__ = ["Instance", "InstanceManager", "State", "check_import", "confine", "function_env"]

PROBE_PERIOD = 0.025  # Knative's queue-proxy probes an unready container every 25 ms
START_TIMEOUT = 60.0
RUNTIME_THREADS = 64  # sync handlers at once when concurrency is unlimited
STOP_GRACE = 5.0  # SIGTERM, then SIGKILL after this
DRAIN_POLL = 0.1
USAGE_TIMEOUT = 3.0  # asking a sidecar what it used
RESTART_DELAYS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)  # a crash loop backs off, up to 10 s
MAX_FAILED_RESTARTS = 5  # then the instance is FAILED and replaced
CRASH_LOOP_RESET = 10.0  # a process that ran this long before crashing starts the backoff over


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


OnEvent = Callable[["Instance", Event], None]


@dataclass(eq=False)
class Instance:
    id: str
    function: FunctionSpec
    log_path: Path
    identity: Identity | None = None  # the function's own uid and gid, when isolated
    state: State = State.STARTING
    sidecar: asyncio.subprocess.Process | None = None
    process: asyncio.subprocess.Process | None = None
    ingress_url: str = ""
    egress_url: str = ""
    objects_address: str = ""
    upstream: str = ""
    egress_socket: str = ""  # the Python SDK's same-host way to its sidecar
    private: Path | None = None  # isolated: the function's own folder (HOME, TMPDIR, socket)
    function_port: int | None = None
    restarts: int = 0
    crashes: int = 0  # the function process's crashes in a row, without a steady run between
    crashed_at: float | None = None  # when it last crashed (monotonic)
    code_version: str = ""  # a hash of the function's files (.codeversion), when it started
    started_at: float = field(default_factory=time.monotonic)
    ready_at: float | None = None
    objects: int = 0
    bytes_held: int = 0
    stopping: bool = False
    pool: ConnectionPool | None = None  # the activator's connections to the sidecar's ingress
    tasks: TaskSet = field(default_factory=TaskSet)
    usage: Usage = field(default_factory=Usage)  # as its sidecar last reported it
    usage_asked: float = 0.0  # when that reading was asked for
    output: asyncio.Task[None] | None = None  # a command's output, stamped into its log
    host: Host | None = None  # its test host (platform.hosts); None: this machine's network
    left_host: bool = False  # counted off its host's instances (placement)

    @property
    def serving(self) -> bool:
        return self.state is State.READY

    def describe(self, in_flight: int = 0) -> InstanceStatus:
        return {
            "id": self.id,
            "state": self.state.value,
            "sidecar_pid": self.sidecar.pid if self.sidecar else None,
            "function_pid": self.process.pid if self.process else None,
            "uid": self.identity.uid if self.identity else None,
            "ingress": self.ingress_url,
            "objects_address": self.objects_address,
            "objects": self.objects,
            "bytes_held": self.bytes_held,
            "restarts": self.restarts,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "log": str(self.log_path),
            "in_flight": in_flight,
            "crashes": self.crashes,
            "code_version": self.code_version,
            "host": self.host.name if self.host else None,
        }


class InstanceManager:
    """Starts and stops the instances of every function. ``on_event(instance, event)`` hears
    each state change (:mod:`.events`)."""

    def __init__(
        self,
        spec: Spec,
        keyring: KeyRing,
        run_dir: Path,
        activator_url: str,
        session: aiohttp.ClientSession,
        on_event: OnEvent,
        stores: StoreSettings | None = None,
        sidecar_env: dict[str, str] | None = None,
        identities: Mapping[str, Identity] | None = None,
        sandboxed: bool = False,
        hosts: HostNetwork | None = None,
    ) -> None:
        self.spec = spec
        self.hosts = hosts  # None: every instance on this machine's own network
        self.platform = spec.platform
        self.identities = identities  # None: functions run under our uid (no isolation)
        self.sandboxed = sandboxed  # isolated functions in bubblewrap (.sandbox)
        self.stores = stores or StoreSettings()
        self.sidecar_env = sidecar_env or {}  # e.g. credentials for an embedded S3 emulator
        self.keyring = keyring
        self.run_dir = run_dir
        self.activator_url = activator_url
        self.session = session
        self.on_event = on_event
        self._counter = itertools.count(1)
        (run_dir / "logs").mkdir(mode=0o700, parents=True, exist_ok=True)
        # Sidecars' same-host object sockets: the platform's alone (functions may not even
        # look in), so none can be taken or reached by a function.
        self.objects_dir = run_dir / "objects"
        self.objects_dir.mkdir(mode=0o700, exist_ok=True)
        # With test hosts, a folder of them per host: a receiver finds its source's socket
        # (the same-host path) only when both are on one host.
        for host in hosts.hosts if hosts else ():
            (self.objects_dir / host.name).mkdir(mode=0o700, exist_ok=True)

    # -- starting ----------------------------------------------------------------------------

    def create(self, function: FunctionSpec) -> Instance:
        """A new STARTING instance of ``function``; :meth:`start` brings it up."""
        instance_id = f"{function.name}-{next(self._counter)}"
        identity = self.identities[function.name] if self.identities is not None else None
        log = self.run_dir / "logs" / f"{instance_id}.log"
        host = self.hosts.place(function.name, function.host) if self.hosts else None
        return Instance(instance_id, function, log, identity=identity, host=host)

    async def start(self, instance: Instance) -> None:
        """Start the processes and wait until READY. Raises :class:`InstanceStartError`."""
        try:
            if instance.identity is not None:
                instance.private = self.run_dir / instance.id.rpartition("-")[2]
                make_private_folder(instance.private, instance.identity)
            instance.code_version = await asyncio.to_thread(
                code_version, instance.function, self.spec.path
            )
            await self._start_sidecar(instance)
            await self._start_function(instance)
            await self._wait_ready(instance)
        except BaseException as exc:
            await self._kill(instance)
            instance.state = State.FAILED
            if isinstance(exc, InstanceStartError | OSError):
                self.on_event(instance, Event(Kind.FAILED, str(exc)))
                raise InstanceStartError(str(exc)) from None
            raise
        instance.state = State.READY
        instance.ready_at = time.monotonic()
        self._spawn(instance, self._watch_sidecar(instance))
        self._spawn(instance, self._watch_function(instance))
        self.on_event(instance, Event(Kind.READY))

    async def _start_sidecar(self, instance: Instance) -> None:
        function = instance.function
        # Sockets are named by number: a Unix socket path must stay under 108 bytes.
        number = instance.id.rpartition("-")[2]
        ingress_socket = str(self.run_dir / f"{number}.in.sock")
        instance.egress_socket = str(self.run_dir / f"{number}.out.sock")
        if function.handler is not None:
            # Isolated, the runtime (under the function's uid) binds its socket in its own
            # folder: the run folder is not writable by it.
            where = instance.private / "runtime.sock" if instance.private else None
            instance.upstream = f"unix:{where or self.run_dir / (number + '.sock')}"
        else:
            instance.function_port = free_port()
            instance.upstream = f"http:{instance.function_port}"
        identity = instance.identity
        host = instance.host
        config = SidecarConfig(
            function=function.name,
            instance=instance.id,
            tenant=function.tenant,
            upstream=instance.upstream,
            activator_url=self.activator_url,
            concurrency=function.concurrency,
            timeout=function.timeout,
            object_quota=self.platform.object_quota,
            transfer=self.spec.transfer_of(function),
            stores=self.stores,
            faces=Faces(
                host=host.address if host else self.platform.instance_host,
                ingress_socket=ingress_socket,
                egress_socket=instance.egress_socket,
                objects_dir=str(self.objects_dir / host.name if host else self.objects_dir),
            ),
            runs_as=RunsAs(identity.uid, identity.gid) if identity else None,
            keep_warm=self.platform.keep_warm,
            error_detail=self.platform.error_detail,
            pull_timeout=self.platform.pull_timeout,
        )
        # The configuration (whose Redis URL may hold a password) and the key ring go over a
        # pipe: not on the command line, which every local user can read in
        # /proc/<pid>/cmdline, nor in the environment, which /proc/<pid>/environ keeps for the
        # process's whole life.
        launch = Launch(config, self.keyring)
        env = {k: v for k, v in os.environ.items() if k != KEYRING_ENV} | self.sidecar_env
        with _log(instance) as log:
            instance.sidecar = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "xdt.sidecar", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=log, env=env, start_new_session=True,
                preexec_fn=chain(host.enter() if host else None, die_with_parent),
            )  # fmt: skip
        assert instance.sidecar.stdin is not None
        instance.sidecar.stdin.write(launch.to_json().encode())
        instance.sidecar.stdin.close()
        assert instance.sidecar.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                line = await instance.sidecar.stdout.readline()
        except TimeoutError:
            raise InstanceStartError(f"{instance.id}: the sidecar did not start in time") from None
        if not line:
            raise InstanceStartError(
                f"{instance.id}: the sidecar exited at start; see {instance.log_path}"
                + _tail(instance.log_path)
            )
        ports = json.loads(line)
        address = host.address if host else self.platform.instance_host
        instance.pool = ConnectionPool(
            address, ports["ingress"], unix_path=ingress_socket,
            # An answer is at most what the function may hand its sidecar, plus an error's
            # room; one over a MiB is passed on to the caller chunk by chunk, never held.
            max_answer=max(self.spec.platform.inline_limit, self.spec.platform.object_quota)
            + (64 << 10),
            stream_over=1 << 20,
        )  # fmt: skip
        instance.ingress_url = http_url(address, ports["ingress"])
        # The secret path is the TCP egress's only credential: any local process can connect.
        instance.egress_url = http_url(address, ports["egress"]) + str(ports["egress_path"])
        instance.objects_address = ports["objects"]

    async def _start_function(self, instance: Instance) -> None:
        function = instance.function
        # Nothing of the platform's: no xdt settings, and no store credentials (a function
        # reaches Redis or S3 only through references its sidecar resolves).
        env = function_env(function)
        env.update(
            XDT_EGRESS=instance.egress_url,
            XDT_EGRESS_SOCKET=instance.egress_socket,
            XDT_FUNCTION=function.name,
            XDT_INSTANCE=instance.id,
            PYTHONUNBUFFERED="1",
        )
        if function.handler is not None:
            socket_path = instance.upstream.removeprefix("unix:")
            threads = function.concurrency or RUNTIME_THREADS
            argv = [sys.executable, "-m", "xdt.runtime", "--handler", function.handler,
                    "--folder", str(function.folder), "--socket", socket_path,
                    "--threads", str(threads), "--peer-uid", str(os.getuid())]  # fmt: skip
        else:
            assert function.command is not None and instance.function_port is not None
            env["PORT"] = str(instance.function_port)
            argv = list(function.command)
        argv, options = confine(
            function, argv, env, instance.identity, instance.private,
            sandboxed=self.sandboxed, sockets=[Path(instance.egress_socket)],
            enter=instance.host.enter() if instance.host else None,
        )  # fmt: skip
        if function.memory_limit is not None:
            options["preexec_fn"] = functools.partial(
                _limited, options["preexec_fn"], function.memory_limit
            )
        # The Python runtime stamps its own lines (time, instance, request id); a command's
        # come through a pipe and are stamped here (xdt._util.logs).
        stamped_here = function.handler is None
        with _log(instance) as log:
            output: Any = asyncio.subprocess.PIPE if stamped_here else log
            try:
                instance.process = await asyncio.create_subprocess_exec(
                    *argv, cwd=function.folder, env=env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=output, stderr=asyncio.subprocess.STDOUT if stamped_here else log,
                    start_new_session=True, **options,
                )  # fmt: skip
            except OSError as exc:
                raise InstanceStartError(
                    f"{instance.id}: cannot run {argv[0]!r}: {exc.strerror}"
                ) from None
            except subprocess.SubprocessError as exc:  # preexec_fn failed in the child
                raise InstanceStartError(
                    f"{instance.id}: cannot start {argv[0]!r}: {exc}"
                ) from None
        if instance.process.stdout is not None:
            instance.output = instance.tasks.spawn(_copy_output(instance, instance.process.stdout))

    async def _wait_ready(self, instance: Instance) -> None:
        url = f"{instance.ingress_url}/xdt/ready"

        async def ready() -> bool:
            for process, what in ((instance.process, "function"), (instance.sidecar, "sidecar")):
                if process is not None and process.returncode is not None:
                    await _output_written(instance)
                    raise InstanceStartError(
                        f"{instance.id}: the {what} process exited with code "
                        f"{process.returncode} before it was ready" + _tail(instance.log_path)
                    )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    return r.status == 200
            return False

        deadline = instance.function.ready_timeout
        if not await until(ready, timeout=deadline, interval=PROBE_PERIOD):
            asked = (
                f"; is it listening on $PORT={instance.function_port}?"
                if instance.function.command is not None
                else ""
            )
            raise InstanceStartError(
                f"{instance.id}: not ready after {deadline:g} s (ready_timeout){asked}"
                + _tail(instance.log_path)
            )

    # -- watching ----------------------------------------------------------------------------

    async def _watch_sidecar(self, instance: Instance) -> None:
        assert instance.sidecar is not None
        code = await instance.sidecar.wait()
        if instance.stopping:
            return
        instance.state = State.FAILED
        self.on_event(instance, Event(Kind.FAILED, f"the sidecar exited with code {code}"))
        await self._kill(instance)
        if instance.pool is not None:
            instance.pool.close()
        instance.state = State.STOPPED

    async def _watch_function(self, instance: Instance) -> None:
        previous = State.READY  # where a restarted instance goes back to: READY or DRAINING
        crashes = 0
        while True:
            assert instance.process is not None
            since = time.monotonic()
            code = await instance.process.wait()
            if instance.stopping or instance.state is State.FAILED:
                return
            if instance.state is not State.RESTARTING:
                previous = instance.state
            instance.state = State.RESTARTING
            await _output_written(instance)
            instance.crashes = 1 if time.monotonic() - since > CRASH_LOOP_RESET else crashes + 1
            instance.crashed_at = time.monotonic()
            self.on_event(
                instance,
                Event(
                    Kind.CRASHED,
                    f"the function process exited with code {code}" + _tail(instance.log_path),
                ),
            )
            crashes = instance.crashes
            await asyncio.sleep(RESTART_DELAYS[min(crashes, len(RESTART_DELAYS)) - 1])
            if instance.stopping:
                return
            try:
                await self._start_function(instance)
                await self._wait_ready(instance)
            except InstanceStartError as exc:
                await self._kill_process(instance.process)  # it may still run, unready
                if crashes >= MAX_FAILED_RESTARTS:
                    # Give the instance up: the deployment replaces it with a fresh one.
                    instance.state = State.FAILED
                    self.on_event(
                        instance, Event(Kind.FAILED, f"{crashes} restarts in a row failed: {exc}")
                    )
                    await self._kill(instance)
                    return
                self.on_event(instance, Event(Kind.RESTART_FAILED, str(exc)))
                continue
            instance.restarts += 1
            instance.state = previous
            self.on_event(instance, Event(Kind.RESTARTED))

    # -- stopping ----------------------------------------------------------------------------

    async def held(self, instance: Instance) -> tuple[int, int] | None:
        """(in-flight requests at the sidecar, live objects), or None when the sidecar does
        not answer (busy, stopped): unknown is not empty."""
        try:
            async with self.session.get(
                f"{instance.ingress_url}/xdt/held",
                headers={HOP_HEADER: self.keyring.hop_secret()},
                timeout=aiohttp.ClientTimeout(total=3),
            ) as response:
                held = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        instance.objects, instance.bytes_held = held["objects"], held["bytes_held"]
        return held["concurrency"], held["objects"]

    async def usage(self, instance: Instance) -> Usage:
        """What the instance used since it started, fresh from its sidecar; what it last
        reported when the sidecar does not answer (stopped, crashed, busy)."""
        if instance.sidecar is None or instance.sidecar.returncode is not None:
            return instance.usage
        asked = time.monotonic()
        try:
            async with self.session.get(
                f"{instance.ingress_url}/xdt/usage",
                headers={HOP_HEADER: self.keyring.hop_secret()},
                timeout=aiohttp.ClientTimeout(total=USAGE_TIMEOUT),
            ) as response:
                usage = Usage.from_record(await response.json())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return instance.usage
        if asked >= instance.usage_asked:  # of two readings in flight, the later one stands
            instance.usage, instance.usage_asked = usage, asked
        return instance.usage

    def begin_drain(self, instance: Instance) -> None:
        """Mark ``instance`` DRAINING (the caller stops routing to it), then :meth:`drain`."""
        instance.state = State.DRAINING
        self.on_event(instance, Event(Kind.DRAINING))

    async def drain(self, instance: Instance, in_flight: Callable[[], int]) -> None:
        """Stop ``instance`` once nothing is in flight and its sidecar holds no object (or
        the sidecar has exited, or ``drain_timeout`` passed)."""
        deadline = time.monotonic() + self.platform.drain_timeout
        silent = 0
        while time.monotonic() < deadline:
            if instance.sidecar is None or instance.sidecar.returncode is not None:
                break
            held = await self.held(instance)
            if held is None:
                silent += 1
                if silent == 10:
                    self.on_event(
                        instance, Event(Kind.DRAIN_SILENT, "the sidecar does not answer; waiting")
                    )
            elif in_flight() == 0 and held == (0, 0):
                break
            else:
                silent = 0
            await asyncio.sleep(DRAIN_POLL)
        else:
            self.on_event(instance, Event(Kind.DRAIN_TIMED_OUT, "objects still held"))
        await self.stop(instance)

    async def stop(self, instance: Instance) -> None:
        instance.stopping = True
        if instance.ingress_url:
            await self.usage(instance)  # its last word on what it used, before it goes
        await self._kill(instance)
        if instance.pool is not None:
            instance.pool.close()
        await instance.tasks.cancel()
        if instance.state is not State.FAILED:
            instance.state = State.STOPPED
        self.on_event(instance, Event(Kind.STOPPED))

    async def _kill(self, instance: Instance) -> None:
        """Stop the function, then the sidecar; then remove the function's private folder."""
        instance.stopping = True
        await self._kill_process(instance.process)
        await self._kill_process(instance.sidecar)
        if instance.private is not None:
            remove_private_folder(instance.private)
        if instance.host is not None and self.hosts is not None and not instance.left_host:
            instance.left_host = True
            self.hosts.leave(instance.function.name, instance.host)

    @staticmethod
    async def _kill_process(process: asyncio.subprocess.Process | None) -> None:
        """Stop the process's whole group (a ``command`` may have children of its own)."""
        if process is not None:
            await terminate(process, grace=STOP_GRACE)

    def _spawn(self, instance: Instance, coroutine: Coroutine[Any, Any, None]) -> None:
        instance.tasks.spawn(coroutine)


@contextlib.contextmanager
def _log(instance: Instance) -> Iterator[BinaryIO]:
    with open(instance.log_path, "ab") as log:
        yield log


def function_env(function: FunctionSpec) -> dict[str, str]:
    """The environment a function's process starts from: nothing of the platform's (no xdt
    settings, and no store credentials: a function reaches Redis or S3 only through
    references its sidecar resolves), the spec's ``env:`` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDT_", "AWS_"))}
    env.update(function.env)
    return env


def confine(
    function: FunctionSpec,
    argv: list[str],
    env: dict[str, str],
    identity: Identity | None,
    private: Path | None,
    *,
    sandboxed: bool,
    sockets: list[Path],
    enter: Callable[[], None] | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """How to run ``argv`` as ``function``'s process: under its own uid with ``private`` as
    its home (isolated), in its sandbox (sandboxed), on its test host (``enter``, a preexec
    step into the host's network namespace); ``env`` is adjusted to match. The (argv,
    subprocess options)."""
    options: dict[str, Any] = {"preexec_fn": chain(enter, die_with_parent)}
    if identity is None or private is None:
        return argv, options
    for name in ("USER", "LOGNAME", "MAIL"):  # the platform's, not this uid's
        env.pop(name, None)
    env.update(HOME=str(private / "home"), TMPDIR=str(private / "tmp"))
    if not sandboxed:
        if enter is None:
            return argv, {"user": identity.uid, "group": identity.gid, "extra_groups": [],
                          "umask": 0o077, "preexec_fn": isolated_child}  # fmt: skip
        # Entering a namespace takes root, and subprocess switches uid before preexec_fn:
        # here the switch comes after the entry, in the same step.
        switch = functools.partial(become, identity.uid, identity.gid)
        return argv, {"umask": 0o077, "preexec_fn": chain(enter, switch, isolated_child)}
    # bwrap runs as root to make the sandbox; setpriv inside drops to the uid.
    extra = []
    if function.command is not None:
        found = shutil.which(argv[0], path=env.get("PATH")) if "/" not in argv[0] else None
        if found is not None:
            extra.append(command_root(Path(found)))
    sandbox = Sandbox.for_function(
        *identity, folder=function.folder, private=private, sockets=sockets, extra=extra
    )
    return sandbox.argv(argv, cwd=function.folder), {"umask": 0o077, **options}


IMPORT_CHECK_TIMEOUT = 60.0  # a handler's module that takes longer to import is refused


async def check_import(
    function: FunctionSpec, identity: Identity | None, *, sandboxed: bool, run_dir: Path
) -> None:
    """Import ``function``'s handler once, in a process as its own would be (its uid, its
    sandbox, its environment), before anything starts: raises :class:`HandlerLoadError` with
    Python's own words (a missing module, a ``SyntaxError`` with its line, a missing
    dependency). The import runs the module's top level once more than serving does."""
    assert function.handler is not None
    private = None
    if identity is not None:
        private = run_dir / f"check-{function.name}"
        make_private_folder(private, identity)
    env = function_env(function) | {"PYTHONDONTWRITEBYTECODE": "1"}
    argv = [sys.executable, "-m", "xdt.runtime", "--check", "--handler", function.handler,
            "--folder", str(function.folder)]  # fmt: skip
    argv, options = confine(function, argv, env, identity, private, sandboxed=sandboxed, sockets=[])
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=function.folder, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, **options,
        )  # fmt: skip
        try:
            async with asyncio.timeout(IMPORT_CHECK_TIMEOUT):
                output, _ = await process.communicate()
        except TimeoutError:
            await terminate(process, grace=1.0)
            raise HandlerLoadError(
                f"functions[{function.name}]: importing {function.handler!r} took more than "
                f"{IMPORT_CHECK_TIMEOUT:g} s",
                function=function.name,
            ) from None
    finally:
        if private is not None:
            remove_private_folder(private)
    if process.returncode != 0:
        text = output.decode(errors="replace").strip().removeprefix("xdt runtime: ")
        raise HandlerLoadError(
            f"functions[{function.name}]: its handler cannot be loaded: {text[-4000:]}",
            function=function.name,
        )


async def _copy_output(instance: Instance, output: asyncio.StreamReader) -> None:
    """A command's output into its instance log, line by line, stamped."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with _log(instance) as log:
        lines = StampedLines(log, instance.id, lambda: None)
        while chunk := await output.read(1 << 16):
            lines.write(decoder.decode(chunk))
        lines.write(decoder.decode(b"", final=True))
        lines.close_line()


async def _output_written(instance: Instance) -> None:
    """Until what a command that exited printed is in its log (its tail is read next)."""
    if instance.output is not None:
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(instance.output), 1.0)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return ("; log tail:\n  " + "\n  ".join(text)) if text else ""


def _limited(setup: Callable[[], None], memory: int) -> None:
    """``preexec_fn``: ``setup``, then the function's memory limit (inherited through
    bubblewrap and setpriv by the function itself)."""
    setup()
    limit_memory(memory)
