"""xdt: Expedited Data Transfers for serverless functions.

The sender's trusted sidecar keeps a payload in memory and sends a sealed reference instead;
the receiver's sidecar pulls the bytes straight from it. This package is layered like so:

- :mod:`xdt.refs` — sealed references and the key ring (the capability);
- :mod:`xdt.objects` — the object store each sidecar keeps (quota, pull budget, expiry);
- :mod:`xdt.transfer` — the object server and pull client between sidecars;
- :mod:`xdt.sidecar`, :mod:`xdt.runtime`, :mod:`xdt.platform` — the embedded serverless
  platform (``xdt up``): sidecars, the Python function runtime, activator and autoscaler;
- :mod:`xdt.sdk` — what function code calls (``invoke``, ``scatter``, ``put``/``get``,
  ``broadcast``, ``gather``), and :mod:`xdt.sync` the same for plain ``def`` handlers;
- :mod:`xdt.modes` — the four transfer modes' data paths;

and this module pulls together the public API.
"""

from typing import TYPE_CHECKING

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


# The SDK loads on first use (PEP 562): a function that makes no calls does not pay for
# importing the HTTP client.
_SDK = ("broadcast", "buffer", "gather", "get", "invoke", "put", "release", "scatter")

if TYPE_CHECKING:
    from . import sync as sync
    from .sdk import broadcast as broadcast
    from .sdk import buffer as buffer
    from .sdk import gather as gather
    from .sdk import get as get
    from .sdk import invoke as invoke
    from .sdk import put as put
    from .sdk import release as release
    from .sdk import scatter as scatter


def __getattr__(name: str) -> object:
    if name in _SDK:
        from . import sdk

        return getattr(sdk, name)
    if name == "sync":
        import importlib

        return importlib.import_module(".sync", __name__)
    raise AttributeError(f"module 'xdt' has no attribute {name!r}")


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
