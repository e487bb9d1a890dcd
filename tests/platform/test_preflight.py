"""`xdt up` refuses a function that cannot start before anything starts, saying why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from _support.folders import readable_folder
from xdt import SpecError
from xdt.platform.preflight import check_command
from xdt.platform.spec import FunctionSpec


def up(folder: Path, spec: str) -> subprocess.CompletedProcess[str]:
    (folder / "xdt.yaml").write_text(spec)
    return subprocess.run(
        [sys.executable, "-m", "xdt", "up", "-f", str(folder / "xdt.yaml"), "--port", "0"],
        capture_output=True, text=True, timeout=120, cwd=folder,
        env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("source", "said"),
    [
        (None, "No module named 'app'"),
        ("def handler(body):\n    return body +\n", "SyntaxError"),
        ("import no_such_dependency\n\ndef handler(body):\n    return body\n",
         "No module named 'no_such_dependency'"),
        ("def other(body):\n    return body\n", "'app' has no function 'handler'"),
    ],
    ids=["missing-module", "syntax-error", "missing-dependency", "missing-function"],
)  # fmt: skip
def test_a_handler_that_cannot_be_loaded_is_refused_before_anything_starts(
    source: str | None, said: str
) -> None:
    with readable_folder() as folder:
        if source is not None:
            (folder / "app.py").write_text(source)
            (folder / "app.py").chmod(0o644)
        done = up(folder, "functions:\n  - {name: app, handler: 'app:handler'}\n")
    output = " ".join(done.stdout.split())
    assert done.returncode == 1, output
    assert "functions[app]: its handler cannot be loaded" in output and said in output
    assert "xdt is up" not in output and "Traceback" not in done.stderr
    if source is not None and "SyntaxError" in said:
        assert "line 2" in output  # where, as Python says it


def test_a_command_that_does_not_exist_says_not_found() -> None:
    with readable_folder() as folder:
        done = up(folder, "functions:\n  - {name: gone, command: [no-such-program-xdt, x]}\n")
    output = " ".join(done.stdout.split())
    assert done.returncode == 1, output
    assert "functions[gone].command: 'no-such-program-xdt' not found on PATH=" in output


def test_a_command_by_path_must_exist(tmp_path: Path) -> None:
    function = FunctionSpec("f", command=("./serve.sh",), folder=tmp_path)
    with pytest.raises(SpecError, match=r"'./serve.sh' not found \(looked for "):
        check_command(function)
    (tmp_path / "serve.sh").write_text("#!/bin/sh\n")
    check_command(function)  # there: the exec's own error (if any) comes at start
