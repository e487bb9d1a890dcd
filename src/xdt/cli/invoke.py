"""``xdt invoke``: POST data to a function of a running platform; its answer on stdout."""

from __future__ import annotations

import argparse
import http.client
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from .._http.errors import error_from_answer
from .._util.names import is_function_name
from .._util.units import format_duration, format_size
from ._options import add_url_option

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    invoke = commands.add_parser(
        "invoke",
        help="invoke a function on a running platform",
        description="POST data to a function and write its answer to stdout.",
    )
    invoke.add_argument("function")
    invoke.add_argument("--data", "-d", help="the body: text, @FILE, or - for stdin")
    add_url_option(invoke)
    invoke.add_argument("--timeout", type=float, default=310.0, help="seconds to wait")
    invoke.add_argument("-v", "--verbose", action="store_true", help="also print sizes and time")
    invoke.set_defaults(run=run)


def run(args: argparse.Namespace, console: Console) -> int:
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
