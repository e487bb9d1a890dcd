"""Errors as HTTP answers and back (``xdt._http.errors``, ``xdt._http.server.error_response``)."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from multidict import CIMultiDict

from xdt import (
    BadRequest,
    FunctionFailed,
    FunctionNotFound,
    InstanceFailed,
    InvocationError,
    InvocationTimeout,
    KeyRingError,
    ObjectNotFound,
    Overloaded,
    PayloadTooLarge,
    ProtocolError,
    PullBudgetExhausted,
    QuotaExceeded,
    ReferenceExpired,
    ReferenceMalformed,
    ReferenceRejected,
    ReferenceTampered,
    SourceUnavailable,
    StoreClosed,
    StoreError,
    TransferCorrupted,
    TransferError,
    WrongTenant,
    XdtError,
)
from xdt._http.errors import error_from_answer
from xdt._http.headers import ERROR_HEADER
from xdt._http.server import error_response

CORE_ERRORS: list[tuple[type[XdtError], int, str]] = [
    (ReferenceRejected, 403, "reference_rejected"),
    (ReferenceMalformed, 403, "reference_malformed"),
    (ReferenceTampered, 403, "reference_tampered"),
    (ReferenceExpired, 410, "reference_expired"),
    (WrongTenant, 403, "wrong_tenant"),
    (PullBudgetExhausted, 403, "pull_budget_exhausted"),
    (TransferError, 502, "transfer_error"),
    (SourceUnavailable, 502, "source_unavailable"),
    (ObjectNotFound, 502, "object_not_found"),
    (TransferCorrupted, 502, "transfer_corrupted"),
    (ProtocolError, 502, "protocol_error"),
    (StoreError, 507, "store_error"),
    (QuotaExceeded, 507, "quota_exceeded"),
    (StoreClosed, 507, "store_closed"),
    (KeyRingError, 500, "key_ring_error"),
]

INVOCATION_ERRORS: list[tuple[type[InvocationError], int, str]] = [
    (BadRequest, 400, "bad_request"),
    (FunctionNotFound, 404, "function_not_found"),
    (PayloadTooLarge, 413, "payload_too_large"),
    (FunctionFailed, 500, "function_failed"),
    (InstanceFailed, 502, "instance_failed"),
    (Overloaded, 503, "overloaded"),
    (InvocationTimeout, 504, "timeout"),
]


def answer_of(error: XdtError, **kwargs: str | None) -> tuple[int, CIMultiDict[str], bytes]:
    """What a client receives for ``error_response(error)``: status, headers, body."""
    response = error_response(error, **kwargs)
    assert isinstance(response.body, bytes)
    return response.status, CIMultiDict(response.headers), response.body


def test_error_response_has_header_status_and_json_body() -> None:
    response = error_response(ReferenceExpired("the reference expired 3 s ago"))
    assert isinstance(response, web.Response)
    assert response.status == 410
    assert response.headers[ERROR_HEADER] == "reference_expired"
    assert response.headers["x-xdt-error"] == "reference_expired"
    assert response.content_type == "application/json"
    assert isinstance(response.body, bytes)
    assert json.loads(response.body) == {
        "error": "reference_expired",
        "message": "the reference expired 3 s ago",
        "function": None,
        "status": 410,
    }


def test_error_response_names_the_function() -> None:
    status, headers, body = answer_of(Overloaded("busy", function="resize"))
    assert status == 503
    assert headers[ERROR_HEADER] == "overloaded"
    assert json.loads(body)["function"] == "resize"

    _, _, body = answer_of(Overloaded("busy", function="resize"), function="other")
    assert json.loads(body)["function"] == "resize"  # the error's own name stands

    _, _, body = answer_of(WrongTenant("not yours"), function="thumb")
    assert json.loads(body)["function"] == "thumb"


@pytest.mark.parametrize(("cls", "status", "code"), INVOCATION_ERRORS)
def test_invocation_errors_round_trip(cls: type[InvocationError], status: int, code: str) -> None:
    original = cls(f"{code}: it went wrong — «ünïcode»", function="resize")
    status, headers, body = answer_of(original)

    error = error_from_answer(status, headers, body, function="resize")

    assert type(error) is cls
    assert str(error) == str(original)
    assert isinstance(error, InvocationError)
    assert error.status == cls.status
    assert error.function == "resize"


@pytest.mark.parametrize(("cls", "status", "code"), CORE_ERRORS)
def test_core_errors_round_trip(cls: type[XdtError], status: int, code: str) -> None:
    original = cls("reference minted for tenant 'acme', not 'default'")
    answer = answer_of(original)
    assert answer[0] == status
    assert answer[1][ERROR_HEADER] == code

    error = error_from_answer(*answer)

    assert type(error) is cls
    assert str(error) == str(original)


def test_wrong_tenant_round_trip_from_raw_parts() -> None:
    body = json.dumps({"error": "wrong_tenant", "message": "minted for 'acme'"}).encode()
    error = error_from_answer(403, {ERROR_HEADER: "wrong_tenant"}, body)
    assert type(error) is WrongTenant
    assert str(error) == "minted for 'acme'"


def test_header_with_a_body_that_is_not_json_keeps_the_text() -> None:
    error = error_from_answer(410, {ERROR_HEADER: "reference_expired"}, b"  gone for good \n")
    assert type(error) is ReferenceExpired
    assert str(error) == "gone for good"


def test_header_with_json_without_a_message_keeps_the_text() -> None:
    body = b'{"error": "overloaded"}'
    error = error_from_answer(503, {ERROR_HEADER: "overloaded"}, body)
    assert type(error) is Overloaded
    assert str(error) == body.decode()


def test_unknown_code_falls_back_to_the_status() -> None:
    body = json.dumps({"message": "something new"}).encode()
    error = error_from_answer(503, {ERROR_HEADER: "from_the_future"}, body, function="f")
    assert type(error) is Overloaded
    assert str(error) == "something new"
    assert error.function == "f"


def test_invocation_code_wins_over_the_status() -> None:
    body = json.dumps({"message": "no such function"}).encode()
    error = error_from_answer(500, {ERROR_HEADER: "function_not_found"}, body)
    assert type(error) is FunctionNotFound
    assert isinstance(error, InvocationError)
    assert error.status == 500  # the status as received, not the class default


def test_functions_own_500_without_header_is_function_failed() -> None:
    error = error_from_answer(500, {}, b"Traceback: KeyError 'width'\n", function="resize")
    assert type(error) is FunctionFailed
    assert isinstance(error, InvocationError)
    assert str(error) == "the function answered HTTP 500: Traceback: KeyError 'width'"
    assert error.status == 500
    assert error.function == "resize"


def test_functions_own_empty_answer_says_the_status() -> None:
    error = error_from_answer(500, {}, b"")
    assert type(error) is FunctionFailed
    assert str(error) == "the function answered HTTP 500"


def test_functions_long_answer_is_cut_to_1000_characters() -> None:
    error = error_from_answer(500, {}, b"x" * 5000)
    assert str(error) == "the function answered HTTP 500: " + "x" * 1000


def test_functions_undecodable_answer_does_not_raise() -> None:
    error = error_from_answer(500, {}, b"bad \xff bytes")
    assert type(error) is FunctionFailed
    assert "bad \ufffd bytes" in str(error)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (599, FunctionFailed),
        (501, FunctionFailed),
        (418, BadRequest),
        (409, BadRequest),
        (400, BadRequest),
    ],
)
def test_functions_own_status_without_a_class_of_its_own(
    status: int, cls: type[InvocationError]
) -> None:
    error = error_from_answer(status, {}, b"nope")
    assert type(error) is cls
    assert error.status == status
    assert str(error) == f"the function answered HTTP {status}: nope"


@pytest.mark.parametrize("status", [404, 413, 502, 503, 504])
def test_a_functions_own_status_is_not_mistaken_for_a_platform_error(status: int) -> None:
    """Without the platform's code, a function's own 404 is not "no such function" and its
    503 is not "the platform is overloaded": 5xx is FunctionFailed, 4xx BadRequest."""
    error = error_from_answer(status, {}, b"Not Found", function="legacy")
    assert type(error) is (FunctionFailed if status >= 500 else BadRequest)
    assert error.status == status
    assert str(error) == f"the function answered HTTP {status}: Not Found"
    assert error.function == "legacy"


def test_header_lookup_is_case_insensitive_with_aiohttp_headers() -> None:
    body = json.dumps({"message": "gone"}).encode()
    headers = CIMultiDict({"x-xdt-error": "reference_expired"})
    assert type(error_from_answer(410, headers, body)) is ReferenceExpired
