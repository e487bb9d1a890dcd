"""xdt: Expedited Data Transfers for serverless functions.

The sender's trusted sidecar keeps a payload in memory and sends a sealed reference instead;
the receiver's sidecar pulls the bytes straight from it. The layers, each importing only
those below it::

    cli, bench, testing          the xdt command, benchmarks, xdt up as a child process
    platform                     the embedded platform: spec, gateway, throttler, KPA, instances
    sidecar   runtime   sdk      the per-instance sidecar, the Python runtime, function calls
    modes                        the data paths: inline, memory (xdt), redis, s3
    pull      channel   _http    sidecar↔sidecar pulls, function↔sidecar wire, HTTP plumbing
    _core                        errors, references, checksum, buffers, loans, store, fd I/O
    _util                        leaf helpers: units, names, heap, processes, event loops

This module is the public API: the core's types, the pull protocol's server and client, and
(loaded on first use) what function code calls.
"""

from typing import TYPE_CHECKING

from ._core.errors import (
    BadRequest,
    ConfigError,
    Forbidden,
    FunctionFailed,
    FunctionNotFound,
    HandlerLoadError,
    InstanceFailed,
    InstanceStartError,
    InternalError,
    InvocationError,
    InvocationTimeout,
    IsolationError,
    KeyRingError,
    ObjectNotFound,
    Overloaded,
    PayloadTooLarge,
    PeerGone,
    PlatformError,
    ProtocolError,
    PullBudgetExhausted,
    QuotaExceeded,
    ReferenceExpired,
    ReferenceMalformed,
    ReferenceRejected,
    ReferenceTampered,
    SourceUnavailable,
    SpecError,
    StoreClosed,
    StoreError,
    StoreStartError,
    TransferCorrupted,
    TransferError,
    WrongTenant,
    XdtError,
)
from ._core.refs import DEFAULT_TENANT, KeyRing, Reference, TransferMode
from ._core.store import DEFAULT_STORE_CONFIG, ObjectStore, StoreConfig, StoredObject, StoreStats
from .pull import (
    DEFAULT_CLIENT_CONFIG,
    DEFAULT_SERVER_CONFIG,
    ClientConfig,
    ObjectServer,
    PullClient,
    Pulled,
    ServerConfig,
)

__version__ = "0.1.0"


# The SDK loads on first use (PEP 562): a function that makes no calls does not pay for
# importing the HTTP client.
_SDK = ("broadcast", "buffer", "gather", "get", "invoke", "put", "release", "scatter")

if TYPE_CHECKING:
    from .sdk import broadcast as broadcast
    from .sdk import buffer as buffer
    from .sdk import gather as gather
    from .sdk import get as get
    from .sdk import invoke as invoke
    from .sdk import put as put
    from .sdk import release as release
    from .sdk import scatter as scatter
    from .sdk import sync as sync


def __getattr__(name: str) -> object:
    if name in _SDK:
        from . import sdk

        return getattr(sdk, name)
    if name == "sync":
        from .sdk import sync

        return sync
    raise AttributeError(f"module 'xdt' has no attribute {name!r}")


__all__ = [
    "DEFAULT_CLIENT_CONFIG",
    "DEFAULT_SERVER_CONFIG",
    "DEFAULT_STORE_CONFIG",
    "DEFAULT_TENANT",
    "BadRequest",
    "ClientConfig",
    "ConfigError",
    "Forbidden",
    "FunctionFailed",
    "FunctionNotFound",
    "HandlerLoadError",
    "InstanceFailed",
    "InstanceStartError",
    "InternalError",
    "InvocationError",
    "InvocationTimeout",
    "IsolationError",
    "KeyRing",
    "KeyRingError",
    "ObjectNotFound",
    "ObjectServer",
    "ObjectStore",
    "Overloaded",
    "PayloadTooLarge",
    "PeerGone",
    "PlatformError",
    "ProtocolError",
    "PullBudgetExhausted",
    "PullClient",
    "Pulled",
    "QuotaExceeded",
    "Reference",
    "ReferenceExpired",
    "ReferenceMalformed",
    "ReferenceRejected",
    "ReferenceTampered",
    "ServerConfig",
    "SourceUnavailable",
    "SpecError",
    "StoreClosed",
    "StoreConfig",
    "StoreError",
    "StoreStartError",
    "StoreStats",
    "StoredObject",
    "TransferCorrupted",
    "TransferError",
    "TransferMode",
    "WrongTenant",
    "XdtError",
    "__version__",
    "broadcast",
    "buffer",
    "gather",
    "get",
    "invoke",
    "put",
    "release",
    "scatter",
    "sync",
]
