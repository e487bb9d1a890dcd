"""Moving objects between sidecars: the object server and the pull client.

The wire protocol is in :mod:`xdt.pull.frames`; the socket primitives the event loop
lacks (fd passing) in :mod:`xdt._core.fdio`.
"""

from .client import DEFAULT_CLIENT_CONFIG, ClientConfig, ClientStats, PullClient, Pulled
from .server import DEFAULT_SERVER_CONFIG, ObjectServer, ServerConfig, ServerStats

__all__ = [
    "DEFAULT_CLIENT_CONFIG",
    "DEFAULT_SERVER_CONFIG",
    "ClientConfig",
    "ClientStats",
    "ObjectServer",
    "PullClient",
    "Pulled",
    "ServerConfig",
    "ServerStats",
]
