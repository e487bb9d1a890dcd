"""What a sidecar is told when it starts: the contract between the platform and a sidecar.

One :class:`SidecarConfig`, composed of the value objects the layers below already use
(:class:`~xdt.modes.TransferSettings`, :class:`~xdt.modes.StoreSettings`), made by the
platform from the spec and handed over once: as one JSON document on the sidecar's stdin,
beside the key ring (:class:`Launch`). Nothing is flattened and rebuilt on the way; nothing
secret is on a command line (``/proc/<pid>/cmdline`` is readable by every local user) or in
an environment (``/proc/<pid>/environ`` keeps a process's original one for its whole life).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .._core.refs import KeyRing
from .._util.heap import IDLE_SECONDS
from ..modes import StoreSettings, TransferSettings

__all__ = ["Faces", "KnativeMode", "Launch", "RunsAs", "SidecarConfig"]


@dataclass(frozen=True)
class Faces:
    """Where the sidecar listens. TCP faces bind ``host`` on free ports; the Unix sockets
    are the activator's short way in and the Python SDK's same-host way out."""

    host: str = "127.0.0.1"
    ingress_socket: str | None = None
    egress_socket: str | None = None
    # The folder of every sidecar's same-host object socket: the platform's, private (0700),
    # so no function can reach, take or predict one. None: the abstract namespace.
    objects_dir: str | None = None
    ingress_port: int = 0  # 0: any free port (the platform reads which); Knative: $PORT
    objects_port: int = 0
    # host:port sealed into references when it is not where the server binds (Knative: the
    # pod's IP, while the server binds every address of the pod).
    advertise: str | None = None
    egress_tcp: bool = True  # the TCP egress (behind a secret path) besides the socket


@dataclass(frozen=True)
class KnativeMode:
    """Set when the sidecar is the serving container of a Knative pod
    (:mod:`xdt.sidecar.knative`): Knative's queue-proxy and activator are in front, so any
    method and path is an invocation; calls go to each function's own service URL; SIGTERM
    drains."""

    # Where a call to function F goes: ``{function}`` and ``{namespace}`` are filled in, e.g.
    # "http://{function}.{namespace}.svc.cluster.local" (Knative's cluster-local URL).
    call_url: str
    namespace: str = "default"
    grace: float = 300.0  # after SIGTERM, the longest wait for in-flight requests and objects


@dataclass(frozen=True)
class RunsAs:
    """The uid and gid the function process runs under (isolation)."""

    uid: int
    gid: int


@dataclass(frozen=True)
class SidecarConfig:
    """Everything one sidecar needs but its key ring. Every field is set by the platform
    from the spec, whose defaults are the only ones (:mod:`xdt.platform.spec`)."""

    function: str
    instance: str  # names this sidecar's objects (S3 keys, logs)
    tenant: str
    upstream: str  # "unix:/path/to/runtime.sock" (Python runtime) or "http:PORT" (command)
    activator_url: str  # where the function's outbound invocations go
    concurrency: int  # containerConcurrency; 0 = unlimited (no breaker)
    timeout: float  # the function's timeout: an invocation, and each call it makes
    object_quota: int  # bytes of live objects in this sidecar's store
    transfer: TransferSettings
    stores: StoreSettings
    faces: Faces = field(default_factory=Faces)
    runs_as: RunsAs | None = None  # None: the function runs under the sidecar's own uid
    keep_warm: float = IDLE_SECONDS  # idle this long, warm buffers and heap go back
    # "full": a function's traceback goes in its error answers, too; "message": the log only.
    error_detail: str = "full"
    pull_timeout: float = 30.0  # a pull that makes no progress this long: SourceUnavailable
    knative: KnativeMode | None = None  # None: the embedded platform's instance

    @property
    def max_body(self) -> int:
        """The biggest payload either face takes from the function: an inline one, or an
        object as big as the quota."""
        return max(self.transfer.inline_limit, self.object_quota)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SidecarConfig:
        config = _build(cls, json.loads(text))
        assert isinstance(config, SidecarConfig)
        return config


@dataclass(frozen=True)
class Launch:
    """What the platform writes on a new sidecar's stdin, then closes."""

    config: SidecarConfig
    keyring: KeyRing

    def to_json(self) -> str:
        config = dataclasses.asdict(self.config)
        return json.dumps({"config": config, "keyring": self.keyring.to_text()})

    @classmethod
    def from_json(cls, text: str) -> Launch:
        document = json.loads(text)
        keyring = KeyRing.from_text(document["keyring"], origin="the sidecar's stdin")
        return cls(SidecarConfig.from_json(json.dumps(document["config"])), keyring)


def _build(kind: Any, value: Any) -> Any:
    """``value`` (parsed JSON) as an instance of ``kind``: dataclasses field by field (unknown
    or missing fields are a TypeError), enums by value, optionals either way."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _build(inner, value)
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        if not isinstance(value, dict):
            raise TypeError(f"{kind.__name__}: expected an object, got {value!r}")
        hints = typing.get_type_hints(kind)
        names = {f.name for f in dataclasses.fields(kind)}
        unknown = set(value) - names
        if unknown:
            raise TypeError(f"{kind.__name__}: unknown fields {sorted(unknown)}")
        return kind(**{name: _build(hints[name], item) for name, item in value.items()})
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(value)
    return value
