"""What of a request and its answer passes between callers and functions, and the trace."""

from __future__ import annotations

import pytest

from xdt._http.contract import Request, Response, Trace, answer_of, passes, passing

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("name", "passed"),
    [
        ("Content-Type", True),
        ("Authorization", True),
        ("X-Custom", True),
        ("Connection", False),
        ("Transfer-Encoding", False),
        ("Host", False),
        ("Content-Length", False),
        ("X-Xdt-Hop", False),
        ("x-xdt-error", False),
    ],
)
def test_hop_by_hop_and_the_platforms_own_headers_do_not_pass(name: str, passed: bool) -> None:
    assert passes(name) is passed


def test_headers_that_cannot_be_written_as_one_line_are_dropped() -> None:
    given = [("Good", "v"), ("Bad Name", "v"), ("Split", "a\r\nX-Injected: 1"), ("Good", "w")]
    assert passing(given) == (("Good", "v"), ("Good", "w"))


def test_a_well_formed_request_id_is_kept_else_one_is_made() -> None:
    assert Trace.from_headers({"X-Request-Id": "abc-1"}).request_id == "abc-1"
    for bad in ("", "with space", "x" * 129, "new\nline"):
        made = Trace.from_headers({"X-Request-Id": bad}).request_id
        assert made != bad and len(made) == 32
    assert Trace.from_headers({}).request_id != Trace.from_headers({}).request_id


def test_traceparent_passes_only_when_well_formed() -> None:
    assert Trace.from_headers({"traceparent": TRACEPARENT}).traceparent == TRACEPARENT
    assert Trace.from_headers({"traceparent": "00-nothex"}).traceparent is None
    trace = Trace("r", TRACEPARENT)
    assert Trace.from_meta(trace.meta()) == trace
    assert Trace.from_meta({"request_id": "bad id"}) is None


def test_a_request_survives_its_meta_and_a_malformed_meta_takes_defaults() -> None:
    request = Request(b"", "PATCH", "/a/b", "x=1&x=2&y=", {"h": "v"})
    back = Request.from_meta({**request.meta(), **Trace("rid").meta()}, b"body")
    assert (back.method, back.path, back.query, back.header("H")) == (
        "PATCH", "/a/b", {"x": "2", "y": ""}, "v",
    )  # fmt: skip
    assert back.request_id == "rid" and back.body == b"body"
    odd = Request.from_meta({"method": "get lost", "path": "no-slash", "headers": [[1, 2]]}, b"")
    assert (odd.method, odd.path, odd.headers) == ("POST", "/", {})


def test_a_response_carries_status_and_passing_headers_only() -> None:
    response = Response("ok", status=201, headers={"X-Mine": "1", "X-Xdt-Error": "forged"})
    status, headers = answer_of(response.meta())
    assert status == 201 and headers == (("X-Mine", "1"),)
    with pytest.raises(ValueError, match="status"):
        Response(b"", status=99)
