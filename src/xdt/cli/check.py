"""``xdt bench check``, and how every bench prints its targets."""

from __future__ import annotations

import argparse
import datetime
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._util import thp

__all__ = ["add_parser", "markdown", "print_outcomes", "provenance"]


def add_parser(benches: Any) -> None:
    check = benches.add_parser(
        "check",
        help="run exactly the cases the targets name; exit 1 if one is missed",
        description="A short run (about 3 minutes here) of the cases in the targets table "
        "(xdt/bench/targets.toml, or --targets FILE): each target with what it reached, met "
        "or not met. Exits 1 when one is missed. Run it alone, before resolving any change "
        "to the data path.",
    )
    check.add_argument("--targets", type=Path, default=None, help="a targets file of your own")
    check.add_argument("--markdown", type=Path, default=None, help="write the table as Markdown")
    check.set_defaults(run=_run)


def _run(args: argparse.Namespace, console: Console) -> int:
    from ..bench.check import run_check
    from ..bench.targets import TARGETS_FILE, load_targets

    try:
        targets = load_targets(args.targets or TARGETS_FILE)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2
    console.print(f"xdt bench check: {len(targets.targets)} targets; {thp.describe()}")
    with console.status("starting") as status:
        run = run_check(targets, on_phase=lambda what: status.update(escape(what)))
    print_outcomes(console, run.outcomes, table=True)
    for failure in run.failures:
        console.print(f"[red]failed:[/red] {escape(failure)}")
    missed = sum(not outcome.met for outcome in run.outcomes)
    if args.markdown is not None:
        args.markdown.write_text(markdown(run.outcomes, "xdt bench check"))
        console.print(f"wrote {args.markdown}")
    if missed or run.failures:
        console.print(f"[yellow]{missed} of {len(run.outcomes)} targets not met[/yellow]")
        return 1
    console.print(f"[green]all {len(run.outcomes)} targets met[/green]")
    return 0


def _reached(outcome: Any) -> str:
    if outcome.reached is None:
        return "not measured"
    value = outcome.target.value
    if value == "seconds":
        return f"{outcome.reached * 1e3:.1f} ms"
    # Three decimals near the bound, so that "3.00×, not met" cannot happen.
    close = any(
        bound is not None and abs(outcome.reached - bound) < 0.01 * bound
        for bound in (outcome.target.at_least, outcome.target.at_most)
    )
    return f"{outcome.reached:.3f}×" if close else f"{outcome.reached:.2f}×"


def _bound(outcome: Any) -> str:
    target = outcome.target
    if target.value == "seconds":
        limit = target.at_most if target.at_most is not None else target.at_least
        sign = "≤" if target.at_most is not None else "≥"
        return f"{sign} {limit * 1e3:g} ms"
    return f"{target.bound}×"


def print_outcomes(console: Console, outcomes: Sequence[Any], *, table: bool = False) -> None:
    """Each target with what it reached: one line each, or a table."""
    if not table:
        for outcome in outcomes:
            mark = "[green]met[/green]" if outcome.met else "[yellow]not met[/yellow]"
            console.print(
                f"target: {escape(outcome.target.what)} {_bound(outcome)}, "
                f"reached {_reached(outcome)} … {mark}"
            )
        return
    shown = Table(title="targets (xdt/bench/targets.toml)", title_justify="left")
    for column in ("target", "wanted", "reached", ""):
        shown.add_column(column, justify="left" if column == "target" else "right")
    for outcome in outcomes:
        mark = "[green]met[/green]" if outcome.met else "[yellow]not met[/yellow]"
        shown.add_row(escape(outcome.target.what), _bound(outcome), _reached(outcome), mark)
    console.print(shown)


def provenance(command: str) -> str:
    """``commit abc1234, 2026-12-03, `xdt bench check`, huge pages: …``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=Path(__file__).parent, timeout=10, check=False,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = ""
    day = datetime.date.today().isoformat()
    return f"commit {commit or 'unknown'}, {day}, `{command}`, {thp.describe()}"


def markdown(outcomes: Sequence[Any], command: str) -> str:
    """The outcomes as a Markdown table, headed by where they come from."""
    lines = [
        f"Measured with {provenance(command)}:",
        "",
        "| target | wanted | reached | |",
        "|---|---:|---:|---|",
    ]
    for outcome in outcomes:
        mark = "met" if outcome.met else "**not met**"
        lines.append(
            f"| {outcome.target.what} | {_bound(outcome)} | {_reached(outcome)} | {mark} |"
        )
    return "\n".join(lines) + "\n"
