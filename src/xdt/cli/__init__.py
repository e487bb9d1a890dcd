"""The ``xdt`` command.

::

    xdt up -f xdt.yaml [--port 8080] [--watch]  run the platform in the foreground
    xdt invoke FUNCTION [--data @in.bin]        invoke a function, answer on stdout
    xdt status [--json]                         functions, instances, autoscaler decisions
    xdt logs [-f] [FUNCTION]                    every instance's log lines, merged by time
    xdt demo [-f xdt.yaml]                      the platform on an example, driven and explained
    xdt keygen [--out FILE] [--rotate FILE]     make (or rotate) the platform key ring
    xdt knative render -f xdt.yaml --registry R [-o DIR]   the spec as Knative manifests
    xdt bench transfer [--sizes 1KiB,256MiB] [--runs N] [--json PATH] [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from .. import __version__
from .._core.errors import ConfigError, XdtError
from . import bench, demo, invoke, keygen, knative, logs, status, up
from ._options import CommandError

__all__ = ["main"]

# One module per command, each with add_parser(commands) and a run(args, console) it sets.
COMMANDS = (up, invoke, status, logs, demo, keygen, knative, bench)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xdt", description="Expedited Data Transfers for serverless functions."
    )
    parser.add_argument("--version", action="version", version=f"xdt {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


PIPED_WIDTH = 200


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Piped into a file or grep, rich would cut tables to 80 columns ("funct…"): wider, so
    # that each row stays whole and readable (COLUMNS, when set, still wins).
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    console = Console(width=PIPED_WIDTH if piped else None)
    try:
        code: int = args.run(args, console)
    except ConfigError as exc:  # a key ring, a spec: the user's to fix
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2
    except XdtError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return 1
    except CommandError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return exc.code
    except KeyboardInterrupt:  # Ctrl-C: no traceback, the shell's code for SIGINT
        return 130
    return code
