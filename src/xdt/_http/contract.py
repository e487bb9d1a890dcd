"""What of an HTTP request reaches a function, and what of its answer comes back: Knative's
container contract, both ways, and the request id and trace context that tie one
invocation's hops and log lines together.

Into the function: the method, the path below ``/invoke/<function>`` with its query string,
and every header but those that describe one connection rather than the request — the
hop-by-hop ones (RFC 9110 §7.6.1: ``Connection``, ``Keep-Alive``, ``Proxy-*``, ``TE``,
``Trailer``, ``Transfer-Encoding``, ``Upgrade``), ``Host`` and ``Content-Length`` — and the
platform's own ``X-Xdt-*``. Out of it: the status and every header but the same ones. So a
function can neither see the platform's hop secret nor make its answer pass for one the
platform made (``X-Xdt-Error``).

``X-Request-Id``: the gateway keeps a caller's (1 to 128 of ``A-Z a-z 0-9 . _ : / @ + = -``)
or assigns one; ``traceparent`` (W3C Trace Context) passes through when well formed. Both
travel through every hop and every call a function makes while serving the request, and
appear in its log lines, its error answers and the platform's recent events.
"""

from __future__ import annotations

import contextvars
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

__all__ = [
    "CURRENT_TRACE",
    "MAX_REQUEST_HEADERS",
    "METHOD_HEADER",
    "PATH_HEADER",
    "REQUEST_ID_HEADER",
    "TRACEPARENT_HEADER",
    "Request",
    "Response",
    "Trace",
    "answer_of",
    "current_request_id",
    "passes",
    "passing",
]

REQUEST_ID_HEADER = "X-Request-Id"
TRACEPARENT_HEADER = "traceparent"
# Between the gateway and a sidecar (platform hops only): the caller's method and path.
METHOD_HEADER = "X-Xdt-Method"
PATH_HEADER = "X-Xdt-Path"
MAX_REQUEST_HEADERS = 32 << 10  # bytes of headers handed to a function (they travel as meta)

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/@+=-]{1,128}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_METHOD = re.compile(r"[A-Z]{1,16}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")  # a header's name (RFC 9110 §5.1)
_UNSAFE_VALUE = re.compile(r"[\r\n\x00]")

Pairs = tuple[tuple[str, str], ...]


def passes(name: str) -> bool:
    """Whether a header of this name goes between a caller and a function (either way)."""
    lower = name.lower()
    return lower not in _HOP_BY_HOP and not lower.startswith("x-xdt-")


def passing(headers: Iterable[tuple[str, str]]) -> Pairs:
    """The headers of ``headers`` that pass (see :func:`passes`), in order; any that could
    not be written as one header line (a bad name, CR or LF in the value) are dropped."""
    return tuple(
        (name, value)
        for name, value in headers
        if passes(name) and _TOKEN.fullmatch(name) and not _UNSAFE_VALUE.search(value)
    )


@dataclass(frozen=True, slots=True)
class Trace:
    """One invocation's request id and (when the caller sent one) W3C ``traceparent``."""

    request_id: str
    traceparent: str | None = None

    @classmethod
    def new(cls) -> Trace:
        return cls(uuid.uuid4().hex)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Trace:
        """The caller's request id if well formed, else a fresh one; its traceparent if well
        formed, else none. (``headers``: any mapping that finds names without regard to case,
        or one with lower-cased names.)"""
        given = _get(headers, REQUEST_ID_HEADER)
        parent = _get(headers, TRACEPARENT_HEADER)
        return cls(
            given if given is not None and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex,
            parent if parent is not None and _TRACEPARENT.fullmatch(parent) else None,
        )

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Trace | None:
        """The trace a channel message carries (:meth:`meta`), checked; None if none."""
        request_id, parent = meta.get("request_id"), meta.get("traceparent")
        if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
            return None
        if not isinstance(parent, str) or not _TRACEPARENT.fullmatch(parent):
            parent = None
        return cls(request_id, parent)

    def headers(self) -> dict[str, str]:
        headers = {REQUEST_ID_HEADER: self.request_id}
        if self.traceparent is not None:
            headers[TRACEPARENT_HEADER] = self.traceparent
        return headers

    def meta(self) -> dict[str, str]:
        meta = {"request_id": self.request_id}
        if self.traceparent is not None:
            meta["traceparent"] = self.traceparent
        return meta


# The invocation being served in this task or thread: set by the sidecar's ingress and the
# Python runtime, read by log lines and by the calls a function makes (they carry it on).
CURRENT_TRACE: contextvars.ContextVar[Trace | None] = contextvars.ContextVar(
    "xdt_trace", default=None
)


def _get(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    return headers.get(name.lower()) if value is None else value


@dataclass(frozen=True)
class Request:
    """An invocation as a Python handler sees it when its parameter is annotated
    ``xdt.Request``: ``headers`` has lower-cased names (as in HTTP/2); ``query`` is the query
    string's last value of each name, ``query_string`` all of it."""

    body: bytes | memoryview = b""
    method: str = "POST"
    path: str = "/"
    query_string: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    request_id: str | None = None

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def meta(self) -> dict[str, Any]:
        """As the sidecar sends it to the runtime (the body goes as the payload)."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query_string,
            "headers": [[name, value] for name, value in self.headers.items()],
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], body: bytes | memoryview) -> Request:
        """The request :meth:`meta` describes (fields of the platform's own sidecar; a
        missing or malformed one takes its default)."""
        method, path, query = meta.get("method"), meta.get("path"), meta.get("query")
        headers: dict[str, str] = {}
        raw = meta.get("headers")
        if isinstance(raw, list):
            for pair in raw:
                if (
                    isinstance(pair, list)
                    and len(pair) == 2
                    and all(isinstance(p, str) for p in pair)
                ):
                    name = pair[0].lower()
                    headers[name] = f"{headers[name]}, {pair[1]}" if name in headers else pair[1]
        trace = Trace.from_meta(meta)
        return cls(
            body,
            method if isinstance(method, str) and _METHOD.fullmatch(method) else "POST",
            path if isinstance(path, str) and path.startswith("/") else "/",
            query if isinstance(query, str) else "",
            headers,
            trace.request_id if trace is not None else None,
        )


@dataclass(frozen=True)
class Response:
    """What a Python handler may return instead of bytes: a status, headers and a body (bytes
    or str; str is sent as UTF-8)."""

    body: bytes | bytearray | memoryview | str = b""
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if type(self.status) is not int or not 200 <= self.status <= 599:
            raise ValueError(
                f"a response's status is a number from 200 to 599, not {self.status!r}"
            )

    def meta(self) -> dict[str, Any]:
        """As the runtime sends it to the sidecar, with the body as the payload."""
        return {
            "status": self.status,
            "headers": [[str(k), str(v)] for k, v in self.headers.items() if passes(str(k))],
        }


def answer_of(meta: Mapping[str, Any]) -> tuple[int, Pairs]:
    """(status, headers) of a runtime's RESULT meta (:meth:`Response.meta`); 200 and none
    when it carries none, checked: what does not pass is dropped."""
    status = meta.get("status", 200)
    if type(status) is not int or not 200 <= status <= 599:
        status = 200
    raw = meta.get("headers")
    pairs: list[tuple[str, str]] = []
    if isinstance(raw, list):
        for pair in raw:
            if isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair):
                pairs.append((pair[0], pair[1]))
    return status, passing(pairs)


def current_request_id() -> str | None:
    """The request id of the invocation this task or thread serves, if any (log lines)."""
    trace = CURRENT_TRACE.get()
    return trace.request_id if trace is not None else None
