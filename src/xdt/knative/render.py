"""``xdt knative render``: the same spec ``xdt up`` runs, as Kubernetes manifests for Knative
Serving.

Per function, one Knative ``Service`` whose pod holds two containers:

- ``sidecar`` (the serving container, the one with a port): the xdt sidecar in its Knative
  mode (:mod:`xdt.sidecar.knative`), behind Knative's queue-proxy. Its configuration is the
  spec's, as JSON in ``$XDT_SIDECAR_CONFIG``; the key ring is the ``xdt-keyring`` Secret,
  mounted into this container only; the Redis URL and S3 credentials of the baseline modes
  come from the ``xdt-stores`` Secret, by reference (never in the manifest).
- ``function``: the Python runtime serving the handler — one image, ``<app>-functions``, of
  the spec's folder for every Python function — or a ``command:``'s own server on ``$PORT``
  9000 (an image of its own, named after the function), reaching its sidecar through sockets
  in an ``emptyDir`` both mount.

The spec's scaling goes into Knative's own annotations (the KPA: min/max/initial scale, the
stable window, panic window and threshold, target utilisation, burst capacity) and
``containerConcurrency``; ``timeout`` becomes ``timeoutSeconds`` — which Knative also makes
the pod's ``terminationGracePeriodSeconds`` (``pkg/reconciler/revision/resources/deploy.go``),
so it must leave room for objects to drain: a timeout under ``object_ttl`` plus a margin is
refused. One ``NetworkPolicy`` lets only the spec's own pods reach the object port, and
Knative's components reach the queue-proxy's ports.
"""

from __future__ import annotations

import dataclasses
import json
import math
import urllib.parse
from typing import Any

from .._core.errors import SpecError
from .._core.refs import TransferMode
from ..modes import StoreSettings
from ..platform.autoscaler import DEFAULT_AUTOSCALER_CONFIG
from ..platform.spec import FunctionSpec, Spec
from ..sidecar.config import Faces, KnativeMode, RunsAs, SidecarConfig
from ..sidecar.knative import (
    CLUSTER_LOCAL,
    CONFIG_ENV,
    EGRESS_SOCKET,
    FUNCTION_PORT,
    FUNCTION_UID,
    KEYRING_FILE,
    OBJECTS_PORT,
    REDIS_URL_ENV,
    RUNTIME_SOCKET,
    SERVING_PORT,
    SHARED_GID,
    SIDECAR_UID,
    SOCKETS,
)

__all__ = [
    "FUNCTION_FOLDER",
    "KEYRING_SECRET",
    "QUEUE_PROXY_PORTS",
    "SIDECAR_IMAGE",
    "STORES_SECRET",
    "Rendering",
    "render",
    "sidecar_config",
    "warnings",
]

KEYRING_SECRET = "xdt-keyring"  # key "keyring": `xdt keygen` output
STORES_SECRET = "xdt-stores"  # keys redis-url, aws-access-key-id, aws-secret-access-key
FUNCTION_FOLDER = "/function"  # where the function image holds its code
SIDECAR_IMAGE = "xdt-sidecar"
# Knative's queue-proxy (pkg/networking/constants.go): HTTP, HTTP/2, HTTPS, admin, autoscaler
# metrics, user metrics — reached by the activator, the ingress and the autoscaler.
QUEUE_PROXY_PORTS = (8012, 8013, 8112, 8022, 9090, 9091)
DRAIN_MARGIN = 10.0  # seconds beyond object_ttl a pod's grace period must leave
MAX_REVISION_TIMEOUT = 600  # Knative's default max-revision-timeout-seconds
RUNTIME_THREADS = 64
# The autoscaler's settings Knative takes only cluster-wide (config-autoscaler), not per revision.
CLUSTER_AUTOSCALER = (
    "container_concurrency_target_default", "max_scale_up_rate", "max_scale_down_rate",
    "tick_interval", "bucket_size", "scale_to_zero_grace", "enable_scale_to_zero",
    "activator_capacity",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Rendering:
    """Where the images are and where the manifests go."""

    registry: str  # e.g. registry.example.com/team
    tag: str = "latest"
    namespace: str = "default"
    app: str = "xdt"  # labels every pod of this spec: the NetworkPolicy's selector

    def image(self, name: str) -> str:
        return f"{self.registry.rstrip('/')}/{name}:{self.tag}"

    @property
    def functions_image(self) -> str:
        """The image of the spec's Python functions: their folder on the xdt runtime."""
        return f"{self.app}-functions"


def render(spec: Spec, rendering: Rendering) -> list[dict[str, Any]]:
    """The manifests (as dicts, in apply order): a NetworkPolicy, then a Service per function.
    Raises :class:`~xdt.SpecError` for what cannot run on Knative as written."""
    documents: list[dict[str, Any]] = [_network_policy(rendering)]
    for function in spec.functions:
        documents.append(_service(spec, function, rendering))
    return documents


def warnings(spec: Spec) -> list[str]:
    """What renders but needs the cluster's attention (said by ``xdt knative render``)."""
    said = []
    for function in spec.functions:
        if function.timeout > MAX_REVISION_TIMEOUT:
            said.append(
                f"functions[{function.name}].timeout {function.timeout:g} s is over Knative's "
                f"default max-revision-timeout-seconds ({MAX_REVISION_TIMEOUT}): raise it in "
                "the config-defaults ConfigMap"
            )
        if function.env:
            said.append(
                f"functions[{function.name}].env is written into its Service in plain text: "
                "keep secrets in a Secret (env valueFrom.secretKeyRef) instead"
            )
    pinned = [f.name for f in spec.functions if f.host]
    if spec.platform.hosts or pinned:
        said.append(
            "test hosts (platform.hosts, store_host, link, and host: of "
            f"{', '.join(pinned) or 'no function'}) have no meaning on Knative: left out"
        )
    changed = [
        name for name in CLUSTER_AUTOSCALER
        if getattr(spec.platform.autoscaler, name) != getattr(DEFAULT_AUTOSCALER_CONFIG, name)
    ]  # fmt: skip
    if changed:
        said.append(
            f"platform.autoscaler's {', '.join(changed)} are the cluster's own on Knative "
            "(the config-autoscaler ConfigMap in knative-serving), not a revision's: left out"
        )
    return said


def _labels(function: FunctionSpec, rendering: Rendering) -> dict[str, str]:
    return {"xdt.dev/app": rendering.app, "xdt.dev/function": function.name}


def _network_policy(rendering: Rendering) -> dict[str, Any]:
    pods = {"matchLabels": {"xdt.dev/app": rendering.app}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{rendering.app}-objects", "namespace": rendering.namespace},
        "spec": {
            "podSelector": pods,
            "policyTypes": ["Ingress"],
            "ingress": [
                # The object port: only this spec's pods (their sidecars pull; a function
                # container shares its pod's address, which is why every pull also carries
                # the key ring's proof).
                {
                    "from": [{"podSelector": pods}],
                    "ports": [{"protocol": "TCP", "port": OBJECTS_PORT}],
                },
                # Knative's activator, ingress and autoscaler, from their own namespaces.
                {"ports": [{"protocol": "TCP", "port": port} for port in QUEUE_PROXY_PORTS]},
            ],
        },
    }


def _service(spec: Spec, function: FunctionSpec, rendering: Rendering) -> dict[str, Any]:
    settings = spec.platform
    endpoint = urllib.parse.urlsplit(settings.s3_endpoint_url or "")
    if endpoint.username or endpoint.password:
        raise SpecError(
            "platform.s3_endpoint_url holds credentials, which a manifest would carry in plain "
            "text: give the URL without them, and the keys in the xdt-stores Secret "
            "(aws-access-key-id, aws-secret-access-key)"
        )
    if function.timeout < settings.object_ttl + DRAIN_MARGIN:
        raise SpecError(
            f"functions[{function.name}].timeout {function.timeout:g} s is too short for "
            f"Knative: it is also the pod's termination grace period, which must outlast "
            f"object_ttl ({settings.object_ttl:g} s) by {DRAIN_MARGIN:g} s so that a pod "
            "scaled down keeps its objects until they are pulled: raise the timeout or lower "
            "object_ttl"
        )
    timeout = math.ceil(function.timeout)
    annotations = _autoscaling(spec, function)
    containers = [_sidecar(spec, function, rendering, timeout), _function(function, rendering)]
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": function.name,
            "namespace": rendering.namespace,
            "labels": {"xdt.dev/app": rendering.app},
        },
        "spec": {
            "template": {
                "metadata": {"labels": _labels(function, rendering), "annotations": annotations},
                "spec": {
                    # No service account token for the function's container to find.
                    "automountServiceAccountToken": False,
                    "containerConcurrency": function.concurrency,
                    "timeoutSeconds": timeout,
                    "containers": containers,
                    "volumes": [
                        {"name": "xdt-sockets", "emptyDir": {}},
                        {
                            "name": "xdt-keyring",
                            "secret": {
                                "secretName": KEYRING_SECRET,
                                "items": [{"key": "keyring", "path": "keyring"}],
                                # Readable in the sidecar's container, the only one mounting it.
                                "defaultMode": 0o444,
                            },
                        },
                    ],
                },
            }
        },
    }


def _autoscaling(spec: Spec, function: FunctionSpec) -> dict[str, str]:
    scaler = spec.platform.autoscaler
    prefix = "autoscaling.knative.dev/"
    initial = function.initial_scale if function.initial_scale is not None else scaler.initial_scale
    annotations = {
        "class": "kpa.autoscaling.knative.dev",
        "metric": "concurrency",
        "min-scale": str(function.min_scale),
        "max-scale": str(function.max_scale),
        "initial-scale": str(initial),
        "window": f"{math.ceil(scaler.stable_window)}s",
        "panic-window-percentage": f"{scaler.panic_window_percentage:g}",
        "panic-threshold-percentage": f"{scaler.panic_threshold_percentage:g}",
        "target-utilization-percentage": f"{scaler.target_utilization_percentage:g}",
        "target-burst-capacity": f"{scaler.target_burst_capacity:g}",
    }
    return {prefix + key: value for key, value in annotations.items()}


def sidecar_config(spec: Spec, function: FunctionSpec, rendering: Rendering) -> SidecarConfig:
    """What ``function``'s sidecar is told in ``$XDT_SIDECAR_CONFIG``: the spec's settings;
    the pod fills in the rest at start (:func:`xdt.sidecar.knative.launch_from_env`)."""
    settings = spec.platform
    python = function.handler is not None
    return SidecarConfig(
        function=function.name,
        instance=function.name,  # the pod's name, at start
        tenant=function.tenant,
        upstream=f"unix:{RUNTIME_SOCKET}" if python else f"http:{FUNCTION_PORT}",
        activator_url="",  # calls go to each function's service URL (KnativeMode.call_url)
        concurrency=function.concurrency,
        timeout=function.timeout,
        object_quota=settings.object_quota,
        transfer=spec.transfer_of(function),
        # No secret here: the Redis URL comes from the stores Secret at start.
        stores=StoreSettings(
            None, settings.s3_endpoint_url, settings.s3_bucket, settings.s3_region
        ),
        faces=Faces(objects_port=OBJECTS_PORT, egress_tcp=False),
        runs_as=RunsAs(FUNCTION_UID, SHARED_GID),
        keep_warm=settings.keep_warm,
        error_detail=settings.error_detail,
        pull_timeout=settings.pull_timeout,
        knative=KnativeMode(
            call_url=CLUSTER_LOCAL, namespace=rendering.namespace, grace=math.ceil(function.timeout)
        ),
    )


def _secret(key: str) -> dict[str, Any]:
    return {"valueFrom": {"secretKeyRef": {"name": STORES_SECRET, "key": key}}}


def _security(uid: int) -> dict[str, Any]:
    return {
        "runAsUser": uid,
        "runAsGroup": SHARED_GID,  # both containers: the sockets are this group's
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _sidecar(
    spec: Spec, function: FunctionSpec, rendering: Rendering, timeout: int
) -> dict[str, Any]:
    config = sidecar_config(spec, function, rendering)
    env: list[dict[str, Any]] = [
        {"name": CONFIG_ENV, "value": json.dumps(dataclasses.asdict(config))},
    ]
    mode = spec.mode_of(function)
    if mode is TransferMode.ELASTICACHE:
        env.append({"name": REDIS_URL_ENV, **_secret("redis-url")})
    if mode is TransferMode.S3:
        env.append({"name": "AWS_ACCESS_KEY_ID", **_secret("aws-access-key-id")})
        env.append({"name": "AWS_SECRET_ACCESS_KEY", **_secret("aws-secret-access-key")})
    return {
        "name": "sidecar",
        "image": rendering.image(SIDECAR_IMAGE),
        "ports": [{"name": "http1", "containerPort": SERVING_PORT}],
        "env": env,
        "readinessProbe": {
            "httpGet": {"path": "/xdt/ready", "port": SERVING_PORT},
            "periodSeconds": 1,
        },
        "volumeMounts": [
            {"name": "xdt-sockets", "mountPath": SOCKETS},
            {"name": "xdt-keyring", "mountPath": KEYRING_FILE.rpartition("/")[0], "readOnly": True},
        ],
        "securityContext": _security(SIDECAR_UID),
    }


def _function(function: FunctionSpec, rendering: Rendering) -> dict[str, Any]:
    env = [{"name": name, "value": value} for name, value in sorted(function.env.items())]
    env += [
        {"name": "XDT_FUNCTION", "value": function.name},
        {"name": "XDT_EGRESS_SOCKET", "value": EGRESS_SOCKET},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    # Python functions: one image of the spec's folder for all of them; a command: its own.
    image = rendering.functions_image if function.handler is not None else function.name
    container: dict[str, Any] = {"name": "function", "image": rendering.image(image)}
    if function.handler is not None:
        threads = function.concurrency or RUNTIME_THREADS
        container["args"] = [
            "--handler", function.handler, "--folder", FUNCTION_FOLDER,
            "--socket", RUNTIME_SOCKET, "--socket-group", str(SHARED_GID),
            "--peer-uid", str(SIDECAR_UID), "--threads", str(threads),
            "--outlive", EGRESS_SOCKET,
        ]  # fmt: skip
    else:
        assert function.command is not None
        container["command"] = list(function.command)
        env.append({"name": "PORT", "value": str(FUNCTION_PORT)})
    container["env"] = env
    container["volumeMounts"] = [{"name": "xdt-sockets", "mountPath": SOCKETS}]
    container["securityContext"] = _security(FUNCTION_UID)
    if function.memory_limit is not None:  # a cgroup's bound here, not rlimits
        container["resources"] = {"limits": {"memory": str(function.memory_limit)}}
    return container
