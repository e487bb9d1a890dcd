"""`xdt up --watch`: a function whose files change is rolled to its new code, the old
instances drained; code that does not load is refused and the old code serves on; SIGHUP
rolls every function at once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from _support.platform import RunningPlatform

# tests/_support/functions/ver.py starts at VERSION = 0
VERSION = (
    "VERSION = {n}\n\n\ndef handler(body: bytes) -> bytes:\n    return str(VERSION).encode()\n"
)


def until(condition: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "it never happened"
        time.sleep(0.2)


def test_a_changed_function_is_rolled_to_its_new_code(tmp_path: Path) -> None:
    spec = {"functions": [{"name": "ver", "handler": "ver:handler", "min_scale": 1}]}
    platform = RunningPlatform(tmp_path, spec, options=["--watch"])
    try:

        def answer() -> bytes:
            status, _, body = platform.invoke("ver", b"", timeout=30)
            assert status == 200, body  # never an error while it rolls
            return body

        def ready() -> list[dict[str, object]]:
            instances = platform.function("ver")["instances"]
            return [dict(i) for i in instances if i["state"] == "ready"]

        def kinds() -> list[str]:
            return [e["kind"] for e in platform.function("ver")["events"]]

        assert answer() == b"0"
        (old,) = ready()
        # Data and logs written beside the code are not code; the spec is read at start.
        (platform.code / "out.log").write_text("written by someone's redirect\n")
        (platform.code / "input.bin").write_bytes(b"\0" * 1000)
        with open(platform.code / "xdt.yaml", "a") as spec_file:
            spec_file.write("# edited while it runs\n")
        until(lambda: "restart xdt up to apply it" in platform.log_path.read_text())
        time.sleep(1.5)  # a second look at the folder
        assert [i["id"] for i in ready()] == [old["id"]] and "rolled" not in kinds()
        module = platform.code / "ver.py"
        module.write_text(VERSION.format(n=1))
        until(lambda: answer() == b"1")
        until(lambda: [i["id"] for i in ready()] not in ([], [old["id"]]))
        (new,) = ready()
        assert new["code_version"] != old["code_version"] and "rolled" in kinds()

        module.write_text("def handler(body):\n    return (\n")  # does not load
        until(lambda: "not rolled" in kinds())
        assert answer() == b"1" and [i["id"] for i in ready()] == [new["id"]]

        os.kill(platform.process.pid, signal.SIGHUP)  # rolls now; the file still does not load
        until(lambda: kinds().count("not rolled") >= 2)
        module.write_text(VERSION.format(n=2))
        until(lambda: answer() == b"2")
        before = {i["id"] for i in ready()}
        os.kill(platform.process.pid, signal.SIGHUP)  # loads: every instance replaced
        until(lambda: bool(ready()) and not {i["id"] for i in ready()} & before)
        assert answer() == b"2"
    finally:
        log = platform.stop()
    assert "stopped" in log
