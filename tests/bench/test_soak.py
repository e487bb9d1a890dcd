"""``xdt bench soak``: its mix, its checker (which must be able to fail) and tiny real runs."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from xdt.bench import soak_functions
from xdt.bench.soak import (
    OK,
    PATTERNS,
    SIZES,
    WRONG,
    Order,
    classify,
    is_typed,
    mixed_orders,
    run_order,
)


def test_the_mix_covers_every_pattern_and_size_and_is_reproducible() -> None:
    orders = mixed_orders(2000, seed=3)
    assert {o.pattern for o in orders} == set(PATTERNS)
    assert {o.size for o in orders} == {size for size, _ in SIZES}
    assert orders == mixed_orders(2000, seed=3) != mixed_orders(2000, seed=4)


def test_a_misplaced_block_changes_the_digest() -> None:
    data = soak_functions.make(256 << 10, 5)
    blocks = [data[i : i + (64 << 10)] for i in range(0, len(data), 64 << 10)]
    assert len(set(blocks)) == 4  # no two alike
    swapped = b"".join([blocks[1], blocks[0], *blocks[2:]])
    assert soak_functions.describe(swapped) != soak_functions.describe(data)
    assert soak_functions.make(256 << 10, 5) == data  # the same bytes every time


def test_a_failing_driver_is_classified_by_its_root_cause() -> None:
    message = "function 'soak' raised FunctionFailed: function 'put' raised QuotaExceeded: no room"
    body = json.dumps({"error": "function_failed", "message": message}).encode()
    assert classify(500, {"X-Xdt-Error": "function_failed"}, body) == (
        "function_failed (QuotaExceeded)"
    )
    assert classify(503, {"x-xdt-error": "overloaded"}, b"{}") == "overloaded"
    assert classify(502, {}, b"Bad Gateway") == "http 502"
    assert not is_typed("http 502") and not is_typed("client_timeout")
    assert is_typed("overloaded") and is_typed(OK)


class _Liar(http.server.BaseHTTPRequestHandler):
    """A gateway that answers 200 with the wrong digests, or a bare 500."""

    answer: tuple[int, bytes] = (200, b"[]")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status, body = self.answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def liar() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Liar)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_checker_catches_wrong_bytes_and_untyped_failures(liar: str) -> None:
    order = Order("scatter", 4096, 8)
    right = order.expected()
    assert len(right) == 4 and len(set(right)) == 4
    wrong = [*right[:3], soak_functions.describe(soak_functions.make(4096, 0))]
    for status, body, result in [
        (200, json.dumps(right).encode(), OK),
        (200, json.dumps(wrong).encode(), WRONG),
        (200, json.dumps(right[::-1]).encode(), WRONG),  # answers in the wrong order
        (200, b"not json", WRONG),
        (500, b"oops", "http 500"),
    ]:
        _Liar.answer = (status, body)
        assert run_order(liar, order, timeout=10).result == result


@pytest.mark.parametrize("mode", ["xdt", "elasticache"])
def test_a_tiny_soak_is_clean_and_writes_its_figures(tmp_path: Path, mode: str) -> None:
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, "-m", "xdt", "bench", "soak", "--mode", mode, "--invocations", "24",
         "--concurrency", "8", "--json", str(out)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads(out.read_text())
    assert record["invocations"] == record["succeeded"] == 24
    assert record["wrong"] == record["lost"] == 0 and record["errors"] == {}
    assert record["leaked_objects"] == record["leaked_store_keys"] == 0
    assert record["peak_rss_bytes"] > 0 and record["peak_memory_bytes"] > 0
    assert record["payload_bytes"] > 0
    assert record["hostile"]["forged reference"]["tried"] > 0
    assert all(t["got_through"] == 0 for t in record["hostile"].values())
    assert "verified answers" in result.stdout and ": clean" in result.stdout
