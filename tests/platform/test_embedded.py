"""The embedded platform end to end: `xdt up` as a real process, real sidecars and functions."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from patterns import describe, make

from _support.platform import RunningPlatform, alive, child_named, fast_autoscaler
from xdt import PullClient
from xdt._http.server import ERROR_HEADER

Start = Callable[[dict[str, Any]], RunningPlatform]


def test_a_chain_of_python_and_command_functions(start_platform: Start) -> None:
    """first (Python) → second (Python) → legacy (HTTP server) → third (Python), each call
    going through the caller's sidecar and the activator."""
    platform = start_platform(
        {
            "functions": [
                {"name": "first", "handler": "fns:first"},
                {"name": "second", "handler": "fns:second"},
                {"name": "legacy", "command": [sys.executable, "legacy_server.py"]},
                {"name": "third", "handler": "fns:third"},
            ]
        }
    )
    status, _, body = platform.invoke("first", b"payload")
    assert (status, body) == (200, b"first(second(legacy(third(payload))))")
    functions = platform.status()["functions"]
    assert {name: f["requests"] for name, f in functions.items()} == {
        "first": 1,
        "second": 1,
        "legacy": 1,
        "third": 1,
    }


def test_errors_reach_the_caller_typed_and_the_platform_keeps_serving(
    start_platform: Start,
) -> None:
    platform = start_platform(
        {
            "platform": {"inline_limit": "1KiB"},
            "functions": [
                {"name": "upper", "handler": "fns:upper"},
                {"name": "boom", "handler": "fns:boom"},
                {"name": "calls-missing", "handler": "fns:calls_missing"},
                {"name": "slow", "handler": "fns:slow", "timeout": "500ms"},
                {"name": "smuggle", "handler": "fns:smuggle"},
                {"name": "hold", "handler": "fns:hold_generated"},
            ],
        }
    )
    status, headers, body = platform.invoke("boom", b"abc")
    assert status == 500 and headers[ERROR_HEADER] == "function_failed"
    assert "ValueError: cannot handle 'abc'" in json.loads(body)["message"]

    status, headers, body = platform.invoke("nope")
    assert status == 404 and headers[ERROR_HEADER] == "function_not_found"
    assert "'nope'" in json.loads(body)["message"] and "upper" in json.loads(body)["message"]

    status, headers, body = platform.invoke("upper", b"x" * 2000)
    assert status == 413 and headers[ERROR_HEADER] == "payload_too_large"
    assert "1024" in json.loads(body)["message"]

    status, headers, body = platform.invoke("slow", b"5")
    assert status == 504 and headers[ERROR_HEADER] == "timeout"
    assert "0.5 s" in json.loads(body)["message"]

    # The SDK turns the platform's 404 back into xdt.FunctionNotFound inside a function.
    status, _, body = platform.invoke("calls-missing", b"x")
    assert status == 200 and body.startswith(b"FunctionNotFound: no function named")

    # A CR/LF smuggled into the target name is refused, not forwarded on a shared connection.
    status, _, body = platform.invoke("smuggle")
    assert status == 200 and body.startswith(b"HTTP/1.1 404"), body
    for word in (b"one", b"two", b"three"):  # and answers stay in step afterwards
        assert platform.invoke("upper", word)[::2] == (200, word.upper())

    # Objects may be bigger than the inline limit: they never travel inline.
    status, _, reference = platform.invoke("hold", b"4096")
    assert status == 200 and len(reference) < 400

    assert platform.invoke("upper", b"still here")[::2] == (200, b"STILL HERE")


def test_bad_http_input_gets_a_clear_answer_and_nothing_partial_runs(
    start_platform: Start,
) -> None:
    platform = start_platform({"functions": [{"name": "upper", "handler": "fns:upper"}]})
    host, port = platform.url.removeprefix("http://").split(":")

    # Oversized headers: refused by the HTTP parser, the platform goes on.
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            b"POST /invoke/upper HTTP/1.1\r\nHost: x\r\nX-Big: "
            + b"a" * 20000
            + b"\r\nContent-Length: 1\r\n\r\nx"
        )
        answer = raw.recv(4096)
    assert re.match(rb"HTTP/1\.[01] 400", answer) and b"8190 bytes" in answer, answer[:200]

    # A client that goes away mid-body: the function never sees a truncated request.
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"POST /invoke/upper HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        raw.sendall(b"only ten b")
    time.sleep(0.3)
    assert platform.function("upper")["requests"] == 0

    # Garbage instead of HTTP.
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"\x00\x01garbage\r\n\r\n")
        assert re.match(rb"HTTP/1\.[01] 400", raw.recv(4096))

    assert platform.invoke("upper", b"fine")[::2] == (200, b"FINE")

    # Asking for a reference answer is for the platform's own hops; a reference sent from
    # outside is checked before anything runs.
    for header, code in (("X-Xdt-Accept", "forbidden"), ("X-Xdt-Transfer", "reference_malformed")):
        status, headers, body = platform.invoke("upper", b"x" * 300_000, {header: "ref"})
        assert status == 403 and headers[ERROR_HEADER] == code, body[:200]
    assert platform.function("upper")["requests"] == 1
    with urllib.request.urlopen(f"{platform.url}/readyz", timeout=10) as ready:
        assert ready.status == 200 and ready.read() == b"ready"


def test_the_function_process_never_sees_the_key(start_platform: Start) -> None:
    name = "env-" + "x" * 59  # the longest name: its socket path must still fit
    platform = start_platform({"functions": [{"name": name, "handler": "fns:environment"}]})
    status, _, body = platform.invoke(name)
    assert status == 200
    seen = json.loads(body)
    assert seen["xdt_names"] == ["XDT_EGRESS", "XDT_EGRESS_SOCKET", "XDT_FUNCTION", "XDT_INSTANCE"]
    (instance,) = platform.function(name)["instances"]
    with open(f"/proc/{instance['sidecar_pid']}/environ", "rb") as raw:
        sidecar_environ = raw.read().decode(errors="replace")
    for line in platform.keyring.to_text().splitlines():
        secret = line.split()[1]
        assert secret not in seen["environ"]
        assert secret not in sidecar_environ  # handed over on a pipe, not in the environment


def test_scale_from_zero_buffers_the_request_and_answers_it(start_platform: Start) -> None:
    platform = start_platform(
        {
            "platform": {"autoscaler": fast_autoscaler()},
            "functions": [{"name": "upper", "handler": "fns:upper", "initial_scale": 0}],
        }
    )
    before = platform.function("upper")
    assert (before["ready"], before["desired"], before["instances"]) == (0, 0, [])
    status, _, body = platform.invoke("upper", b"cold")
    assert (status, body) == (200, b"COLD")
    after = platform.function("upper")
    assert after["ready"] == 1
    assert any(e["event"].startswith("poked") for e in after["events"])


async def test_a_burst_at_zero_starts_what_the_load_needs_not_one_per_request(
    start_platform: Start,
) -> None:
    platform = start_platform(
        {
            "platform": {"autoscaler": fast_autoscaler()},
            "functions": [{"name": "upper", "handler": "fns:upper", "initial_scale": 0}],
        }
    )
    async with aiohttp.ClientSession() as session:

        async def call() -> int:
            async with session.post(f"{platform.url}/invoke/upper", data=b"x") as answer:
                return answer.status

        statuses = await asyncio.wait_for(asyncio.gather(*(call() for _ in range(40))), 60)
    assert statuses == [200] * 40
    await asyncio.sleep(1.0)  # a few ticks
    upper = platform.function("upper")
    # 40 short requests at unlimited concurrency (target 70 per instance): one instance.
    assert upper["desired"] <= 2 and len(upper["instances"]) <= 2, upper
    assert not upper["panicking"]


def one_slow_instance(start_platform: Start) -> RunningPlatform:
    """One ready instance of ``slow`` taking one request at a time, behind a queue of two."""
    platform = start_platform(
        {
            "platform": {"queue_depth": 2},
            "functions": [
                {"name": "slow", "handler": "fns:slow", "concurrency": 1, "max_scale": 1}
            ],
        }
    )
    platform.wait_for(lambda s: s["functions"]["slow"]["ready"] == 1, what="one ready instance")
    return platform


async def test_a_client_that_goes_away_frees_its_queue_slot(start_platform: Start) -> None:
    platform = one_slow_instance(start_platform)
    async with aiohttp.ClientSession() as session:
        abandoned = [
            asyncio.create_task(session.post(f"{platform.url}/invoke/slow", data=b"3"))
            for _ in range(3)
        ]
        await asyncio.sleep(0.5)
        for task in abandoned:
            task.cancel()
        await asyncio.gather(*abandoned, return_exceptions=True)
    platform.wait_for(
        lambda s: (
            s["functions"]["slow"]["queued"] == 0 and s["functions"]["slow"]["in_flight"] == 0
        ),
        timeout=10,
        what="the abandoned requests to give their slots back",
    )
    assert platform.invoke("slow", b"0.1")[::2] == (200, b"slept 0.1")


def test_crash_mid_request_is_a_502_and_the_instance_comes_back(start_platform: Start) -> None:
    platform = start_platform({"functions": [{"name": "crashy", "handler": "fns:crash"}]})
    assert platform.invoke("crashy", b"a")[2] == b"alive:a"
    status, headers, body = platform.invoke("crashy", b"crash")
    assert status == 502 and headers[ERROR_HEADER] == "instance_failed"
    assert "exited" in json.loads(body)["message"]
    platform.wait_for(
        lambda s: (
            s["functions"]["crashy"]["restarts"] == 1 and s["functions"]["crashy"]["ready"] == 1
        ),
        what="the crashed function process to be restarted",
    )
    assert platform.invoke("crashy", b"b")[::2] == (200, b"alive:b")
    events = [e["event"] for e in platform.function("crashy")["events"]]
    assert any(e.startswith("crashed: the function process exited with code 17") for e in events)


def test_a_dead_sidecar_is_replaced_by_a_new_instance(start_platform: Start) -> None:
    platform = start_platform({"functions": [{"name": "upper", "handler": "fns:upper"}]})
    platform.wait_for(lambda s: s["functions"]["upper"]["ready"] == 1, what="a ready instance")
    (first,) = platform.function("upper")["instances"]
    os.kill(first["sidecar_pid"], signal.SIGKILL)
    status = platform.wait_for(
        lambda s: (
            [(i["id"], i["state"]) for i in s["functions"]["upper"]["instances"]]
            == [("upper-2", "ready")]
        ),
        what="a replacement instance",
    )
    assert any(
        e["instance"] == "upper-1" and e["event"].startswith("failed: the sidecar exited")
        for e in status["functions"]["upper"]["events"]
    )
    assert not alive(first["function_pid"])  # its function process went with it
    assert platform.invoke("upper", b"again")[::2] == (200, b"AGAIN")


def test_instances_die_with_a_killed_platform(start_platform: Start) -> None:
    platform = start_platform({"functions": [{"name": "upper", "handler": "fns:upper"}]})
    platform.wait_for(lambda s: s["functions"]["upper"]["ready"] == 1, what="a ready instance")
    pids = platform.pids()
    assert len(pids) == 2 and all(alive(p) for p in pids)
    run_dir = Path(platform.function("upper")["instances"][0]["log"]).parent.parent
    assert run_dir.name.startswith("xdt-")
    platform.process.kill()  # no chance to stop anything in order
    platform.process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)
    assert run_dir.is_dir()  # what the killed platform could not clean up...
    after = start_platform({"functions": [{"name": "upper", "handler": "fns:upper"}]})
    assert not run_dir.exists()  # ...the next start does, and says so
    assert f"removed {run_dir}: the run folder of a platform that was killed" in after.stop()


def test_an_instance_that_never_gets_ready_fails_buffered_requests_clearly(
    start_platform: Start,
) -> None:
    """A command that never listens on $PORT: after its ready_timeout the waiting request
    hears why, not a hang until the function's timeout."""
    never = [sys.executable, "-c", "import time; time.sleep(120)"]
    platform = start_platform(
        {"functions": [{"name": "deaf", "command": never, "ready_timeout": "1s", "timeout": 60}]}
    )
    started = time.monotonic()
    status, headers, body = platform.invoke("deaf", b"x", timeout=60)
    assert status == 502 and headers[ERROR_HEADER] == "instance_failed"
    message = json.loads(body)["message"]
    assert "not ready after 1 s (ready_timeout); is it listening on $PORT=" in message
    assert time.monotonic() - started < 30  # told after the readiness deadline, not at timeout
    assert platform.function("deaf")["start_failures"] >= 1


async def test_breaker_concurrency_one_and_a_full_queue_gets_503(start_platform: Start) -> None:
    platform = one_slow_instance(start_platform)
    async with aiohttp.ClientSession() as session:

        async def call(
            url: str, headers: dict[str, str] | None = None
        ) -> tuple[int, str | None, bytes]:
            async with session.post(url, data=b"0.3", headers=headers) as answer:
                return answer.status, answer.headers.get(ERROR_HEADER), await answer.read()

        # Through the activator: 1 running + 2 buffered; the other 3 are refused at once.
        results = await asyncio.wait_for(
            asyncio.gather(*(call(f"{platform.url}/invoke/slow") for _ in range(6))), 30
        )
        assert sorted(r[0] for r in results) == [200, 200, 200, 503, 503, 503]
        refused = [json.loads(r[2])["message"] for r in results if r[0] == 503]
        assert all("queue_depth 2" in m for m in refused)

        # Straight at the sidecar, as the platform (its hop secret): its breaker admits 1 + a
        # queue of 10× that, then 503.
        ingress = platform.function("slow")["instances"][0]["ingress"]
        hop = {"X-Xdt-Hop": platform.keyring.hop_secret()}
        results = await asyncio.wait_for(
            asyncio.gather(*(call(f"{ingress}/invoke", hop) for _ in range(15))), 60
        )
        assert sorted(r[0] for r in results) == [200] * 11 + [503] * 4
        assert {r[1] for r in results if r[0] == 503} == {"overloaded"}


async def test_scale_up_under_load_panic_then_down_to_zero(start_platform: Start) -> None:
    platform = start_platform(
        {
            "platform": {"autoscaler": fast_autoscaler()},
            "functions": [
                {"name": "slow", "handler": "fns:slow", "concurrency": 1, "max_scale": 4}
            ],
        }
    )
    platform.wait_for(lambda s: s["functions"]["slow"]["ready"] == 1, what="one ready instance")
    peak_ready, panicked = 0, False
    async with aiohttp.ClientSession() as session:
        # The load lasts until the platform has both panicked and added an instance (a loaded
        # 2-core machine may take longer than the 3 s a fixed load gave it), 60 s at most.
        seen = asyncio.Event()

        async def client() -> int:
            ok = 0
            deadline = time.monotonic() + 60
            while not seen.is_set() and time.monotonic() < deadline:
                async with session.post(f"{platform.url}/invoke/slow", data=b"0.2") as answer:
                    ok += answer.status == 200
            return ok

        load = asyncio.gather(*(client() for _ in range(8)))
        while not load.done():
            status = await asyncio.to_thread(platform.function, "slow")
            peak_ready = max(peak_ready, status["ready"])
            panicked = panicked or status["panicking"]
            if panicked and peak_ready >= 2:
                seen.set()
            await asyncio.sleep(0.2)
        served = sum(await load)
    assert served >= 8
    assert peak_ready >= 2
    assert panicked  # 8 clients on one instance of concurrency 1: far over 200 % of target
    assert "xdt_panic_mode" in _metrics(platform)
    # Idle: the stable window empties, the grace passes, every instance goes.
    final = platform.wait_for(
        lambda s: (
            s["functions"]["slow"]["desired"] == 0 and s["functions"]["slow"]["instances"] == []
        ),
        timeout=40,
        what="scale to zero",
    )
    events = [e["event"] for e in final["functions"]["slow"]["events"]]
    assert "draining" in events and "stopped" in events


async def test_an_instance_holding_an_object_is_not_stopped_until_it_is_pulled(
    start_platform: Start,
) -> None:
    platform = start_platform(
        {
            "platform": {"autoscaler": fast_autoscaler()},
            "functions": [{"name": "hold", "handler": "fns:hold"}],
        }
    )
    status, _, reference = platform.invoke("hold", b"keep me" * 1000)
    assert status == 200
    platform.wait_for(
        lambda s: [i["state"] for i in s["functions"]["hold"]["instances"]] == ["draining"],
        timeout=30,
        what="the idle instance to drain",
    )
    instance = platform.function("hold")["instances"][0]
    # A sidecar that does not answer (stopped for longer than the 3 s probe timeout) is not
    # taken for an empty one.
    os.kill(instance["sidecar_pid"], signal.SIGSTOP)
    await asyncio.sleep(4.0)
    os.kill(instance["sidecar_pid"], signal.SIGCONT)
    await asyncio.sleep(0.5)
    still = platform.function("hold")["instances"]
    assert [i["state"] for i in still] == ["draining"] and still[0]["objects"] == 1
    assert alive(instance["sidecar_pid"])

    async with PullClient(platform.keyring) as client:
        pulled = await client.pull(reference.decode())
        with pulled:
            assert pulled.tobytes() == b"keep me" * 1000
    platform.wait_for(
        lambda s: s["functions"]["hold"]["instances"] == [], what="the drained instance to stop"
    )
    assert not alive(instance["sidecar_pid"]) and not alive(instance["function_pid"])


def test_an_unpulled_object_keeps_its_instance_until_it_expires(start_platform: Start) -> None:
    platform = start_platform(
        {
            "platform": {"autoscaler": fast_autoscaler()},
            "functions": [{"name": "hold", "handler": "fns:hold", "env": {"HOLD_TTL": "6"}}],
        }
    )
    put_at = time.monotonic()
    assert platform.invoke("hold", b"x")[0] == 200
    platform.wait_for(
        lambda s: s["functions"]["hold"]["instances"] == [], timeout=40, what="expiry and stop"
    )
    # Idle, it would have gone after ~3 s window + 1 s grace; the object held it to its TTL.
    assert time.monotonic() - put_at >= 6.0
    events = [e["event"] for e in platform.function("hold")["events"]]
    assert events.index("draining") < events.index("stopped")


def test_cli_invoke_status_and_ctrl_c_stops_everything(start_platform: Start) -> None:
    platform = start_platform(
        {
            "functions": [
                {"name": "upper", "handler": "fns:upper", "min_scale": 1},
                {"name": "slow", "handler": "fns:slow", "min_scale": 1},
                # A command that forks: its child must go too.
                {"name": "legacy", "min_scale": 1,
                 "command": ["sh", "-c", f"{sys.executable} legacy_server.py; true"]},
                {"name": "third", "handler": "fns:third"},
            ]
        }
    )  # fmt: skip
    (platform.folder / "in.bin").write_bytes(b"from a file")
    xdt = [sys.executable, "-m", "xdt"]
    done = subprocess.run(
        [*xdt, "invoke", "upper", "--data", "@" + str(platform.folder / "in.bin"),
         "--url", platform.url],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, b"FROM A FILE")
    done = subprocess.run(
        [*xdt, "invoke", "nope", "--url", platform.url], capture_output=True, timeout=60
    )
    assert done.returncode == 5 and b"FunctionNotFound" in done.stderr
    done = subprocess.run(
        [*xdt, "invoke", "no such", "--url", platform.url], capture_output=True, timeout=60
    )
    assert done.returncode == 2 and b"not a function name" in done.stderr
    done = subprocess.run(
        [*xdt, "status", "--url", platform.url], capture_output=True, timeout=60, text=True,
        env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    assert done.returncode == 0
    assert "upper-1" in done.stdout and "ready" in done.stdout

    platform.wait_for(
        lambda s: all(f["ready"] >= 1 for n, f in s["functions"].items() if n != "third"),
        what="every min_scale instance",
    )
    assert platform.invoke("legacy", b"x")[::2] == (200, b"legacy(third(x))")
    metrics = _metrics(platform)
    assert 'xdt_instances_ready{function="upper"} 1' in metrics
    pids = platform.pids()
    assert len(pids) == 8 and all(alive(p) for p in pids)
    forked = _processes_mentioning("legacy_server.py")
    assert len(forked) >= 2  # sh and its python child

    # Ctrl-C with a request in flight: it is answered, then everything stops.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(platform.invoke, "slow", b"1.5")
        platform.wait_for(lambda s: s["functions"]["slow"]["in_flight"] == 1, what="the call")
        log = platform.stop()
        assert answer.result(timeout=30)[::2] == (200, b"slept 1.5")
    assert platform.process.returncode == 0, log
    assert not any(alive(p) for p in pids), log
    assert not [p for p in forked if alive(p)], log
    assert "waiting up to 10 s for 1 requests in flight" in log and "stopped" in log


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    if text.encode() in cmdline.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_a_malformed_spec_is_refused_naming_the_field(tmp_path: Any) -> None:
    spec = tmp_path / "xdt.yaml"
    spec.write_text("functions:\n  - name: a\n    handler: fns:a\n    concurrency: -1\n")
    done = subprocess.run(
        [sys.executable, "-m", "xdt", "up", "-f", str(spec)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 2
    assert "functions[a].concurrency" in done.stdout and "-1" in done.stdout


def _metrics(platform: RunningPlatform) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{platform.url}/metrics", timeout=10) as answer:
        text: str = answer.read().decode()
        return text


def test_a_function_is_held_to_its_memory_limit_and_the_others_are_not(
    start_platform: Start,
) -> None:
    """``memory_limit`` bounds a function process (its heap and any one file it writes); it goes
    on serving after hitting the bound, and a function without one is not held to it."""
    big = str(512 << 20).encode()
    platform = start_platform(
        {
            "functions": [
                {"name": "small", "handler": "fns:hog", "memory_limit": "128MiB"},
                {"name": "free", "handler": "fns:hog"},
            ]
        }
    )
    assert platform.invoke("small", big)[::2] == (200, b"refused: MemoryError")
    assert platform.invoke("small", b"file:" + big)[2].startswith(b"refused: File too large")
    assert platform.invoke("small", b"1000000")[::2] == (200, b"allocated 1000000")
    assert platform.invoke("free", big)[::2] == (200, b"allocated " + big)


def _health(platform: RunningPlatform) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"{platform.url}/healthz", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as answer:
        return answer.code, answer.read().decode()


@pytest.mark.parametrize(
    ("mode", "process", "name"),
    [("elasticache", b"redis-server", "redis-server at"), ("s3", b"moto.server", "moto S3")],
)
def test_an_embedded_store_that_dies_is_restarted_and_reported(
    start_platform: Start, mode: str, process: bytes, name: str
) -> None:
    """A killed redis-server (or S3 emulator) was never restarted, /healthz said all was
    well, and every transfer in that mode failed from then on."""
    platform = start_platform(
        {"functions": [{"name": "trip", "handler": "fns:roundtrip", "transfer": mode}]}
    )
    assert platform.invoke("trip", b"ab")[::2] == (200, b"ab" * 1000)
    assert _health(platform)[0] == 200
    first = child_named(platform, process)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            second = child_named(platform, process)
        except LookupError:
            second = first  # between the two
        if second != first and not platform.status()["stores_down"]:
            break
        time.sleep(0.05)
    assert second != first, "the store was not restarted"
    os.kill(second, signal.SIGKILL)  # again at once: now it waits 0.5 s before restarting
    deadline, seen_down = time.monotonic() + 10, None
    while seen_down is None and time.monotonic() < deadline:
        status, text = _health(platform)
        if status == 503:
            seen_down = text
        time.sleep(0.02)
    assert seen_down is not None and f"store down: {name}" in seen_down
    assert "sidecar" not in seen_down  # no password, no URL: just which and why
    platform.wait_for(lambda s: not s["stores_down"], what="the store back")
    assert _health(platform)[0] == 200
    answer = platform.invoke("trip", b"cd")
    assert answer[::2] == (200, b"cd" * 1000), answer[2][:300]  # transfers work again
    log = platform.stop()
    assert "crashed: exited with code -9" in log and "restarted: restart 2" in log, log


def test_a_crash_looping_function_is_marked_and_its_waiting_requests_told_why(
    start_platform: Start,
) -> None:
    platform = start_platform(
        {"functions": [{"name": "fragile", "handler": "fragile:handler", "min_scale": 1}]}
    )
    assert platform.invoke("fragile", b"hi")[::2] == (200, b"fine")
    (platform.code / "fragile.broken").write_text("")  # from now on it cannot start
    status, _, _ = platform.invoke("fragile", b"die")
    assert status == 502
    # Once the platform has seen the crash (a request that reaches the sidecar before then
    # finds no function to take it: "not accepting connections", as on any platform).
    platform.wait_for(
        lambda s: any(i["crashes"] for i in s["functions"]["fragile"]["instances"]),
        what="the crash seen",
    )
    status, headers, body = platform.invoke("fragile", b"hi", timeout=60)
    message = json.loads(body)["message"]
    assert status == 502 and headers[ERROR_HEADER] == "instance_failed", message
    assert "is crash-looping" in message and "its configuration is broken" in message
    function = platform.function("fragile")
    assert function["crash_looping"], function["instances"]
    last = function["last_error"]
    assert last is not None and "its configuration is broken" in last["message"]


def _ipv6_loopback() -> str | None:
    """Why there is no IPv6 loopback here, or None if there is one."""
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError as exc:
        return f"no IPv6 loopback here: {exc}"
    return None


@pytest.mark.skipif(_ipv6_loopback() is not None, reason=str(_ipv6_loopback()))
def test_the_platform_serves_on_ipv6_addresses(start_platform: Start) -> None:
    """host: '::1' once gave a URL of 'http://::1:PORT' that every sidecar failed to parse."""
    platform = start_platform(
        {
            "platform": {"host": "::1", "instance_host": "::1"},
            "functions": [
                {"name": "one-to-one", "handler": "patterns:one_to_one"},
                {"name": "digest", "handler": "patterns:digest"},
                {"name": "produce", "handler": "patterns:produce"},
            ],
        }
    )
    assert platform.url.startswith("http://[::1]:")
    order = {"size": 1 << 20, "seed": 1}  # over the xdt threshold: pulled between sidecars
    status, _, body = platform.invoke("one-to-one", json.dumps(order).encode())
    described = describe(make(1 << 20, seed=1))
    assert status == 200 and json.loads(body) == [described, described]
