"""The one exception tree (``xdt._core.errors``): codes, statuses, and the wire round trip."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

import xdt
from xdt._core import errors
from xdt._core.errors import (
    BadRequest,
    FunctionFailed,
    FunctionNotFound,
    InstanceFailed,
    InvocationError,
    Overloaded,
    ProtocolError,
    WrongTenant,
    XdtError,
    error_for_code,
    from_wire,
    invocation_error,
    to_wire,
)


def every_class(root: type[XdtError] = XdtError) -> Iterator[type[XdtError]]:
    yield root
    for sub in root.__subclasses__():
        yield from every_class(sub)


CLASSES = sorted(set(every_class()), key=lambda cls: cls.__name__)

# The stable codes of the platform's invocation errors (documented in the README's table).
INVOCATION_CODES = {
    BadRequest: ("bad_request", 400),
    FunctionNotFound: ("function_not_found", 404),
    errors.PayloadTooLarge: ("payload_too_large", 413),
    FunctionFailed: ("function_failed", 500),
    InstanceFailed: ("instance_failed", 502),
    Overloaded: ("overloaded", 503),
    errors.InvocationTimeout: ("timeout", 504),
}


def test_every_class_has_a_code_of_its_own() -> None:
    codes = [cls.code for cls in CLASSES]
    assert len(codes) == len(set(codes))
    for code in codes:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", code), code


def test_a_subclass_without_its_own_code_is_refused() -> None:
    with pytest.raises(TypeError, match="must name its own wire code"):

        class Unnamed(XdtError):  # pragma: no cover - the class statement raises
            pass


def test_a_subclass_cannot_take_another_ones_code() -> None:
    with pytest.raises(TypeError, match="wrong_tenant"):

        class Imposter(XdtError):  # pragma: no cover - the class statement raises
            code = "wrong_tenant"


def test_the_tree_in_the_docstring_is_the_tree_of_classes() -> None:
    assert errors.__doc__ is not None
    tree = errors.__doc__.split("The tree::", 1)[1].split("\n\n")[1]
    drawn = re.findall(r"^[│├└─ ]*([A-Z]\w+)\s", tree, re.M)
    assert sorted(drawn) == sorted(cls.__name__ for cls in CLASSES)
    for cls in CLASSES:
        assert cls.__name__ in errors.__all__


def test_every_exception_is_public() -> None:
    for cls in CLASSES:
        assert getattr(xdt, cls.__name__) is cls
        assert cls.__name__ in xdt.__all__


@pytest.mark.parametrize(("cls", "code_status"), INVOCATION_CODES.items())
def test_invocation_codes_and_statuses_are_stable(
    cls: type[InvocationError], code_status: tuple[str, int]
) -> None:
    assert (cls.code, cls.status) == code_status


def test_statuses_of_the_other_branches() -> None:
    assert errors.ReferenceExpired.status == 410
    assert WrongTenant.status == errors.ReferenceTampered.status == 403
    assert errors.SourceUnavailable.status == ProtocolError.status == 502
    assert errors.QuotaExceeded.status == 507
    assert errors.SpecError.status == errors.InternalError.status == 500


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_round_trips_its_wire_fields(cls: type[XdtError]) -> None:
    original = cls("it went wrong — «ünïcode»", function="resize")
    fields = json.loads(json.dumps(to_wire(original)))  # as it crosses a wire
    back = from_wire(fields)
    assert type(back) is cls
    assert str(back) == str(original)
    assert back.function == "resize"
    assert back.status == original.status


def test_a_functions_own_status_survives_the_round_trip() -> None:
    error = invocation_error(503, None, "the function answered HTTP 503", function="legacy")
    assert type(error) is FunctionFailed  # not Overloaded: that is the platform's
    back = from_wire(to_wire(error))
    assert type(back) is FunctionFailed
    assert back.status == 503


def test_an_unknown_code_is_a_protocol_error_naming_it() -> None:
    error = error_for_code("from_the_future", "something new")
    assert type(error) is ProtocolError
    assert "from_the_future" in str(error)


def test_an_unknown_code_with_a_status_is_that_statuss_invocation_error() -> None:
    error = error_for_code("from_the_future", "something new", status=503)
    assert type(error) is Overloaded  # the platform's error of that status
    error = error_for_code("from_the_future", "something new", status=418)
    assert type(error) is BadRequest  # a 4xx it has no class for: the caller's request
    assert error.status == 418


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"error": 3, "message": "x"},
        {"error": "wrong_tenant"},
        {"error": "wrong_tenant", "message": None},
    ],
)
def test_fields_without_a_code_and_a_message_are_a_protocol_error(
    fields: dict[str, object],
) -> None:
    assert type(from_wire(fields)) is ProtocolError


def test_a_status_out_of_range_is_ignored() -> None:
    back = from_wire({"error": "function_failed", "message": "x", "status": 9999})
    assert back.status == 500
