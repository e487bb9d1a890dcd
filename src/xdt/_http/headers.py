"""The platform's own HTTP headers, and which headers travel where.

- ``X-Xdt-Error: <code>`` marks an answer the platform made for an error (its wire code,
  :mod:`xdt._core.errors`); a function's own answer never carries it.
- ``X-Xdt-Transfer: ref`` — the body is a sealed reference, not the payload.
- ``X-Xdt-Accept: ref`` — the caller's sidecar resolves references in answers, so the answer
  may be one.
- ``X-Xdt-Hop: <secret>`` — the hop is the platform's own (a sidecar calling through the
  gateway, the gateway forwarding to an instance): :meth:`~xdt._core.refs.KeyRing.hop_secret`.
  The two transfer headers are honoured only beside it; from anyone else they are refused
  (403), so an outside client can neither make a sidecar hold objects for it nor hand it a
  reference to pull.
"""

from __future__ import annotations

__all__ = [
    "ACCEPT_HEADER",
    "ANSWER_HEADERS",
    "BY_REFERENCE",
    "ERROR_HEADER",
    "HOP_HEADER",
    "TRANSFER_HEADER",
    "TRANSFER_HEADERS",
    "TRANSFER_HEADERS_ARE_INTERNAL",
]

ERROR_HEADER = "X-Xdt-Error"
TRANSFER_HEADER = "X-Xdt-Transfer"
ACCEPT_HEADER = "X-Xdt-Accept"
HOP_HEADER = "X-Xdt-Hop"
BY_REFERENCE = "ref"  # the value of both transfer headers

# Between sidecars, through the gateway: whether the body is a reference, whether the caller
# takes one back.
TRANSFER_HEADERS = (TRANSFER_HEADER, ACCEPT_HEADER)
TRANSFER_HEADERS_ARE_INTERNAL = (
    "X-Xdt-Transfer and X-Xdt-Accept are for the platform's own hops between sidecars; "
    "send the payload itself and take the answer as bytes"
)
# What of a callee's answer its caller's sidecar hands on to the calling function.
ANSWER_HEADERS = ("Content-Type", ERROR_HEADER)
