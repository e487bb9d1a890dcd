"""``xdt invoke``, ``xdt status`` and ``xdt logs`` against a real platform, and without one:
readable errors, exit codes per error class, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from patterns import describe, make

from _support.platform import RunningPlatform
from xdt import KeyRing
from xdt.cli import main
from xdt.cli._options import platform_url
from xdt.cli.invoke import EXIT_CODES

Start = Callable[[dict[str, Any]], RunningPlatform]


def xdt(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xdt", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip


def nobody_listening() -> str:
    with socket.socket() as probe:  # a port that was just free: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "127.0.0.1:8080", ":8080"])
def test_url_may_be_given_as_host_and_port(url: str) -> None:
    assert platform_url(url) == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    "command", [["status"], ["logs"], ["invoke", "anything", "-d", "x"]], ids=lambda c: c[0]
)
def test_without_a_platform_each_command_says_so_and_exits_3(command: list[str]) -> None:
    address = nobody_listening()
    done = xdt(*command, "--url", address)
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == EXIT_CODES["no platform"] == 3, said
    assert f"no platform answering at http://{address}" in said and "XDT_URL" in said
    assert "Traceback" not in said


def test_a_platform_that_does_not_answer_in_time_is_a_timeout_not_no_platform() -> None:
    with socket.socket() as silent:  # accepts (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        done = xdt("invoke", "f", "--url", address, "--timeout", "0.5")
    said = " ".join(done.stderr.split())
    assert done.returncode == EXIT_CODES["timeout"], said
    assert "no answer from 'f' within 0.5 s" in said and "no platform" not in said


def test_invoke_exits_with_a_code_per_error_class(start_platform: Start) -> None:
    platform = start_platform(
        {
            "functions": [
                {"name": "upper", "handler": "fns:upper"},
                {"name": "explode", "handler": "contract:explode"},
                {"name": "refuse", "handler": "contract:refuse"},
                {"name": "slow", "handler": "fns:slow", "timeout": "0.5s"},
                {"name": "describe", "handler": "contract:describe"},
            ]
        }
    )
    address = platform.url.removeprefix("http://")  # host:port, as a user may type it
    ok = xdt("invoke", "upper", "-d", "hi", "--url", address)
    assert (ok.returncode, ok.stdout) == (EXIT_CODES["ok"], "HI")
    seen = xdt("invoke", "describe", "-X", "put", "--path", "/orders/7?x=1", "--url", address)
    assert seen.returncode == 0, seen.stderr
    assert json.loads(seen.stdout)["method"] == "PUT" and '"/orders/7"' in seen.stdout
    for wrong in (["-X", "GE T"], ["--path", "/a b"]):
        refused = xdt("invoke", "describe", *wrong, "--url", address)
        assert refused.returncode == EXIT_CODES["usage"] and "Traceback" not in refused.stderr
    failed = xdt("invoke", "explode", "-d", "x", "--url", address, "-H", "X-Request-Id: cli-1")
    said = " ".join(failed.stderr.split())
    assert failed.returncode == EXIT_CODES["function failed"], said
    assert "FunctionFailed (HTTP 500, request cli-1)" in said and "in _deeper" in said
    refused = xdt("invoke", "refuse", "-d", "plaid", "--url", address)
    assert refused.returncode == EXIT_CODES["refused"], refused.stderr
    missing = xdt("invoke", "nope", "--url", address)
    assert missing.returncode == EXIT_CODES["refused"] and "FunctionNotFound" in missing.stderr
    late = xdt("invoke", "slow", "-d", "5", "--url", address)
    assert late.returncode == EXIT_CODES["timeout"] and "InvocationTimeout" in late.stderr
    bad = xdt("invoke", "upper", "-H", "no colon", "--url", address)
    assert bad.returncode == EXIT_CODES["usage"]


def test_invoke_sends_a_file_over_the_inline_limit_by_reference(
    start_platform: Start, tmp_path: Path
) -> None:
    platform = start_platform({"functions": [{"name": "digest", "handler": "patterns:digest"}]})
    data = make(10 << 20, seed=5)  # over the 6 MiB inline limit
    (tmp_path / "big.bin").write_bytes(data)
    done = xdt("invoke", "digest", "-d", f"@{tmp_path / 'big.bin'}", "-v", "--url", platform.url)
    assert (done.returncode, done.stdout) == (0, describe(data)), done.stderr
    assert "uploaded, passed by reference" in done.stderr
    held = platform.status()["objects"]
    assert held is not None and (held["uploads"], held["objects"]) == (1, 0)
    missing = xdt("invoke", "digest", "-d", f"@{tmp_path / 'nope.bin'}", "--url", platform.url)
    assert missing.returncode == EXIT_CODES["usage"] and "cannot read" in missing.stderr


def test_logs_merges_every_instance_with_time_instance_and_request_id(
    start_platform: Start,
) -> None:
    platform = start_platform(
        {
            "functions": [
                {"name": "relay-sync", "handler": "contract:relay_sync"},
                {"name": "whoami", "handler": "contract:whoami"},
            ]
        }
    )
    assert platform.invoke("relay-sync", b"", headers={"X-Request-Id": "chain-9"})[0] == 200
    done = xdt("logs", "--url", platform.url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    asked = [line for line in lines if line.endswith(" chain-9 whoami was asked")]
    assert len(asked) == 1 and asked[0].split()[1].startswith("whoami-"), lines
    stamps = [line.split()[0] for line in lines]
    assert stamps == sorted(stamps)  # merged by time
    only = xdt("logs", "relay-sync", "--url", platform.url)
    assert only.returncode == 0 and "whoami was asked" not in only.stdout
    unknown = xdt("logs", "nope", "--url", platform.url)
    assert unknown.returncode == 1 and "no function 'nope' is deployed" in unknown.stderr


def test_logs_follow_shows_new_lines_and_new_instances(start_platform: Start) -> None:
    platform = start_platform({"functions": [{"name": "whoami", "handler": "contract:whoami"}]})
    follower = subprocess.Popen(
        [sys.executable, "-m", "xdt", "logs", "-f", "--url", platform.url],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(0.5)  # it has looked once: the instance (started from zero) is new to it
        assert platform.invoke("whoami", b"", headers={"X-Request-Id": "later-1"})[0] == 200
        assert follower.stdout is not None
        os.set_blocking(follower.stdout.fileno(), False)
        seen = b""
        deadline = time.monotonic() + 15
        while b"later-1 whoami was asked" not in seen:
            assert time.monotonic() < deadline, seen
            try:
                seen += os.read(follower.stdout.fileno(), 1 << 16)
            except BlockingIOError:
                time.sleep(0.05)
    finally:
        follower.terminate()  # the follower we started, by its handle
        follower.wait(timeout=10)
        if follower.stdout is not None:
            follower.stdout.close()


def test_keygen_never_replaces_a_key_ring_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys"
    assert main(["keygen", "--out", str(path)]) == 0
    first = path.read_text()
    assert main(["keygen", "--out", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err and path.read_text() == first
    assert main(["keygen", "--out", str(path), "--force"]) == 0
    assert path.read_text() != first and KeyRing.from_file(path)


@pytest.mark.parametrize(
    ("credentials", "said"),
    [({}, "no credentials for http://"), ({"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
                                          "cannot reach http://")],
)  # fmt: skip
def test_an_s3_endpoint_it_cannot_use_is_a_clear_error_not_a_traceback(
    shared_path: Path, credentials: dict[str, str], said: str
) -> None:
    spec = shared_path / "xdt.yaml"
    spec.write_text(
        f"platform: {{s3_endpoint_url: 'http://{nobody_listening()}', transfer: s3}}\n"
        "functions: [{name: f, handler: 'm:f'}]\n"
    )
    (shared_path / "m.py").write_text("def f(body):\n    return body\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | credentials
    done = subprocess.run(
        [sys.executable, "-m", "xdt", "up", "-f", str(spec), "--port", "0"],
        capture_output=True, text=True, timeout=120, env={**env, "COLUMNS": "300"},
    )  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1 and said in output, output[-2000:]
    assert "Traceback" not in output
