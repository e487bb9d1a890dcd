"""The sidecar's Knative mode, as processes given Knative's environment, signals and probes:
any path is the function's, the probe follows the function and the drain, SIGTERM drains
requests and objects before the pod goes, and two pods pull from each other."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from patterns import describe, make

from _support.hosts import needs_hosts
from _support.knative import Pod
from xdt import ConfigError, KeyRing
from xdt.platform.hosts import HostNetwork
from xdt.sidecar.knative import launch_from_env


@pytest.fixture
def pods() -> Iterator[list[Pod]]:
    started: list[Pod] = []
    yield started
    for pod in started:
        pod.stop()


def _start(pods: list[Pod], *args: Any, **kwargs: Any) -> Pod:
    pod = Pod(*args, **kwargs)
    pods.append(pod)
    return pod


def _exits(pod: Pod, within: float) -> int | None:
    try:
        return pod.sidecar.wait(timeout=within)
    except Exception:
        return None


def test_any_method_and_path_is_the_functions_and_xdt_paths_are_the_sidecars(
    tmp_path: Path, pods: list[Pod]
) -> None:
    pod = _start(
        pods, tmp_path, {"name": "shop", "handler": "contract:describe"}, KeyRing.generate()
    )
    status, headers, body = pod.request(
        "PUT", "/orders/7?status=201", b"two apples", {"X-Colour": "red"}
    )
    assert status == 201, body
    seen = json.loads(body)
    assert (seen["method"], seen["path"], seen["query"]) == ("PUT", "/orders/7", {"status": "201"})
    assert (seen["body"], seen["headers"]["x-colour"]) == ("two apples", "red")
    assert headers["X-Answer"] == "yes"
    status, _, body = pod.request("GET", "//orders//7?a=b")  # not a host: the path as sent
    assert (status, json.loads(body)["path"], json.loads(body)["query"]) == (
        200, "//orders//7", {"a": "b"},
    )  # fmt: skip
    assert pod.request("GET", "/xdt/ready")[0] == 200
    assert pod.request("GET", "/xdt/metrics")[0] == 200
    assert "serving shop, revision shop-00001 of configuration shop" in pod.output()
    # The sidecar's own reports are the platform's alone, on Knative too.
    assert pod.request("GET", "/xdt/stats")[0] == 403


def test_only_a_sidecars_call_may_have_its_answer_left_as_an_object(
    tmp_path: Path, pods: list[Pod]
) -> None:
    keyring = KeyRing.generate()
    pod = _start(pods, tmp_path, {"name": "upper", "handler": "fns:upper"}, keyring)
    big = b"x" * (1 << 20)  # an answer over the threshold: a reference, if one is asked for
    ask = {"X-Xdt-Accept": "ref"}
    status, headers, _ = pod.request("POST", "/", big, ask)
    assert (status, headers["X-Xdt-Error"]) == (403, "forbidden")  # anyone: no
    for proof in (keyring.call_proof("other"), keyring.call_proof("upper", now=time.time() - 90),
                  KeyRing.generate().call_proof("upper")):  # fmt: skip
        assert pod.request("POST", "/", big, {**ask, "X-Xdt-Call": proof})[0] == 403
    status, headers, body = pod.request(
        "POST", "/", big, {**ask, "X-Xdt-Call": keyring.call_proof("upper")}
    )
    assert (status, headers.get("X-Xdt-Transfer")) == (200, "ref")  # a sidecar's call: yes
    assert len(body) < 1024
    assert pod.request("POST", "/", big)[2] == big.upper()  # and anyone gets the bytes


def test_a_pod_whose_environment_is_not_knatives_is_refused_with_why(tmp_path: Path) -> None:
    pod_env = {"XDT_SIDECAR_CONFIG": "{}", "K_SERVICE": "shop", "XDT_POD_IP": "10.0.0.7"}
    with pytest.raises(ConfigError, match="XDT_SIDECAR_CONFIG is not a sidecar configuration"):
        launch_from_env(pod_env)
    with pytest.raises(ConfigError, match=r"\$XDT_SIDECAR_CONFIG is not set"):
        launch_from_env({})


def test_the_pods_environment_is_checked_and_read_as_knative_gives_it(
    tmp_path: Path, pods: list[Pod]
) -> None:
    pod = _start(pods, tmp_path, {"name": "shop", "handler": "fns:upper"}, KeyRing.generate())
    env = {**pod.env, "K_SERVICE": "cart"}
    with pytest.raises(ConfigError, match="runs this sidecar as service 'cart'"):
        launch_from_env(env)
    # Without the override, the pod's IP is what its name resolves to, as in a pod.
    del env["XDT_POD_IP"]
    env["K_SERVICE"] = "shop"
    env["XDT_POD_NAME"] = "shop-00001-deployment-abc12.invalid"
    with pytest.raises(ConfigError, match=r"cannot find this pod's IP: its name .* does not"):
        launch_from_env(env)
    env["XDT_POD_NAME"] = "localhost"
    assert launch_from_env(env).config.faces.advertise == f"127.0.0.1:{pod.objects_port}"
    env["XDT_POD_NAME"] = "shop-00001-deployment-abc12"
    env["XDT_POD_IP"] = "10.0.0.7"
    env["XDT_KEYRING_FILE"] = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"cannot read the key ring .* mount the Secret"):
        launch_from_env(env)
    launch = launch_from_env({**env, "XDT_KEYRING_FILE": pod.env["XDT_KEYRING_FILE"]})
    assert launch.config.faces.advertise == f"10.0.0.7:{pod.objects_port}"
    assert launch.config.instance == "shop-00001-deployment-abc12"


def test_on_sigterm_in_flight_requests_finish_new_ones_are_refused_then_it_exits(
    tmp_path: Path, pods: list[Pod]
) -> None:
    pod = _start(pods, tmp_path, {"name": "nap", "handler": "fns:slow"}, KeyRing.generate())
    answers: list[tuple[int, bytes]] = []
    napping = threading.Thread(
        target=lambda: answers.append(pod.request("POST", "/", b"1.5")[::2])  # type: ignore[arg-type]
    )
    napping.start()
    time.sleep(0.5)  # surely in flight
    pod.terminate()
    time.sleep(0.2)
    assert pod.sidecar.poll() is None  # draining: the nap is still in flight
    assert pod.ready() == 503
    status, headers, body = pod.request("POST", "/", b"0")
    assert status == 503 and headers["X-Xdt-Error"] == "overloaded", body
    napping.join(timeout=30)
    assert answers == [(200, b"slept 1.5")]
    assert _exits(pod, within=20) == 0
    assert "xdt sidecar: drained" in pod.output()
    assert pod.function.wait(timeout=20) is not None  # the runtime outlived it, then left


def test_on_sigterm_a_live_object_keeps_the_pod_until_it_is_pulled(
    tmp_path: Path, pods: list[Pod]
) -> None:
    keyring = KeyRing.generate()
    holder = _start(pods, tmp_path, {"name": "put-only", "handler": "patterns:put_only"}, keyring)
    taker = _start(pods, tmp_path, {"name": "try-get", "handler": "patterns:try_get"}, keyring)
    status, _, reference = holder.request(
        "POST", "/", json.dumps({"size": 4 << 20, "seed": 9, "ttl": 120}).encode()
    )
    assert status == 200, reference
    holder.terminate()
    time.sleep(1.0)
    assert holder.sidecar.poll() is None and holder.ready() == 503  # its object is live
    status, _, body = taker.request("POST", "/", reference)
    assert (status, json.loads(body)) == (200, {"ok": describe(make(4 << 20, 9))})
    assert _exits(holder, within=20) == 0  # pulled (its one pull): nothing holds it
    assert "xdt sidecar: drained" in holder.output()


def test_on_sigterm_an_object_never_pulled_holds_the_pod_only_for_its_grace_period(
    tmp_path: Path, pods: list[Pod]
) -> None:
    holder = _start(
        pods, tmp_path, {"name": "put-only", "handler": "patterns:put_only"},
        KeyRing.generate(), grace=4.0,
    )  # fmt: skip
    status, _, _ = holder.request("POST", "/", json.dumps({"size": 1 << 20, "seed": 1}).encode())
    assert status == 200
    holder.terminate()
    time.sleep(1.0)
    assert holder.sidecar.poll() is None
    assert _exits(holder, within=20) == 0
    assert "the grace period is over" in holder.output()


def test_a_body_still_arriving_at_sigterm_holds_the_pod_no_longer_than_its_grace(
    tmp_path: Path, pods: list[Pod]
) -> None:
    pod = _start(
        pods, tmp_path, {"name": "upper", "handler": "fns:upper"}, KeyRing.generate(), grace=4.0
    )
    host, port = pod.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as slow:
        slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n")
        slow.sendall(b"x" * 1000)  # and never the rest
        time.sleep(0.3)
        began = time.monotonic()
        pod.terminate()
        time.sleep(1.0)
        assert pod.sidecar.poll() is None  # the request is open: not drained at once
        assert _exits(pod, within=30) == 0
    assert time.monotonic() - began < 10  # within its grace, not the body's own deadline
    assert "the grace period is over" in pod.output()


@needs_hosts
def test_two_pods_on_their_own_hosts_call_and_pull_across_the_network(
    tmp_path: Path, pods: list[Pod]
) -> None:
    network = HostNetwork(2)
    network.start()
    try:
        keyring = KeyRing.generate()
        one, two = network.host(1), network.host(2)
        callee = _start(
            pods, tmp_path, {"name": "digest", "handler": "patterns:digest"}, keyring,
            pod_ip=two.address, enter=two.enter(),
        )  # fmt: skip
        caller = _start(
            pods, tmp_path, {"name": "relay", "handler": "hosted:relay"}, keyring,
            pod_ip=one.address, enter=one.enter(), call_url=callee.url,
        )  # fmt: skip
        with open(f"/sys/class/net/{one.veth}/statistics/rx_bytes") as counter:
            before = int(counter.read())
        size = 8 << 20
        status, _, body = caller.request(
            "POST", "/", json.dumps({"size": size, "seed": 4}).encode()
        )
        assert (status, body) == (200, describe(make(size, 4)).encode())
        with open(f"/sys/class/net/{one.veth}/statistics/rx_bytes") as counter:
            assert int(counter.read()) - before >= size  # pulled from the caller's pod
    finally:
        for pod in pods:
            pod.stop()
        pods.clear()
        network.close()
