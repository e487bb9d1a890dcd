"""``xdt logs [-f] [FUNCTION]``: every instance's log lines, merged by time.

Each instance writes one log (its function's output and its sidecar's, stamped with the time,
the instance and the request id: :mod:`xdt._util.logs`) into the running platform's log
folder, which ``GET /status`` names. This reads them all — as the user who runs ``xdt up``:
the folder is that user's alone — merges their lines by time and prints each as
``time instance request-id text``. ``-f`` keeps following: new lines, and the logs of
instances that start later.
"""

from __future__ import annotations

import argparse
import heapq
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from .._util.logs import LogLine, parse_line
from ._options import CommandError, add_url_option, get_json

__all__ = ["LogFollower", "add_parser", "run"]

POLL_INTERVAL = 0.25  # seconds between looks for new lines under -f
MAX_READ = 4 << 20  # bytes read from one log per look (a flood is shown over several looks)


def add_parser(commands: Any) -> None:
    logs = commands.add_parser(
        "logs",
        help="every instance's log lines, merged by time",
        description="Print the log lines of a running platform's instances, merged by time: "
        "time, instance, request id, text.",
    )
    logs.add_argument("function", nargs="?", help="only this function's instances")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    add_url_option(logs)
    logs.set_defaults(run=run)


@dataclass
class _Log:
    path: Path
    instance: str
    offset: int = 0
    pending: bytes = b""  # an unfinished last line
    last_time: str = ""  # lines that are not stamped go with the one before them


class LogFollower:
    """The lines of the instance logs in ``folder`` (of ``function``'s instances, or all),
    read a look at a time, each look's lines merged by time."""

    def __init__(self, folder: Path, function: str | None = None) -> None:
        self.folder = folder
        self.function = function
        self._logs: dict[Path, _Log] = {}

    def _wanted(self, path: Path) -> bool:
        if path.suffix != ".log":
            return False
        if self.function is None:
            return True
        instance_of, _, number = path.stem.rpartition("-")
        return instance_of == self.function and number.isdigit()

    def look(self) -> list[LogLine]:
        """The complete lines written since the last look, in time order."""
        try:
            paths = sorted(p for p in self.folder.iterdir() if self._wanted(p))
        except FileNotFoundError:
            return []  # the platform stopped (and removed its run folder)
        except PermissionError:
            raise CommandError(
                f"cannot read the logs in {self.folder}: they are the platform's user's; run "
                "xdt logs as that user (e.g. with sudo)",
                code=2,
            ) from None
        for path in paths:
            if path not in self._logs:
                self._logs[path] = _Log(path, path.stem)
        # Two processes append to one log: its lines are in time order only nearly.
        per_log = [sorted(self._read(log), key=_time) for log in self._logs.values()]
        return list(heapq.merge(*per_log, key=_time))

    def _read(self, log: _Log) -> list[LogLine]:
        try:
            with open(log.path, "rb") as file:
                file.seek(log.offset)
                chunk = file.read(MAX_READ)
        except OSError:
            return []
        log.offset += len(chunk)
        data = log.pending + chunk
        *complete, log.pending = data.split(b"\n")
        lines = []
        for raw in complete:
            text = raw.decode(errors="replace")
            line = parse_line(text)
            # A line stamped as another instance's was not written by a stamper of this log
            # (a function writing to its descriptors itself): it is shown as this log's.
            if line is not None and line.instance.partition("/")[0] != log.instance:
                line = None
            if line is None:  # a process's raw output (before it stamped, or a C library's)
                line = LogLine(log.last_time or _now(), log.instance, None, text)
            log.last_time = line.time
            lines.append(line)
        return lines


def _time(line: LogLine) -> str:
    return line.time


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def format_line(line: LogLine) -> str:
    return f"{line.time} {line.instance} {line.request_id or '-'} {line.text}"


def run(args: argparse.Namespace, console: Console) -> int:
    status = get_json(args.url, "/status")
    folder = status.get("logs") or ""
    if not folder:
        raise CommandError(f"the platform at {args.url} does not say where its logs are")
    if args.function is not None and args.function not in status.get("functions", {}):
        deployed = ", ".join(status.get("functions", {})) or "none"
        raise CommandError(f"no function {args.function!r} is deployed (deployed: {deployed})")
    follower = LogFollower(Path(folder), args.function)
    out = sys.stdout
    try:
        while True:
            for line in follower.look():
                out.write(format_line(line) + "\n")
            out.flush()
            if not args.follow:
                return 0
            if not os.path.isdir(folder):
                console.print(f"[dim]the platform at {args.url} stopped[/dim]", highlight=False)
                return 0
            time.sleep(POLL_INTERVAL)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `xdt logs | head`
        return 0
