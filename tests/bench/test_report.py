"""The report and ``xdt bench cost``, from a recorded results file (a real quick run of
``xdt bench apps``); and the bad input the evaluation commands refuse before starting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xdt._util import procfs
from xdt.bench.apps import AppResult
from xdt.bench.cost import DEFAULT_PARAMETERS, load_prices
from xdt.bench.report import compare, write_report
from xdt.cli import main

RECORDED = Path(__file__).parent / "data" / "apps-results.json"
PNG = b"\x89PNG\r\n\x1a\n"


def recorded() -> list[AppResult]:
    return [AppResult.from_record(r) for r in json.loads(RECORDED.read_text())]


def test_the_report_puts_our_ratios_beside_the_papers_with_plots(tmp_path: Path) -> None:
    results = recorded()
    report = write_report(tmp_path, results, parameters=DEFAULT_PARAMETERS, command="test")
    text = report.read_text()
    for heading in ("## Scale 1× (default)", "## Against the paper",
                    "## Against ElastiCache, by the workflow's rate", "## Where the money goes",
                    "## Assumptions"):  # fmt: skip
        assert heading in text
    assert "| faster than s3 | 1.3–3.4× |" in text and "| cheaper than s3 | 2–5× |" in text
    assert "over the 6 MiB inline limit" in text  # MR inline: said, not hidden
    for plot in ("apps-time.png", "apps-cost.png"):
        assert (tmp_path / plot).read_bytes().startswith(PNG)
        assert f"]({plot})" in text
    # Its ratios are the records' own: s3's median time over xdt's, per app.
    by = {(r.app, r.mode): r for r in results}
    found = {c.app: c for c in compare(results, DEFAULT_PARAMETERS, load_prices())
             if c.baseline == "s3"}  # fmt: skip
    for app in ("vid", "set", "mr"):
        expected = by[(app, "s3")].median_s / by[(app, "xdt")].median_s
        assert found[app].speedup == pytest.approx(expected)


def test_bench_cost_prices_a_results_file_under_other_assumptions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "priced.json"
    argv = ["bench", "cost", "--results", str(RECORDED), "--json", str(out)]
    assert main([*argv, "--param", "runs_per_hour=36"]) == 0
    slow = {(r["app"], r["mode"]): r["cost_breakdown_per_million_usd"]
            for r in json.loads(out.read_text()) if r["correct"]}  # fmt: skip
    assert main(argv) == 0
    fast = {(r["app"], r["mode"]): r["cost_breakdown_per_million_usd"]
            for r in json.loads(out.read_text()) if r["correct"]}  # fmt: skip
    # The cache node's hour is shared by 100× fewer runs: 100× its share; nothing else moves.
    ratio = (
        slow[("vid", "elasticache")]["elasticache"] / fast[("vid", "elasticache")]["elasticache"]
    )
    assert ratio == pytest.approx(100, rel=1e-3)
    assert slow[("vid", "xdt")] == fast[("vid", "xdt")]
    assert "runs_per_hour = 36.0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["bench", "apps", "--apps", "vid,wc"], "unknown app(s) wc; apps: vid, set, mr"),
        (["bench", "apps", "--modes", "xdt,fast"], "unknown mode(s) fast"),
        (["bench", "apps", "--scale", "plenty"], "give a multiplier of the default size"),
        (["bench", "apps", "--scale", "5000"], "give a scale from 0.01× to 1000×"),
        (["bench", "apps", "--scale", "400"], "is available: use a smaller --scale"),
        (["bench", "apps", "--param", "runs_per_hour"], "write NAME=VALUE"),
        (["bench", "all", "--out", "x", "--param", "speed=3"], "no cost parameter 'speed'"),
    ],
)
def test_the_evaluation_refuses_bad_input_before_it_starts(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procfs, "available_memory", lambda: 16 << 30)  # as on a small machine
    assert main(argv) == 2
    assert said in " ".join(capsys.readouterr().out.split())


def test_bench_cost_refuses_a_results_file_of_the_wrong_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {"text.json": "not json", "object.json": '{"app": "vid"}',
             "records.json": '[{"app": "vid", "mode": "xdt"}]'}  # fmt: skip
    for name, content in cases.items():
        (tmp_path / name).write_text(content)
        assert main(["bench", "cost", "--results", str(tmp_path / name)]) == 2
    said = " ".join(capsys.readouterr().out.split())
    assert "is not JSON" in said and "a list of xdt bench apps records" in said
    assert "not a record of xdt bench apps --json" in said
