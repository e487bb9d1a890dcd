"""The README's quick start, as written: its functions.py, server.py and xdt.yaml under a real
`xdt up`, called with curl's request and with its xdt.Client example."""

from __future__ import annotations

import re
from pathlib import Path

from _support.folders import readable_folder
from xdt.testing import LaunchedPlatform

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def block(first_line: str) -> str:
    """The README's fenced code block whose first line starts with ``first_line``."""
    for code in re.findall(r"```\w*\n(.*?)```", README, re.DOTALL):
        if code.startswith(first_line):
            return str(code)
    raise AssertionError(f"the README has no code block starting {first_line!r}")


def test_the_quick_start_runs_as_written(tmp_path: Path) -> None:
    with readable_folder() as folder:
        for name in ("functions.py", "server.py", "xdt.yaml"):
            (folder / name).write_text(block(f"# {name}"))
            (folder / name).chmod(0o644)
        platform = LaunchedPlatform(folder / "xdt.yaml", tmp_path / "up.log")
        try:
            assert platform.invoke("greet", b"world")[::2] == (200, b"hello, WORLD")
            assert platform.invoke("legacy", b"old code")[::2] == (200, b"legacy: old code")
            client_example = block("with xdt.Client(")
            assert "http://127.0.0.1:8080" in client_example
            code = "import xdt\n" + client_example.replace("http://127.0.0.1:8080", platform.url)
            printed: list[object] = []
            exec(code, {"print": printed.append})  # the README's own lines
            assert printed == [b"hello, WORLD"]
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
