"""``xdt invoke``: POST data to a function of a running platform; its answer on stdout.

Its exit code says what happened, so that scripts can tell (:data:`EXIT_CODES`):

====  ==========================================================================
0     the function answered (2xx)
1     the function failed: it raised, or answered 5xx itself (``FunctionFailed``)
2     the command was used wrongly: a bad argument, ``--url`` or ``--data`` file
3     no platform answers at the URL
4     no answer in time: the function's timeout (504), or ``--timeout`` here
5     the request was refused (4xx: bad request, no such function, too large)
6     the platform could not serve it (502 instance failed, 503 overloaded)
130   interrupted (Ctrl-C)
====  ==========================================================================
"""

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

from .._core.errors import (
    FunctionFailed,
    InvocationError,
    InvocationTimeout,
    XdtError,
)
from .._http.contract import REQUEST_ID_HEADER
from .._http.errors import error_from_answer
from .._util.names import is_function_name
from .._util.units import format_duration, format_size
from ._options import EXIT_UNREACHABLE, add_url_option

__all__ = ["EXIT_CODES", "add_parser", "exit_code_of", "run"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT, EXIT_REFUSED, EXIT_UNSERVED = 0, 1, 2, 4, 5, 6
EXIT_CODES = {
    "ok": EXIT_OK,
    "function failed": EXIT_FAILED,
    "usage": EXIT_USAGE,
    "no platform": EXIT_UNREACHABLE,
    "timeout": EXIT_TIMEOUT,
    "refused": EXIT_REFUSED,
    "not served": EXIT_UNSERVED,
    "interrupted": 130,
}


def exit_code_of(error: XdtError) -> int:
    """The exit code for an invocation that ended in ``error``."""
    if isinstance(error, InvocationTimeout):
        return EXIT_TIMEOUT
    if isinstance(error, FunctionFailed):
        return EXIT_FAILED
    if isinstance(error, InvocationError) and error.status < 500:
        return EXIT_REFUSED
    return EXIT_UNSERVED


def add_parser(commands: Any) -> None:
    invoke = commands.add_parser(
        "invoke",
        help="invoke a function on a running platform",
        description="POST data to a function and write its answer to stdout.",
    )
    invoke.add_argument("function")
    invoke.add_argument("--data", "-d", help="the body: text, @FILE, or - for stdin")
    add_url_option(invoke)
    invoke.add_argument(
        "-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
        help="a request header for the function (repeatable)",
    )  # fmt: skip
    invoke.add_argument("--timeout", type=float, default=310.0, help="seconds to wait")
    invoke.add_argument("-v", "--verbose", action="store_true", help="also print sizes and time")
    invoke.set_defaults(run=run)


def run(args: argparse.Namespace, console: Console) -> int:
    console = Console(stderr=True)  # stdout carries the answer's bytes
    try:
        data = _data(args.data)
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot read {args.data!r}: {exc.strerror}")
        return EXIT_USAGE
    if not is_function_name(args.function):
        console.print(
            f"[red]error:[/red] {escape(repr(args.function))} is not a function name "
            "(lower-case letters, digits and '-')"
        )
        return EXIT_USAGE
    try:
        request = urllib.request.Request(
            f"{args.url}/invoke/{args.function}", data=data, method="POST"
        )
    except ValueError as exc:
        console.print(f"[red]error:[/red] bad --url {args.url!r}: {escape(str(exc))}")
        return EXIT_USAGE
    request.add_header("Content-Type", "application/octet-stream")
    for header in args.header:
        name, colon, value = header.partition(":")
        if not colon or not name.strip():
            console.print(f"[red]error:[/red] -H {header!r}: write it as 'Name: value'")
            return EXIT_USAGE
        request.add_header(name.strip(), value.strip())
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as answer:
        error = error_from_answer(
            answer.code, dict(answer.headers.items()), answer.read(), function=args.function
        )
        request_id = answer.headers.get(REQUEST_ID_HEADER)
        console.print(
            f"[red]{type(error).__name__}[/red] (HTTP {answer.code}"
            f"{f', request {request_id}' if request_id else ''}): {escape(str(error))}",
            soft_wrap=True,
        )
        if error.stack_trace:
            console.print(escape(error.stack_trace.rstrip()), highlight=False, soft_wrap=True)
        return exit_code_of(error)
    except (TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            console.print(
                f"[red]error:[/red] no answer from {args.function!r} within {args.timeout:g} s "
                "(--timeout)"
            )
            return EXIT_TIMEOUT
        if isinstance(exc, urllib.error.URLError):
            console.print(
                f"[red]error:[/red] no platform answering at {args.url} ({escape(str(reason))}); "
                "start one with `xdt up -f xdt.yaml`, or name it with --url or XDT_URL"
            )
            return EXIT_UNREACHABLE
        console.print(
            f"[red]error:[/red] the platform at {args.url} went away mid-answer "
            f"({type(exc).__name__}: {escape(str(exc))})"
        )
        return EXIT_UNSERVED
    except http.client.HTTPException as exc:
        console.print(
            f"[red]error:[/red] the platform at {args.url} went away mid-answer "
            f"({type(exc).__name__}: {escape(str(exc))})"
        )
        return EXIT_UNSERVED
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
