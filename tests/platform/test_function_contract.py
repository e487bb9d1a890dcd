"""The whole HTTP contract through real `xdt up` processes: what of a request reaches a
function (path, query, headers), what comes back (status, headers), request ids and trace
context through every hop, tracebacks in the error JSON and in the instance log."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _support.platform import RunningPlatform
from xdt._http.server import ERROR_HEADER
from xdt._util.logs import parse_line

Start = Callable[[dict[str, Any]], RunningPlatform]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def call(
    platform: RunningPlatform,
    path: str,
    data: bytes | None = b"",
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(
        f"{platform.url}{path}", data=data, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as answer:
        return answer.code, answer.headers, answer.read()


def log_lines(platform: RunningPlatform, instance_prefix: str) -> list[str]:
    folder = Path(platform.status()["logs"])
    lines: list[str] = []
    for log in sorted(folder.glob(f"{instance_prefix}-*.log")):
        lines += log.read_text(errors="replace").splitlines()
    return lines


def test_a_python_handler_gets_the_whole_request_and_gives_status_and_headers(
    start_platform: Start,
) -> None:
    platform = start_platform({"functions": [{"name": "describe", "handler": "contract:describe"}]})
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Bearer abc",
        "X-Custom": "mine",
        "X-Request-Id": "order-42",
        "traceparent": TRACEPARENT,
        "X-Xdt-Hop": "forged",  # the platform's own: never reaches a function
    }
    status, answer_headers, body = call(
        platform, "/invoke/describe/orders/7?status=201&x=1", b'{"a":1}', method="PUT",
        headers=headers,
    )  # fmt: skip
    seen = json.loads(body)
    assert status == 201 and answer_headers["X-Answer"] == "yes"
    assert answer_headers["X-Request-Id"] == "order-42"
    assert answer_headers.get(ERROR_HEADER) is None  # a function cannot forge the platform's
    assert (seen["method"], seen["path"], seen["query"]) == (
        "PUT",
        "/orders/7",
        {"status": "201", "x": "1"},
    )
    assert seen["body"] == '{"a":1}' and seen["request_id"] == "order-42"
    got = seen["headers"]
    assert got["content-type"] == "application/json" and got["authorization"] == "Bearer abc"
    assert got["x-custom"] == "mine" and got["traceparent"] == TRACEPARENT
    assert not any(name.startswith("x-xdt-") for name in got), got
    # The print went to the instance log, stamped with the instance and the request id.
    stamped = [parse_line(line) for line in log_lines(platform, "describe")]
    printed = [line for line in stamped if line and line.text == "serving PUT /orders/7"]
    assert printed and printed[0].request_id == "order-42"
    assert printed[0].instance.startswith("describe-")


def test_a_request_id_is_assigned_when_the_caller_sent_none_or_a_bad_one(
    start_platform: Start,
) -> None:
    platform = start_platform({"functions": [{"name": "whoami", "handler": "contract:whoami"}]})
    status, headers, body = call(platform, "/invoke/whoami")
    assert status == 200 and len(body) == 32 and headers["X-Request-Id"] == body.decode()
    status, headers, body = call(platform, "/invoke/whoami", headers={"X-Request-Id": "bad id!"})
    assert status == 200 and body.decode() != "bad id!" and headers["X-Request-Id"] == body.decode()


def test_the_request_id_travels_through_function_to_function_calls(start_platform: Start) -> None:
    platform = start_platform(
        {
            "functions": [
                {"name": "relay-sync", "handler": "contract:relay_sync"},
                {"name": "relay-async", "handler": "contract:relay_async"},
                {"name": "whoami", "handler": "contract:whoami"},
            ]
        }
    )
    for relay in ("relay-sync", "relay-async"):
        status, headers, body = call(platform, f"/invoke/{relay}", headers={"X-Request-Id": relay})
        assert (status, body) == (200, relay.encode()), body
        assert headers["X-Request-Id"] == relay
    stamped = [parse_line(line) for line in log_lines(platform, "whoami")]
    ids = {line.request_id for line in stamped if line and line.text == "whoami was asked"}
    assert ids == {"relay-sync", "relay-async"}


def test_a_handler_that_raises_gives_its_traceback_in_the_answer_and_the_log(
    start_platform: Start,
) -> None:
    platform = start_platform({"functions": [{"name": "explode", "handler": "contract:explode"}]})
    status, headers, body = call(
        platform, "/invoke/explode", b"now", headers={"X-Request-Id": "r-1"}
    )
    error = json.loads(body)
    assert status == 500 and headers[ERROR_HEADER] == "function_failed"
    assert error["request_id"] == "r-1" and headers["X-Request-Id"] == "r-1"
    assert "ValueError: broken on purpose: now" in error["message"]
    trace = error["traceback"]
    assert "Traceback (most recent call last)" in trace and "in _deeper" in trace
    # It starts at the handler's own frame: what called it (runtime, thread pool) is left out.
    first_frame = trace.splitlines()[1]
    assert "contract.py" in first_frame and "in explode" in first_frame, trace
    assert "xdt/runtime" not in trace and "concurrent/futures" not in trace
    lines = [parse_line(line) for line in log_lines(platform, "explode")]
    of_request = [line.text for line in lines if line and line.request_id == "r-1"]
    assert "about to fail" in of_request
    assert any("in _deeper" in text for text in of_request), of_request
    # The function's last error, with its request id, is in /status.
    last = platform.function("explode")["last_error"]
    assert last is not None and last["code"] == "function_failed" and last["request_id"] == "r-1"
    assert "broken on purpose" in last["message"]
    (instance,) = platform.function("explode")["instances"]
    assert last["instance"] == instance["id"]  # which instance failed it
    events = platform.function("explode")["events"]
    assert any(e["kind"] == "error" and e["request_id"] == "r-1" for e in events), events


def test_error_detail_message_keeps_tracebacks_out_of_answers_but_in_the_log(
    start_platform: Start,
) -> None:
    platform = start_platform(
        {
            "platform": {"error_detail": "message"},
            "functions": [{"name": "explode", "handler": "contract:explode"}],
        }
    )
    status, _, body = call(platform, "/invoke/explode", b"quietly")
    error = json.loads(body)
    assert status == 500 and "broken on purpose: quietly" in error["message"]
    assert "traceback" not in error and "_deeper" not in body.decode()
    assert any("in _deeper" in line for line in log_lines(platform, "explode"))


def test_raising_bad_request_is_a_400_and_a_refused_call_is_the_functions_failure(
    start_platform: Start,
) -> None:
    platform = start_platform(
        {
            "platform": {"inline_limit": "1MiB", "transfer": "inline"},
            "functions": [
                {"name": "refuse", "handler": "contract:refuse"},
                {"name": "too-big-call", "handler": "contract:too_big_call"},
                {"name": "whoami", "handler": "contract:whoami"},
            ],
        }
    )
    status, headers, body = call(platform, "/invoke/refuse", b"plaid")
    assert status == 400 and headers[ERROR_HEADER] == "bad_request"
    assert json.loads(body)["message"] == "'plaid' is not a colour"
    # xdt refused the function's own call: that is the function failing (500), not a 413 to
    # a caller whose request was fine.
    status, headers, body = call(platform, "/invoke/too-big-call", b"")
    assert status == 500 and headers[ERROR_HEADER] == "function_failed"
    assert "PayloadTooLarge" in json.loads(body)["message"]


def test_a_command_function_gets_the_request_and_its_output_is_stamped(
    start_platform: Start,
) -> None:
    platform = start_platform(
        {"functions": [{"name": "cmd", "command": [sys.executable, "contract_server.py"]}]}
    )
    status, headers, body = call(
        platform, "/invoke/cmd/items?status=202", None, method="GET",
        headers={"X-Custom": "c", "X-Request-Id": "cmd-1"},
    )  # fmt: skip
    seen = json.loads(body)
    assert status == 202 and headers["X-Command"] == "yes"
    assert headers["Content-Type"] == "application/json"
    assert (seen["method"], seen["path"], seen["query"]) == ("GET", "/items", "status=202")
    assert seen["headers"]["x-custom"] == "c" and seen["headers"]["x-request-id"] == "cmd-1"
    assert not any(name.startswith("x-xdt-") for name in seen["headers"])

    def stamped() -> list[str]:
        lines = [parse_line(line) for line in log_lines(platform, "cmd")]
        return [line.text for line in lines if line and line.instance.startswith("cmd-")]

    deadline = time.monotonic() + 10  # the platform copies the command's output as it comes
    while not {"command saw GET /items", "a line on stderr"} <= set(stamped()):
        assert time.monotonic() < deadline, stamped()
        time.sleep(0.05)
