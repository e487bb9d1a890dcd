"""Real platforms and real stores for tests, benchmarks and demos.

- :class:`LaunchedPlatform`: ``xdt up`` as a child process, driven through its public faces.
- :class:`LocalStores`: a ``redis-server`` and moto's S3 server on free loopback ports, with
  the servers' own counters (keys, objects, data commands, S3 requests), so that a run can
  say what it left behind and what it cost.
"""

from ._launched import LaunchedPlatform
from ._stores import BUCKET, LocalStores

__all__ = ["BUCKET", "LaunchedPlatform", "LocalStores"]
