"""``xdt demo``: start the platform on an example spec, drive it, say what happened.

It runs the word-count workflow of ``examples/wordcount`` (or any spec whose entry function
takes text): one cold call, a few warm ones, then a burst of concurrent calls that makes the
autoscaler add instances; then it prints the platform's own account (instances, decisions,
events) and stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.markup import escape

from .._util.units import format_duration
from ..platform import load_spec
from ..platform.status import PlatformStatus
from ..testing import LaunchedPlatform
from .status import render_status

__all__ = ["add_parser", "run", "run_demo"]

TEXT = (
    b"Serverless functions pass intermediate data inline or through storage. XDT lets the "
    b"sender's sidecar keep the payload and send a reference; the receiver's sidecar pulls "
    b"the bytes straight from the sender. The function code does not change. " * 40
)


def add_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="start the platform on an example, drive it, and show what happened",
        description="Runs `xdt up` on a spec (default: the word-count example), calls its "
        "entry function cold, warm and in a burst, then prints instances, autoscaler "
        "decisions and events, and stops everything.",
    )
    demo.add_argument(
        "-f", "--file", type=Path, default=EXAMPLE,
        help="the spec (default: the word-count example shipped with xdt)",
    )  # fmt: skip
    demo.add_argument("--entry", default="wordcount", help="the function to call")
    demo.set_defaults(run=run)


# Shipped in the package (examples/wordcount in a checkout links here): `xdt demo` works
# wherever it runs, not only in a checkout's top folder.
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "wordcount" / "xdt.yaml"


def run(args: argparse.Namespace, console: Console) -> int:
    return run_demo(args.file, args.entry, console)


def run_demo(spec_path: Path, entry: str, console: Console) -> int:
    spec = load_spec(spec_path)
    if spec.function(entry) is None:
        console.print(f"[red]error:[/red] {spec_path} has no function named {entry!r}")
        return 2
    console.rule("xdt demo: the embedded platform")
    with tempfile.TemporaryDirectory(prefix="xdt-demo-") as folder:
        started = time.perf_counter()
        platform = LaunchedPlatform(spec_path, Path(folder) / "up.log")
        console.print(
            f"platform up at {platform.url} in {format_duration(time.perf_counter() - started)} "
            f"with {len(spec.functions)} functions from {spec_path}"
        )
        try:
            asyncio.run(_drive(platform.url, entry, console))
            with urllib.request.urlopen(f"{platform.url}/status", timeout=10) as answer:
                status: PlatformStatus = json.loads(answer.read())
        finally:
            log = platform.stop()
    render_status(status, console)
    console.rule("what the platform said (xdt up's log)")
    for line in log.splitlines():
        if "s " in line and any(w in line for w in ("ready", "draining", "stopped", "crash")):
            console.print(escape(line.strip()), highlight=False)
    console.print("stopped everything the demo started")
    return 0


async def _drive(url: str, entry: str, console: Console) -> None:
    async with aiohttp.ClientSession() as session:

        async def call() -> tuple[float, bytes]:
            began = time.perf_counter()
            async with session.post(f"{url}/invoke/{entry}", data=TEXT) as answer:
                body = await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"{entry} answered {answer.status}: {body[:300]!r}")
            return time.perf_counter() - began, body

        elapsed, body = await call()
        console.print(
            f"1. first call of {entry!r} ({len(TEXT)} bytes of text): "
            f"{format_duration(elapsed)} (instances of the functions it calls start on demand)"
        )
        console.print(f"   answer: {escape(body.decode(errors='replace')[:200])}")
        warm = [(await call())[0] for _ in range(10)]
        console.print(
            f"2. ten warm calls, one at a time: median {format_duration(statistics.median(warm))}"
        )
        began = time.perf_counter()
        burst = await asyncio.gather(*(call() for _ in range(24)))
        console.print(
            f"3. a burst of 24 concurrent calls: all answered in "
            f"{format_duration(time.perf_counter() - began)} (median "
            f"{format_duration(statistics.median(t for t, _ in burst))}); the autoscaler "
            "reacts to the queue"
        )
        assert all(b == body for _, b in burst), "the burst's answers differ from the first"
        await asyncio.sleep(1.0)  # let a tick or two pass so the decisions show the burst
