"""The cost model: what one workflow run costs on AWS in each transfer mode.

Inputs are measured (:class:`RunInputs`: the platform's ``/usage`` counters and the bench's
clock, per run), prices come from one data file (``prices.toml``, each with its source), and
every assumption is a :class:`CostParameters` field, printed with the results. A run costs the
sum of these lines — every one is listed, zero or not, so that no component hides:

==============  =============================================================================
compute         Lambda GB-s: every invocation's billed duration (rounded up to 1 ms) × its
                function's ``memory`` setting (or, ``billed_memory=peak``, at least what its
                instances were measured to hold) × the GB-s price of ``architecture``
requests        Lambda's price per invocation
keep-alive      xdt: an instance that holds objects after its answer must stay up until they
                are pulled; that time × its memory is billed as GB-s too
s3 requests     S3 PUT-class (PUT, POST, LIST, multipart parts) and GET-class (GET, HEAD)
                requests, as the s3 path sent them; DELETE is free
s3 storage      bytes × seconds the objects stayed in the bucket, at the GB-month price
elasticache     a cluster sized for the peak data in flight: the peak one run put in Redis ×
                the runs in flight at ``runs_per_hour`` (Little's law: rate × duration),
                over ElastiCache's reserved memory; the smallest node type that holds it (or
                ``elasticache_node``), billed per hour and shared by ``runs_per_hour`` runs
data transfer   bytes moved between instances × ``cross_az_fraction`` × the cross-AZ price
                (same-AZ and EC2↔S3 in one region are free)
==============  =============================================================================
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "COMPONENTS",
    "DEFAULT_PARAMETERS",
    "Cost",
    "CostLine",
    "CostParameters",
    "FunctionUse",
    "NodeType",
    "Prices",
    "RunInputs",
    "cost",
    "load_prices",
]

PRICES_FILE = Path(__file__).with_name("prices.toml")
COMPONENTS = (
    "compute", "requests", "keep-alive", "s3 requests", "s3 storage", "elasticache",
    "data transfer",
)  # fmt: skip
GIB = 1 << 30
# S3 operations by price class (boto3's operation names); deletes and aborts are free.
S3_PUT_CLASS = frozenset(
    {"PutObject", "CopyObject", "PostObject", "ListObjects", "ListObjectsV2",
     "CreateMultipartUpload", "UploadPart", "UploadPartCopy", "CompleteMultipartUpload",
     "ListParts", "ListMultipartUploads", "CreateBucket"}
)  # fmt: skip
S3_GET_CLASS = frozenset({"GetObject", "HeadObject", "SelectObjectContent", "HeadBucket"})
S3_FREE = frozenset({"DeleteObject", "DeleteObjects", "AbortMultipartUpload"})


# -- prices ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeType:
    name: str
    hourly: float
    memory_bytes: int
    source: str


@dataclass(frozen=True)
class Prices:
    request: float
    gb_second_x86: float
    gb_second_arm: float
    s3_put_per_1000: float
    s3_get_per_1000: float
    s3_gb_month: float
    seconds_per_month: float
    same_az_per_gb: float
    cross_az_per_gb: float
    s3_same_region_per_gb: float
    nodes: tuple[NodeType, ...]  # smallest memory first

    def gb_second(self, architecture: str) -> float:
        return self.gb_second_arm if architecture == "arm" else self.gb_second_x86

    def node(self, name: str) -> NodeType:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise ValueError(f"no ElastiCache node type {name!r} in the prices (known: {known})")


def load_prices(path: Path = PRICES_FILE) -> Prices:
    """Read a prices file (the shape of ``prices.toml``); ValueError naming what is wrong."""
    try:
        document = tomllib.loads(path.read_text())
        lam, s3, transfer = document["lambda"], document["s3"], document["transfer"]
        nodes = tuple(
            sorted(
                (
                    NodeType(name, float(n["hourly"]), int(float(n["memory_gib"]) * GIB),
                             str(n.get("source", "")))
                    for name, n in document["elasticache"]["nodes"].items()
                ),
                key=lambda n: n.memory_bytes,
            )
        )  # fmt: skip
        prices = Prices(
            request=float(lam["request"]),
            gb_second_x86=float(lam["gb_second_x86"]),
            gb_second_arm=float(lam["gb_second_arm"]),
            s3_put_per_1000=float(s3["put_per_1000"]),
            s3_get_per_1000=float(s3["get_per_1000"]),
            s3_gb_month=float(s3["gb_month"]),
            seconds_per_month=float(s3["seconds_per_month"]),
            same_az_per_gb=float(transfer["same_az_per_gb"]),
            cross_az_per_gb=float(transfer["cross_az_per_gb"]),
            s3_same_region_per_gb=float(transfer["s3_same_region_per_gb"]),
            nodes=nodes,
        )
    except OSError as exc:
        raise ValueError(f"cannot read the prices file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a prices file like prices.toml: {exc!r}") from None
    if not nodes:
        raise ValueError(f"{path} lists no [elasticache.nodes.…] node type")
    return prices


# -- parameters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostParameters:
    """Every assumption of the model (``xdt bench cost --param name=value``)."""

    architecture: str = "x86"  # Lambda's x86 or arm GB-s price
    runs_per_hour: float = 3600.0  # the workflow's rate: what shares an ElastiCache node-hour
    elasticache_node: str = "auto"  # auto: the smallest node type that holds the peak
    elasticache_reserved: float = 0.25  # ElastiCache's reserved-memory-percent default
    elasticache_min_nodes: int = 1
    cross_az_fraction: float = 0.0  # of the bytes moved between instances, crossing AZs
    billed_memory: str = "spec"  # spec: each function's `memory`; peak: at least its peak

    def __post_init__(self) -> None:
        if self.billed_memory not in ("spec", "peak"):
            raise ValueError(f"billed_memory: spec or peak, not {self.billed_memory!r}")
        if self.architecture not in ("x86", "arm"):
            raise ValueError(f"architecture: x86 or arm, not {self.architecture!r}")
        if not self.runs_per_hour > 0:
            raise ValueError(f"runs_per_hour: must be more than 0, got {self.runs_per_hour}")
        if not 0 <= self.elasticache_reserved < 1:
            raise ValueError("elasticache_reserved: a fraction from 0 up to (not including) 1")
        if self.elasticache_min_nodes < 1:
            raise ValueError("elasticache_min_nodes: at least 1")
        if not 0 <= self.cross_az_fraction <= 1:
            raise ValueError("cross_az_fraction: a fraction from 0 to 1")

    def with_values(self, values: Mapping[str, str]) -> CostParameters:
        """These parameters with some replaced, given as text (``runs_per_hour=100``)."""
        types = {f.name: f.type for f in dataclasses.fields(self)}
        changed: dict[str, Any] = {}
        for name, text in values.items():
            if name not in types:
                raise ValueError(f"no cost parameter {name!r} (known: {', '.join(types)})")
            kind = str(types[name])
            try:
                changed[name] = (
                    float(text) if kind == "float" else int(text) if kind == "int" else text
                )
            except ValueError:
                raise ValueError(f"{name}: {text!r} is not a {kind}") from None
        return dataclasses.replace(self, **changed)

    def describe(self) -> list[tuple[str, str]]:
        explained = {
            "architecture": "Lambda GB-s price",
            "runs_per_hour": "workflow runs per hour (shares the ElastiCache node-hours)",
            "elasticache_node": "node type (auto: the smallest that holds the peak in flight)",
            "elasticache_reserved": "fraction of a node's memory ElastiCache reserves",
            "elasticache_min_nodes": "nodes at least",
            "cross_az_fraction": "fraction of the bytes moved that crosses AZs",
            "billed_memory": "spec: each function's memory setting; peak: at least what "
            "its instances were measured to hold",
        }
        return [(f"{name} = {getattr(self, name)}", text) for name, text in explained.items()]


DEFAULT_PARAMETERS = CostParameters()


# -- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionUse:
    """What one function used in one run (averaged over the runs measured)."""

    name: str
    memory_bytes: int
    invocations: float
    billed_ms: float
    keep_alive_s: float = 0.0
    peak_bytes: int = 0  # the most one of its instances held (sidecar and function), measured

    def billed_memory(self, parameters: CostParameters) -> int:
        """The memory setting it is billed for: its spec's, or (``billed_memory=peak``) at
        least what an instance was measured to hold, rounded up to a MiB."""
        if parameters.billed_memory == "peak":
            return max(self.memory_bytes, -(-self.peak_bytes // (1 << 20)) << 20)
        return self.memory_bytes


@dataclass(frozen=True)
class RunInputs:
    """One workflow run in one mode, as measured."""

    mode: str
    duration_s: float  # end to end (the median run)
    functions: tuple[FunctionUse, ...]
    s3_requests: Mapping[str, float] = field(default_factory=dict)  # by S3 operation
    s3_byte_seconds: float = 0.0
    redis_commands: float = 0.0
    redis_peak_bytes: int = 0  # the most one run had in Redis at once
    moved_bytes: float = 0.0  # payload bytes received by instances, all ways
    s3_moved_bytes: float = 0.0  # of which from S3

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RunInputs:
        try:
            values = dict(record)
            values["functions"] = tuple(FunctionUse(**f) for f in record["functions"])
            values["s3_requests"] = {str(k): float(v) for k, v in record["s3_requests"].items()}
            return cls(**values)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not the measured inputs of a run: {exc!r}") from None


# -- the model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostLine:
    component: str  # one of COMPONENTS
    usd: float  # per run
    how: str  # the quantity and price it comes from, for the reader


@dataclass(frozen=True)
class Cost:
    lines: tuple[CostLine, ...]

    @property
    def per_run(self) -> float:
        return sum(line.usd for line in self.lines)

    @property
    def per_million_runs(self) -> float:
        return self.per_run * 1e6

    def breakdown_per_million(self) -> dict[str, float]:
        return {line.component: line.usd * 1e6 for line in self.lines}


def cost(
    inputs: RunInputs,
    parameters: CostParameters = DEFAULT_PARAMETERS,
    prices: Prices | None = None,
) -> Cost:
    """What one run costs, line by line (see the module docstring)."""
    prices = prices or load_prices()
    gb_s_price = prices.gb_second(parameters.architecture)
    memory = {f.name: f.billed_memory(parameters) / GIB for f in inputs.functions}
    gb_s = sum(f.billed_ms / 1000 * memory[f.name] for f in inputs.functions)
    invocations = sum(f.invocations for f in inputs.functions)
    kept_gb_s = sum(f.keep_alive_s * memory[f.name] for f in inputs.functions)
    puts = sum(n for op, n in inputs.s3_requests.items() if op not in S3_GET_CLASS | S3_FREE)
    gets = sum(n for op, n in inputs.s3_requests.items() if op in S3_GET_CLASS)
    stored_gb_months = inputs.s3_byte_seconds / 1e9 / prices.seconds_per_month
    cache_usd, cache_how = _elasticache(inputs, parameters, prices)
    between = inputs.moved_bytes - inputs.s3_moved_bytes
    transfer_usd = (
        between / 1e9 * parameters.cross_az_fraction * prices.cross_az_per_gb
        + between / 1e9 * (1 - parameters.cross_az_fraction) * prices.same_az_per_gb
        + inputs.s3_moved_bytes / 1e9 * prices.s3_same_region_per_gb
    )
    lines = (
        CostLine("compute", gb_s * gb_s_price,
                 f"{gb_s:.4g} GB-s × ${gb_s_price:g} ({parameters.architecture})"),
        CostLine("requests", invocations * prices.request,
                 f"{invocations:g} invocations × ${prices.request:g}"),
        CostLine("keep-alive", kept_gb_s * gb_s_price,
                 f"{kept_gb_s:.4g} GB-s holding objects after answering × ${gb_s_price:g}"),
        CostLine("s3 requests",
                 puts / 1000 * prices.s3_put_per_1000 + gets / 1000 * prices.s3_get_per_1000,
                 f"{puts:g} PUT-class × ${prices.s3_put_per_1000:g}/1000 + {gets:g} GET-class "
                 f"× ${prices.s3_get_per_1000:g}/1000"),
        CostLine("s3 storage", stored_gb_months * prices.s3_gb_month,
                 f"{inputs.s3_byte_seconds:.4g} byte-seconds = {stored_gb_months:.3g} "
                 f"GB-months × ${prices.s3_gb_month:g}"),
        CostLine("elasticache", cache_usd, cache_how),
        CostLine("data transfer", transfer_usd,
                 f"{inputs.moved_bytes / 1e6:.4g} MB moved, {parameters.cross_az_fraction:g} "
                 f"across AZs × ${prices.cross_az_per_gb:g}/GB"),
    )  # fmt: skip
    return Cost(lines)


def _elasticache(
    inputs: RunInputs, parameters: CostParameters, prices: Prices
) -> tuple[float, str]:
    if inputs.mode != "elasticache":
        return 0.0, "not used in this mode"
    in_flight_runs = max(1, math.ceil(parameters.runs_per_hour * inputs.duration_s / 3600))
    needed = inputs.redis_peak_bytes * in_flight_runs / (1 - parameters.elasticache_reserved)
    node, count = pick_nodes(needed, parameters, prices)
    usd = node.hourly * count / parameters.runs_per_hour
    how = (
        f"{count} × {node.name} (${node.hourly:g}/h) for a peak of "
        f"{inputs.redis_peak_bytes / 1e6:.3g} MB × {in_flight_runs} run(s) in flight, "
        f"÷ {parameters.runs_per_hour:g} runs/h"
    )
    return usd, how


def pick_nodes(
    needed_bytes: float, parameters: CostParameters, prices: Prices
) -> tuple[NodeType, int]:
    """The node type and count a cluster needs to hold ``needed_bytes``."""
    if parameters.elasticache_node != "auto":
        node = prices.node(parameters.elasticache_node)
    else:
        node = next((n for n in prices.nodes if n.memory_bytes >= needed_bytes), prices.nodes[-1])
    count = max(parameters.elasticache_min_nodes, math.ceil(needed_bytes / node.memory_bytes))
    return node, count
