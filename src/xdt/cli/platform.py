"""The platform commands of the CLI: ``xdt up``, ``xdt invoke``, ``xdt status``."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rich.box import SIMPLE_HEAD
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._core.errors import XdtError
from .._http.errors import error_from_answer
from .._util.names import is_function_name
from .._util.units import format_duration, format_size
from ..platform import Platform, Spec, SpecError, load_spec
from ..platform.embedded import SHUTDOWN_GRACE
from ..platform.isolation import isolation_wanted

__all__ = ["DEFAULT_URL", "invoke_command", "status_command", "up_command"]

DEFAULT_URL = os.environ.get("XDT_URL", "http://127.0.0.1:8080")


# -- xdt up ------------------------------------------------------------------------------------


def up_command(args: argparse.Namespace, console: Console) -> int:
    try:
        spec = load_spec(args.file)
        isolation_wanted(spec.platform)  # isolation: on without root is the spec's error
    except SpecError as exc:
        console.print(f"[red]error in the spec:[/red] {escape(str(exc))}")
        return 2
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
        asyncio.run(_up(spec, console))
    except (OSError, XdtError) as exc:  # XdtError: a store or a function's files (isolation)
        console.print(f"[red]error:[/red] cannot start the platform: {escape(str(exc))}")
        return 1
    return 0


async def _up(spec: Spec, console: Console) -> None:
    started = time.monotonic()

    def event(function: str, instance: str | None, what: str) -> None:
        colour = "red" if what.startswith(("crashed", "failed")) else "cyan"
        console.print(
            f"[dim]{time.monotonic() - started:8.3f}s[/dim] [{colour}]{instance or function}"
            f"[/{colour}] {escape(what)}",
            soft_wrap=True,
        )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Platform(spec, on_event=event) as platform:
        # The first line is plain and stable: scripts (and tests) read the URL from it.
        print(f"xdt is up at {platform.url}", flush=True)
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
                function.transfer,
            )
        console.print(table)
        console.print(
            f"invoke with: curl --data-binary @in.bin {platform.url}/invoke/<function>  "
            "(Ctrl-C stops everything)",
            soft_wrap=True,
        )
        await stop.wait()
        busy = platform.in_flight
        console.print(
            f"stopping: waiting up to {SHUTDOWN_GRACE:g} s for {busy} requests in flight, "
            "then stopping every instance…"
            if busy
            else "stopping every instance…"
        )
    if platform.kept_logs is not None:
        console.print(f"an instance crashed or failed: its logs are kept in {platform.kept_logs}")
    console.print("stopped")


# -- xdt invoke --------------------------------------------------------------------------------


def invoke_command(args: argparse.Namespace, console: Console) -> int:
    console = Console(stderr=True)  # stdout carries the answer's bytes
    try:
        data = _data(args.data)
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot read {args.data!r}: {exc.strerror}")
        return 2
    if not is_function_name(args.function):
        console.print(
            f"[red]error:[/red] {escape(repr(args.function))} is not a function name "
            "(lower-case letters, digits and '-')"
        )
        return 2
    try:
        request = urllib.request.Request(
            f"{args.url.rstrip('/')}/invoke/{args.function}", data=data, method="POST"
        )
    except ValueError as exc:
        console.print(f"[red]error:[/red] bad --url {args.url!r}: {escape(str(exc))}")
        return 2
    request.add_header("Content-Type", "application/octet-stream")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as answer:
        error = error_from_answer(
            answer.code, dict(answer.headers.items()), answer.read(), function=args.function
        )
        console.print(
            f"[red]{type(error).__name__}[/red] (HTTP {answer.code}): {escape(str(error))}"
        )
        return 1
    except (urllib.error.URLError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        console.print(
            f"[red]error:[/red] no platform answering at {args.url} ({escape(str(reason))}); "
            "start one with `xdt up -f xdt.yaml`"
        )
        return 1
    except (http.client.HTTPException, ConnectionError) as exc:
        console.print(
            f"[red]error:[/red] the platform at {args.url} went away mid-answer "
            f"({type(exc).__name__}: {escape(str(exc))})"
        )
        return 1
    elapsed = time.perf_counter() - started
    sys.stdout.buffer.write(body)
    sys.stdout.buffer.flush()
    if args.verbose:
        console.print(
            f"\n[dim]{args.function}: {format_size(len(data))} in, {format_size(len(body))} "
            f"out, {format_duration(elapsed)}[/dim]",
            highlight=False,
        )
    return 0


def _data(argument: str | None) -> bytes:
    if argument is None:
        return b""
    if argument == "-":
        return sys.stdin.buffer.read()
    if argument.startswith("@"):
        return Path(argument[1:]).read_bytes()
    return argument.encode()


# -- xdt status --------------------------------------------------------------------------------


def status_command(args: argparse.Namespace, console: Console) -> int:
    try:
        with urllib.request.urlopen(f"{args.url.rstrip('/')}/status", timeout=10) as response:
            status = json.loads(response.read())
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        console.print(f"[red]error:[/red] no platform answering at {args.url}: {escape(str(exc))}")
        return 1
    if args.json:
        sys.stdout.write(json.dumps(status, indent=2) + "\n")
        return 0
    render_status(status, console)
    return 0


def render_status(status: dict[str, Any], console: Console) -> None:
    functions = Table(
        title=f"xdt at {status['url']}", title_justify="left", box=SIMPLE_HEAD, padding=(0, 1)
    )
    functions.caption = "instances: ready/starting/draining → wanted by the autoscaler"
    for column in ("function", "instances", "busy", "queued", "mode", "calls", "restarts",
                   "objs"):  # fmt: skip
        functions.add_column(column, justify="left" if column == "function" else "right",
                             no_wrap=True)  # fmt: skip
    for name, f in status["functions"].items():
        functions.add_row(
            name, f"{f['ready']}/{f['starting']}/{f['draining']} → {f['desired']}",
            str(f["in_flight"]), str(f["queued"]), "panic" if f["panicking"] else "stable",
            str(f["requests"]), str(f["restarts"]), str(f["objects"]),
        )  # fmt: skip
    console.print(functions)
    instances = Table(title="instances", title_justify="left", box=SIMPLE_HEAD, padding=(0, 1))
    for column in ("instance", "state", "busy", "objs", "held", "restarts", "uptime",
                   "pids"):  # fmt: skip
        instances.add_column(column)
    for f in status["functions"].values():
        for i in f["instances"]:
            instances.add_row(
                i["id"], i["state"], str(i["in_flight"]), str(i["objects"]),
                format_size(i["bytes_held"]), str(i["restarts"]),
                format_duration(i["uptime_s"]), f"{i['sidecar_pid']}/{i['function_pid']}",
            )  # fmt: skip
    console.print(instances)
    decisions = Table(
        title="recent autoscaler decisions", title_justify="left", box=SIMPLE_HEAD, padding=(0, 1)
    )
    for column in ("function", "at", "ready", "desired", "stable", "panic", "mode"):
        decisions.add_column(column)
    for name, f in status["functions"].items():
        for d in f["decisions"][-3:]:
            decisions.add_row(
                name, f"{d['at']:.1f}s", str(d["ready"]), str(d["desired"]),
                f"{d['stable_concurrency']:.2f}", f"{d['panic_concurrency']:.2f}",
                "panic" if d["panicking"] else "stable",
            )  # fmt: skip
    console.print(decisions)


def add_platform_commands(commands: Any) -> None:
    up = commands.add_parser(
        "up",
        help="run the platform in the foreground",
        description="Start the functions of a spec file and serve invocations at "
        "http://HOST:PORT/invoke/<function>. Ctrl-C stops everything it started.",
    )
    up.add_argument("-f", "--file", type=Path, default=Path("xdt.yaml"), help="the spec file")
    up.add_argument("--port", type=int, default=None, help="gateway port (0: any free port)")
    up.add_argument("--host", default=None, help="gateway address (default 127.0.0.1)")

    invoke = commands.add_parser(
        "invoke",
        help="invoke a function on a running platform",
        description="POST data to a function and write its answer to stdout.",
    )
    invoke.add_argument("function")
    invoke.add_argument("--data", "-d", help="the body: text, @FILE, or - for stdin")
    invoke.add_argument("--url", default=DEFAULT_URL, help=f"the platform (default {DEFAULT_URL})")
    invoke.add_argument("--timeout", type=float, default=310.0, help="seconds to wait")
    invoke.add_argument("-v", "--verbose", action="store_true", help="also print sizes and time")

    status = commands.add_parser("status", help="functions, instances and autoscaler decisions")
    status.add_argument("--url", default=DEFAULT_URL, help=f"the platform (default {DEFAULT_URL})")
    status.add_argument("--json", action="store_true", help="print the raw JSON")


def platform_command(args: argparse.Namespace, console: Console) -> int | None:
    """Run ``args.command`` if it is a platform command; None otherwise."""
    commands = {"up": up_command, "invoke": invoke_command, "status": status_command}
    command = commands.get(args.command)
    if command is None:
        return None
    try:
        return command(args, console)
    except XdtError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return 1
