"""The sidecar, the trusted process in front of each function instance (see :mod:`.app`).

One module per part, as Knative's ``pkg/queue``: :mod:`.config` (what the platform tells it),
:mod:`.app` (lifecycle and wiring), :mod:`.ingress` and :mod:`.egress` (its two faces),
:mod:`.payloads` (the function's transfer mode at both), :mod:`.upstream` (the function
behind it), :mod:`.breaker` (containerConcurrency) and :mod:`.guard` (who may connect).
Run as ``python -m xdt.sidecar`` with its :class:`~.config.Launch` on stdin.
"""

from .app import Sidecar
from .breaker import Breaker
from .config import Faces, Launch, RunsAs, SidecarConfig

__all__ = ["Breaker", "Faces", "Launch", "RunsAs", "Sidecar", "SidecarConfig"]
