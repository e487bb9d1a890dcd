"""The platform's own HTTP headers, and which headers travel where.

- ``X-Xdt-Error: <code>`` marks an answer the platform made for an error (its wire code,
  :mod:`xdt._core.errors`); a function's own answer never carries it.
- ``X-Xdt-Transfer: ref`` — the body is a sealed reference, not the payload.
- ``X-Xdt-Accept: ref`` — the caller's sidecar resolves references in answers, so the answer
  may be one. Only sidecars send it.
"""

from __future__ import annotations

__all__ = [
    "ACCEPT_HEADER",
    "ANSWER_HEADERS",
    "BY_REFERENCE",
    "ERROR_HEADER",
    "TRANSFER_HEADER",
    "TRANSFER_HEADERS",
]

ERROR_HEADER = "X-Xdt-Error"
TRANSFER_HEADER = "X-Xdt-Transfer"
ACCEPT_HEADER = "X-Xdt-Accept"
BY_REFERENCE = "ref"  # the value of both transfer headers

# Between sidecars, through the gateway: whether the body is a reference, whether the caller
# takes one back.
TRANSFER_HEADERS = (TRANSFER_HEADER, ACCEPT_HEADER)
# What of a callee's answer its caller's sidecar hands on to the calling function.
ANSWER_HEADERS = ("Content-Type", ERROR_HEADER)
