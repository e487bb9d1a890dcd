"""What ``GET /status`` answers: the platform's account of itself, typed.

The same shapes are what ``xdt status`` and ``xdt demo`` render, and what tests read; a field
added here is added everywhere.
"""

from __future__ import annotations

from typing import TypedDict

__all__ = [
    "DecisionRecord",
    "ErrorRecord",
    "EventRecord",
    "FunctionStatus",
    "HostsStatus",
    "InstanceStatus",
    "ObjectsStatus",
    "PlatformStatus",
    "UsageRecord",
    "UsageReport",
]


class EventRecord(TypedDict):
    at: float  # seconds since the deployment started
    instance: str | None
    kind: str  # an events.Kind value
    event: str  # the whole line: "crashed: the function process exited with code 1"
    request_id: str | None  # the invocation it happened in (an error's), when there was one


class ErrorRecord(TypedDict):
    """A function's last failure: a 5xx answer, a crash, an instance that did not start."""

    at_unix: float  # when, in seconds since the epoch
    instance: str | None
    code: str  # an xdt error code ("function_failed"), or the event's kind ("crashed")
    message: str
    request_id: str | None


class DecisionRecord(TypedDict):
    at: float
    desired: int  # after min/max scale and scale to zero
    kpa_desired: int  # what the KPA asked for
    ready: int
    stable_concurrency: float
    panic_concurrency: float
    panicking: bool
    excess_burst_capacity: int


class InstanceStatus(TypedDict):
    id: str
    state: str
    sidecar_pid: int | None
    function_pid: int | None
    uid: int | None
    ingress: str
    objects_address: str
    objects: int
    bytes_held: int
    restarts: int
    uptime_s: float
    log: str  # its log file: what `xdt logs` merges
    in_flight: int
    crashes: int  # the function process's crashes in a row (crash-looping from 2)
    code_version: str  # a hash of its function's files when it started ("" until known)
    host: str | None  # its test host ("h2") with platform.hosts; None: this machine


class FunctionStatus(TypedDict):
    ready: int
    starting: int
    draining: int
    desired: int
    in_flight: int
    queued: int
    panicking: bool
    requests: int
    answers: dict[str, int]
    concurrency: int
    min_scale: int
    max_scale: int
    transfer: str  # the effective mode: platform.transfer, else the function's own
    kind: str  # "python" or "command"
    memory_bytes: int  # the billed memory setting (spec key `memory`)
    restarts: int
    objects: int
    last_error: ErrorRecord | None
    crash_looping: list[str]  # instances whose function process keeps crashing
    start_failures: int  # instances in a row that never got ready
    instances: list[InstanceStatus]
    decisions: list[DecisionRecord]
    events: list[EventRecord]


class ObjectsStatus(TypedDict):
    """The gateway's objects: callers' uploads (see :mod:`.objects`)."""

    objects: int  # held now
    bytes_held: int
    bytes_reserved: int  # of object_quota: held, and uploads and downloads in progress
    address: str  # where receivers' sidecars pull them from
    uploads: int
    downloads: int
    releases: int
    refused: int  # asked by a function process (it has its sidecar's egress)


class HostsStatus(TypedDict):
    """The test hosts of ``platform.hosts`` (see :mod:`.hosts`)."""

    network: str  # their /24 of 198.18.0.0/15
    machine: str  # this machine's address on it: the gateway, the embedded stores
    gateway: str  # the URL the hosts reach the gateway at (where their sidecars send calls)
    hosts: dict[str, str]  # name ("h1", "store") -> address
    link: str  # "10 Gbit/s", or "unshaped"


class PlatformStatus(TypedDict):
    url: str
    uptime_s: float
    stores: list[str]
    stores_down: list[str]  # embedded servers not serving now, each with why
    isolation: bool
    sandbox: bool  # isolated functions run in bubblewrap
    logs: str  # the folder of the instance logs (`xdt logs` reads it)
    objects: ObjectsStatus | None  # None until started
    hosts: HostsStatus | None  # platform.hosts: the test hosts; None without
    functions: dict[str, FunctionStatus]


class UsageRecord(TypedDict):
    """What one function used since the platform started (see :mod:`xdt.sidecar.usage`)."""

    memory_bytes: int  # its billed memory setting
    transfer: str
    invocations: int
    billed_ms: int  # the sum of its invocations' durations, each rounded up to 1 ms
    keep_alive_s: float  # its instances held objects while idle (xdt mode)
    sent_bytes: dict[str, int]  # payload bytes by how they travelled
    received_bytes: dict[str, int]
    redis_commands: int
    s3_requests: dict[str, int]  # by S3 operation
    s3_byte_seconds: float


class UsageReport(TypedDict):
    """What ``GET /usage`` answers."""

    uptime_s: float
    functions: dict[str, UsageRecord]
