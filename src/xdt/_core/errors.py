"""The exceptions xdt raises.

Every error a caller can act on has its own type; the message says what happened and what to
do about it. The tree::

    XdtError
    ├── KeyRingError                  no usable key ring (missing, unreadable, malformed)
    ├── ReferenceRejected             a reference that will not be honoured
    │   ├── ReferenceMalformed        not a reference at all: truncated, bad text, unknown version
    │   ├── ReferenceTampered         fails authentication: altered, or sealed under a key we lack
    │   ├── ReferenceExpired          past its expiry
    │   ├── WrongTenant               minted for another tenant
    │   └── PullBudgetExhausted       every pull it allowed has been made
    ├── TransferError                 moving the bytes failed; the reference may still be good
    │   ├── SourceUnavailable         the source sidecar cannot be reached, or went away mid-pull
    │   ├── ObjectNotFound            the source does not hold the object (released or expired)
    │   ├── TransferCorrupted         wrong length or checksum: the bytes were never delivered
    │   └── ProtocolError             the peer does not speak the xdt pull protocol
    ├── StoreError
    │   ├── QuotaExceeded             no room for the object within the store's byte quota
    │   └── StoreClosed               the store is closed (the sidecar is shutting down)
    └── InvocationError               an invocation did not get the function's answer (.status)
        ├── BadRequest                400: the request itself is malformed
        ├── FunctionNotFound          404: no function of that name is deployed
        ├── PayloadTooLarge           413: the body is over the platform's inline limit
        ├── FunctionFailed            500: the function's code raised (or answered 5xx)
        ├── InstanceFailed            502: the instance died or went away mid-request
        ├── Overloaded                503: every instance and every queue slot is busy
        └── InvocationTimeout         504: no answer within the function's timeout

The pull protocol carries these across processes as an error code (:class:`ErrorCode`), so a
receiver raises the same type the source decided on. Invocations carry theirs over HTTP: the
status, the ``X-Xdt-Error`` header (:data:`INVOCATION_ERROR_CODES`) and a JSON body with the
message.
"""

from __future__ import annotations

import enum

__all__ = [
    "INVOCATION_ERROR_CODES",
    "BadRequest",
    "ErrorCode",
    "FunctionFailed",
    "FunctionNotFound",
    "InstanceFailed",
    "InvocationError",
    "InvocationTimeout",
    "KeyRingError",
    "ObjectNotFound",
    "Overloaded",
    "PayloadTooLarge",
    "ProtocolError",
    "PullBudgetExhausted",
    "QuotaExceeded",
    "ReferenceExpired",
    "ReferenceMalformed",
    "ReferenceRejected",
    "ReferenceTampered",
    "SourceUnavailable",
    "StoreClosed",
    "StoreError",
    "TransferCorrupted",
    "TransferError",
    "WrongTenant",
    "XdtError",
    "error_from_code",
    "invocation_error",
]


class XdtError(Exception):
    """Base class of every error xdt raises on purpose."""


class KeyRingError(XdtError):
    """The platform key ring is missing, unreadable or malformed."""


class ReferenceRejected(XdtError):
    """The reference will not be honoured. Subclasses say why."""


class ReferenceMalformed(ReferenceRejected):
    """The text is not an xdt reference (truncated, not base64url, unknown format version)."""


class ReferenceTampered(ReferenceRejected):
    """The reference fails authentication: it was altered, or sealed under a key we do not hold."""


class ReferenceExpired(ReferenceRejected):
    """The reference (and the object it names) has expired."""


class WrongTenant(ReferenceRejected):
    """The reference was minted for another tenant."""


class PullBudgetExhausted(ReferenceRejected):
    """Every pull the object allowed has already been made."""


class TransferError(XdtError):
    """Moving the bytes failed. Nothing partial was delivered."""


class SourceUnavailable(TransferError):
    """The source sidecar could not be reached, or went away during the pull."""


class ObjectNotFound(TransferError):
    """The source does not hold the object: it was released, expired, or never existed there."""


class TransferCorrupted(TransferError):
    """The bytes received do not match the reference's length or checksum."""


class ProtocolError(TransferError):
    """The peer sent something that is not the xdt pull protocol."""


class StoreError(XdtError):
    """The object store could not take or keep an object."""


class QuotaExceeded(StoreError):
    """No room within the store's byte quota, even after waiting."""


class StoreClosed(StoreError):
    """The store is closed; the sidecar is shutting down."""


class InvocationError(XdtError):
    """An invocation did not get the function's answer. ``status`` is the HTTP status."""

    status = 500
    code = "invocation_failed"

    def __init__(self, message: str, *, function: str | None = None) -> None:
        super().__init__(message)
        self.function = function


class BadRequest(InvocationError):
    """The invocation request itself is malformed (it never reached the function)."""

    status, code = 400, "bad_request"


class FunctionNotFound(InvocationError):
    """No function of that name is deployed."""

    status, code = 404, "function_not_found"


class PayloadTooLarge(InvocationError):
    """The body is over the platform's inline limit."""

    status, code = 413, "payload_too_large"


class FunctionFailed(InvocationError):
    """The function's own code raised an exception, or the function answered with a 5xx."""

    status, code = 500, "function_failed"


class InstanceFailed(InvocationError):
    """The instance serving the request died or could not be reached mid-request."""

    status, code = 502, "instance_failed"


class Overloaded(InvocationError):
    """Every instance and every queue slot is busy: retry later, or raise max_scale."""

    status, code = 503, "overloaded"


class InvocationTimeout(InvocationError):
    """No answer within the function's timeout."""

    status, code = 504, "timeout"


INVOCATION_ERROR_CODES: dict[str, type[InvocationError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        FunctionNotFound,
        PayloadTooLarge,
        FunctionFailed,
        InstanceFailed,
        Overloaded,
        InvocationTimeout,
    )
}


def invocation_error(
    status: int, code: str | None, message: str, *, function: str | None = None
) -> InvocationError:
    """The exception for a failed invocation answer: by the platform's error code when it sent
    one; a function's own non-2xx answer (no code) is :class:`FunctionFailed` for 5xx and
    :class:`BadRequest` otherwise, whatever the status — a function's own 404 or 503 does not
    mean "no such function" or "the platform is overloaded"."""
    cls = INVOCATION_ERROR_CODES.get(code or "")
    if cls is None and code is not None:  # a platform error of a newer kind: go by status
        cls = next((c for c in INVOCATION_ERROR_CODES.values() if c.status == status), None)
    if cls is None:
        cls = FunctionFailed if status >= 500 else BadRequest
    error = cls(message, function=function)
    error.status = status
    return error


class ErrorCode(enum.IntEnum):
    """Error codes on the wire (pull protocol ERROR frames). Values are stable."""

    PROTOCOL = 1
    MALFORMED = 2
    TAMPERED = 3
    EXPIRED = 4
    WRONG_TENANT = 5
    BUDGET_EXHAUSTED = 6
    NOT_FOUND = 7
    BUSY = 8
    INTERNAL = 9


_CODE_TO_ERROR: dict[ErrorCode, type[XdtError]] = {
    ErrorCode.PROTOCOL: ProtocolError,
    ErrorCode.MALFORMED: ReferenceMalformed,
    ErrorCode.TAMPERED: ReferenceTampered,
    ErrorCode.EXPIRED: ReferenceExpired,
    ErrorCode.WRONG_TENANT: WrongTenant,
    ErrorCode.BUDGET_EXHAUSTED: PullBudgetExhausted,
    ErrorCode.NOT_FOUND: ObjectNotFound,
    ErrorCode.BUSY: SourceUnavailable,
    ErrorCode.INTERNAL: SourceUnavailable,
}

_ERROR_TO_CODE: dict[type[XdtError], ErrorCode] = {
    ProtocolError: ErrorCode.PROTOCOL,
    ReferenceMalformed: ErrorCode.MALFORMED,
    ReferenceTampered: ErrorCode.TAMPERED,
    ReferenceExpired: ErrorCode.EXPIRED,
    WrongTenant: ErrorCode.WRONG_TENANT,
    PullBudgetExhausted: ErrorCode.BUDGET_EXHAUSTED,
    ObjectNotFound: ErrorCode.NOT_FOUND,
}


def code_for(error: XdtError) -> ErrorCode:
    """The wire code for an error raised while serving a pull."""
    for cls in type(error).__mro__:
        code = _ERROR_TO_CODE.get(cls)
        if code is not None:
            return code
    return ErrorCode.INTERNAL


def error_from_code(code: int, message: str) -> XdtError:
    """The exception a receiver raises for an ERROR frame from the source."""
    try:
        cls = _CODE_TO_ERROR[ErrorCode(code)]
    except ValueError:
        return ProtocolError(f"source answered with unknown error code {code}: {message}")
    return cls(message)
