"""``xdt knative render``: the manifests are valid Knative and Kubernetes objects (checked offline
against the published schemas), say what the spec says, keep secrets out, and agree with the
container build files in deploy/knative/ on paths, ports, uids and entrypoints."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from xdt import SpecError
from xdt.cli import main
from xdt.knative import Rendering, render, warnings
from xdt.knative.render import FUNCTION_FOLDER, QUEUE_PROXY_PORTS, SIDECAR_IMAGE
from xdt.platform.spec import parse_spec
from xdt.sidecar.config import SidecarConfig
from xdt.sidecar.knative import (
    EGRESS_SOCKET,
    FUNCTION_PORT,
    FUNCTION_UID,
    KEYRING_FILE,
    OBJECTS_PORT,
    RUNTIME_SOCKET,
    SERVING_PORT,
    SHARED_GID,
    SIDECAR_UID,
    SOCKETS,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tools" / "knative-schema"
DEPLOY = ROOT / "deploy" / "knative"

SPEC = {
    "platform": {
        "object_ttl": "60s",
        "redis_url": "redis://:hunter2-secret@redis.example:6379/0",
        "s3_endpoint_url": "http://minio.example:9000",
        "autoscaler": {"stable_window": "30s", "target_burst_capacity": 50},
    },
    "functions": [
        {"name": "driver", "handler": "app:driver", "concurrency": 4, "min_scale": 1,
         "max_scale": 20, "initial_scale": 2, "timeout": "120s", "env": {"MODE": "fast"}},
        {"name": "cache", "handler": "app:cache", "transfer": "elasticache", "tenant": "t2"},
        {"name": "legacy", "command": ["node", "server.js"], "transfer": "s3"},
    ],
}  # fmt: skip
RENDERING = Rendering("registry.example/team", tag="v1", namespace="prod", app="shop")


def _documents(spec: dict[str, Any] = SPEC) -> list[dict[str, Any]]:
    return render(parse_spec(copy.deepcopy(spec), folder=Path("/srv/app")), RENDERING)


def _service(documents: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [d for d in documents if d["kind"] == "Service" and d["metadata"]["name"] == name]
    return found


def _containers(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in service["spec"]["template"]["spec"]["containers"]}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _validate(documents: list[dict[str, Any]]) -> list[str | None]:
    if not (SCHEMAS / "node_modules").is_dir() or shutil.which("node") is None:
        pytest.skip("the schemas are not installed: make test runs npm ci in tools/knative-schema")
    done = subprocess.run(
        ["node", str(SCHEMAS / "validate.mjs")], input=json.dumps(documents),
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    results: list[str | None] = json.loads(done.stdout)
    return results


# -- valid, as the published schemas say --------------------------------------------------------


def test_every_manifest_is_valid_against_knatives_and_kubernetes_schemas() -> None:
    documents = _documents()
    assert [d["kind"] for d in documents] == ["NetworkPolicy", "Service", "Service", "Service"]
    assert _validate(documents) == [None] * 4


def test_the_schemas_refuse_a_malformed_service() -> None:
    broken = _documents()
    service = _service(broken, "driver")
    service["spec"]["template"]["spec"]["containerConcurrency"] = "four"
    del _containers(service)["sidecar"]["ports"][0]["containerPort"]
    results = _validate(broken)
    assert results[0] is None and results[1] is not None
    assert "containerConcurrency" in results[1] and "containerPort" in results[1]


# -- what the spec says --------------------------------------------------------------------------


def test_scaling_and_concurrency_are_knatives_own_annotations_and_fields() -> None:
    driver = _service(_documents(), "driver")
    template = driver["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert {k.removeprefix("autoscaling.knative.dev/"): v for k, v in annotations.items()} == {
        "class": "kpa.autoscaling.knative.dev", "metric": "concurrency", "min-scale": "1",
        "max-scale": "20", "initial-scale": "2", "window": "30s",
        "panic-window-percentage": "10", "panic-threshold-percentage": "200",
        "target-utilization-percentage": "70", "target-burst-capacity": "50",
    }  # fmt: skip
    assert template["spec"]["containerConcurrency"] == 4
    # Knative makes the revision's timeout the pod's terminationGracePeriodSeconds.
    assert template["spec"]["timeoutSeconds"] == 120
    assert template["metadata"]["labels"] == {"xdt.dev/app": "shop", "xdt.dev/function": "driver"}


def test_the_sidecar_serves_in_front_and_is_told_the_spec() -> None:
    containers = _containers(_service(_documents(), "cache"))
    sidecar, function = containers["sidecar"], containers["function"]
    assert list(containers) == ["sidecar", "function"]  # the serving container first
    assert sidecar["ports"] == [{"name": "http1", "containerPort": SERVING_PORT}]
    assert "ports" not in function  # one serving container per pod: Knative's rule
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/xdt/ready", "port": SERVING_PORT}
    config = SidecarConfig.from_json(_env(sidecar)["XDT_SIDECAR_CONFIG"])
    assert (config.function, config.tenant, config.transfer.mode.label) == (
        "cache", "t2", "elasticache",
    )  # fmt: skip
    assert config.faces.objects_port == OBJECTS_PORT
    assert config.knative is not None and config.knative.namespace == "prod"
    assert config.upstream == f"unix:{RUNTIME_SOCKET}"
    env = _env(sidecar)
    # No downward API: Knative refuses fieldRef unless kubernetes.podspec-fieldref is on.
    assert "fieldRef" not in json.dumps(_documents())
    assert env["XDT_REDIS_URL"] == {"secretKeyRef": {"name": "xdt-stores", "key": "redis-url"}}
    assert function["args"][:2] == ["--handler", "app:cache"]
    assert _env(function)["XDT_EGRESS_SOCKET"] == EGRESS_SOCKET


def test_a_command_function_serves_on_its_port_and_s3_credentials_come_from_a_secret() -> None:
    containers = _containers(_service(_documents(), "legacy"))
    assert containers["function"]["command"] == ["node", "server.js"]
    assert _env(containers["function"])["PORT"] == str(FUNCTION_PORT)
    sidecar_env = _env(containers["sidecar"])
    assert sidecar_env["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "xdt-stores", "key": "aws-secret-access-key"}
    }
    config = SidecarConfig.from_json(sidecar_env["XDT_SIDECAR_CONFIG"])
    assert config.upstream == f"http:{FUNCTION_PORT}"
    assert config.stores.s3_endpoint_url == "http://minio.example:9000"


def test_no_secret_is_written_and_the_key_ring_reaches_the_sidecar_only() -> None:
    documents = _documents()
    text = json.dumps(documents)
    assert "hunter2" not in text  # the spec's Redis password stays out
    for service in documents[1:]:
        containers = _containers(service)
        mounts = {m["name"] for m in containers["sidecar"]["volumeMounts"]}
        assert mounts == {"xdt-sockets", "xdt-keyring"}
        assert {m["name"] for m in containers["function"]["volumeMounts"]} == {"xdt-sockets"}
        volumes = {v["name"]: v for v in service["spec"]["template"]["spec"]["volumes"]}
        assert volumes["xdt-keyring"]["secret"]["secretName"] == "xdt-keyring"


def test_the_network_policy_lets_only_the_specs_pods_reach_the_object_port() -> None:
    policy = _documents()[0]
    pods = {"matchLabels": {"xdt.dev/app": "shop"}}
    assert policy["spec"]["podSelector"] == pods
    objects, knative = policy["spec"]["ingress"]
    assert objects == {"from": [{"podSelector": pods}],
                       "ports": [{"protocol": "TCP", "port": OBJECTS_PORT}]}  # fmt: skip
    assert "from" not in knative  # Knative's activator, ingress, autoscaler: any namespace
    assert {p["port"] for p in knative["ports"]} == set(QUEUE_PROXY_PORTS)
    assert OBJECTS_PORT not in QUEUE_PROXY_PORTS


def test_the_function_container_finds_no_token_and_is_held_to_its_memory_limit() -> None:
    spec = copy.deepcopy(SPEC)
    spec["functions"][0]["memory_limit"] = "256MiB"
    driver = _service(_documents(spec), "driver")
    assert driver["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    function = _containers(driver)["function"]
    assert function["resources"] == {"limits": {"memory": str(256 << 20)}}


def test_an_s3_endpoint_with_credentials_in_it_is_refused() -> None:
    spec = copy.deepcopy(SPEC)
    spec["platform"]["s3_endpoint_url"] = "http://key:S3SECRETPW@minio.example:9000"
    with pytest.raises(SpecError, match="s3_endpoint_url holds credentials") as refused:
        _documents(spec)
    assert "S3SECRETPW" not in str(refused.value)


def test_a_timeout_too_short_for_objects_to_drain_is_refused() -> None:
    spec = copy.deepcopy(SPEC)
    spec["functions"][0]["timeout"] = "30s"
    with pytest.raises(SpecError, match=r"functions\[driver\].timeout 30 s is too short"):
        _documents(spec)


def test_what_needs_the_clusters_attention_is_said() -> None:
    spec = copy.deepcopy(SPEC)
    spec["functions"][1]["timeout"] = "900s"
    said = warnings(parse_spec(spec, folder=Path("/srv/app")))
    assert any("max-revision-timeout-seconds" in w for w in said)
    assert any("functions[driver].env" in w and "plain text" in w for w in said)
    spec["platform"]["autoscaler"]["scale_to_zero_grace"] = "5s"
    spec["platform"]["hosts"] = 2
    spec["functions"][0]["host"] = 2
    said = warnings(parse_spec(spec, folder=Path("/srv/app")))
    assert any("scale_to_zero_grace are the cluster's own" in w for w in said), said
    assert any("host: of driver" in w for w in said), said


def test_the_command_writes_one_file_per_object(tmp_path: Path, capsys: Any) -> None:
    spec = tmp_path / "xdt.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "manifests"
    code = main(["knative", "render", "-f", str(spec), "-o", str(out),
                 "--registry", "registry.example/team", "--namespace", "prod"])  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "cache.service.yaml", "driver.service.yaml", "legacy.service.yaml",
        "xdt-objects.networkpolicy.yaml",
    ]  # fmt: skip
    service = yaml.safe_load((out / "driver.service.yaml").read_text())
    images = {name: c["image"] for name, c in _containers(service).items()}
    assert images == {"sidecar": "registry.example/team/xdt-sidecar:latest",
                      "function": "registry.example/team/xdt-functions:latest"}  # fmt: skip
    legacy = yaml.safe_load((out / "legacy.service.yaml").read_text())
    assert _containers(legacy)["function"]["image"] == "registry.example/team/legacy:latest"
    assert "&id" not in (out / "xdt-objects.networkpolicy.yaml").read_text()  # no YAML aliases
    capsys.readouterr()  # what the first run said
    assert main(["knative", "render", "-f", str(spec), "--registry", "r"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in documents] == ["NetworkPolicy", "Service", "Service", "Service"]


# -- the container build files agree -------------------------------------------------------------


def _dockerfile(name: str) -> dict[str, list[str]]:
    """Each instruction's arguments (the last of each kind; COPY: every destination)."""
    found: dict[str, list[str]] = {"COPY": []}
    text = (DEPLOY / name).read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "COPY":
            found["COPY"].append(rest.split()[-1])
        elif rest.startswith("["):
            found[instruction] = json.loads(rest)
        else:
            found[instruction] = rest.split()
    return found


def test_the_sidecar_image_runs_what_the_pod_expects() -> None:
    sidecar = _dockerfile("sidecar.Dockerfile")
    assert sidecar["ENTRYPOINT"] == ["python", "-m", "xdt.sidecar", "--knative"]
    assert sidecar["USER"] == [f"{SIDECAR_UID}:{SHARED_GID}"]
    assert {int(p) for p in sidecar["EXPOSE"]} == {SERVING_PORT, OBJECTS_PORT}
    rendered = _containers(_service(_documents(), "driver"))["sidecar"]
    assert rendered["securityContext"]["runAsUser"] == SIDECAR_UID
    assert rendered["securityContext"]["runAsGroup"] == SHARED_GID
    assert rendered["image"].rpartition("/")[2].startswith(f"{SIDECAR_IMAGE}:")
    assert f"-t REGISTRY/{SIDECAR_IMAGE}:TAG" in (DEPLOY / "sidecar.Dockerfile").read_text()
    mounts = {m["mountPath"] for m in rendered["volumeMounts"]}
    assert mounts == {SOCKETS, str(Path(KEYRING_FILE).parent)}


def test_the_function_image_runs_what_the_pod_expects() -> None:
    function = _dockerfile("function.Dockerfile")
    assert function["ENTRYPOINT"] == ["python", "-m", "xdt.runtime"]
    assert function["USER"] == [f"{FUNCTION_UID}:{SHARED_GID}"]
    assert function["WORKDIR"] == [FUNCTION_FOLDER]
    assert FUNCTION_FOLDER in function["COPY"]
    rendered = _containers(_service(_documents(), "driver"))["function"]
    assert rendered["securityContext"]["runAsUser"] == FUNCTION_UID
    args = rendered["args"]
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    assert pairs["--folder"] == FUNCTION_FOLDER
    assert (pairs["--socket"], pairs["--outlive"]) == (RUNTIME_SOCKET, EGRESS_SOCKET)
    assert (pairs["--peer-uid"], pairs["--socket-group"]) == (str(SIDECAR_UID), str(SHARED_GID))
    # The runtime takes every argument the manifest gives it.
    usage = subprocess.run(
        [sys.executable, "-m", "xdt.runtime", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in pairs:
        assert re.search(rf"{option}\b", usage), option
