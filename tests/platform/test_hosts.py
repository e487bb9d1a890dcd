"""Test hosts (platform.hosts): instances in network namespaces of their own, pulls across veth
links, a link taken down mid-pull, and nothing left behind — after a stop, and after SIGKILL.

Every test here makes real namespaces, veths and a bridge; they need root and iproute2, and
are skipped, saying why, where the kernel or the user cannot make them."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from patterns import describe, make

from _support.hosts import needs_hosts
from _support.platform import RunningPlatform, alive
from _support.users import venv_reachable_by_others
from xdt import HostsError
from xdt.platform.hosts import RANGE, STATE_DIR, HostNetwork, Link, remove_stale_hosts
from xdt.platform.status import HostsStatus

pytestmark = needs_hosts


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def _namespaces() -> set[str]:
    return {line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()}


def _links() -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in _ip("-o", "link").splitlines()}


_LISTEN = (
    "import socket, sys\n"
    "server = socket.create_server((sys.argv[1], 0))\n"
    "print(server.getsockname()[1], flush=True)\n"
    "server.settimeout(10)\n"
    "connection, _ = server.accept()\n"
    "connection.sendall(b'hello')\n"
)
_CONNECT = (
    "import socket, sys\n"
    "with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as c:\n"
    "    sys.stdout.buffer.write(c.recv(5))\n"
)


def _in(netns: str | None, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def _reaches(source: str, target: str | None, address: str) -> bytes:
    """What a TCP client in netns ``source`` reads from a server on ``address`` in ``target``
    (None: the machine's own namespace)."""
    with subprocess.Popen(
        _in(target, sys.executable, "-c", _LISTEN, address), stdout=subprocess.PIPE
    ) as server:
        assert server.stdout is not None
        port = server.stdout.readline().decode().strip()
        said = subprocess.run(
            _in(source, sys.executable, "-c", _CONNECT, address, port),
            capture_output=True, timeout=20,
        ).stdout  # fmt: skip
        server.wait(timeout=10)
    return said


def _index(hosts: HostsStatus) -> int:
    network = ipaddress.ip_network(hosts["network"])
    return (int(network.network_address) - int(RANGE.network_address)) >> 8


def _received_from(index: int, host: str) -> int:
    """Bytes the machine's end of ``host``'s link has taken in: what the host sent."""
    with open(f"/sys/class/net/xdtv{index}{host}/statistics/rx_bytes") as counter:
        return int(counter.read())


def _left_of(index: int) -> list[str]:
    """What of /24 ``index`` is still on the machine."""
    left = [n for n in _namespaces() if n.startswith(f"xdt-{index}-")]
    left += [link for link in _links() if re.fullmatch(rf"xdtb{index}|xdtv{index}(h\d+|s)", link)]
    if (STATE_DIR / f"{index}.json").exists():
        left.append(f"claim {index}")
    return left


# -- the network on its own --------------------------------------------------------------------


def test_hosts_reach_each_other_and_the_machine_then_go_without_a_trace() -> None:
    network = HostNetwork(2, store_host=True, link=Link(rate=1_000_000_000))
    network.start()
    try:
        assert network.index is not None
        index = network.index
        one, two, store = network.host(1), network.host(2), network.store
        assert store is not None
        for where, address in ((two.netns, two.address), (store.netns, store.address),
                               (None, network.machine_address)):  # fmt: skip
            assert _reaches(one.netns, where, address) == b"hello", address
        # Every address is in the benchmarking range, and each end of a link is shaped.
        assert all(ipaddress.ip_address(h.address) in RANGE for h in (one, two, store))
        assert (
            "rate 1Gbit"
            in subprocess.run(
                ["tc", "class", "show", "dev", one.veth], capture_output=True, text=True
            ).stdout
        )
        assert (
            "rate 1Gbit"
            in subprocess.run(
                ["tc", "-n", one.netns, "class", "show", "dev", "eth0"],
                capture_output=True,
                text=True,
            ).stdout
        )
    finally:
        network.close()
    assert _left_of(index) == []


def test_placement_spreads_each_functions_instances_and_honours_pins() -> None:
    network = HostNetwork(3)
    network.start()
    try:
        assert [network.place("a").name for _ in range(4)] == ["h1", "h2", "h3", "h1"]
        # Another function spreads too, starting where the fewest instances are.
        assert [network.place("b").name for _ in range(2)] == ["h2", "h3"]
        network.leave("a", network.host(2))
        assert network.place("a").name == "h2"  # the emptiest of a's again
        assert {network.place("c", [3]).name for _ in range(3)} == {"h3"}
        assert sorted(network.place("d", [1, 2]).name for _ in range(2)) == ["h1", "h2"]
    finally:
        network.close()


def test_a_dead_platforms_hosts_are_cleaned_at_the_next_start() -> None:
    # A process makes hosts, then is SIGKILLed: what it made stays until someone cleans.
    script = (
        "import sys, time\n"
        "from xdt.platform.hosts import HostNetwork\n"
        "network = HostNetwork(2)\n"
        "network.start()\n"
        "print(network.index, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    index = int(child.stdout.readline())
    assert _left_of(index)  # made
    assert index not in remove_stale_hosts()  # its owner is alive: not touched
    child.kill()
    child.wait()
    child.stdout.close()
    assert _left_of(index)  # a SIGKILL gives no chance to clean
    assert index in remove_stale_hosts()
    assert _left_of(index) == []


def test_a_claim_without_an_owner_is_stale_and_hosts_speak_ipv4_only() -> None:
    # A platform killed between making its claim and writing it leaves an empty file.
    STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    empty = STATE_DIR / "511.json"
    empty.touch()
    try:
        assert 511 in remove_stale_hosts()
        assert not empty.exists()
    finally:
        empty.unlink(missing_ok=True)
    network = HostNetwork(1)
    network.start()
    try:
        # No IPv6, so no link-local address to reach past the hosts' /24 with.
        inside = subprocess.run(
            ["ip", "netns", "exec", network.host(1).netns, "ip", "-6", "addr"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert inside.strip() == ""
        assert _ip("-6", "addr", "show", "dev", network.bridge).strip() == ""
    finally:
        network.close()


def test_a_delay_without_netem_is_a_clear_error_or_works() -> None:
    network = HostNetwork(1, link=Link(delay=0.001))
    try:
        network.start()
    except HostsError as exc:
        assert "netem" in str(exc)
        assert network.index is None  # what was half made is gone
    else:
        assert (
            "delay 1ms"
            in subprocess.run(
                ["tc", "qdisc", "show", "dev", network.host(1).veth], capture_output=True, text=True
            ).stdout
        )
    finally:
        network.close()


# -- the platform on hosts ---------------------------------------------------------------------


def _shuffle_spec(hosts: int) -> dict[str, Any]:
    pins: list[dict[str, Any]] = [{"host": 1}, {"host": 2}, {"host": 3}] if hosts else [{}] * 3
    functions = [
        {"name": "shuffle", "handler": "patterns:shuffle", **pins[0]},
        {"name": "mapper", "handler": "patterns:mapper", "min_scale": 2, **pins[1]},
        {"name": "reducer", "handler": "patterns:reducer", **pins[2]},
    ]
    platform: dict[str, Any] = {"hosts": hosts} if hosts else {}
    return {"platform": platform, "functions": functions}


@pytest.fixture
def platforms(tmp_path: Path) -> Iterator[list[RunningPlatform]]:
    started: list[RunningPlatform] = []
    yield started
    for platform in started:
        if platform.process.poll() is None:
            platform.stop()


def _start(platforms: list[RunningPlatform], folder: Path, spec: dict[str, Any]) -> RunningPlatform:
    folder.mkdir(exist_ok=True)
    platform = RunningPlatform(folder, spec)
    platforms.append(platform)
    platform.wait_ready()
    return platform


def test_a_workflow_on_three_hosts_answers_as_on_one(
    tmp_path: Path, platforms: list[RunningPlatform]
) -> None:
    order = {"size": 3 << 20, "seed": 7, "m": 3, "r": 2}
    answers = []
    for hosts in (0, 3):
        platform = _start(platforms, tmp_path / f"hosts-{hosts}", _shuffle_spec(hosts))
        status, _, body = platform.invoke("shuffle", json.dumps(order).encode(), timeout=60)
        assert status == 200, body
        answers.append(json.loads(body)["result"])
        if hosts:
            functions = platform.status()["functions"].values()
            where = {
                i["id"].rpartition("-")[0]: i["host"] for f in functions for i in f["instances"]
            }
            assert where == {"shuffle": "h1", "mapper": "h2", "reducer": "h3"}
        platform.stop()
    step = order["size"] // order["r"]
    data = [make(order["size"], order["seed"] + m) for m in range(order["m"])]
    expected = [
        describe(b"".join(d[r * step : (r + 1) * step] for d in data)) for r in range(order["r"])
    ]
    assert answers == [expected, expected]


def _pull_spec(**platform: Any) -> dict[str, Any]:
    return {
        "platform": {"hosts": 3, **platform},
        "functions": [
            {"name": "put-only", "handler": "patterns:put_only", "host": 2, "min_scale": 1},
            {"name": "near", "handler": "patterns:try_get", "host": 2, "min_scale": 1},
            {"name": "far", "handler": "patterns:try_get", "host": 3, "min_scale": 1},
            {"name": "upload-to", "handler": "hosted:upload_to", "host": 1, "min_scale": 1},
        ],
    }


def _put(platform: RunningPlatform, size: int, seed: int) -> bytes:
    status, _, reference = platform.invoke(
        "put-only", json.dumps({"size": size, "seed": seed, "ttl": 120}).encode()
    )
    assert status == 200, reference
    return reference


def test_pulls_cross_the_link_between_hosts_and_stay_off_it_within_one(
    tmp_path: Path, platforms: list[RunningPlatform]
) -> None:
    platform = _start(platforms, tmp_path, _pull_spec())
    hosts = platform.status()["hosts"]
    assert hosts is not None
    index, size = _index(hosts), 16 << 20
    shown = subprocess.run(
        [sys.executable, "-m", "xdt", "status", "--url", platform.url], capture_output=True,
        text=True, timeout=60, env={**os.environ, "COLUMNS": "300"}, check=True,
    ).stdout  # fmt: skip
    assert f"hosts: h1 {hosts['hosts']['h1']}, h2 " in shown  # where each host is
    assert re.search(r"far-\d+\s+h3\s+ready", shown)  # and where each instance is
    for function, crosses in (("far", True), ("near", False)):
        reference = _put(platform, size, seed=3)
        before = _received_from(index, "h2")
        status, _, body = platform.invoke(function, reference, timeout=60)
        sent = _received_from(index, "h2") - before
        assert status == 200, body
        assert json.loads(body) == {"ok": describe(make(size, 3))}
        if crosses:
            assert sent >= size  # every byte left host 2 over its link
        else:
            assert sent < size // 8  # a memfd on the host: only the calls' own bytes


def test_a_function_on_a_host_may_not_use_the_gateways_objects(
    tmp_path: Path, platforms: list[RunningPlatform]
) -> None:
    platform = _start(platforms, tmp_path, _pull_spec())
    hosts = platform.status()["hosts"]
    assert hosts is not None
    status, _, body = platform.invoke("upload-to", hosts["gateway"].encode())
    assert (status, body) == (200, b"403")
    # The same route from this machine's own network, outside every function, is served.
    request = urllib.request.Request(f"{platform.url}/objects?tenant=default", data=b"x" * 64)
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 201  # created


def test_an_unsandboxed_function_enters_its_host_then_runs_under_its_own_uid(
    tmp_path: Path, platforms: list[RunningPlatform]
) -> None:
    # Entering a namespace takes root: here the uid switch comes after it, in preexec.
    if os.geteuid() != 0:
        pytest.skip("functions run under uids of their own only when xdt up runs as root")
    if not venv_reachable_by_others():
        pytest.skip("this checkout's venv is behind a private folder: only sandboxed functions run")
    spec = {
        "platform": {"hosts": 2, "sandbox": "off"},
        "functions": [{"name": "who", "handler": "fns:identity", "host": 2, "min_scale": 1}],
    }
    platform = _start(platforms, tmp_path, spec)
    status, _, body = platform.invoke("who")
    assert status == 200, body
    seen = json.loads(body)
    assert seen["uid"] == seen["euid"] != 0 and seen["groups"] in ([], [seen["gid"]])
    assert seen["no_new_privs"] == "1"
    status_now = platform.status()
    (instance,) = status_now["functions"]["who"]["instances"]
    assert instance["host"] == "h2" and instance["uid"] == seen["uid"]
    hosts = status_now["hosts"]
    assert hosts is not None
    netns = os.stat(f"/run/netns/xdt-{_index(hosts)}-h2").st_ino
    for pid in (instance["function_pid"], instance["sidecar_pid"]):  # both on host 2
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == netns


def test_a_link_down_mid_pull_is_a_typed_error_in_time_never_partial_data(
    tmp_path: Path, platforms: list[RunningPlatform]
) -> None:
    # A slow link, so the pull is surely under way when the source's link goes down; and a
    # short pull_timeout: a link that is down sends no reset, only silence.
    spec = _pull_spec(link={"rate": "200mbit"}, pull_timeout="3s")
    platform = _start(platforms, tmp_path, spec)
    hosts = platform.status()["hosts"]
    assert hosts is not None
    index, size = _index(hosts), 64 << 20  # 2.7 s at 200 Mbit/s
    reference = _put(platform, size, seed=5)
    answer: list[tuple[int, bytes, float]] = []

    def fetch() -> None:
        began = time.monotonic()
        status, _, body = platform.invoke("far", reference, timeout=60)
        answer.append((status, body, time.monotonic() - began))

    fetching = threading.Thread(target=fetch)
    before = _received_from(index, "h2")
    fetching.start()
    deadline = time.monotonic() + 20
    while _received_from(index, "h2") - before < size // 8 and time.monotonic() < deadline:
        time.sleep(0.02)  # until an eighth of the payload has crossed
    _ip("link", "set", f"xdtv{index}h2", "down")
    try:
        fetching.join(timeout=40)
        assert not fetching.is_alive()
    finally:
        _ip("link", "set", f"xdtv{index}h2", "up")
    status, body, elapsed = answer[0]
    assert status == 200, body
    said = json.loads(body)
    assert said.get("error") in ("SourceUnavailable", "TransferCorrupted"), said
    assert "ok" not in said
    assert elapsed < 20  # the pull timeout (3 s) after the link went down, not the function's


def test_nothing_is_left_after_a_stop_nor_after_sigkill_and_the_next_start(
    tmp_path: Path, platforms: list[RunningPlatform]
) -> None:
    spec = {
        "platform": {"hosts": 2, "store_host": True, "transfer": "elasticache"},
        "functions": [{"name": "digest", "handler": "patterns:digest", "min_scale": 2}],
    }
    first = _start(platforms, tmp_path / "first", spec)
    status = first.status()
    hosts = status["hosts"]
    assert hosts is not None and set(hosts["hosts"]) == {"h1", "h2", "store"}
    assert {i["host"] for i in status["functions"]["digest"]["instances"]} == {"h1", "h2"}
    assert first.invoke("digest", make(1 << 20, 1))[2] == describe(make(1 << 20, 1)).encode()
    index = _index(hosts)
    pids = [p for i in status["functions"]["digest"]["instances"]
            for p in (i["sidecar_pid"], i["function_pid"]) if p]  # fmt: skip
    first.stop()
    assert _left_of(index) == []
    assert not any(alive(pid) for pid in pids)

    second = _start(platforms, tmp_path / "second", spec)
    status = second.status()
    assert status["hosts"] is not None
    index = _index(status["hosts"])
    pids = [p for i in status["functions"]["digest"]["instances"]
            for p in (i["sidecar_pid"], i["function_pid"]) if p]  # fmt: skip
    os.kill(second.process.pid, signal.SIGKILL)
    second.stop()  # already dead: closes its log, removes its code folder
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)  # they die with the platform
    assert _left_of(index)  # its namespaces outlive it, until the next start

    third = _start(platforms, tmp_path / "third", {**spec, "platform": {"hosts": 1}})
    claim = STATE_DIR / f"{index}.json"
    if claim.exists():  # the /24 was free again, and the third took it
        assert json.loads(claim.read_text())["pid"] == third.process.pid
        assert sorted(_left_of(index)) == sorted(
            [f"xdt-{index}-h1", f"xdtb{index}", f"xdtv{index}h1", f"claim {index}"]
        )
    else:
        assert _left_of(index) == []
    third.stop()
    assert _left_of(index) == []
