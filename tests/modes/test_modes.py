"""The same function code in all four transfer modes: every pattern, identical results.

One platform per mode (``platform.transfer``), each pointed at a real Redis server and moto's
S3 server that the tests start and read counters from.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from patterns import describe, make  # tests/_support/functions (see conftest.py)

from _support.platform import RunningPlatform
from xdt.sidecar.usage import Usage
from xdt.testing import LocalStores

MODES = ("inline", "xdt", "elasticache", "s3")
MiB = 1 << 20

PATTERN_FUNCTIONS = [
    {"name": n, "handler": f"patterns:{h}"}
    for n, h in [
        ("digest", "digest"), ("produce", "produce"), ("one-to-one", "one_to_one"),
        ("scatter", "scatter"), ("broadcast", "broadcast"), ("put-ref", "put_ref"),
        ("consume-refs", "consume_refs"), ("gather", "gather"), ("mapper", "mapper"),
        ("reducer", "reducer"), ("shuffle", "shuffle"), ("put-get", "put_get"),
        ("try-get", "try_get"), ("put-only", "put_only"),
        ("filled-in-place", "filled_in_place"), ("sync-patterns", "sync_patterns"),
        ("via-http", "via_http"), ("view-digest", "view_digest"),
        ("view-broadcast", "view_broadcast"), ("view-one", "view_one"),
        ("sync-on-the-loop", "sync_on_the_loop"),
    ]
] + [
    {"name": "other-tenant", "handler": "patterns:try_get", "tenant": "someone-else"},
    {"name": "http-digest", "command": [sys.executable, "http_digest_server.py"]},
    {"name": "env", "handler": "fns:environment"},
]  # fmt: skip


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStores]:
    running = LocalStores(tmp_path_factory.mktemp("stores"))
    yield running
    running.stop()


@pytest.fixture(scope="module", params=MODES)
def platform(
    request: pytest.FixtureRequest, stores: LocalStores, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPlatform]:
    mode: str = request.param
    running = RunningPlatform(
        tmp_path_factory.mktemp(f"platform-{mode}"),
        {"platform": {"transfer": mode, **stores.spec()}, "functions": PATTERN_FUNCTIONS},
    )
    running.mode = mode  # type: ignore[attr-defined]
    running.wait_for(
        lambda s: all(f["ready"] >= 1 for f in s["functions"].values()),
        timeout=90,
        what="every function ready",
    )
    yield running
    running.stop()


def call(platform: RunningPlatform, function: str, order: dict[str, Any]) -> Any:
    status, _, body = platform.invoke(function, json.dumps(order).encode(), timeout=120)
    assert status == 200, body[:2000]
    return json.loads(body)


def test_every_pattern_gives_the_same_answer_in_every_mode(
    platform: RunningPlatform, stores: LocalStores
) -> None:
    mode: str = platform.mode  # type: ignore[attr-defined]
    # platform.transfer overrides every function's own: /status shows the mode in effect.
    assert {f["transfer"] for f in platform.status()["functions"].values()} == {mode}
    stores.reset_counters()

    size = MiB  # well above the xdt inline threshold (64 KiB), under the inline limit (6 MiB)
    expected = describe(make(size, 1))
    assert call(platform, "one-to-one", {"size": size, "seed": 1}) == [expected, expected]

    assert call(platform, "scatter", {"size": size // 4, "seed": 10, "n": 4}) == [
        describe(make(size // 4, 10 + i)) for i in range(4)
    ]
    assert (
        call(platform, "broadcast", {"size": size, "seed": 20, "n": 4})
        == [describe(make(size, 20))] * 4
    )

    gathered = call(platform, "gather", {"size": size // 2, "seed": 30, "n": 4})
    assert gathered["result"] == [describe(make(size // 2, 30 + i)) for i in range(4)]

    shuffled = call(platform, "shuffle", {"size": 600_000, "seed": 40, "m": 3, "r": 2})
    partitions = [make(600_000, 40 + m) for m in range(3)]
    assert shuffled["result"] == [
        describe(b"".join(p[r * 300_000 : (r + 1) * 300_000] for p in partitions)) for r in range(2)
    ]

    got, reference_length = call(platform, "put-get", {"size": size, "seed": 50})
    assert got == describe(make(size, 50))

    if mode == "inline":
        # Inline references are the bytes themselves: they do pass through the driver.
        assert reference_length > size
        assert gathered["driver_held_bytes"] > 4 * size // 2
    else:
        # The drivers forwarded references only: a few hundred bytes each.
        assert reference_length < 400
        assert gathered["driver_held_bytes"] < 4096
        assert shuffled["driver_held_bytes"] < 4096

    # Which servers the bytes went through, by their own counters.
    redis_used, s3_used = stores.redis_data_commands(), stores.s3_requests()
    assert (redis_used > 0) == (mode == "elasticache"), (redis_used, s3_used)
    assert (s3_used > 0) == (mode == "s3"), (redis_used, s3_used)

    # Nothing left behind once every transfer completed.
    assert _leftovers_within(10, platform, stores) == (0, [], 0)


def test_sync_handlers_command_functions_and_filled_buffers_behave_the_same(
    platform: RunningPlatform,
) -> None:
    size = MiB
    data = make(size, 70)
    expected = describe(data)
    # The writable buffer API: filled in place, handed over without a copy.
    status, _, body = platform.invoke(
        "filled-in-place", json.dumps({"size": size, "seed": 70}).encode()
    )
    assert (status, body.decode()) == (200, expected)
    # A plain def handler through xdt.sdk.sync: every call, same answers.
    one, many, got, gathered, wide = call(platform, "sync-patterns", {"size": size, "seed": 70})
    assert one == got == expected
    assert many == [expected, describe(data[::-1])]
    assert gathered == [expected, describe(data[::-1])]
    assert wide == [expected] * 3
    # Store credentials stay with the sidecars: a function reaches Redis or S3 only through
    # references its sidecar resolves.
    status, _, body = platform.invoke("env")
    assert status == 200 and "AWS_" not in json.loads(body)["environ"]
    # A command function gets an ordinary body, and its plain-HTTP call goes by the mode too.
    status, _, body = platform.invoke("via-http", json.dumps({"size": size, "seed": 70}).encode())
    assert (status, body.decode()) == (200, f"{expected} {expected}")


def test_a_handler_can_take_its_payload_as_a_read_only_view(platform: RunningPlatform) -> None:
    mode: str = platform.mode  # type: ignore[attr-defined]
    size = 2 * MiB  # big enough to travel as a memfd
    answers = call(platform, "view-broadcast", {"size": size, "seed": 80})
    expected = describe(make(size, 80))
    assert [a["digest"] for a in answers] == [expected] * 3
    assert not any(a["writable"] for a in answers)  # writing raised TypeError
    # Same host in xdt mode: each callee mapped the memfd the caller wrote (no copy). In the
    # other modes the bytes came through a store or the body: a view of a private copy.
    assert {a["over"] for a in answers} == {"mmap" if mode == "xdt" else "bytes"}
    # A view kept past its call (one call after another here) was released with it.
    # An array made with numpy.frombuffer outlives it, and keeps showing that payload's bytes
    # (sealed: never reused) while the next payloads come.
    for seed in (81, 82):
        answer = call(platform, "view-one", {"size": size, "seed": seed})
        assert answer["digest"] == describe(make(size, seed)) and answer["stale"] != "readable"
        assert answer["array_kept"]
    assert answer["stale"] == "released"
    # Small payloads arrive as bytes: the view is of those.
    status, _, body = platform.invoke("view-digest", b"tiny")
    answer = json.loads(body)
    assert status == 200 and answer["digest"] == describe(b"tiny") and answer["over"] == "bytes"
    assert answer["stale"] == "released"


def test_xdt_sync_on_the_runtimes_own_loop_is_a_clear_error(platform: RunningPlatform) -> None:
    status, _, body = platform.invoke("sync-on-the-loop", b"x")
    assert status == 200 and b"use `await xdt.invoke(...)` there" in body


def test_references_cannot_be_forged_reused_outlived_or_carried_across_tenants(
    platform: RunningPlatform, stores: LocalStores
) -> None:
    mode: str = platform.mode  # type: ignore[attr-defined]
    if mode == "inline":
        pytest.skip("inline references are the bytes themselves: there is nothing to guard")
    order = {"size": 200_000, "seed": 60}
    expected = describe(make(200_000, 60))

    def attempt(function: str, token: str) -> dict[str, str]:
        status, _, body = platform.invoke(function, token.encode())
        assert status == 200, body
        answer: dict[str, str] = json.loads(body)
        return answer

    token = platform.invoke("put-only", json.dumps(order).encode())[2].decode()
    # Altered: one character flipped → refused, and the real one still works after.
    flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    assert attempt("try-get", flipped)["error"] == "ReferenceTampered"
    # Another tenant's function holds a perfectly good reference: still refused.
    assert attempt("other-tenant", token)["error"] == "WrongTenant"
    assert attempt("try-get", token) == {"ok": expected}
    # Its one pull is spent.
    reused = attempt("try-get", token)["error"]
    assert reused == ("PullBudgetExhausted" if mode == "xdt" else "ObjectNotFound")

    short = platform.invoke("put-only", json.dumps({**order, "ttl": 0.5}).encode())[2].decode()
    time.sleep(1.0)
    assert attempt("try-get", short)["error"] == "ReferenceExpired"
    # An unclaimed object does not outlive its reference: Redis expires its key (PX), the
    # sender's sweeper deletes it from S3, the sidecar frees it from memory.
    assert _leftovers_within(10, platform, stores) == (0, [], 0)
    assert attempt("try-get", "not a reference")["error"] == "ReferenceMalformed"
    assert call(platform, "put-get", {"size": 1000, "seed": 1})[0] == describe(make(1000, 1))


def test_inline_mode_refuses_what_is_over_its_limit_and_names_the_other_modes(
    platform: RunningPlatform,
) -> None:
    mode: str = platform.mode  # type: ignore[attr-defined]
    status, headers, body = platform.invoke(
        "one-to-one", json.dumps({"size": 7 * MiB, "seed": 2}).encode(), timeout=120
    )
    if mode != "inline":
        assert status == 200
        assert json.loads(body) == [describe(make(7 * MiB, 2))] * 2
        return
    # The function's own call was refused (xdt.PayloadTooLarge raised in its code), so the
    # function failed, saying why.
    assert status == 500 and headers["X-Xdt-Error"] == "function_failed"
    message = json.loads(body)["message"]
    assert "PayloadTooLarge" in message and "inline limit of 6291456 bytes" in message
    assert "transfer: xdt, elasticache or s3" in message


def used_since(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Usage]:
    return {
        name: Usage.from_record(after[name]) - Usage.from_record(before[name]) for name in after
    }


def test_the_platform_counts_what_each_mode_moved_billed_and_asked_of_its_store(
    platform: RunningPlatform, stores: LocalStores
) -> None:
    """The cost model's inputs are measured: per function, billed milliseconds, bytes by how
    they travelled, keep-alive while a sender holds objects, and the storage requests, which
    agree with the Redis and S3 servers' own counts."""
    mode: str = platform.mode  # type: ignore[attr-defined]
    size = MiB // 2
    before = platform.usage()
    assert {f["memory_bytes"] for f in before.values()} == {512 << 20}
    stores.reset_counters()
    assert (
        call(platform, "one-to-one", {"size": size, "seed": 80}) == [describe(make(size, 80))] * 2
    )
    gathered = call(platform, "gather", {"size": size, "seed": 81, "n": 4})
    assert gathered["result"] == [describe(make(size, 81 + i)) for i in range(4)]
    used = used_since(before, platform.usage())
    redis_calls, s3_calls = stores.redis_calls(), stores.s3_requests_by_method()

    # Invocations, each counted where it ran; a caller is billed for the time it waited on
    # its callees (sequential calls), as Lambda bills wall time.
    counts = {name: u.invocations for name, u in used.items() if u.invocations}
    assert counts == {"one-to-one": 1, "digest": 1, "produce": 1, "gather": 1, "put-ref": 4,
                      "consume-refs": 1}  # fmt: skip
    assert used["one-to-one"].billed_ms >= used["digest"].billed_ms + used["produce"].billed_ms
    assert used["gather"].billed_ms >= used["consume-refs"].billed_ms
    assert all(u.billed_ms >= u.invocations for u in used.values())

    # Every byte a sidecar sent was received once (one pull each), by the same path; in
    # inline mode, the gateway's two orders too, which no sidecar sent.
    total = sum(used.values(), Usage())
    assert total.sent_bytes[mode] >= 6 * size  # digest's, produce's answer, 4 put-refs
    orders = [{"size": size, "seed": 80}, {"size": size, "seed": 81, "n": 4}]
    external = sum(len(json.dumps(order).encode()) for order in orders)
    assert total.received_bytes[mode] - total.sent_bytes[mode] == (
        external if mode == "inline" else 0
    )
    assert set(total.sent_bytes) <= {"inline", mode}

    # A sender that holds objects after its answer (xdt's put-ref) is kept alive until they
    # are pulled: that time is counted; in the other modes the store holds them instead.
    if mode == "xdt":
        assert used["put-ref"].keep_alive_s > 0
    else:
        assert total.keep_alive_s == 0

    # The storage requests, against the servers' own counts.
    if mode == "elasticache":
        assert total.redis_commands > 0
        assert redis_calls["set"] + redis_calls["evalsha"] + redis_calls["del"] == (
            total.redis_commands
        )
    else:
        assert total.redis_commands == 0
    if mode == "s3":
        sent = total.s3_requests
        assert sent["PutObject"] == s3_calls["PUT"] >= 6
        assert sent["GetObject"] + sent["ListObjectsV2"] == s3_calls["GET"] >= 6
        # Objects stayed in the bucket for a while: bytes × seconds, counted.
        assert total.s3_byte_seconds > 0
    else:
        assert sum(total.s3_requests.values()) == 0 and total.s3_byte_seconds == 0


def _leftovers_within(
    seconds: float, platform: RunningPlatform, stores: LocalStores
) -> tuple[int, list[str], int]:
    """Keys in Redis, objects in the bucket, objects in the sidecars: polled until all are
    gone or ``seconds`` pass; the last reading."""
    deadline = time.monotonic() + seconds
    while True:
        leftovers = (stores.redis_keys(), stores.s3_objects(), _objects_held(platform))
        if leftovers == (0, [], 0) or time.monotonic() >= deadline:
            return leftovers
        time.sleep(0.2)


def _objects_held(platform: RunningPlatform) -> int:
    held = 0
    for function in platform.status()["functions"].values():
        for instance in function["instances"]:
            held += instance["objects"]
    return held


def test_xdt_up_starts_redis_and_an_s3_emulator_when_none_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(variable, raising=False)  # the embedded emulator needs none
    platform = RunningPlatform(
        tmp_path,
        {
            "functions": [
                {"name": "digest", "handler": "patterns:digest", "transfer": "elasticache"},
                {"name": "produce", "handler": "patterns:produce", "transfer": "s3"},
                {"name": "one-to-one", "handler": "patterns:one_to_one", "transfer": "s3"},
            ]
        },
    )
    try:
        stores = platform.status()["stores"]
        assert [s.split()[0] for s in stores] == ["redis-server", "moto"]
        ports = [int(s.rsplit(":", 1)[1]) for s in stores]
        expected = describe(make(MiB, 3))
        assert call(platform, "one-to-one", {"size": MiB, "seed": 3}) == [expected, expected]
        servers = _listening_pids(ports)
        assert len(servers) == 2
    finally:
        log = platform.stop()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in servers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in servers), log


def _listening_pids(ports: list[int]) -> list[int]:
    """The processes listening on these loopback ports (from /proc/net/tcp and fds)."""
    inodes = set()
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if port in ports and fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            links = {
                os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd")
            }
        except OSError:
            continue
        if any(f"socket:[{inode}]" in links for inode in inodes):
            pids.append(int(entry))
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
