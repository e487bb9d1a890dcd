"""The platform's own HTTP headers, and which headers travel where.

- ``X-Xdt-Error: <code>`` marks an answer the platform made for an error (its wire code,
  :mod:`xdt._core.errors`); a function's own answer never carries it.
- ``X-Xdt-Transfer: ref`` — the body is a sealed reference, not the payload.
- ``X-Xdt-Accept: ref`` — the caller's sidecar resolves references in answers, so the answer
  may be one.
- ``X-Xdt-Hop: <secret>`` — the hop is the platform's own (a sidecar calling through the
  gateway, the gateway forwarding to an instance): :meth:`~xdt._core.refs.KeyRing.hop_secret`.
  ``X-Xdt-Accept`` is honoured only beside it, and refused (403) from anyone else: an
  outside client cannot make a sidecar hold its answers as objects. ``X-Xdt-Transfer`` from
  outside is taken at the gateway only with a reference of the callee's tenant (an upload to
  the gateway's ``/objects``, or one a function gave out), checked before it is forwarded.
- ``X-Xdt-Call: <time>.<mac>`` — on Knative, where no hop secret crosses the cluster's
  network: a sidecar's proof that it made this call to this function just now
  (:meth:`~xdt._core.refs.KeyRing.call_proof`); ``X-Xdt-Accept`` is honoured only beside it.
"""

from __future__ import annotations

__all__ = [
    "ACCEPT_HEADER",
    "ACCEPT_IS_INTERNAL",
    "ANSWER_HEADERS",
    "BY_REFERENCE",
    "CALL_HEADER",
    "ERROR_HEADER",
    "HOP_HEADER",
    "TRANSFER_HEADER",
    "TRANSFER_HEADERS",
]

ERROR_HEADER = "X-Xdt-Error"
TRANSFER_HEADER = "X-Xdt-Transfer"
ACCEPT_HEADER = "X-Xdt-Accept"
HOP_HEADER = "X-Xdt-Hop"
CALL_HEADER = "X-Xdt-Call"
BY_REFERENCE = "ref"  # the value of both transfer headers

# Between sidecars, through the gateway: whether the body is a reference, whether the caller
# takes one back.
TRANSFER_HEADERS = (TRANSFER_HEADER, ACCEPT_HEADER)
ACCEPT_IS_INTERNAL = (
    "X-Xdt-Accept is for the platform's own hops between sidecars: take the answer as bytes "
    "(a reference a function returns can be downloaded at the gateway's /objects/get)"
)
# What of a callee's answer its caller's sidecar hands on to the calling function.
ANSWER_HEADERS = ("Content-Type", ERROR_HEADER)
