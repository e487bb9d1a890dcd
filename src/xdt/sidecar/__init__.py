"""The sidecar, the trusted process in front of each function instance (see :mod:`.server`).

Run as ``python -m xdt.sidecar --config JSON`` with the key ring in ``$XDT_KEYRING`` (or, with
``--secrets-stdin``, the key ring and store URLs as JSON on stdin); it prints one JSON line with
its ports once it listens.
"""

from .._util.concurrency import RequestStats, StatsReport
from .breaker import Breaker, BreakerFull
from .server import Sidecar, SidecarConfig

__all__ = ["Breaker", "BreakerFull", "RequestStats", "Sidecar", "SidecarConfig", "StatsReport"]
