"""Fuzzing the gateway of a real ``xdt up``: whatever bytes a client sends as a request, the
platform answers with a well-formed HTTP answer or closes, within its timeouts; a 5xx is
always one of its own coded errors (an uncaught exception would be a bare 500); it keeps
serving; and it keeps no connection of the client's after the client left. (Every answer
is read until the platform closes or falls quiet: a half-closed request is dropped unanswered,
as a client that went away, so that would test nothing.)"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _support.platform import RunningPlatform
from xdt._util.polling import until_sync

# aiohttp answers in the version the request line named (HTTP/2.0 too): a client's own doing.
_STATUS = re.compile(rb"HTTP/\d\.\d (\d{3}) ")
QUIET = 0.5  # seconds without a byte: the platform has said what it will say for now


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    running = RunningPlatform(
        tmp_path_factory.mktemp("fuzz"),
        {
            "platform": {"inline_limit": "64KiB"},
            "functions": [{"name": "upper", "handler": "fns:upper", "min_scale": 1}],
        },
    )
    running.wait_ready()
    yield running
    running.stop()


_token = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=0, max_size=40)
_methods = st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "BREW"]) | _token
_paths = (
    st.sampled_from(["/invoke/upper", "/invoke/", "/invoke/nope", "/invoke/upper/x", "/status",
                     "/healthz", "/readyz", "/metrics", "/", "*", "/invoke/%75pper",
                     "/invoke/upper?x=1", "/" + "a" * 9000])
    | _token.map(lambda t: "/invoke/" + t)
)  # fmt: skip
_versions = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1x", ""])
_header_names = st.sampled_from([
    "Content-Length", "Transfer-Encoding", "X-Xdt-Accept", "X-Xdt-Transfer", "X-Xdt-Hop",
    "Host", "Expect", "Connection", "Content-Type", "Content-Encoding", "Upgrade",
]) | _token  # fmt: skip
_header_values = st.sampled_from([
    "0", "5", "-1", "99999999999999999999", "1e3", "chunked", "gzip, chunked", "ref",
    "100-continue", "close", "keep-alive", "websocket", "",
]) | st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60)  # fmt: skip
_bodies = st.sampled_from([b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n"]) | st.binary(
    max_size=2048
)


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(min_size=1, max_size=600))  # not even HTTP
    line = f"{draw(_methods)} {draw(_paths)} {draw(_versions)}"
    headers = draw(st.lists(st.tuples(_header_names, _header_values), max_size=8))
    head = "\r\n".join([line, *(f"{name}: {value}" for name, value in headers)]) + "\r\n\r\n"
    return head.encode("latin-1") + draw(_bodies)


def _send(address: tuple[str, int], request: bytes, *, half_close: bool = False) -> bytes:
    """The request, then what the platform answered until it closed or fell quiet for
    QUIET seconds (it may rightly wait for the rest of a request that declared more)."""
    got = b""
    with socket.create_connection(address, timeout=QUIET) as raw:
        raw.sendall(request)
        if half_close:
            raw.shutdown(socket.SHUT_WR)
        try:
            while chunk := raw.recv(65536):
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass  # quiet, or it refused and closed with our bytes unread: both answers
    return got


def _gateway(platform: RunningPlatform) -> tuple[str, int]:
    host, port = platform.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=_requests())
def test_whatever_a_client_sends_gets_a_coded_answer_and_the_platform_serves_on(
    platform: RunningPlatform, request: bytes
) -> None:
    answer = _send(_gateway(platform), request)
    for status, rest in re.findall(rb"HTTP/\d\.\d (\d{3}) (.*?)\r\n\r\n", answer, re.S):
        code = int(status)
        assert 100 <= code < 600, answer[:300]
        if code >= 500:
            assert re.search(rb"(?i)^x-xdt-error: \w+", rest, re.M), (
                f"a bare {code} (an uncaught error?) for {request[:200]!r}: {answer[:400]!r}"
            )
    if answer:
        assert _STATUS.match(answer), f"not HTTP: {answer[:200]!r} for {request[:200]!r}"
        assert b"aiohttp" not in answer and b"Python/" not in answer  # no versions to target
    status, _, body = platform.invoke("upper", b"still here", timeout=10)
    assert (status, body) == (200, b"STILL HERE")


def test_after_the_fuzzing_no_connection_is_kept(platform: RunningPlatform) -> None:
    """Every client above closed its side: the gateway holds no descriptor for them."""
    pid = platform.process.pid
    baseline = _descriptors(pid)
    for _ in range(50):
        _send(_gateway(platform), b"POST /invoke/upper HTTP/1.1\r\nContent-Length: 100\r\n\r\nab",
              half_close=True)  # fmt: skip
    assert until_sync(lambda: _descriptors(pid) <= baseline + 2, timeout=10), (
        f"{_descriptors(pid)} descriptors, {baseline} before"
    )
