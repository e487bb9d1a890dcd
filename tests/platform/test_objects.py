"""The gateway's objects (``xdt.platform.objects``) through a real ``xdt up``: uploads of any
size passed to functions by reference, downloads of references functions gave out in every
mode, what is refused and why, what a declared size costs, and functions kept out."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from patterns import describe, make
from prometheus_client.parser import text_string_to_metric_families

import xdt
from _support.platform import RunningPlatform
from xdt._http.headers import ERROR_HEADER
from xdt._util.polling import until_sync
from xdt.modes import MODES
from xdt.platform.status import ObjectsStatus

Start = Callable[[dict[str, Any]], RunningPlatform]


def post(
    platform: RunningPlatform, path: str, data: bytes, headers: dict[str, str] | None = None
) -> tuple[int, str | None, bytes]:
    """(status, X-Xdt-Error, body) of a POST to the gateway."""
    request = urllib.request.Request(
        platform.url + path, data=data, headers=headers or {}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.headers.get(ERROR_HEADER), answer.read()
    except urllib.error.HTTPError as answer:
        return answer.code, answer.headers.get(ERROR_HEADER), answer.read()


BY_REFERENCE = {"X-Xdt-Transfer": "ref"}


def test_an_upload_over_the_inline_limit_reaches_a_function_by_reference(
    start_platform: Start,
) -> None:
    platform = start_platform(
        {
            "platform": {"inline_limit": "1MiB"},
            "functions": [
                {"name": "digest", "handler": "patterns:digest"},
                {"name": "theirs", "handler": "patterns:digest", "tenant": "them"},
            ],
        }
    )
    data = make(9 << 20, seed=1)
    assert post(platform, "/invoke/digest", data)[:2] == (413, "payload_too_large")

    status, _, reference = post(platform, "/objects?function=digest", data)
    assert status == 201 and len(reference) < 1000
    assert post(platform, "/invoke/digest", reference, BY_REFERENCE) == (
        200, None, describe(data).encode(),
    )  # fmt: skip
    # One pull by default: the reference is spent.
    assert post(platform, "/invoke/digest", reference, BY_REFERENCE)[:2] == (
        403, "pull_budget_exhausted",
    )  # fmt: skip

    # Of the function's tenant only, checked before any function runs.
    status, _, mine = post(platform, "/objects?function=digest&pulls=unlimited", b"x" * 100)
    assert post(platform, "/invoke/theirs", mine, BY_REFERENCE)[:2] == (403, "wrong_tenant")
    status, _, theirs = post(platform, "/objects?tenant=them", b"y" * 100)
    assert post(platform, "/invoke/theirs", theirs, BY_REFERENCE)[0] == 200
    assert post(platform, "/invoke/theirs", b"not a reference", BY_REFERENCE)[:2] == (
        403, "reference_malformed",
    )  # fmt: skip
    # The answer as a reference stays the platform's own.
    assert post(platform, "/invoke/digest", b"x", {"X-Xdt-Accept": "ref"})[:2] == (
        403, "forbidden",
    )  # fmt: skip
    assert platform.function("theirs")["requests"] == 1

    # Released, it is gone; the gateway held it.
    assert post(platform, "/objects/release", mine) == (200, None, b'{"released": true}')
    assert post(platform, "/objects/get", mine)[1] == "object_not_found"
    held = platform.status()["objects"]
    assert held is not None
    assert (held["objects"], held["uploads"], held["releases"]) == (0, 3, 1)
    with urllib.request.urlopen(f"{platform.url}/metrics", timeout=10) as answer:
        families = {f.name: f for f in text_string_to_metric_families(answer.read().decode())}
    done = {s.labels["operation"]: s.value for s in families["xdt_gateway_object_requests"].samples}
    assert (done["upload"], done["download"], done["release"]) == (3, 0, 1)
    assert families["xdt_gateway_object_bytes_held"].samples[0].value == 0


def test_a_reference_a_function_returns_is_downloaded_in_every_mode(
    start_platform: Start,
) -> None:
    functions = [{"name": f"put-{mode}", "handler": "patterns:put_only", "transfer": mode}
                 for mode in MODES]  # fmt: skip
    platform = start_platform({"functions": functions})
    order = {"size": 3 << 20, "seed": 7, "pulls": 2}
    for mode in MODES:
        status, _, reference = post(platform, f"/invoke/put-{mode}", json.dumps(order).encode())
        assert status == 200
        if mode == "inline":  # the reference is the bytes (base64url): the client decodes it
            assert post(platform, "/objects/get", reference)[:2] == (413, "payload_too_large")
            with xdt.Client(platform.url) as client:
                assert client.get(reference.decode()) == make(3 << 20, seed=7)
            continue
        for _ in range(2):
            assert post(platform, "/objects/get", reference) == (200, None, make(3 << 20, seed=7))
        status, code, _ = post(platform, "/objects/get", reference)
        # Redis and S3 keep no trace of a spent key.
        spent = "object_not_found" if mode in ("elasticache", "s3") else "pull_budget_exhausted"
        assert code == spent, mode


def test_uploads_that_are_wrong_are_refused_and_publish_nothing(start_platform: Start) -> None:
    platform = start_platform(
        {
            "platform": {"object_quota": "8MiB"},
            "functions": [{"name": "digest", "handler": "patterns:digest"}],
        }
    )
    assert post(platform, "/objects?function=nope", b"x")[:2] == (404, "function_not_found")
    assert post(platform, "/objects?tenant=nobody", b"x")[:2] == (400, "bad_request")
    assert post(platform, "/objects?function=digest&tenant=other", b"x")[:2] == (
        400, "bad_request",
    )  # fmt: skip
    assert post(platform, "/objects?pulls=0", b"x")[:2] == (400, "bad_request")
    assert post(platform, "/objects", b"x" * (9 << 20))[:2] == (507, "quota_exceeded")
    assert post(platform, "/objects/get", b"\xff\xfe")[:2] == (400, "bad_request")

    host, port = platform.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:  # chunked: no size
        raw.sendall(
            b"POST /objects HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        answer = raw.recv(4096)
        assert answer.startswith(b"HTTP/1.1 400") and b"Content-Length" in answer
    with socket.create_connection((host, int(port)), timeout=10) as raw:  # cut short
        raw.sendall(b"POST /objects HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\nsome")
    time.sleep(0.5)
    held = platform.status()["objects"]
    assert held is not None and (held["objects"], held["bytes_held"], held["uploads"]) == (0, 0, 0)
    # The quota the refused ones reserved was given back: the whole of it fits again.
    status, _, reference = post(platform, "/objects?function=digest", make(8 << 20, seed=2))
    assert status == 201
    assert (
        post(platform, "/invoke/digest", reference, BY_REFERENCE)[2]
        == describe(make(8 << 20, seed=2)).encode()
    )


def _shared_memory(pid: int) -> int:
    """Bytes of shared memory (memfd pages) the process has mapped and touched."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssShmem:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssShmem in /proc/<pid>/status")


def test_a_declared_size_costs_quota_not_memory_until_its_bytes_come(
    start_platform: Start,
) -> None:
    """A client that declares 200 MiB and sends 1 MiB holds ~1 MiB of the gateway's memory
    (a pool buffer would have made all 200 MiB of pages at once), and its quota while it
    sends; gone, it holds neither."""
    platform = start_platform(
        {
            "platform": {"object_quota": "256MiB"},
            "functions": [{"name": "digest", "handler": "patterns:digest"}],
        }
    )
    before = _shared_memory(platform.process.pid)
    host, port = platform.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            b"POST /objects HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (200 << 20)
        )
        raw.sendall(b"z" * (1 << 20))
        time.sleep(1.0)
        grown = _shared_memory(platform.process.pid) - before
        assert grown < 32 << 20, f"{grown} bytes of memory for 1 MiB sent"
        held = platform.status()["objects"]
        assert held is not None and held["bytes_reserved"] == 200 << 20  # its quota, held
    assert until_sync(lambda: _objects(platform)["bytes_reserved"] == 0, timeout=10)
    assert post(platform, "/objects", b"q" * (100 << 20))[0] == 201


@pytest.mark.skipif(os.geteuid() != 0, reason="functions run under uids of their own only as root")
def test_a_function_may_not_use_the_gateways_objects(start_platform: Start) -> None:
    """A hostile function of another tenant, handed the gateway's URL and a victim's
    reference, cannot read it there (it would bypass WrongTenant), nor upload or release:
    the gateway knows its connections by their uid. The reference still works afterwards."""
    platform = start_platform(
        {
            "functions": [
                {"name": "victim", "handler": "patterns:put_only", "tenant": "a"},
                {"name": "attacker", "handler": "fns:use_gateway_objects", "tenant": "b"},
                {"name": "corked", "handler": "fns:corked_gateway_objects", "tenant": "b"},
            ]
        }
    )
    assert platform.status()["isolation"]
    order = {"size": 1 << 20, "seed": 3}
    status, _, token = post(platform, "/invoke/victim", json.dumps(order).encode())
    assert status == 200
    attack = {"url": platform.url, "token": token.decode()}
    status, _, said = post(platform, "/invoke/attacker", json.dumps(attack).encode())
    assert status == 200
    assert json.loads(said) == {
        "upload": [403, "forbidden"],
        "download": [403, "forbidden"],
        "release": [403, "forbidden"],
    }
    # Sent with the socket closed at once, so that the kernel reports it as root's (a closed
    # socket belongs to no one): this once released the victim's object and uploaded.
    status, _, said = post(platform, "/invoke/corked", json.dumps(attack).encode())
    assert (status, said) == (200, b"sent")
    time.sleep(0.5)
    assert post(platform, "/objects/get", token) == (200, None, make(1 << 20, seed=3))
    held = platform.status()["objects"]
    # Each corked one is refused, or dropped with its connection before it is looked at.
    assert held is not None and held["refused"] >= 3 and held["uploads"] == 0
    assert held["releases"] == 0


def test_a_reference_is_read_within_its_size_and_a_download_holds_quota(
    start_platform: Start,
) -> None:
    """A body for /objects/get is a reference (under 1 KiB): a declared 6 MiB is refused at
    once (200 such once held 1.4 GB of the gateway's memory for minutes). Downloads in flight
    hold their size of the gateway's object_quota, whichever mode they come from: a second
    one that does not fit waits, then is refused (30 slow readers of a Redis object once held
    3.9 GB with a quota of 64 MiB)."""
    platform = start_platform(
        {
            "platform": {"object_quota": "16MiB"},
            "functions": [
                {"name": "put-only", "handler": "patterns:put_only", "transfer": "elasticache"}
            ],
        }
    )
    host, port = platform.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"POST /objects/get HTTP/1.1\r\nHost: x\r\nContent-Length: 6291455\r\n\r\n")
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413") and b"the size of a reference" in answer

    order = {"size": 12 << 20, "seed": 8, "pulls": None}
    status, _, token = post(platform, "/invoke/put-only", json.dumps(order).encode())
    assert status == 200
    second: list[tuple[int, str | None, bytes]] = []
    with socket.create_connection((host, int(port)), timeout=30) as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(
            b"POST /objects/get HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(token)
            + token
        )
        assert slow.recv(12) == b"HTTP/1.1 200"  # and then reads no more: 12 MiB held
        assert _objects(platform)["bytes_reserved"] == 12 << 20
        waiting = threading.Thread(
            target=lambda: second.append(post(platform, "/objects/get", token))
        )
        waiting.start()
        time.sleep(1.0)
        assert not second, "a second download did not wait for room"
    waiting.join(timeout=30)  # the slow reader gone, its room is given back: the second goes
    assert second == [(200, None, make(12 << 20, seed=8))]
    assert until_sync(lambda: _objects(platform)["bytes_reserved"] == 0, timeout=10)


def _objects(platform: RunningPlatform) -> ObjectsStatus:
    objects = platform.status()["objects"]
    assert objects is not None
    return objects
