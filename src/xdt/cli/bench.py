"""``xdt bench transfer|platform|micro|soak|apps|cost|all|check``: measure xdt on this machine."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .._core.errors import HostsError
from .._util import thp
from .._util.loops import LOOPS
from .._util.units import format_duration, format_size, parse_duration, parse_rate, parse_size
from ..bench.targets import keyed, load_targets
from ..platform.hosts import Link, format_rate
from .check import add_parser as add_check
from .check import print_outcomes, provenance
from .evaluation import add_parsers as add_evaluation

if TYPE_CHECKING:
    from ..testing import LaunchedPlatform

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    bench = commands.add_parser("bench", help="measure xdt on this machine")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    transfer = benches.add_parser(
        "transfer",
        help="one object from a producer process to a consumer process",
        description="Median time to move one object between two processes over a plain TCP "
        "socket (raw-tcp, the baseline), the xdt pull protocol over TCP (xdt-tcp) and the "
        "same-host memfd fast path (xdt-local).",
    )
    transfer.add_argument(
        "--sizes", type=_sizes, default=None, help="comma-separated sizes (default 1KiB…256MiB)"
    )
    transfer.add_argument("--runs", type=int, default=None, help="timed runs per case")
    transfer.add_argument("--json", type=Path, default=None, help="write one record per case")
    transfer.add_argument(
        "--markdown", type=Path, default=None, help="write the table as Markdown, with its commit"
    )
    transfer.add_argument("--loop", choices=LOOPS, default="asyncio", help="event loop to use")
    transfer.add_argument(
        "--hosts", action="store_true",
        help="producer and consumer on two test hosts (network namespaces; root): every path "
        "but memcpy crosses their links",
    )  # fmt: skip
    _add_link(transfer)

    platform = benches.add_parser(
        "platform",
        help="invocation latency, throughput and cold start through the platform",
        description="Times an echo function through gateway → sidecar → Python runtime "
        "against one plain aiohttp server (the single-hop baseline) in the same run: warm "
        "latency (1 KiB in and out), throughput at several concurrencies, cold start.",
    )
    platform.add_argument("--requests", type=int, default=2000, help="warm requests per target")
    platform.add_argument("--duration", type=float, default=3.0, help="seconds per throughput case")
    platform.add_argument(
        "--concurrency", default="1,8,64", help="comma-separated client counts (default 1,8,64)"
    )
    platform.add_argument("--cold-starts", type=int, default=5, help="cold starts to time")
    platform.add_argument(
        "--sandbox", choices=("auto", "on", "off"), default="auto",
        help="platform.sandbox for the run (its cost shows in the cold start)",
    )  # fmt: skip
    platform.add_argument("--json", type=Path, default=None, help="write the results here")

    micro = benches.add_parser(
        "micro",
        help="every transfer mode × pattern × size, function to function",
        description="Runs each transfer mode on the platform and times, inside a driver "
        "function, 1to1, scatter, gather and broadcast (4) at each size, with the peak RSS "
        "of all platform processes. Writes tables, --json records and a --plot PNG.",
    )
    micro.add_argument("--quick", action="store_true", help="1 KiB, 1 MiB, 64 MiB; 3 runs")
    micro.add_argument("--sizes", type=_sizes, default=None, help="comma-separated sizes")
    micro.add_argument(
        "--runs", type=int, default=None,
        help="timed runs per case (default 5; cases under 1 MiB run at least 25 times)",
    )  # fmt: skip
    micro.add_argument("--modes", default=None, help="comma-separated modes (default all four)")
    micro.add_argument("--patterns", default=None, help="comma-separated patterns (default all)")
    micro.add_argument("--json", type=Path, default=None, help="write one record per case")
    micro.add_argument("--plot", type=Path, default=None, help="write a PNG: time vs size")
    micro.add_argument(
        "--hosts", type=int, default=0,
        help="run across this many test hosts (network namespaces; root): driver on host 1, "
        "sinks on host 2, producers spread over the others, stores on a host of their own",
    )  # fmt: skip
    _add_link(micro)

    soak = benches.add_parser(
        "soak",
        help="a long mixed workload with a hostile client beside it; what was lost or leaked",
        description="Sends a fixed count of invocations (1 KiB to 64 MiB, every pattern) "
        "from many clients at once, checks every answer, attacks the platform all along, "
        "then counts what leaked once unclaimed objects expired: objects in sidecars, keys "
        "in Redis, objects in S3. Exits 1 unless the run was clean.",
    )
    soak.add_argument("--invocations", type=int, default=None, help="how many (default 10,000)")
    soak.add_argument("--mode", default="xdt", help="transfer mode: xdt, elasticache, s3 or inline")
    soak.add_argument("--concurrency", type=int, default=64, help="clients at once (default 64)")
    soak.add_argument("--seed", type=int, default=0, help="of the mix of orders")
    soak.add_argument("--no-hostile", action="store_true", help="no attacker beside the load")
    soak.add_argument("--json", type=Path, default=None, help="write the results here")
    add_evaluation(benches)
    add_check(benches)
    transfer.set_defaults(run=_bench_transfer)
    soak.set_defaults(run=_bench_soak)
    platform.set_defaults(run=_bench_platform)
    micro.set_defaults(run=_bench_micro)


def _add_link(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--link", type=_link, default=None,
        help="with --hosts: shape every link, e.g. 10gbit or 10gbit,0.1ms (rate, delay)",
    )  # fmt: skip


def _link(text: str) -> Link:
    rate, _, delay = text.partition(",")
    try:
        return Link(
            rate=parse_rate(rate) if rate.strip() else None,
            delay=parse_duration(delay) if delay.strip() else None,
        )
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _sizes(text: str) -> list[int]:
    try:
        sizes = [parse_size(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not sizes:
        raise argparse.ArgumentTypeError("give at least one size, e.g. 1KiB,256MiB")
    return sizes


def _bench_transfer(args: argparse.Namespace, console: Console) -> int:
    from ..bench.transfer import DEFAULT_SIZES, PATHS, Case, describe_targets, run_transfer_bench

    sizes = args.sizes or list(DEFAULT_SIZES)
    if args.runs is not None and args.runs < 1:
        console.print("[red]error:[/red] --runs must be at least 1")
        return 2
    if args.link is not None and not args.hosts:
        console.print("[red]error:[/red] --link shapes the links of test hosts: add --hosts")
        return 2
    paths = [p for p in PATHS if not (args.hosts and p == "xdt-local")]
    total = len(sizes) * len(paths)
    placed = (
        f"; across 2 test hosts, links {(args.link or Link()).describe()}" if args.hosts else ""
    )
    console.print(
        f"xdt bench transfer: {len(sizes)} sizes × {len(paths)} paths, loop {args.loop}, "
        f"runs per case {args.runs or 'adaptive'}; {thp.describe()}{placed}"
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("measuring", total=total)

        def done(case: Case) -> None:
            progress.update(
                task, advance=1, description=f"{case.path} {format_size(case.size_bytes)}"
            )

        try:
            cases = run_transfer_bench(
                sizes, runs=args.runs, loop=args.loop, on_case=done,
                hosts=args.hosts, link=args.link,
            )  # fmt: skip
        except HostsError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}")
            return 1

    baseline = {c.size_bytes: c for c in cases if c.path == "raw-tcp"}
    table = Table(title="one object, producer process → consumer process (median of runs)")
    shaped = args.link is not None and args.link.rate
    for column in ("path", "size", "median", "min", "max", "GB/s", "speed vs raw-tcp", "runs",
                   *(["of the link"] if shaped else [])):  # fmt: skip
        table.add_column(column, justify="left" if column == "path" else "right")
    for case in cases:
        raw = baseline.get(case.size_bytes)
        speed = f"{raw.median_s / case.median_s:.2f}×" if raw else "-"
        table.add_row(
            case.path,
            format_size(case.size_bytes),
            format_duration(case.median_s),
            format_duration(case.min_s),
            format_duration(case.max_s),
            f"{case.gbps:.2f}",
            speed,
            str(case.runs),
            *([f"{case.link_share:.0%}" if case.link_share is not None else "-"] if shaped else []),
        )
    console.print(table)
    console.print("speed vs raw-tcp = raw-tcp median / this median (above 1: faster than raw-tcp)")
    print_outcomes(console, describe_targets(cases))
    if args.json is not None:
        records = [c.record(baseline.get(c.size_bytes)) for c in cases]
        args.json.write_text(json.dumps(records, indent=2) + "\n")
        console.print(f"wrote {len(records)} records to {args.json}")
    if args.markdown is not None:
        args.markdown.write_text(_transfer_markdown(cases, sizes, paths, args))
        console.print(f"wrote {args.markdown}")
    return 0


def _transfer_markdown(
    cases: list[Any], sizes: list[int], paths: list[str], args: argparse.Namespace
) -> str:
    """One row per size, one column per path, then the speed of the xdt paths vs raw-tcp
    (and across shaped hosts, xdt-tcp's share of the link)."""
    by = {(c.path, c.size_bytes): c for c in cases}
    command = "xdt bench transfer --sizes " + ",".join(
        format_size(s).replace(" ", "") for s in sizes
    )
    if args.hosts:
        command += " --hosts" + (f" --link {args.link.as_text()}" if args.link is not None else "")
    versus = [p for p in ("xdt-tcp", "xdt-local") if p in paths]
    shaped = args.link is not None and args.link.rate
    extra = [f"{p} vs raw" for p in versus] + (["xdt-tcp of the link"] if shaped else [])
    lines = [
        f"Measured with {provenance(command)}:",
        "",
        "| size | " + " | ".join([*paths, *extra]) + " |",
        "|---:|" + "---:|" * (len(paths) + len(extra)),
    ]
    for size in sizes:
        row = [format_size(size)] + [format_duration(by[(p, size)].median_s) for p in paths]
        raw = by[("raw-tcp", size)].median_s
        row += [f"{raw / by[(p, size)].median_s:.2f}×" for p in versus]
        if shaped:
            row.append(f"{by[('xdt-tcp', size)].link_share:.0%}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _bench_platform(args: argparse.Namespace, console: Console) -> int:
    from ..bench.platform import run_platform_bench
    from .up import isolation_summary

    try:
        concurrencies = [int(part) for part in args.concurrency.split(",") if part.strip()]
    except ValueError:
        concurrencies = []
    if not concurrencies or min(concurrencies) < 1 or args.requests < 100:
        console.print("[red]error:[/red] --concurrency takes whole numbers ≥ 1 (e.g. 1,8,64); "
                      "--requests at least 100")  # fmt: skip
        return 2
    with console.status("starting") as status:
        bench = run_platform_bench(
            requests=args.requests,
            duration=args.duration,
            concurrencies=concurrencies,
            cold_starts=args.cold_starts,
            sandbox=args.sandbox,
            progress=lambda what: status.update(what),
        )
    direct = bench.latency_of("direct")
    table = Table(title="warm invocation, 1 KiB in and out (sequential)", title_justify="left")
    for column in ("path", "p50", "p99", "mean", "p50 vs direct", "runs"):
        table.add_column(column, justify="left" if column == "path" else "right")
    names = {"direct": "direct: one aiohttp server", "xdt": "xdt: gateway → sidecar → function"}
    for result in bench.latency:
        table.add_row(
            names[result.target], format_duration(result.p50_s), format_duration(result.p99_s),
            format_duration(result.mean_s), f"{result.p50_s / direct.p50_s:.2f}×",
            str(result.runs),
        )  # fmt: skip
    console.print(table)
    rates = Table(title="throughput (requests/s, 1 KiB in and out)", title_justify="left")
    rates.add_column("clients", justify="right")
    for target in names:
        rates.add_column(target, justify="right")
    rates.add_column("xdt / direct", justify="right")
    for concurrency in concurrencies:
        row = {t.target: t for t in bench.throughput if t.concurrency == concurrency}
        rates.add_row(
            str(concurrency), f"{row['direct'].requests_per_s:,.0f}",
            f"{row['xdt'].requests_per_s:,.0f}",
            f"{row['xdt'].requests_per_s / row['direct'].requests_per_s:.2f}",
        )  # fmt: skip
    console.print(rates)
    if bench.cold_starts_s:
        cold = sorted(bench.cold_starts_s)
        console.print(
            f"cold start (request → answer, from zero instances): median "
            f"{format_duration(statistics.median(cold))}, min {format_duration(cold[0])}, "
            f"max {format_duration(cold[-1])} over {len(cold)}"
        )
        console.print(f"  isolation: {isolation_summary(bench.isolation, bench.sandbox)}")
    targets = load_targets()
    print_outcomes(console, targets.judge(keyed(bench.latency, lambda c: c.key), "platform"))
    if args.json is not None:
        args.json.write_text(json.dumps(bench.records(), indent=2) + "\n")
        console.print(f"wrote {len(bench.records())} records to {args.json}")
    return 0


def _bench_micro(args: argparse.Namespace, console: Console) -> int:
    from ..bench._link import iperf3_rate
    from ..bench.micro import (
        DEFAULT_SIZES,
        INLINE_LIMIT,
        MODES,
        PATTERNS,
        QUICK_SIZES,
        MicroCase,
        describe_targets,
        plot,
        run_micro_bench,
    )  # fmt: skip

    modes = args.modes.split(",") if args.modes else list(MODES)
    patterns = args.patterns.split(",") if args.patterns else list(PATTERNS)
    unknown = [m for m in modes if m not in MODES] + [p for p in patterns if p not in PATTERNS]
    if unknown:
        console.print(
            f"[red]error:[/red] unknown {', '.join(unknown)}; modes: {', '.join(MODES)}; "
            f"patterns: {', '.join(PATTERNS)}"
        )
        return 2
    sizes = args.sizes or list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    runs = args.runs or (3 if args.quick else 5)
    if args.link is not None and args.hosts < 2:
        console.print("[red]error:[/red] --link shapes the links of test hosts: add --hosts 3")
        return 2
    if args.hosts == 1:
        console.print("[red]error:[/red] --hosts needs 2 at least (the sinks are on host 2)")
        return 2
    failures: list[str] = []
    total = sum(
        1 for m in modes for _ in patterns for s in sizes if m != "inline" or s <= INLINE_LIMIT
    )
    placed = ""
    if args.hosts:
        placed = f"; across {args.hosts} test hosts, links {(args.link or Link()).describe()}"
    console.print(
        f"xdt bench micro: {len(modes)} modes × {len(patterns)} patterns × {len(sizes)} sizes "
        f"({total} cases), {runs} runs each; {thp.describe()}{placed}"
    )
    baseline: list[str] = []

    def measure_link(platform: LaunchedPlatform) -> None:
        hosts = platform.status()["hosts"]
        if hosts is not None and not baseline:  # once: every platform has the same links
            baseline.append(iperf3_rate(hosts))

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("starting", total=total)

        def done(case: MicroCase) -> None:
            progress.update(
                task, advance=1,
                description=f"{case.mode} {case.pattern} {format_size(case.size_bytes)}",
            )  # fmt: skip

        def failed(what: str) -> None:
            failures.append(what)
            progress.update(task, advance=1)

        cases = run_micro_bench(
            modes=modes, patterns=patterns, sizes=sizes, runs=runs, on_case=done,
            on_start=lambda what: progress.update(task, description=what),
            on_failure=failed, hosts=args.hosts, link=args.link, on_platform=measure_link,
        )  # fmt: skip
    for pattern in patterns:
        table = Table(
            title=(
                f"{pattern}: median end-to-end time (GB/s; peak RSS of the platform; "
                "memory the case added)"
            ),
            title_justify="left",
        )
        table.add_column("size", justify="right")
        for mode in modes:
            table.add_column(mode, justify="right")
        for size in sizes:
            row = [format_size(size)]
            for mode in modes:
                case = next(
                    (
                        c
                        for c in cases
                        if (c.mode, c.pattern, c.size_bytes) == (mode, pattern, size)
                    ),
                    None,
                )
                if case is not None:
                    share = case.link_share
                    row.append(
                        f"{format_duration(case.median_s)} ({case.gb_per_s:.2f}; "
                        f"{format_size(case.peak_rss_bytes)}; "
                        f"+{format_size(case.case_memory_bytes)}"
                        + (f"; link {share:.0%}" if share is not None else "")
                        + (
                            f"; peak in {format_rate(case.peak_receive_bits)})"
                            if case.peak_receive_bits
                            else ")"
                        )
                    )
                else:
                    row.append(
                        "over limit" if mode == "inline" and size > INLINE_LIMIT else "failed"
                    )
            table.add_row(*row)
        console.print(table)
    if args.hosts:
        console.print(
            "link: the receiver's payload bits per second over the shaped rate, end to end "
            "(call, pull, answer); peak in: the fastest the receiver's link carried bytes in "
            "over any 100 ms of the case; iperf3 host 1 → host 2, one stream: "
            + (baseline[0] if baseline else "not measured")
        )
    for failure in failures:
        console.print(f"[red]failed:[/red] {escape(failure)}")
    print_outcomes(console, describe_targets(cases))
    if args.json is not None:
        records = [c.record() for c in cases]
        args.json.write_text(json.dumps(records, indent=2) + "\n")
        console.print(f"wrote {len(records)} records to {args.json}")
    if args.plot is not None:
        plot(cases, args.plot)
        console.print(f"wrote the plot to {args.plot}")
    return 1 if failures else 0


def _bench_soak(args: argparse.Namespace, console: Console) -> int:
    from ..bench.soak import DEFAULT_INVOCATIONS, Outcome, describe, run_soak
    from ..modes import MODES

    if args.mode not in MODES:
        console.print(f"[red]error:[/red] unknown mode {args.mode}; modes: {', '.join(MODES)}")
        return 2
    count = args.invocations or DEFAULT_INVOCATIONS
    if count < 1 or args.concurrency < 1:
        console.print("[red]error:[/red] --invocations and --concurrency must be at least 1")
        return 2
    console.print(
        f"xdt bench soak: {count} invocations in transfer: {args.mode}, "
        f"{args.concurrency} clients at once"
        + ("" if args.no_hostile else ", a hostile client beside them")
    )
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[failed]}"), console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("starting", total=count, failed="")
        failed = [0]

        def done(outcome: Outcome) -> None:
            if outcome.result != "ok":
                failed[0] += 1
            progress.update(
                task, advance=1, failed=f"{failed[0]} not verified" if failed[0] else ""
            )

        result = run_soak(
            invocations=count, mode=args.mode, concurrency=args.concurrency, seed=args.seed,
            hostile=not args.no_hostile, on_outcome=done,
            on_phase=lambda what: progress.update(task, description=what),
        )  # fmt: skip
    table = Table(title="soak", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("figure", justify="right")
    rows = [
        ("invocations", f"{result.invocations:,}"),
        ("verified answers", f"{result.succeeded:,}"),
        ("wrong answers", str(result.wrong)),
        ("lost (no answer, no typed error)", str(result.lost)),
        ("typed errors", str(sum(result.errors.values()))),
        ("load held", f"{result.invocations / result.seconds:.1f} invocations/s, "
                      f"{format_size(int(result.payload_bytes / result.seconds))}/s of payload, "
                      f"{result.concurrency} clients"),
        ("latency p50 / p99 / max", " / ".join(
            format_duration(result.latency_s[k]) for k in ("p50", "p99", "max")
        )),
        ("peak memory of the platform", f"{format_size(result.peak_memory_bytes)} "
                                        f"(summed RSS {format_size(result.peak_rss_bytes)})"),
        ("objects left in sidecars", str(result.leaked_objects)),
        ("keys left in Redis and S3", str(result.leaked_store_keys)),
    ]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if result.errors:
        errors = Table(title="errors by type", title_justify="left")
        errors.add_column("error")
        errors.add_column("count", justify="right")
        errors.add_column("one of them said")
        for error, n in result.errors.items():
            errors.add_row(escape(error), str(n), escape(result.examples.get(error, "")))
        console.print(errors)
    if result.hostile:
        attacks = Table(title="the hostile client", title_justify="left")
        for column in ("attack", "tried", "refused", "got through"):
            attacks.add_column(column, justify="left" if column == "attack" else "right")
        for attack, tally in result.hostile.items():
            attacks.add_row(
                attack, str(tally["tried"]), str(tally["refused"]), str(tally["got_through"])
            )
        console.print(attacks)
    console.print(("[green]" if result.clean else "[red]") + escape(describe(result)))
    if args.json is not None:
        args.json.write_text(json.dumps(result.record(), indent=2) + "\n")
        console.print(f"wrote the results to {args.json}")
    return 0 if result.clean else 1
