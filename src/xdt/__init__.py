"""xdt: Expedited Data Transfers for serverless functions.

The sender's trusted sidecar keeps a payload in memory and sends a sealed reference instead;
the receiver's sidecar pulls the bytes straight from it. The layers, each importing only
those below it::

    cli, bench                   the xdt command, benchmarks (and the evaluation's cost model)
    testing, apps                xdt up as a child process; the evaluation's workflows
    platform                     the embedded platform: spec, gateway, throttler, KPA, instances
    sidecar runtime sdk client   the sidecar, the Python runtime, function calls, outside callers
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
    HostsError,
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
    PullRefused,
    QuotaExceeded,
    ReferenceExpired,
    ReferenceMalformed,
    ReferenceRejected,
    ReferenceTampered,
    RequestTimeout,
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

__version__ = "0.1.0"

# Everything but the exceptions loads on first use (PEP 562): a function process that imports
# xdt for its SDK pays neither for the AEAD and the object server, nor, until it makes a
# call, for the SDK; a sidecar neither for the SDK.
_LAZY = {
    **dict.fromkeys(("DEFAULT_TENANT", "KeyRing", "Reference", "TransferMode"), "._core.refs"),
    **dict.fromkeys(
        ("DEFAULT_STORE_CONFIG", "ObjectStore", "StoreConfig", "StoredObject", "StoreStats"),
        "._core.store",
    ),
    **dict.fromkeys(
        (
            "DEFAULT_CLIENT_CONFIG",
            "DEFAULT_SERVER_CONFIG",
            "ClientConfig",
            "ObjectServer",
            "PullClient",
            "Pulled",
            "ServerConfig",
        ),
        ".pull",
    ),
    **dict.fromkeys(
        ("broadcast", "buffer", "gather", "get", "invoke", "put", "release", "scatter"), ".sdk"
    ),
    "sync": ".sdk.sync",  # a module
    **dict.fromkeys(("Request", "Response"), "._http.contract"),
    **dict.fromkeys(("AsyncClient", "Client"), ".client"),
}

if TYPE_CHECKING:
    from ._core.refs import DEFAULT_TENANT, KeyRing, Reference, TransferMode
    from ._core.store import (
        DEFAULT_STORE_CONFIG,
        ObjectStore,
        StoreConfig,
        StoredObject,
        StoreStats,
    )
    from ._http.contract import Request, Response
    from .client import AsyncClient, Client
    from .pull import (
        DEFAULT_CLIENT_CONFIG,
        DEFAULT_SERVER_CONFIG,
        ClientConfig,
        ObjectServer,
        PullClient,
        Pulled,
        ServerConfig,
    )
    from .sdk import broadcast, buffer, gather, get, invoke, put, release, scatter, sync


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'xdt' has no attribute {name!r}")
    import importlib

    loaded = importlib.import_module(module, __name__)
    value = loaded if module.endswith(f".{name}") else getattr(loaded, name)
    globals()[name] = value  # once loaded, an ordinary attribute
    return value


__all__ = [
    "DEFAULT_CLIENT_CONFIG",
    "DEFAULT_SERVER_CONFIG",
    "DEFAULT_STORE_CONFIG",
    "DEFAULT_TENANT",
    "AsyncClient",
    "BadRequest",
    "Client",
    "ClientConfig",
    "ConfigError",
    "Forbidden",
    "FunctionFailed",
    "FunctionNotFound",
    "HandlerLoadError",
    "HostsError",
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
    "PullRefused",
    "Pulled",
    "QuotaExceeded",
    "Reference",
    "ReferenceExpired",
    "ReferenceMalformed",
    "ReferenceRejected",
    "ReferenceTampered",
    "Request",
    "RequestTimeout",
    "Response",
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
