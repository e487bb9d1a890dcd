"""Every exception xdt raises, and the one code each carries on every wire.

Every error a caller can act on has its own type; the message says what happened and what to
do about it, and never carries a secret. The tree::

    XdtError
    ├── ConfigError                   the platform's configuration cannot be used
    │   ├── SpecError                 the spec file: missing, not YAML, a field with a bad value
    │   ├── KeyRingError              no usable key ring (missing, unreadable, malformed)
    │   └── IsolationError            a function cannot run under its own uid
    ├── ReferenceRejected             a reference that will not be honoured
    │   ├── ReferenceMalformed        not a reference at all: truncated, bad text, unknown version
    │   ├── ReferenceTampered         fails authentication: altered, or sealed under a key we lack
    │   ├── ReferenceExpired          past its expiry
    │   ├── WrongTenant               minted for another tenant
    │   ├── PullBudgetExhausted       every pull it allowed has been made
    │   └── PullRefused               the puller is not a sidecar of this platform
    ├── TransferError                 moving the bytes failed; the reference may still be good
    │   ├── SourceUnavailable         the source sidecar cannot be reached, or went away mid-pull
    │   ├── ObjectNotFound            the source does not hold the object (released or expired)
    │   ├── TransferCorrupted         wrong length or checksum: the bytes were never delivered
    │   ├── ProtocolError             the peer does not speak xdt's protocol (pull, channel, HTTP)
    │   └── PeerGone                  a process at the other end of a hop left, or never answered
    ├── StoreError
    │   ├── QuotaExceeded             no room for the object within the store's byte quota
    │   └── StoreClosed               the store is closed (the sidecar is shutting down)
    ├── PlatformError                 the platform could not start or keep running one of its parts
    │   ├── StoreStartError           an embedded Redis or S3 server
    │   ├── InstanceStartError        an instance (its sidecar or function process)
    │   ├── HostsError                the test hosts (network namespaces) of platform.hosts
    │   └── HandlerLoadError          a Python handler that cannot be imported
    ├── InternalError                 a bug in xdt: the message says where; please report it
    └── InvocationError               an invocation did not get the function's answer (.status)
        ├── BadRequest                400: the request itself is malformed
        │   └── RequestTimeout        408: its body did not arrive in time
        ├── Forbidden                 403: the caller may not use this face (a sidecar's egress)
        ├── FunctionNotFound          404: no function of that name is deployed
        ├── PayloadTooLarge           413: the body is over the platform's inline limit
        ├── FunctionFailed            500: the function's code raised (or answered 5xx)
        ├── InstanceFailed            502: the instance died or went away mid-request
        ├── Overloaded                503: every instance and every queue slot is busy
        └── InvocationTimeout         504: no answer within the function's timeout

Each class has a stable ``code`` (``"reference_expired"``) and an HTTP ``status``. The code is
what crosses every wire — the pull protocol's ERROR frames, the ``X-Xdt-Error`` header and
JSON body of an HTTP answer, the local channel's ERROR messages — and :func:`error_for_code`
turns it back into the same type on the other side. :func:`to_wire` and :func:`from_wire` are
the one encoding of an error as fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "BadRequest",
    "ConfigError",
    "Forbidden",
    "FunctionFailed",
    "FunctionNotFound",
    "HandlerLoadError",
    "HostsError",
    "InstanceFailed",
    "InstanceStartError",
    "InternalError",
    "InvocationError",
    "InvocationTimeout",
    "IsolationError",
    "KeyRingError",
    "ObjectNotFound",
    "Overloaded",
    "PayloadTooLarge",
    "PeerGone",
    "PlatformError",
    "ProtocolError",
    "PullBudgetExhausted",
    "PullRefused",
    "QuotaExceeded",
    "ReferenceExpired",
    "ReferenceMalformed",
    "ReferenceRejected",
    "ReferenceTampered",
    "RequestTimeout",
    "SourceUnavailable",
    "SpecError",
    "StoreClosed",
    "StoreError",
    "StoreStartError",
    "TransferCorrupted",
    "TransferError",
    "WrongTenant",
    "XdtError",
    "error_for_code",
    "from_wire",
    "invocation_error",
    "to_wire",
]

_BY_CODE: dict[str, type[XdtError]] = {}


class XdtError(Exception):
    """Base class of every error xdt raises on purpose. ``function`` names the function the
    error concerns, when there is one."""

    code: ClassVar[str] = "xdt_error"
    status: int = 500  # the HTTP status of an answer carrying this error

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} must name its own wire code")
        if cls.code in _BY_CODE:
            raise TypeError(f"{cls.__name__}: code {cls.code!r} is {_BY_CODE[cls.code].__name__}'s")
        _BY_CODE[cls.code] = cls

    def __init__(self, message: str, *, function: str | None = None) -> None:
        super().__init__(message)
        self.function = function
        self.request_id: str | None = None  # the invocation it happened in, when known
        self.stack_trace: str | None = None  # a function's own traceback (error_detail: full)


_BY_CODE[XdtError.code] = XdtError


class ConfigError(XdtError):
    """The platform's configuration cannot be used. Subclasses say which part."""

    code = "config_error"


class SpecError(ConfigError):
    """The spec file is missing, not YAML, or has a field with a bad value."""

    code = "spec_error"


class KeyRingError(ConfigError):
    """The platform key ring is missing, unreadable or malformed."""

    code = "key_ring_error"


class IsolationError(ConfigError):
    """A function cannot run under its own uid: a path it needs is not readable by it, or this
    user namespace does not map the uids."""

    code = "isolation_error"


class ReferenceRejected(XdtError):
    """The reference will not be honoured. Subclasses say why."""

    code, status = "reference_rejected", 403


class ReferenceMalformed(ReferenceRejected):
    """The text is not an xdt reference (truncated, not base64url, unknown format version)."""

    code = "reference_malformed"


class ReferenceTampered(ReferenceRejected):
    """The reference fails authentication: it was altered, or sealed under a key we do not hold."""

    code = "reference_tampered"


class ReferenceExpired(ReferenceRejected):
    """The reference (and the object it names) has expired."""

    code, status = "reference_expired", 410


class WrongTenant(ReferenceRejected):
    """The reference was minted for another tenant."""

    code = "wrong_tenant"


class PullBudgetExhausted(ReferenceRejected):
    """Every pull the object allowed has already been made."""

    code = "pull_budget_exhausted"


class PullRefused(ReferenceRejected):
    """The puller did not prove it is a sidecar of this platform: object servers serve only
    pulls that carry a proof made with the key ring, which function code never holds."""

    code = "pull_refused"


class TransferError(XdtError):
    """Moving the bytes failed. Nothing partial was delivered."""

    code, status = "transfer_error", 502


class SourceUnavailable(TransferError):
    """The source sidecar could not be reached, or went away during the pull."""

    code = "source_unavailable"


class ObjectNotFound(TransferError):
    """The source does not hold the object: it was released, expired, or never existed there."""

    code = "object_not_found"


class TransferCorrupted(TransferError):
    """The bytes received do not match the reference's length or checksum."""

    code = "transfer_corrupted"


class ProtocolError(TransferError):
    """The peer sent something that is not xdt's protocol: the pull protocol between sidecars,
    the channel between a function and its sidecar, or an HTTP answer on a platform hop."""

    code = "protocol_error"


class PeerGone(TransferError):
    """The process at the other end of a hop between platform processes (a sidecar, a
    runtime, the gateway) could not be reached, or closed the connection before answering."""

    code = "peer_gone"
    # Whether the request reached the peer: False when it certainly did not (nobody took the
    # connection), so it may be sent elsewhere; None when it may have (never sent twice).
    delivered: bool | None = None


class StoreError(XdtError):
    """The object store could not take or keep an object."""

    code, status = "store_error", 507


class QuotaExceeded(StoreError):
    """No room within the store's byte quota, even after waiting."""

    code = "quota_exceeded"


class StoreClosed(StoreError):
    """The store is closed; the sidecar is shutting down."""

    code = "store_closed"


class PlatformError(XdtError):
    """The platform could not start, or keep running, one of its parts."""

    code = "platform_error"


class StoreStartError(PlatformError):
    """An embedded Redis or S3 server could not be started."""

    code = "store_start_error"


class InstanceStartError(PlatformError):
    """An instance (its sidecar or its function process) could not be started."""

    code = "instance_start_error"


class HostsError(PlatformError):
    """The test hosts of ``platform.hosts`` (network namespaces, veth links, a bridge) could
    not be made: not root, ``ip`` or ``tc`` missing, or the kernel refused."""

    code = "hosts_error"


class HandlerLoadError(PlatformError):
    """The Python handler named in the spec cannot be imported."""

    code = "handler_load_error"


class InternalError(XdtError):
    """Something xdt did not expect: a bug, whose message says where. Please report it."""

    code = "internal_error"


class InvocationError(XdtError):
    """An invocation did not get the function's answer. ``status`` is the HTTP status."""

    code = "invocation_failed"


class BadRequest(InvocationError):
    """The invocation request itself is malformed (it never reached the function)."""

    code, status = "bad_request", 400


class RequestTimeout(BadRequest):
    """The request's body did not arrive within the listener's body deadline (a stalled or
    very slow client); nothing of it reached the function."""

    code, status = "request_timeout", 408


class Forbidden(InvocationError):
    """The caller may not use this face: a sidecar's egress asked without its secret path."""

    code, status = "forbidden", 403


class FunctionNotFound(InvocationError):
    """No function of that name is deployed."""

    code, status = "function_not_found", 404


class PayloadTooLarge(InvocationError):
    """The body is over the platform's inline limit."""

    code, status = "payload_too_large", 413


class FunctionFailed(InvocationError):
    """The function's own code raised an exception, or the function answered with a 5xx."""

    code, status = "function_failed", 500


class InstanceFailed(InvocationError):
    """The instance serving the request died or could not be reached mid-request."""

    code, status = "instance_failed", 502


class Overloaded(InvocationError):
    """Every instance and every queue slot is busy: retry later, or raise max_scale."""

    code, status = "overloaded", 503


class InvocationTimeout(InvocationError):
    """No answer within the function's timeout."""

    code, status = "timeout", 504


def error_for_code(
    code: str, message: str, *, function: str | None = None, status: int | None = None
) -> XdtError:
    """The exception a wire code stands for, as the other side raised it. A code this xdt
    does not know (a newer peer's) is a :class:`ProtocolError` naming it, unless ``status``
    says it is an invocation's error: then the platform's invocation error of that status."""
    cls = _BY_CODE.get(code)
    if cls is None:
        if status is None:
            return ProtocolError(f"the peer answered with an unknown error {code!r}: {message}")
        same = [
            c for c in _BY_CODE.values() if issubclass(c, InvocationError) and c.status == status
        ]
        if not same:
            return invocation_error(status, None, message, function=function)
        cls = same[0]
    error = cls(message, function=function)
    if status is not None and isinstance(error, InvocationError):
        error.status = status  # a function's own answer keeps its status (see invocation_error)
    return error


def invocation_error(
    status: int, code: str | None, message: str, *, function: str | None = None
) -> XdtError:
    """The exception for a failed invocation answer: by the platform's error code when it sent
    one; a function's own non-2xx answer (no code) is :class:`FunctionFailed` for 5xx and
    :class:`BadRequest` otherwise, whatever the status — a function's own 404 or 503 does not
    mean "no such function" or "the platform is overloaded"."""
    if code is not None:
        return error_for_code(code, message, function=function, status=status)
    error = (FunctionFailed if status >= 500 else BadRequest)(message, function=function)
    error.status = status
    return error


def to_wire(error: XdtError) -> dict[str, Any]:
    """The error as fields: the JSON body of an HTTP error answer, the local channel's ERROR
    message. ``message`` is the text as raised: errors never carry secrets. ``request_id``
    and ``traceback`` (the function's own, like Lambda's ``stackTrace``) when known."""
    fields: dict[str, Any] = {
        "error": error.code,
        "message": str(error),
        "function": error.function,
        "status": error.status,
    }
    if error.request_id is not None:
        fields["request_id"] = error.request_id
    if error.stack_trace is not None:
        fields["traceback"] = error.stack_trace
    return fields


def from_wire(fields: Mapping[str, Any]) -> XdtError:
    """The exception :func:`to_wire` encoded (fields of another xdt, checked)."""
    code, message = fields.get("error"), fields.get("message")
    function, status = fields.get("function"), fields.get("status")
    if not isinstance(code, str) or not isinstance(message, str):
        return ProtocolError(f"an error answer without a code and a message: {dict(fields)!r}")
    error = error_for_code(
        code,
        message,
        function=function if isinstance(function, str) else None,
        status=status if type(status) is int and 100 <= status <= 599 else None,
    )
    request_id, stack_trace = fields.get("request_id"), fields.get("traceback")
    error.request_id = request_id if isinstance(request_id, str) else None
    error.stack_trace = stack_trace if isinstance(stack_trace, str) else None
    return error
