"""``xdt up``: run the platform in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._core.errors import SpecError, XdtError
from .._util import thp
from .._util.logs import RateLimitedLog, rate_limit_loop_errors
from .._util.process import raise_fd_limit
from ..platform import Platform, Spec, load_spec
from ..platform.embedded import SHUTDOWN_GRACE
from ..platform.events import Event
from ..platform.isolation import isolation_wanted
from ..platform.spec import exposed_secrets
from ..platform.status import HostsStatus

__all__ = ["add_parser", "hosts_summary", "isolation_summary", "run"]


def add_parser(commands: Any) -> None:
    up = commands.add_parser(
        "up",
        help="run the platform in the foreground",
        description="Start the functions of a spec file and serve invocations at "
        "http://HOST:PORT/invoke/<function>. Ctrl-C stops everything it started.",
    )
    up.add_argument("-f", "--file", type=Path, default=Path("xdt.yaml"), help="the spec file")
    up.add_argument("--port", type=int, default=None, help="gateway port (0: any free port)")
    up.add_argument("--host", default=None, help="gateway address (default 127.0.0.1)")
    up.add_argument(
        "--watch", action="store_true",
        help="roll a function's instances to its new code when its files change (and on "
        "SIGHUP); the old instances drain",
    )  # fmt: skip
    up.set_defaults(run=run)


def stores_summary(started: list[str]) -> str:
    """What the storage modes use: the servers xdt started, or the spec's (or none)."""
    if not started:
        return "stores: none started by xdt (no function needs one, or the spec names its own)"
    return "stores: " + "; ".join(started) + " (embedded: started and stopped with the platform)"


def hosts_summary(hosts: HostsStatus | None) -> str | None:
    """One line on the test hosts (platform.hosts), None without them."""
    if hosts is None:
        return None
    listed = ", ".join(f"{name} {address}" for name, address in hosts["hosts"].items())
    return (
        f"hosts: {listed} (network namespaces on {hosts['network']}; links {hosts['link']}; "
        f"this machine {hosts['machine']})"
    )


def isolation_summary(isolated: bool, sandboxed: bool) -> str:
    """One line on what keeps functions apart (``xdt up``, ``xdt status``)."""
    if not isolated:
        return "off: functions run as the platform's user (not root, or isolation: off)"
    if not sandboxed:
        return "a uid per function, no sandbox (sandbox: off, or bubblewrap not installed)"
    return "a uid per function, each in its own bubblewrap sandbox (mount and PID namespaces)"


def run(args: argparse.Namespace, console: Console) -> int:
    try:
        spec = load_spec(args.file)
        isolation_wanted(spec.platform)  # isolation: on without root is the spec's error
    except SpecError as exc:
        console.print(f"[red]error in the spec:[/red] {escape(str(exc))}")
        return 2
    warning = exposed_secrets(args.file, spec)
    if warning is not None:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    settings = spec.platform
    overrides: dict[str, Any] = {}
    if args.port is not None:
        overrides["port"] = args.port
    if args.host is not None:
        overrides["host"] = args.host
    if overrides:
        from dataclasses import replace

        spec = replace(spec, platform=replace(settings, **overrides))
    try:
        asyncio.run(_up(spec, console, watch=args.watch))
    except (OSError, XdtError) as exc:  # XdtError: a store or a function's files (isolation)
        console.print(f"[red]error:[/red] cannot start the platform: {escape(str(exc))}")
        return 1
    return 0


async def _up(spec: Spec, console: Console, *, watch: bool = False) -> None:
    started = time.monotonic()

    def event(function: str, instance: str | None, what: Event) -> None:
        colour = "red" if what.kind.troubled else "cyan"
        console.print(
            f"[dim]{time.monotonic() - started:8.3f}s[/dim] [{colour}]{instance or function}"
            f"[/{colour}] {escape(str(what))}"
            + (f" [dim](request {escape(what.request_id)})[/dim]" if what.request_id else ""),
            soft_wrap=True,
        )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    rate_limit_loop_errors(loop, RateLimitedLog())  # a flood must not become a log flood
    raise_fd_limit()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks: set[asyncio.Task[None]] = set()
    async with Platform(spec, on_event=event) as platform:
        if watch:  # SIGHUP: roll every function now, changed or not
            watcher = asyncio.create_task(platform.watch())
            tasks.add(watcher)

            def hangup() -> None:
                task = asyncio.create_task(platform.roll_all("SIGHUP"))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

            loop.add_signal_handler(signal.SIGHUP, hangup)
        else:  # SIGHUP (the terminal closed) stops as Ctrl-C does: drained, nothing left
            loop.add_signal_handler(signal.SIGHUP, stop.set)
        # The first line is plain and stable: scripts (and tests) read the URL from it.
        print(f"xdt is up at {platform.url}", flush=True)
        for folder in platform.cleaned:
            console.print(f"removed {folder}: the run folder of a platform that was killed")
        table = Table(title="functions", title_justify="left")
        for column in ("name", "kind", "concurrency", "scale", "transfer"):
            table.add_column(column)
        for function in spec.functions:
            scale = f"{function.min_scale}…{function.max_scale or '∞'}"
            table.add_row(
                function.name,
                function.handler or " ".join(function.command or ()),
                str(function.concurrency or "unlimited"),
                scale,
                spec.mode_of(function).label,
            )
        console.print(table)
        isolated = platform.identities is not None
        console.print(f"isolation: {isolation_summary(isolated, platform.sandboxed)}")
        console.print(thp.describe())
        console.print(stores_summary(platform.stores.started if platform.stores else []))
        hosts = hosts_summary(platform.status()["hosts"])
        if hosts is not None:
            console.print(hosts, soft_wrap=True)
        console.print(
            f"logs: {platform.logs_dir}/<instance>.log; `xdt logs -f` follows them all",
            soft_wrap=True,
        )
        if watch:
            console.print("watching the functions' files: a change rolls their instances")
        console.print(
            f"invoke with: curl --data-binary @in.bin {platform.url}/invoke/<function>  "
            "(Ctrl-C stops everything)",
            soft_wrap=True,
        )
        await stop.wait()
        for task in tasks:
            task.cancel()
        busy = platform.in_flight
        console.print(
            f"stopping: waiting up to {SHUTDOWN_GRACE:g} s for {busy} requests in flight, "
            "then stopping every instance…"
            if busy
            else "stopping every instance…"
        )
    if platform.kept_logs is not None:
        console.print(
            "something failed during the run (an instance crashed or did not start, or "
            f"requests failed): the logs are kept in {platform.kept_logs} (yours to remove)",
            soft_wrap=True,
        )
    console.print("stopped")
