"""A function's code version (``xdt.platform.codeversion``): code files count, data and the
spec file do not."""

from __future__ import annotations

import os
from pathlib import Path

from xdt.platform.codeversion import MAX_FILES, folder_version


def test_the_version_follows_code_and_ignores_data_logs_and_the_spec(tmp_path: Path) -> None:
    (tmp_path / "functions.py").write_text("def f(body):\n    return body\n")
    (tmp_path / "xdt.yaml").write_text("functions: []\n")
    first = folder_version(tmp_path, skip=tmp_path / "xdt.yaml")
    assert len(first) == 12

    (tmp_path / "big.bin").write_bytes(b"\0" * 4096)  # data a user keeps beside the code
    (tmp_path / "up.log").write_text("xdt is up\n")  # output redirected into the folder
    (tmp_path / "xdt.yaml").write_text("functions: [changed]\n")  # read at start only
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "functions.cpython-311.pyc").write_bytes(b"compiled")
    assert folder_version(tmp_path, skip=tmp_path / "xdt.yaml") == first

    (tmp_path / "settings.json").write_text("{}")  # configuration the code reads
    second = folder_version(tmp_path, skip=tmp_path / "xdt.yaml")
    assert second != first
    (tmp_path / "functions.py").write_text("def f(body):\n    return body * 2\n")
    assert folder_version(tmp_path, skip=tmp_path / "xdt.yaml") not in (first, second)
    assert folder_version(tmp_path) != folder_version(tmp_path, skip=tmp_path / "xdt.yaml")


def test_an_executable_counts_whatever_its_name(tmp_path: Path) -> None:
    server = tmp_path / "server"  # a command:'s binary, no suffix
    server.write_bytes(b"\x7fELF v1")
    before = folder_version(tmp_path)
    server.write_bytes(b"\x7fELF v2")
    assert folder_version(tmp_path) == before  # not executable: data
    server.chmod(0o755)
    executable = folder_version(tmp_path)
    server.write_bytes(b"\x7fELF v3")
    assert folder_version(tmp_path) != executable


def test_too_much_code_is_said_not_hashed(tmp_path: Path) -> None:
    for i in range(MAX_FILES + 1):
        (tmp_path / f"m{i}.py").touch()
    assert folder_version(tmp_path) == "too-big"
    for i in range(MAX_FILES + 1):
        os.rename(tmp_path / f"m{i}.py", tmp_path / f"m{i}.csv")  # data: not counted
    assert len(folder_version(tmp_path)) == 12
