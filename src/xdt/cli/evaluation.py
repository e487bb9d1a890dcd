"""``xdt bench apps|cost|all``: the evaluation — real workflows, their cost, one report."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.box import SIMPLE_HEAD
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .._util.units import format_size

__all__ = ["add_parsers"]

_APP_KEYS = ("vid", "set", "mr")  # xdt.apps.APPS, without importing it for --help


def add_parsers(benches: Any) -> None:
    apps = benches.add_parser(
        "apps",
        help="three real workflows (VID, SET, MR) in each transfer mode: time and cost",
        description="Runs video analytics (OpenCV), stacking-ensemble training "
        "(scikit-learn) and MapReduce on the platform in each transfer mode: a warm-up, then "
        "--runs timed runs, every answer checked against a single-process computation. "
        "Reports median/min/max time, peak memory and the cost per 1 M runs from the "
        "measured billed time, requests and storage at AWS prices.",
    )
    apps.add_argument("--apps", default=",".join(_APP_KEYS), help="comma-separated: vid,set,mr")
    apps.add_argument("--modes", default=None, help="comma-separated modes (default all four)")
    apps.add_argument(
        "--scale", default="1",
        help="a multiplier of each app's default size (1: the paper's), or the payload bytes "
        "one run moves, e.g. 128MiB; several, comma-separated: 1,128MiB",
    )  # fmt: skip
    apps.add_argument(
        "--micro", type=Path, default=None,
        help="xdt bench micro --json records to put in the report (with --out)",
    )  # fmt: skip
    apps.add_argument("--runs", type=int, default=None, help="timed runs after a warm-up (5)")
    apps.add_argument("--quick", action="store_true", help="3 runs each: a few minutes in all")
    apps.add_argument("--json", type=Path, default=None, help="write one record per (app, mode)")
    apps.add_argument("--out", type=Path, default=None, help="write records, plots, REPORT.md")
    _cost_options(apps)
    apps.set_defaults(run=_bench_apps)

    priced = benches.add_parser(
        "cost",
        help="the cost model on a results file of xdt bench apps",
        description="Prices measured runs (xdt bench apps --json) under the given "
        "assumptions: cost per 1 M runs per mode, by component, and the ratios between modes.",
    )
    priced.add_argument("--results", type=Path, required=True, help="xdt bench apps --json file")
    priced.add_argument("--json", type=Path, default=None, help="write the priced records here")
    priced.add_argument("--report", type=Path, default=None, help="write REPORT.md and plots here")
    priced.add_argument(
        "--micro", type=Path, default=None,
        help="xdt bench micro --json records, for the report's micro section",
    )  # fmt: skip
    _cost_options(priced)
    priced.set_defaults(run=_bench_cost)

    everything = benches.add_parser(
        "all",
        help="micro, apps (default scale and 128 MiB in flight) and cost: one report",
        description="Runs xdt bench micro, xdt bench apps at the default scale and at 128 MiB "
        "in flight per run, prices them and writes DIR/REPORT.md with its plots and records.",
    )
    everything.add_argument("--out", type=Path, required=True, help="where to write it all")
    everything.add_argument(
        "--quick", action="store_true",
        help="micro at 1 KiB, 1 MiB, 64 MiB and the apps at the default scale, 3 runs each",
    )  # fmt: skip
    _cost_options(everything)
    everything.set_defaults(run=_bench_all)


def _cost_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="a cost assumption, e.g. runs_per_hour=100 (each run prints them all)",
    )  # fmt: skip
    parser.add_argument("--params", type=Path, default=None, help="a JSON file of assumptions")
    parser.add_argument("--prices", type=Path, default=None, help="a prices file (TOML)")


class _Refused(Exception):
    """Bad input, said before anything starts."""


def _pricing(args: argparse.Namespace) -> tuple[Any, Any]:
    from ..bench.cost import DEFAULT_PARAMETERS, load_prices

    values: dict[str, str] = {}
    try:
        if args.params is not None:
            loaded = json.loads(args.params.read_text())
            if not isinstance(loaded, dict):
                raise _Refused(f"{args.params}: a JSON object of name: value")
            values.update({str(k): str(v) for k, v in loaded.items()})
        for item in args.param:
            name, sep, value = item.partition("=")
            if not sep:
                raise _Refused(f"--param {item!r}: write NAME=VALUE, e.g. runs_per_hour=100")
            values[name.strip()] = value.strip()
        parameters = DEFAULT_PARAMETERS.with_values(values)
        prices = load_prices(args.prices) if args.prices is not None else load_prices()
    except (OSError, ValueError) as exc:
        raise _Refused(str(exc)) from None
    return parameters, prices


def _bench_apps(args: argparse.Namespace, console: Console) -> int:
    from ..bench.apps import BenchInputError, Scale, check_request
    from ..modes import MODES

    try:
        parameters, prices = _pricing(args)
        apps = [a.strip() for a in args.apps.split(",") if a.strip()]
        modes = [m.strip() for m in args.modes.split(",")] if args.modes else list(MODES)
        scales = [Scale.parse(part.strip()) for part in args.scale.split(",") if part.strip()]
        runs = args.runs or (3 if args.quick else 5)
        for scale in scales or [Scale()]:
            check_request(apps, modes, scale, runs)
        micro = _micro_records(args.micro) if args.micro is not None else []
    except (_Refused, BenchInputError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2
    results = _run_apps(console, apps, modes, scales or [Scale()], runs)
    return _report_apps(console, results, parameters, prices, micro=micro, out=args.out,
                        json_path=args.json)  # fmt: skip


def _run_apps(
    console: Console, apps: list[str], modes: list[str], scales: Sequence[Any], runs: int
) -> list[Any]:
    from ..bench.apps import AppResult, run_apps_bench
    from ..bench.apps import Progress as Told

    console.print(
        f"xdt bench apps: {', '.join(a.upper() for a in apps)} × {', '.join(modes)} at scale "
        f"{' and '.join(str(s) for s in scales)}; a warm-up and {runs} timed runs each, every "
        "answer checked"
    )
    results: list[AppResult] = []
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task(
            "starting", total=len(apps) * len(modes) * (runs + 1) * len(scales)
        )

        def result(done: AppResult) -> None:
            skipped = runs + 1 - len(done.times_s) - (1 if done.correct else 0)
            progress.update(task, advance=max(0, skipped))
            if done.status == "wrong":
                console.print(f"[red bold]{done.app} in {done.mode}: {escape(done.error or '')}")
            elif done.status == "failed":
                console.print(f"[red]{done.app} in {done.mode} failed: {escape(done.error or '')}")

        told = Told(
            on_phase=lambda what: progress.update(task, description=what),
            on_run=lambda app, mode, i, n: progress.update(
                task, advance=1 if i else 0,
                description=f"{app} in {mode}: " + (f"run {i} of {n}" if i else "warm-up"),
            ),
            on_result=result,
        )  # fmt: skip
        for scale in scales:
            results += run_apps_bench(apps=apps, modes=modes, scale=scale, runs=runs, progress=told)
    return results


def _report_apps(
    console: Console,
    results: list[Any],
    parameters: Any,
    prices: Any,
    *,
    micro: Sequence[Any] = (),
    out: Path | None = None,
    json_path: Path | None = None,
) -> int:
    """The tables and the sentence under them; records, plots and the report if asked."""
    from ..bench.cost import cost
    from ..bench.report import compare, write_report

    for label in dict.fromkeys(r.scale_label for r in results):
        table = Table(
            title=f"workflows at scale {label}: time (ms), cost per 1 M runs (USD), every "
            "answer checked",
            title_justify="left", box=SIMPLE_HEAD, padding=(0, 1),
        )  # fmt: skip
        for column in ("app", "mode", "median", "min–max", "vs s3", "$ / 1M", "vs s3 $",
                       "memory"):  # fmt: skip
            table.add_column(column, justify="left" if column in ("app", "mode") else "right",
                             no_wrap=True, min_width=11 if column == "mode" else None)  # fmt: skip
        rows = [r for r in results if r.scale_label == label]
        notes: list[str] = []
        for r in rows:
            s3 = next((o for o in rows if (o.app, o.mode) == (r.app, "s3") and o.correct), None)
            name = f"{r.app.upper()} ×{r.scale:.3g}"
            if not r.correct:
                status = {"over-inline-limit": "-", "wrong": "[red]WRONG"}
                table.add_row(name, r.mode, status.get(r.status, "[red]failed"))
                notes.append(f"{r.app.upper()} in {r.mode}: " + {
                    "over-inline-limit": "a payload is over inline mode's 6 MiB limit",
                }.get(r.status, r.error or r.status))  # fmt: skip
                continue
            priced = cost(r.inputs, parameters, prices)
            s3_priced = cost(s3.inputs, parameters, prices) if s3 and s3.inputs else None
            table.add_row(
                name, r.mode, _ms(r.median_s), f"{_ms(min(r.times_s))}–{_ms(max(r.times_s))}",
                f"{s3.median_s / r.median_s:.2f}×" if s3 else "-",
                f"{priced.per_million_runs:,.2f}",
                f"{s3_priced.per_run / priced.per_run:.1f}×" if s3_priced else "-",
                format_size(r.peak_memory_bytes).replace(" ", ""),
            )  # fmt: skip
        console.print(table)
        for note in notes:
            console.print(f"  {escape(note)}")
    comparisons = compare(results, parameters, prices)
    for baseline in ("s3", "elasticache"):
        mine = [c for c in comparisons if c.baseline == baseline]
        if mine:
            speed = [c.speedup for c in mine]
            cheaper = [c.cheaper for c in mine]
            console.print(
                f"xdt against {baseline}: {min(speed):.2f}–{max(speed):.2f}× as fast, "
                f"{min(cheaper):.2f}–{max(cheaper):.2f}× cheaper per run"
            )
    console.print(
        "What it means: the same function code, only the transfer mode changed. xdt moves "
        "payloads straight from the sender's sidecar to the receiver's, so a workflow pays "
        "neither S3's per-request fees and latency nor an ElastiCache node by the hour; cost "
        "is AWS's prices applied to what each run was measured to use "
        f"({parameters.runs_per_hour:g} runs/h share a cache node; xdt bench cost --param "
        "changes it)."
    )
    wrong = [r for r in results if r.status in ("wrong", "failed")]
    records = [r.record(parameters, prices) for r in results]
    if json_path is not None:
        json_path.write_text(json.dumps(records, indent=2) + "\n")
        console.print(f"wrote {len(records)} records to {json_path}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "apps.json").write_text(json.dumps(records, indent=2) + "\n")
        if micro:
            (out / "micro.json").write_text(
                json.dumps([c.record() for c in micro], indent=2) + "\n"
            )
        report = write_report(
            out, results, micro=micro, parameters=parameters, prices=prices,
            command="xdt " + " ".join(sys.argv[1:]),
        )  # fmt: skip
        console.print(
            f"wrote {report} with its plots ({out / 'apps-time.png'}, {out / 'apps-cost.png'}"
            + (f", {out / 'micro.png'}" if micro else "")
            + f") and the records ({out / 'apps.json'})"
        )
    for r in wrong:
        console.print(f"[red]{r.app} in {r.mode}: {escape(r.error or r.status)}")
    return 1 if wrong else 0


def _ms(seconds: float) -> str:
    """Whole milliseconds, for narrow tables (the title says the unit)."""
    return f"{seconds * 1000:,.0f}"


def _bench_cost(args: argparse.Namespace, console: Console) -> int:
    from ..bench.apps import AppResult, BenchInputError
    from ..bench.cost import COMPONENTS, cost

    try:
        parameters, prices = _pricing(args)
        try:
            loaded = json.loads(args.results.read_text())
        except OSError as exc:
            raise _Refused(f"cannot read {args.results}: {exc.strerror}") from None
        except ValueError:
            raise _Refused(
                f"{args.results} is not JSON (write it with xdt bench apps --json)"
            ) from None
        records = loaded if isinstance(loaded, list) else None
        if not records:
            raise _Refused(f"{args.results}: a list of xdt bench apps records, got none")
        results = [AppResult.from_record(r) for r in records]
        records = []
        micro = _micro_records(args.micro) if args.micro is not None else []
    except (_Refused, BenchInputError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2
    cells = list(dict.fromkeys((r.app, r.scale) for r in results))
    for app, scale in cells:
        rows = {r.mode: r for r in results if (r.app, r.scale) == (app, scale)}
        table = Table(title=f"{app.upper()} ×{scale:g}: USD per 1 M runs", title_justify="left",
                      box=SIMPLE_HEAD, padding=(0, 1))  # fmt: skip
        table.add_column("component")
        priced = {m: cost(r.inputs, parameters, prices) for m, r in rows.items()
                  if r.correct and r.inputs}  # fmt: skip
        for mode in rows:
            table.add_column(mode, justify="right")
        for component in COMPONENTS:
            table.add_row(component, *[
                f"{priced[m].breakdown_per_million()[component]:,.2f}" if m in priced else "-"
                for m in rows
            ])  # fmt: skip
        table.add_row("[bold]total", *[
            f"[bold]{priced[m].per_million_runs:,.2f}" if m in priced else rows[m].status
            for m in rows
        ])  # fmt: skip
        console.print(table)
        records += [r.record(parameters, prices) for r in rows.values()]
    console.print("assumptions:")
    for name, text in parameters.describe():
        console.print(f"  {name}  [dim]{text}")
    from ..bench.report import compare, write_report

    for found in compare(results, parameters, prices):
        alone = found.cheaper_data_passing
        console.print(
            f"{found.app.upper()} ×{found.scale:g}: xdt is {found.cheaper:.2f}× cheaper than "
            f"{found.baseline}" + (f" ({alone:.1f}× on data passing alone)" if alone else "")
        )
    if args.json is not None:
        args.json.write_text(json.dumps(records, indent=2) + "\n")
        console.print(f"wrote {len(records)} priced records to {args.json}")
    if args.report is not None:
        report = write_report(args.report, results, micro=micro, parameters=parameters,
                              prices=prices, command="xdt " + " ".join(sys.argv[1:]))  # fmt: skip
        console.print(f"wrote {report}")
    return 0


def _micro_records(path: Path) -> list[Any]:
    import dataclasses

    from ..bench.micro import MicroCase

    names = {f.name for f in dataclasses.fields(MicroCase)}
    try:
        loaded = json.loads(path.read_text())
        return [MicroCase(**{k: v for k, v in r.items() if k in names}) for r in loaded]
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise _Refused(f"{path}: not the records of xdt bench micro --json ({exc!r})") from None


def _bench_all(args: argparse.Namespace, console: Console) -> int:
    from ..bench.apps import LARGE_SCALE, BenchInputError, Scale, check_request
    from ..bench.micro import DEFAULT_SIZES, QUICK_SIZES, run_micro_bench
    from ..modes import MODES

    runs = 3 if args.quick else 5
    scales = [Scale()] if args.quick else [Scale(), Scale(None, LARGE_SCALE)]
    try:
        parameters, prices = _pricing(args)
        for scale in scales:
            check_request(list(_APP_KEYS), list(MODES), scale, runs)
    except (_Refused, BenchInputError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    console.print(f"xdt bench all: micro ({len(sizes)} sizes), then the apps")
    with console.status("xdt bench micro") as status:
        micro = run_micro_bench(
            sizes=sizes, runs=runs,
            on_start=lambda what: status.update(f"micro: {what}"),
            on_failure=lambda what: console.print(f"[red]micro failed: {escape(what)}"),
        )  # fmt: skip
    results = _run_apps(console, list(_APP_KEYS), list(MODES), scales, runs)
    return _report_apps(console, results, parameters, prices, micro=micro, out=args.out)
