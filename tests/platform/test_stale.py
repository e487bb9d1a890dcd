"""Run folders that killed platforms leave behind (``remove_stale_run_folders``): only ours,
only those whose platform process is gone — not running, or its pid taken by a later one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from xdt._util.procfs import started_at
from xdt.platform.embedded import OWNER_FILE, remove_stale_run_folders


def _run_folder(root: Path, name: str, owner: dict[str, object] | None) -> Path:
    folder = root / f"xdt-{name}"
    (folder / "logs").mkdir(parents=True)
    if owner is not None:
        (folder / OWNER_FILE).write_text(json.dumps(owner))
    return folder


def test_only_the_folders_of_platforms_that_are_gone_are_removed(tmp_path: Path) -> None:
    gone_pid = _a_pid_that_is_gone()
    parent = os.getppid()
    dead = _run_folder(tmp_path, "dead", {"pid": gone_pid, "started_at": 1})
    reused = _run_folder(tmp_path, "reused", {"pid": parent, "started_at": -1})
    running = _run_folder(tmp_path, "running", {"pid": parent, "started_at": started_at(parent)})
    kept_logs = _run_folder(tmp_path, "kept", None)  # a stopped platform's kept logs
    garbled = _run_folder(tmp_path, "garbled", None)
    (garbled / OWNER_FILE).write_text("{not json")
    other = tmp_path / "not-xdt"
    other.mkdir()
    removed = remove_stale_run_folders(tmp_path)
    assert sorted(removed) == sorted([dead, reused])
    assert not dead.exists() and not reused.exists()
    assert running.is_dir() and kept_logs.is_dir() and garbled.is_dir() and other.is_dir()


def _a_pid_that_is_gone() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
