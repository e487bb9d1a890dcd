"""The platform spec: which functions to run and how, read from a YAML file.

::

    platform:                       # optional; every key has a default
      port: 8080
      autoscaler: {stable_window: 60s, scale_to_zero_grace: 30s}
    functions:
      - name: resize
        handler: images:resize      # images.py next to the spec file, function resize
        concurrency: 1
        max_scale: 8
        memory: 1GiB                # billed memory, as Lambda's setting (default 512MiB)
      - name: legacy
        command: ["python3", "server.py"]

:func:`load_spec` checks everything before anything starts; a bad spec raises
:class:`SpecError` whose message names the field (``functions[1].concurrency``), what was
wrong, and what is allowed.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._core.errors import SpecError
from .._core.refs import DEFAULT_TENANT, TransferMode
from .._core.store import DEFAULT_STORE_CONFIG
from .._util.heap import IDLE_SECONDS
from .._util.names import is_function_name
from .._util.units import format_size, parse_duration, parse_rate, parse_size
from ..modes import (
    DEFAULT_STORE_SETTINGS,
    DEFAULT_TRANSFER_SETTINGS,
    MODES,
    StoreSettings,
    TransferSettings,
)
from .autoscaler import DEFAULT_AUTOSCALER_CONFIG, AutoscalerConfig
from .hosts import MAX_HOSTS, Link

__all__ = [
    "DEFAULT_PLATFORM_SPEC",
    "ISOLATION_SETTINGS",
    "FunctionSpec",
    "PlatformSpec",
    "Spec",
    "load_spec",
    "parse_spec",
]

ISOLATION_SETTINGS = ("auto", "on", "off")  # see xdt.platform.isolation
# A function's billed memory: Lambda's default setting is 128 MB, but 512 MiB is what a Python
# function with numpy or boto3 is usually given; Lambda allows 128 MB to 10,240 MB.
DEFAULT_FUNCTION_MEMORY = 512 << 20
MIN_BILLED_MEMORY = 128 << 20
MAX_BILLED_MEMORY = 10240 << 20
_HANDLER = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class FunctionSpec:
    """One function. Exactly one of ``handler`` (a Python ``module:function`` run by the xdt
    runtime) and ``command`` (any HTTP server listening on ``$PORT``) is set."""

    name: str
    handler: str | None = None
    command: tuple[str, ...] | None = None
    concurrency: int = 0  # containerConcurrency; 0 = unlimited
    min_scale: int = 0
    max_scale: int = 10  # 0 = unlimited, as in Knative; the embedded default is bounded (one host)
    initial_scale: int | None = None  # None = the autoscaler's initial_scale
    transfer: str | None = None  # None: the platform's (platform.transfer, else xdt)
    timeout: float = 300.0  # Knative's revision-timeout-seconds
    # How long a new instance may take to be ready (a command: to listen on $PORT) before it
    # is given up, and the requests waiting for it answered with why.
    ready_timeout: float = 30.0
    tenant: str = DEFAULT_TENANT
    env: Mapping[str, str] = field(default_factory=dict)
    # The function's memory setting, as on AWS Lambda: what each invocation is billed for
    # (GB-s, xdt bench cost), shown in xdt status. Not enforced: see memory_limit.
    memory: int = DEFAULT_FUNCTION_MEMORY
    # Enforced per function process: its heap and private mappings, and any one file it
    # writes (rlimits, see xdt._util.process.limit_memory). None: no limit.
    memory_limit: int | None = None
    folder: Path = Path()  # where handler modules are found and commands run
    # With platform.hosts: the hosts (1-based) its instances may be placed on; () = any.
    host: tuple[int, ...] = ()

    @property
    def kind(self) -> str:
        return "python" if self.handler is not None else "command"


@dataclass(frozen=True)
class PlatformSpec:
    """Platform-wide settings. ``port`` 0 picks a free port."""

    host: str = "127.0.0.1"
    port: int = 8080
    instance_host: str = "127.0.0.1"  # where sidecars listen; not the gateway's host
    key_file: Path | None = None  # None: XDT_KEYRING, else a fresh key ring for this run
    queue_depth: int = 10_000  # requests the activator buffers per function (Knative's 10000)
    inline_limit: int = DEFAULT_TRANSFER_SETTINGS.inline_limit  # largest invocation body
    object_quota: int = DEFAULT_STORE_CONFIG.quota_bytes  # bytes of live objects per sidecar
    drain_timeout: float = 600.0  # longest a draining instance waits for its objects
    autoscaler: AutoscalerConfig = DEFAULT_AUTOSCALER_CONFIG
    # -- transfers (see xdt.modes) --
    transfer: str | None = None  # overrides every function's transfer mode when set
    xdt_threshold: int = DEFAULT_TRANSFER_SETTINGS.xdt_threshold  # xdt: up to this inline
    storage_threshold: int = DEFAULT_TRANSFER_SETTINGS.storage_threshold  # elasticache, s3
    object_ttl: float = DEFAULT_TRANSFER_SETTINGS.object_ttl  # an unclaimed object's life
    # How long an idle sidecar keeps its warm buffers (and warm heap) before giving them back:
    # memory held for the next big payload against memory for everyone else.
    keep_warm: float = IDLE_SECONDS
    redis_url: str | None = None  # None: `xdt up` starts a local redis-server when needed
    s3_endpoint_url: str | None = None  # None: AWS S3, or a local moto server when needed
    s3_bucket: str = DEFAULT_STORE_SETTINGS.s3_bucket
    s3_region: str = DEFAULT_STORE_SETTINGS.s3_region
    # Each function under a uid of its own: "auto" when xdt up runs as root, "on" requires it.
    isolation: str = "auto"
    # Isolated functions in a bubblewrap sandbox: "auto" when bwrap is installed (xdt.platform
    # .sandbox), "on" requires it, "off" never.
    sandbox: str = "auto"
    # What an answer's error JSON says of a function's failure: "full" (with its traceback,
    # like Lambda's stackTrace) or "message" (its text only: for production). Logs keep both.
    error_detail: str = "full"
    # A pull (xdt mode) that makes no progress this long fails with SourceUnavailable: a
    # source whose host or link went away mid-pull, where no connection reset ever comes.
    pull_timeout: float = 30.0
    # -- test hosts (xdt.platform.hosts): 0 = every instance on this machine's own network --
    hosts: int = 0  # network namespaces to place instances on, joined by a bridge
    store_host: bool = False  # the embedded Redis and S3 on a host of their own
    link: Link | None = None  # every host's link shaped (rate, delay); None: unshaped veth

    @property
    def stores(self) -> StoreSettings:
        """Where the storage modes' servers are, as the spec names them."""
        return StoreSettings(self.redis_url, self.s3_endpoint_url, self.s3_bucket, self.s3_region)


DEFAULT_PLATFORM_SPEC = PlatformSpec()


@dataclass(frozen=True)
class Spec:
    platform: PlatformSpec
    functions: tuple[FunctionSpec, ...]
    path: Path | None = None

    def function(self, name: str) -> FunctionSpec | None:
        return next((f for f in self.functions if f.name == name), None)

    def mode_of(self, function: FunctionSpec) -> TransferMode:
        """The transfer mode a function runs with — the platform's override, else its own,
        else xdt's — the one place it is decided."""
        label = self.platform.transfer or function.transfer
        return DEFAULT_TRANSFER_SETTINGS.mode if label is None else TransferMode.named(label)

    def transfer_of(self, function: FunctionSpec) -> TransferSettings:
        """How the sidecars of ``function`` move its payloads."""
        settings = self.platform
        return TransferSettings(
            mode=self.mode_of(function),
            inline_limit=settings.inline_limit,
            xdt_threshold=settings.xdt_threshold,
            storage_threshold=settings.storage_threshold,
            object_ttl=settings.object_ttl,
        )

    def modes(self) -> set[TransferMode]:
        return {self.mode_of(f) for f in self.functions}


def exposed_secrets(path: str | Path, spec: Spec) -> str | None:
    """A warning when the spec file holds secrets — ``env`` values, a password in
    ``redis_url`` — and other users may read it; None otherwise. Sandboxed functions cannot
    see the file at all, but other local users (and, without the sandbox, functions) can."""
    try:
        mode = Path(path).stat().st_mode & 0o777
    except OSError:
        return None
    if not mode & 0o044:
        return None
    holds = [f"env values of {f.name}" for f in spec.functions if f.env]
    if spec.platform.redis_url and urllib.parse.urlsplit(spec.platform.redis_url).password:
        holds.append("a password in redis_url")
    if not holds:
        return None
    return (
        f"{path} is readable by other users (mode {mode:04o}) and holds "
        f"{', '.join(holds)}: make it private with chmod 600 {path}"
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: plain YAML keeps the
    last one silently, so a second ``platform:`` pasted below the first would drop the
    first's settings unseen."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, collections.abc.Hashable):
                continue  # the base class says what is wrong with it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice in one mapping: merge them",
                    key_node.start_mark,
                )  # fmt: skip
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_spec(path: str | Path) -> Spec:
    """Read and check a spec file. Raises :class:`SpecError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read the spec file {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no objects
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {exc}") from None
    return parse_spec(document, folder=path.resolve().parent, path=path)


def parse_spec(document: Any, *, folder: Path, path: Path | None = None) -> Spec:
    """Check a parsed YAML document; relative paths are taken from ``folder``."""
    top = _mapping(document, "the spec", {"platform", "functions"})
    platform = _platform(top.get("platform", {}), folder)
    raw_functions = top.get("functions")
    if not isinstance(raw_functions, list) or not raw_functions:
        raise SpecError("functions: list at least one function (each with a name and a handler)")
    functions = tuple(
        _function(raw, f"functions[{i}]", folder) for i, raw in enumerate(raw_functions)
    )
    seen: set[str] = set()
    for i, function in enumerate(functions):
        if function.name in seen:
            raise SpecError(f"functions[{i}].name: {function.name!r} is named twice")
        seen.add(function.name)
        beyond = [n for n in function.host if n > platform.hosts]
        if beyond:
            raise SpecError(
                f"functions[{function.name}].host: {beyond[0]} is not a host: platform.hosts "
                + (f"makes hosts 1 to {platform.hosts}" if platform.hosts else "is not set")
            )
    return Spec(platform=platform, functions=functions, path=path)


def _platform(raw: Any, folder: Path) -> PlatformSpec:
    fields = {f.name for f in dataclasses.fields(PlatformSpec)}
    given = _mapping(raw if raw is not None else {}, "platform", fields)
    values: dict[str, Any] = {}
    for key, value in given.items():
        where = f"platform.{key}"
        if key in ("host", "instance_host"):
            values[key] = _string(value, where)
        elif key == "port":
            values[key] = _integer(value, where, low=0, high=65535)
        elif key == "key_file":
            values[key] = folder / _string(value, where)
        elif key in ("queue_depth",):
            values[key] = _integer(value, where, low=1)
        elif key in ("inline_limit", "object_quota"):
            values[key] = _size(value, where)
        elif key == "drain_timeout":
            values[key] = _duration(value, where)
        elif key == "autoscaler":
            values[key] = _autoscaler(value)
        elif key == "transfer":
            values[key] = _mode(value, where)
        elif key in ("xdt_threshold", "storage_threshold"):
            values[key] = _size(value, where, low=0)
        elif key in ("object_ttl", "keep_warm", "pull_timeout"):
            values[key] = _positive_duration(value, where)
        elif key in ("redis_url", "s3_endpoint_url", "s3_bucket", "s3_region"):
            values[key] = _string(value, where)
        elif key == "isolation":
            values[key] = _isolation(value, where)
        elif key == "sandbox":
            values[key] = _sandbox(value, where)
        elif key == "error_detail":
            values[key] = _choice(value, where, ERROR_DETAILS)
        elif key == "hosts":
            values[key] = _integer(value, where, low=0, high=MAX_HOSTS)
        elif key == "store_host":
            values[key] = _boolean(value, where)
        elif key == "link":
            values[key] = _link(value, where)
    if not values.get("hosts") and (values.get("store_host") or values.get("link")):
        extra = "store_host" if values.get("store_host") else "link"
        raise SpecError(f"platform.{extra}: needs platform.hosts (the test hosts it is about)")
    return PlatformSpec(**values)


def _host_number(value: Any, where: str) -> int:
    """A test host, as ``xdt status`` names it (``h2``) or by its number (``2``)."""
    if isinstance(value, str) and re.fullmatch(r"h\d+", value):
        value = int(value[1:])
    if isinstance(value, str):
        raise SpecError(f"{where}: {value!r} is not a host: write h2 or 2 for host 2")
    return _integer(value, where, low=1)


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{where}: write true or false, not {value!r}")
    return value


def _link(raw: Any, where: str) -> Link:
    given = _mapping(raw if raw is not None else {}, where, {"rate", "delay"})
    rate = delay = None
    if given.get("rate") is not None:
        try:
            rate = parse_rate(given["rate"])
        except ValueError as exc:
            raise SpecError(f"{where}.rate: {exc}") from None
    if given.get("delay") is not None:
        delay = _duration(given["delay"], f"{where}.delay")
    return Link(rate=rate, delay=delay)


ERROR_DETAILS = {
    "full": "the error's text and the function's traceback",
    "message": "the error's text only",
}


def _choice(value: Any, where: str, choices: dict[str, str]) -> str:
    if value not in choices:
        said = "; ".join(f"{name} ({meaning})" for name, meaning in choices.items())
        raise SpecError(f"{where}: {value!r} is not one of: {said}")
    return str(value)


def _isolation(value: Any, where: str) -> str:
    if isinstance(value, bool):  # YAML 1.1 reads a bare on/off as true/false
        return "on" if value else "off"
    if value not in ISOLATION_SETTINGS:
        raise SpecError(
            f"{where}: {value!r} is not an isolation setting: auto (each function under a uid "
            "of its own when xdt up runs as root), on (require it) or off"
        )
    return str(value)


def _sandbox(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value not in ("auto", "on", "off"):
        raise SpecError(
            f"{where}: {value!r} is not a sandbox setting: auto (isolated functions in a "
            "bubblewrap sandbox when bwrap is installed), on (require it) or off"
        )
    return str(value)


def _mode(value: Any, where: str) -> str:
    if value not in MODES:
        raise SpecError(f"{where}: {value!r} is not a transfer mode ({', '.join(MODES)})")
    return str(value)


def _positive_duration(value: Any, where: str) -> float:
    seconds = _duration(value, where)
    if seconds <= 0:
        raise SpecError(f"{where}: must be more than 0")
    return seconds


def _autoscaler(raw: Any) -> AutoscalerConfig:
    types = {f.name: f.type for f in dataclasses.fields(AutoscalerConfig)}
    given = _mapping(raw if raw is not None else {}, "platform.autoscaler", set(types))
    values: dict[str, Any] = {}
    for key, value in given.items():
        where = f"platform.autoscaler.{key}"
        kind = str(types[key])
        if kind == "bool":
            if not isinstance(value, bool):
                raise SpecError(f"{where}: write true or false, not {value!r}")
            values[key] = value
        elif kind == "int":
            values[key] = _integer(value, where, low=0)
        elif key in ("stable_window", "tick_interval", "bucket_size", "scale_to_zero_grace"):
            values[key] = _duration(value, where)
        else:
            values[key] = _number(value, where)
    try:
        return AutoscalerConfig(**values)
    except ValueError as exc:
        raise SpecError(f"platform.autoscaler: {exc}") from None


def _function(raw: Any, where: str, folder: Path) -> FunctionSpec:
    fields = {f.name for f in dataclasses.fields(FunctionSpec)} - {"folder"}
    given = _mapping(raw, where, fields)
    if "name" not in given:
        raise SpecError(f"{where}.name: every function needs a name")
    name = _string(given["name"], f"{where}.name")
    if not is_function_name(name):
        raise SpecError(
            f"{where}.name: {name!r} is not a valid name "
            "(lower-case letters, digits and '-', at most 63, as a DNS label)"
        )
    where = f"functions[{name}]"
    values: dict[str, Any] = {"name": name, "folder": folder}
    for key, value in given.items():
        at = f"{where}.{key}"
        if key == "handler":
            handler = _string(value, at)
            if not _HANDLER.fullmatch(handler):
                raise SpecError(f"{at}: {handler!r} is not 'module:function' (e.g. images:resize)")
            values[key] = handler
        elif key == "command":
            if isinstance(value, str):
                value = value.split()
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(a, str) for a in value)
            ):
                raise SpecError(
                    f"{at}: write the command as a list of strings, e.g. [python3, app.py]"
                )
            values[key] = tuple(value)
        elif key in ("concurrency", "min_scale", "max_scale", "initial_scale"):
            values[key] = _integer(value, at, low=0)
        elif key == "transfer":
            values[key] = _mode(value, at)
        elif key in ("timeout", "ready_timeout"):
            values[key] = _positive_duration(value, at)
        elif key == "tenant":
            values[key] = _string(value, at)
        elif key == "memory":
            values[key] = _size(value, at, low=MIN_BILLED_MEMORY, high=MAX_BILLED_MEMORY)
        elif key == "memory_limit":
            values[key] = _size(value, at, low=MIN_FUNCTION_MEMORY)
        elif key == "host":
            numbers = value if isinstance(value, list) else [value]
            if not numbers:
                raise SpecError(f"{at}: name a host (1, 2, …) or a list of them")
            values[key] = tuple(_host_number(n, at) for n in numbers)
        elif key == "env":
            env = _mapping(value, at, None)
            for name, text in env.items():
                if isinstance(text, bool) or not isinstance(text, str | int | float):
                    raise SpecError(
                        f"{at}.{name}: environment values are text; quote it, got {_kind(text)}"
                    )
            values[key] = {name: str(text) for name, text in env.items()}
    if ("handler" in values) == ("command" in values):
        raise SpecError(f"{where}: give exactly one of handler (Python) and command (HTTP server)")
    max_scale = values.get("max_scale", FunctionSpec.max_scale)
    for key in ("min_scale", "initial_scale"):
        if max_scale and values.get(key, 0) > max_scale:
            raise SpecError(f"{where}.{key}: {values[key]} is above max_scale {max_scale}")
    return FunctionSpec(**values)


def _mapping(raw: Any, where: str, allowed: set[str] | None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a mapping of keys to values, got {_kind(raw)}")
    for key in raw:
        if not isinstance(key, str):
            raise SpecError(f"{where}: keys are names, not {key!r}")
        if allowed is not None and key not in allowed:
            near = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = (
                f" (did you mean {near[0]!r}?)"
                if near
                else f" (known: {', '.join(sorted(allowed))})"
            )
            raise SpecError(f"{where}: unknown key {key!r}{hint}")
    return raw


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{where}: expected a non-empty string, got {_kind(value)}")
    return value


def _integer(value: Any, where: str, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}: expected a whole number, got {_kind(value)}")
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise SpecError(f"{where}: must be {bound}, got {value}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{where}: expected a number, got {_kind(value)}")
    return float(value)


def _duration(value: Any, where: str) -> float:
    try:
        return parse_duration(value)
    except (ValueError, TypeError) as exc:
        raise SpecError(f"{where}: {exc}") from None


MIN_FUNCTION_MEMORY = 64 << 20  # a Python runtime with its threads needs about this


def _size(value: Any, where: str, *, low: int = 1, high: int | None = None) -> int:
    try:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError
        size = value if isinstance(value, int) else parse_size(value)
    except ValueError:
        raise SpecError(f"{where}: not a size: {value!r} (e.g. 6MiB, 1GiB)") from None
    if size < low:
        raise SpecError(f"{where}: must be at least {_bytes(low)}, got {value!r}")
    if high is not None and size > high:
        raise SpecError(f"{where}: must be at most {_bytes(high)}, got {value!r}")
    return size


def _bytes(size: int) -> str:
    return f"{size} byte(s)" if size < 1 << 20 else f"{format_size(size)} ({size} bytes)"


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return (
        f"{type(value).__name__} {value!r}"
        if not isinstance(value, dict | list)
        else type(value).__name__
    )
