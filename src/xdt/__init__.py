"""xdt: Expedited Data Transfers for serverless functions.

The sender's trusted sidecar keeps a payload in memory and sends a sealed reference instead;
the receiver's sidecar pulls the bytes straight from it. This package is layered like so:

- :mod:`xdt.refs` — sealed references and the key ring (the capability);
- :mod:`xdt.objects` — the object store each sidecar keeps (quota, pull budget, expiry);
- :mod:`xdt.transfer` — the object server and pull client between sidecars;
- :mod:`xdt.sidecar`, :mod:`xdt.runtime`, :mod:`xdt.platform` — the embedded serverless
  platform (``xdt up``): sidecars, the Python function runtime, activator and autoscaler;
- :mod:`xdt.sdk` — what function code calls (:func:`invoke`);

and this module pulls together the public API.
"""

from ._errors import (
    BadRequest,
    FunctionFailed,
    FunctionNotFound,
    InstanceFailed,
    InvocationError,
    InvocationTimeout,
    KeyRingError,
    ObjectNotFound,
    Overloaded,
    PayloadTooLarge,
    ProtocolError,
    PullBudgetExhausted,
    QuotaExceeded,
    ReferenceExpired,
    ReferenceMalformed,
    ReferenceRejected,
    ReferenceTampered,
    SourceUnavailable,
    StoreClosed,
    StoreError,
    TransferCorrupted,
    TransferError,
    WrongTenant,
    XdtError,
)
from .objects import DEFAULT_STORE_CONFIG, ObjectStore, StoreConfig, StoredObject, StoreStats
from .refs import DEFAULT_TENANT, KeyRing, Reference, TransferMode
from .transfer import (
    DEFAULT_CLIENT_CONFIG,
    DEFAULT_SERVER_CONFIG,
    ClientConfig,
    ObjectServer,
    PullClient,
    Pulled,
    ServerConfig,
)

__version__ = "0.1.0"


async def invoke(function: str, data: bytes | bytearray | memoryview = b"") -> bytes:
    """Invoke another function from inside a function; its answer body. See :mod:`xdt.sdk`."""
    from .sdk import invoke as sdk_invoke  # aiohttp loads only for code that makes calls

    return await sdk_invoke(function, data)


__all__ = [
    "DEFAULT_CLIENT_CONFIG",
    "DEFAULT_SERVER_CONFIG",
    "DEFAULT_STORE_CONFIG",
    "DEFAULT_TENANT",
    "BadRequest",
    "ClientConfig",
    "FunctionFailed",
    "FunctionNotFound",
    "InstanceFailed",
    "InvocationError",
    "InvocationTimeout",
    "KeyRing",
    "KeyRingError",
    "ObjectNotFound",
    "ObjectServer",
    "ObjectStore",
    "Overloaded",
    "PayloadTooLarge",
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
    "StoreClosed",
    "StoreConfig",
    "StoreError",
    "StoreStats",
    "StoredObject",
    "TransferCorrupted",
    "TransferError",
    "TransferMode",
    "WrongTenant",
    "XdtError",
    "__version__",
    "invoke",
]
