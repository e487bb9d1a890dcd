"""The ``xdt`` command: keygen, demo and the benchmarks (tiny real runs)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from xdt import KeyRing
from xdt.cli import main


def test_keygen_prints_a_usable_key_ring(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen"]) == 0
    ring = KeyRing.from_text(capsys.readouterr().out)
    assert len(ring.key_ids) == 1


def test_keygen_writes_a_private_file_and_rotates_it(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    assert main(["keygen", "--out", str(path)]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = KeyRing.from_file(path)
    assert main(["keygen", "--rotate", str(path)]) == 0
    rotated = KeyRing.from_file(path)
    assert len(rotated.key_ids) == 2
    assert rotated.primary_key_id != first.primary_key_id
    assert first.primary_key_id in rotated.key_ids


def test_keygen_rotate_of_a_bad_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys"
    path.write_text("not a key ring\n")
    assert main(["keygen", "--rotate", str(path)]) == 2
    assert "expected '<8 hex digit key id> <base64url key>'" in capsys.readouterr().out


def test_bench_transfer_writes_one_record_per_case(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    # A real run in a subprocess, as a user would start it.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "xdt",
            "bench",
            "transfer",
            "--sizes",
            "1KiB,2MiB",
            "--runs",
            "3",
            "--json",
            str(out),
            "--markdown",
            str(out.with_suffix(".md")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert result.returncode == 0, result.stderr
    assert "raw-tcp" in result.stdout and "xdt-local" in result.stdout
    records = json.loads(out.read_text())
    assert {(r["path"], r["size_bytes"]) for r in records} == {
        (path, size)
        for path in ("memcpy", "raw-tcp", "aio-tcp", "xdt-tcp", "xdt-local")
        for size in (1024, 2 << 20)
    }
    for record in records:
        assert record["runs"] == 3
        assert 0 < record["min_s"] <= record["median_s"] <= record["max_s"]
        assert record["speed_vs_raw_tcp"] > 0
    table = out.with_suffix(".md").read_text()
    assert "`xdt bench transfer --sizes 1KiB,2MiB`" in table and "| 2 MiB |" in table


def test_bench_rejects_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "transfer", "--sizes", "12 parsecs"])
    assert exit_info.value.code == 2
    assert "not a size: '12 parsecs'" in capsys.readouterr().err


def test_bench_platform_reports_latency_throughput_and_cold_start(tmp_path: Path) -> None:
    out = tmp_path / "platform.json"
    result = subprocess.run(
        [sys.executable, "-m", "xdt", "bench", "platform", "--requests", "100",
         "--duration", "0.3", "--concurrency", "1,4", "--cold-starts", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warm invocation p50, xdt vs one aiohttp hop ≤ 3×" in result.stdout
    records = json.loads(out.read_text())
    latency = {r["target"]: r for r in records if r["kind"] == "latency"}
    assert set(latency) == {"direct", "xdt"}
    for record in latency.values():
        assert record["runs"] == 100 and 0 < record["p50_s"] <= record["p99_s"]
    throughput = {(r["target"], r["concurrency"]) for r in records if r["kind"] == "throughput"}
    assert throughput == {(t, c) for t in ("direct", "xdt") for c in (1, 4)}
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in records if r["kind"] == "throughput")
    (cold,) = [r for r in records if r["kind"] == "cold_start"]
    assert cold["runs"] == 1 and cold["median_s"] > 0
    # The cold start says what it paid for: as root with bubblewrap, a sandbox per function.
    sandboxed = os.geteuid() == 0 and shutil.which("bwrap") is not None
    assert (cold["isolation"], cold["sandbox"]) == (os.geteuid() == 0, sandboxed)
    assert ("each in its own bubblewrap sandbox" in result.stdout) == sandboxed


def test_demo_runs_the_example_and_stops_everything(tmp_path: Path) -> None:
    """From any folder: the example ships in the package."""
    result = subprocess.run(
        [sys.executable, "-m", "xdt", "demo"], cwd=tmp_path,
        capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"top": [["the", 240]' in result.stdout  # the workflow's real answer
    assert "wordcount-1" in result.stdout and "stopped everything" in result.stdout


def test_bench_micro_writes_records_and_a_plot(tmp_path: Path) -> None:
    out, picture = tmp_path / "micro.json", tmp_path / "micro.png"
    result = subprocess.run(
        [sys.executable, "-m", "xdt", "bench", "micro", "--modes", "inline,xdt",
         "--patterns", "1to1,broadcast", "--sizes", "1KiB,8MiB", "--runs", "2",
         "--json", str(out), "--plot", str(picture)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    records = json.loads(out.read_text())
    # inline stops at its 6 MiB limit: refused by definition, so not measured.
    assert {(r["mode"], r["pattern"], r["size_bytes"]) for r in records} == {
        ("inline", "1to1", 1024), ("inline", "broadcast", 1024),
        ("xdt", "1to1", 1024), ("xdt", "broadcast", 1024),
        ("xdt", "1to1", 8 << 20), ("xdt", "broadcast", 8 << 20),
    }  # fmt: skip
    for record in records:
        # Small cases are cheap and noisy: they run at least 25 times whatever --runs says.
        assert record["runs"] == (25 if record["size_bytes"] < 1 << 20 else 2)
        assert 0 < record["min_s"] <= record["median_s"] <= record["max_s"]
        assert record["peak_rss_bytes"] >= record["peak_pss_bytes"] > 0
        assert record["peak_memory_bytes"] >= record["idle_memory_bytes"] > 0
    # 8 MiB through xdt cost at least the payload (the driver holds it) and the callee's copy.
    big = next(r for r in records if (r["mode"], r["pattern"], r["size_bytes"]) == (
        "xdt", "1to1", 8 << 20))  # fmt: skip
    assert big["peak_memory_bytes"] - big["idle_memory_bytes"] >= 2 * (8 << 20)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "xdt / inline, 1to1 1 KiB" in result.stdout


def test_bench_micro_rejects_unknown_modes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "micro", "--modes", "carrier-pigeon"]) == 2
    assert "unknown carrier-pigeon" in capsys.readouterr().out
