"""The README's quick start, as written: its functions.py, server.py and xdt.yaml under a real
`xdt up`; each of its shell commands run (``xdt`` and the URL pointed at that platform), each
``# → answer`` checked; its Python examples executed; its mode switch made in every mode."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from _support.folders import readable_folder
from xdt.modes import MODES
from xdt.testing import LaunchedPlatform

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
QUICK_START = README[README.index("## Quick start") : README.index("## Run functions on")]
OBJECTS = README[README.index("### Inputs and outputs of any size") :]
OBJECTS = OBJECTS[: OBJECTS.index("\n### ", 1)]
ANSWER = "# → "


def blocks(text: str, language: str = r"\w*") -> list[str]:
    return [str(code) for code in re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)]


def block(first_line: str, text: str = README) -> str:
    """The fenced code block whose first line starts with ``first_line``."""
    for code in blocks(text):
        if code.startswith(first_line):
            return code
    raise AssertionError(f"the README has no code block starting {first_line!r}")


def run_shell_block(code: str, url: str, folder: Path) -> list[str]:
    """Run each command of a ``sh`` block as a user would (`xdt up` aside: the test started
    it), in ``folder``, against the platform at ``url``; check each ``# → answer``. Returns
    what each printed. ``NAME=$(command)`` sets NAME for the commands after it."""
    env = {**os.environ, "XDT_URL": url, "COLUMNS": "200"}
    printed: list[str] = []
    for line in code.splitlines():
        command, _, comment = line.partition("  #")
        command = command.strip()
        if not command or command.startswith("xdt up "):
            continue
        command = command.replace("http://127.0.0.1:8080", url)
        if command.startswith("xdt "):
            command = f"{shlex.quote(sys.executable)} -m {command}"
        assignment = re.fullmatch(r"(\w+)=\$\((.*)\)", command)
        script = assignment.group(2) if assignment else command
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", script], cwd=folder, env=env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, f"{line!r} failed: {done.stderr[-2000:]}"
        if assignment:
            env[assignment.group(1)] = done.stdout.strip()
        expected = ("#" + comment).strip()
        if expected.startswith(ANSWER):
            assert done.stdout.strip() == expected.removeprefix(ANSWER), line
        printed.append(done.stdout)
    return printed


def write_quick_start(folder: Path, spec: dict[str, Any] | None = None) -> None:
    for name in ("functions.py", "server.py", "xdt.yaml"):
        text = block(f"# {name}", QUICK_START)
        if name == "xdt.yaml" and spec is not None:
            text = yaml.safe_dump(spec)
        (folder / name).write_text(text)
        (folder / name).chmod(0o644)


def test_the_quick_start_runs_as_written(tmp_path: Path) -> None:
    with readable_folder() as folder:
        write_quick_start(folder)
        (up,) = [b for b in blocks(QUICK_START, "sh") if b.startswith("xdt up ")]
        assert up.split("#")[0].split() == ["xdt", "up", "-f", "xdt.yaml"]
        platform = LaunchedPlatform(folder / "xdt.yaml", tmp_path / "up.log")
        try:
            said = []
            for code in blocks(QUICK_START, "sh"):
                said += run_shell_block(code, platform.url, folder)
            status, logs, metrics, usage = said[3:7]  # step 4, after step 3's three calls
            assert "greet" in status and "legacy" in status
            assert "greeting 5 bytes" in logs and "greet-" in logs  # with its instance
            assert 'function="greet",status="200"' in metrics
            assert '"invocations"' in usage

            client_example = block("with xdt.Client(", QUICK_START)
            assert "http://127.0.0.1:8080" in client_example
            code = "import xdt\n" + client_example.replace("http://127.0.0.1:8080", platform.url)
            printed: list[object] = []
            exec(code, {"print": printed.append})  # the README's own lines
            assert printed == [b"hello, WORLD"]

            (upload,) = [b for b in blocks(OBJECTS, "sh")]
            run_shell_block(upload, platform.url, folder)
            held = platform.status()["objects"]
            assert held is not None and held["uploads"] == 2 and held["objects"] == 0
        finally:
            platform.stop()


@pytest.mark.parametrize("mode", [m for m in MODES if m != "xdt"])
def test_the_quick_starts_mode_switch_works_in_every_mode(tmp_path: Path, mode: str) -> None:
    """Step 5's one line, with each mode: the same answers; inline refuses 50 MB by name."""
    switch = yaml.safe_load(block("platform:\n  transfer:", QUICK_START))
    spec = yaml.safe_load(block("# xdt.yaml", QUICK_START))
    spec["platform"] = {**spec["platform"], **switch["platform"], "transfer": mode}
    with readable_folder() as folder:
        write_quick_start(folder, spec)
        (folder / "big.bin").write_bytes(bytes(50_000_000))
        platform = LaunchedPlatform(folder / "xdt.yaml", tmp_path / "up.log")
        try:
            assert platform.status()["functions"]["greet"]["transfer"] == mode
            assert platform.invoke("greet", b"world")[::2] == (200, b"hello, WORLD")
            big = subprocess.run(
                [sys.executable, "-m", "xdt", "invoke", "greet", "-d", "@big.bin"],
                cwd=folder, env={**os.environ, "XDT_URL": platform.url}, capture_output=True,
                timeout=120,
            )  # fmt: skip
            if mode == "inline":
                said = " ".join(big.stderr.decode().split())
                assert big.returncode != 0 and "platform.inline_limit" in said, said
            else:
                assert (big.returncode, len(big.stdout)) == (0, 50_000_007), big.stderr[-500:]
        finally:
            platform.stop()


def test_the_request_and_response_example_answers_as_it_says() -> None:
    import xdt

    space: dict[str, object] = {"xdt": xdt}
    exec(block("def describe("), space)
    describe = space["describe"]
    assert callable(describe)
    response = describe(xdt.Request(b"", "GET", "/orders/7"))
    assert isinstance(response, xdt.Response)
    assert (response.status, response.body, dict(response.headers)) == (
        201, "GET /orders/7", {"X-Mine": "1"},
    )  # fmt: skip
