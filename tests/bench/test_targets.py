"""The targets table and ``xdt bench check``: a missed target fails the check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xdt._util import thp
from xdt.bench.targets import TARGETS_FILE, Address, load_targets


def test_the_shipped_table_loads_and_names_the_issues_cases() -> None:
    targets = load_targets(TARGETS_FILE)
    plan = targets.plan()
    assert 256 << 20 in plan.transfer_sizes and "raw-tcp" in plan.transfer_paths
    assert "1to1-view" in plan.micro[("xdt", 256 << 20)] and plan.platform
    assert {t.value for t in targets.targets} >= {"speed", "seconds", "memory", "time-ratio"}


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ('value = "fast"\nmeasure = "transfer:xdt-tcp:1KiB"\nat_least = 1', "value must be"),
        ('value = "seconds"\nmeasure = "transfer:xdt-tcp:1KiB"', "exactly one of"),
        ('value = "speed"\nmeasure = "transfer:xdt-tcp:1KiB"\nat_least = 1', "needs `against`"),
        ('value = "seconds"\nmeasure = "transfer:xdt-tcp"\nat_most = 1', "is not a case"),
    ],
)
def test_a_bad_target_is_refused_with_what_is_wrong(
    tmp_path: Path, entry: str, complaint: str
) -> None:
    path = tmp_path / "targets.toml"
    path.write_text(f"[[target]]\n{entry}\n")
    with pytest.raises(ValueError, match=complaint):
        load_targets(path)


def test_an_address_names_its_case() -> None:
    assert Address.parse("micro:xdt:1to1:256MiB").key == ("micro", "xdt", "1to1", 256 << 20)
    assert Address.parse("platform:xdt").key == ("platform", "xdt", None)


def _check(tmp_path: Path, bound: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "tiny.toml"
    path.write_text(
        "[[target]]\nwhat = 'xdt-local at 1 KiB within 1000x of raw-tcp'\n"
        "value = 'time-ratio'\nmeasure = 'transfer:xdt-local:1KiB'\n"
        "against = 'transfer:raw-tcp:1KiB'\nat_most = 1000\n\n"
        f"[[target]]\nwhat = 'the injected one'\nvalue = 'speed'\n"
        f"measure = 'transfer:xdt-local:1KiB'\nagainst = 'transfer:raw-tcp:1KiB'\n{bound}\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "xdt", "bench", "check", "--targets", str(path),
         "--markdown", str(tmp_path / "check.md")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip


def test_bench_check_exits_non_zero_when_a_target_is_missed(tmp_path: Path) -> None:
    missed = _check(tmp_path, "at_least = 1000000")  # no path is a million times faster
    assert missed.returncode == 1, missed.stdout + missed.stderr
    assert "1 of 2 targets not met" in missed.stdout and "huge pages:" in missed.stdout
    table = (tmp_path / "check.md").read_text()
    assert "| the injected one | ≥ 1e+06× |" in table and "**not met**" in table
    assert "commit " in table and "`xdt bench check`" in table
    met = _check(tmp_path, "at_least = 0.000001")
    assert met.returncode == 0, met.stdout + met.stderr
    assert "all 2 targets met" in met.stdout


def test_huge_page_settings_are_read_from_the_kernels_files(tmp_path: Path) -> None:
    (tmp_path / "enabled").write_text("always [madvise] never\n")
    (tmp_path / "shmem_enabled").write_text("always within_size advise [never] deny force\n")
    assert thp.settings(tmp_path) == {
        "enabled": "madvise",
        "shmem_enabled": "never",
        "defrag": None,
    }
    assert not thp.shmem_advisable(tmp_path)
    assert thp.describe(tmp_path).startswith("huge pages: heap madvise, memfds never")
    assert thp.describe(tmp_path / "absent") == "huge pages: not reported by this kernel"
