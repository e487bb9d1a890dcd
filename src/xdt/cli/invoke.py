"""``xdt invoke``: POST data to a function of a running platform; its answer on stdout.

Its exit code says what happened, so that scripts can tell (:data:`EXIT_CODES`):

====  ==========================================================================
0     the function answered (2xx)
1     the function failed: it raised, or answered 5xx itself (``FunctionFailed``)
2     the command was used wrongly: a bad argument, ``--url`` or ``--data`` file
3     no platform answers at the URL, or it went away mid-answer
4     no answer in time: the function's timeout (504), or ``--timeout`` here
5     the request was refused (4xx: bad request, no such function, too large)
6     the platform could not serve it (502 instance failed, 503 overloaded)
130   interrupted (Ctrl-C)
====  ==========================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any

from rich.console import Console
from rich.markup import escape

from .._core.errors import (
    FunctionFailed,
    InvocationError,
    InvocationTimeout,
    PeerGone,
    XdtError,
)
from .._util.names import is_function_name
from .._util.units import format_duration, format_size
from ..client import Body, Client, body_size
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
        description="Send data to a function (POST, or --method) and write its answer to "
        "stdout. A file over 6 MiB is uploaded first and passed by reference.",
    )
    invoke.add_argument("function")
    invoke.add_argument("--data", "-d", help="the body: text, @FILE, or - for stdin")
    invoke.add_argument(
        "-X", "--method", default="POST", type=str.upper, help="the HTTP method (default POST)"
    )
    invoke.add_argument(
        "--path", default="", help="the path below /invoke/FUNCTION, with a query: /orders/7?x=1"
    )
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
    if not is_function_name(args.function):
        console.print(
            f"[red]error:[/red] {escape(repr(args.function))} is not a function name "
            "(lower-case letters, digits and '-')"
        )
        return EXIT_USAGE
    if not args.method.isalpha() or not args.method.isascii():
        console.print(f"[red]error:[/red] -X {escape(repr(args.method))} is not an HTTP method")
        return EXIT_USAGE
    if any(c.isspace() or not c.isprintable() for c in args.path):
        console.print(f"[red]error:[/red] --path {escape(repr(args.path))}: no spaces in a path")
        return EXIT_USAGE
    headers: dict[str, str] = {}
    for header in args.header:
        name, colon, value = header.partition(":")
        if not colon or not name.strip():
            console.print(f"[red]error:[/red] -H {header!r}: write it as 'Name: value'")
            return EXIT_USAGE
        headers[name.strip()] = value.strip()
    try:
        client = Client(args.url, timeout=args.timeout)
    except ValueError as exc:
        console.print(f"[red]error:[/red] bad --url {args.url!r}: {escape(str(exc))}")
        return EXIT_USAGE
    started = time.perf_counter()
    try:
        with _data(args.data) as data, client:
            sent = body_size(data)
            answer = client.request(
                args.function, data, method=args.method, path=args.path, headers=headers
            )
            body = answer.body
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot read {args.data!r}: {exc.strerror or exc}")
        return EXIT_USAGE
    except XdtError as error:
        if isinstance(error, PeerGone):
            console.print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
            return EXIT_UNREACHABLE
        # Every answer of the platform names its request; an error without one is the
        # client's own (its --timeout).
        answered = f" (HTTP {error.status}, request {error.request_id})" if error.request_id else ""
        console.print(
            f"[red]{type(error).__name__}[/red]{answered}: {escape(str(error))}", soft_wrap=True
        )
        if error.stack_trace:
            console.print(escape(error.stack_trace.rstrip()), highlight=False, soft_wrap=True)
        return exit_code_of(error)
    elapsed = time.perf_counter() - started
    sys.stdout.buffer.write(body)
    sys.stdout.buffer.flush()
    if args.verbose:
        how = " (uploaded, passed by reference)" if sent > client.upload_above else ""
        console.print(
            f"\n[dim]{args.function}: {format_size(sent)} in{how}, {format_size(len(body))} "
            f"out, {format_duration(elapsed)}[/dim]",
            highlight=False,
        )
    return 0


def _data(argument: str | None) -> contextlib.AbstractContextManager[Body]:
    """The body to send: a file is streamed from disk (and, big, uploaded first)."""
    if argument is None:
        return contextlib.nullcontext(b"")
    if argument == "-":
        return contextlib.nullcontext(sys.stdin.buffer.read())
    if argument.startswith("@"):
        return open(argument[1:], "rb")  # the caller's with closes it
    return contextlib.nullcontext(argument.encode())
