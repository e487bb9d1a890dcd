"""``xdt status``: a running platform's functions, instances and autoscaler decisions."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rich.box import SIMPLE_HEAD
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._util import thp
from .._util.units import format_duration, format_size
from ..platform.status import PlatformStatus
from ._options import add_url_option, get_json
from .up import hosts_summary, isolation_summary, stores_summary

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    status = commands.add_parser("status", help="functions, instances and autoscaler decisions")
    add_url_option(status)
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(run=run)


def run(args: argparse.Namespace, console: Console) -> int:
    status = get_json(args.url, "/status")
    if args.json:
        sys.stdout.write(json.dumps(status, indent=2) + "\n")
        return 0
    render_status(status, console)
    return 0


def render_status(status: PlatformStatus, console: Console) -> None:
    functions = Table(
        title=f"xdt at {status['url']}", title_justify="left", box=SIMPLE_HEAD, padding=(0, 1)
    )
    functions.caption = (
        "instances: ready/starting/draining → wanted by the autoscaler; memory: the billed setting"
    )
    for column in ("function", "instances", "busy", "queued", "scaling", "transfer", "memory",
                   "calls", "restarts", "objs"):  # fmt: skip
        functions.add_column(column, justify="left" if column == "function" else "right",
                             no_wrap=True)  # fmt: skip
    for name, f in status["functions"].items():
        functions.add_row(
            name, f"{f['ready']}/{f['starting']}/{f['draining']} → {f['desired']}",
            str(f["in_flight"]), str(f["queued"]), "panic" if f["panicking"] else "stable",
            f["transfer"], format_size(f["memory_bytes"]),
            str(f["requests"]), str(f["restarts"]), str(f["objects"]),
        )  # fmt: skip
    console.print(functions)
    isolation = isolation_summary(status["isolation"], status["sandbox"])
    console.print(f"isolation: {isolation}", soft_wrap=True)
    console.print(thp.describe())  # of this host: the platform's when it runs here
    console.print(stores_summary(status["stores"]), soft_wrap=True)
    for down in status["stores_down"]:
        console.print(f"[red]store down: {escape(down)}[/red]", soft_wrap=True)
    hosts = hosts_summary(status.get("hosts"))
    if hosts is not None:
        console.print(hosts, soft_wrap=True)
    objects = status.get("objects")
    if objects is not None:
        console.print(
            f"gateway objects (uploads for functions): {objects['objects']} held "
            f"({format_size(objects['bytes_held'])}); {objects['uploads']} uploaded, "
            f"{objects['downloads']} downloaded, {objects['refused']} refused to functions",
            soft_wrap=True,
        )
    instances = Table(title="instances", title_justify="left", box=SIMPLE_HEAD, padding=(0, 1))
    hosted = status.get("hosts") is not None
    for column in ("instance", *(["host"] if hosted else []), "state", "busy", "objs", "held",
                   "restarts", "uptime", "pids", "code"):  # fmt: skip
        instances.add_column(column)
    for f in status["functions"].values():
        for i in f["instances"]:
            state = i["state"]
            if i["id"] in f["crash_looping"]:
                state = f"[red]{state}, crash-looping[/red]"
            instances.add_row(
                i["id"], *([i.get("host") or "-"] if hosted else []), state,
                str(i["in_flight"]), str(i["objects"]),
                format_size(i["bytes_held"]), str(i["restarts"]),
                format_duration(i["uptime_s"]), f"{i['sidecar_pid']}/{i['function_pid']}",
                i["code_version"] or "-",
            )  # fmt: skip
    if status["logs"]:
        instances.caption = (
            f"logs: {status['logs']}/<instance>.log, merged by `xdt logs [-f] [FUNCTION]`; "
            "code: a hash of the function's files when the instance started"
        )
    console.print(instances)
    render_errors(status, console)
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


def render_errors(status: PlatformStatus, console: Console) -> None:
    """Each function's last failure and instances that never got ready, if any."""
    for name, f in status["functions"].items():
        if f["start_failures"]:
            console.print(
                f"[red]{escape(name)}: {f['start_failures']} instance(s) in a row never got "
                "ready[/red]"
            )
        error = f["last_error"]
        if error is None:
            continue
        when = time.strftime("%H:%M:%S", time.localtime(error["at_unix"]))
        where = f" in {error['instance']}" if error["instance"] else ""
        request = f" (request {error['request_id']})" if error["request_id"] else ""
        first = error["message"].strip().splitlines()[0] if error["message"].strip() else ""
        console.print(
            f"[yellow]{escape(name)}[/yellow]: last error at {when}{where}{escape(request)}: "
            f"{escape(error['code'])}: {escape(first)}",
            soft_wrap=True,
        )
