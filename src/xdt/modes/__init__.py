"""Transfer modes: one invocation path, four data paths (inline, xdt, elasticache, s3).

:class:`DataPath` is the interface; :mod:`.xdt`, :mod:`.elasticache` and :mod:`.s3` implement
it; ``inline`` needs none (the bytes travel in the HTTP body). The sidecar chooses by
deployment configuration (:mod:`xdt.sidecar.payloads`); function code never does.
"""

from .base import DataPath, StoreSettings

__all__ = ["MODES", "DataPath", "StoreSettings"]

MODES = ("inline", "xdt", "elasticache", "s3")
