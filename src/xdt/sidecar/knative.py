"""The sidecar on Knative: ``python -m xdt.sidecar --knative``, the serving container of a
function's pod, in front of the function's own container.

::

    pod of Knative Service <function>                     (xdt knative render makes it)
      queue-proxy (Knative's) ──► sidecar :$PORT (8080)  ──unix──► function container
                                   objects :8079 ◄── other pods' sidecars (pull protocol)
      shared emptyDir /var/run/xdt: runtime.sock (the function's), egress.sock (the sidecar's)

What Knative gives it, and what it makes of it:

- ``$PORT`` (8080): its ingress, on every address of the pod; any method and path but
  ``/xdt/…`` is an invocation (Knative's ingress, activator and queue-proxy route and scale);
  ``/xdt/ready`` is the readiness probe, which probes the function.
- ``K_SERVICE``, ``K_REVISION``, ``K_CONFIGURATION``: the function it serves (``K_SERVICE``
  must be the one its configuration names), and the revision its log says it serves.
- The pod's IP: the address sealed into references, found as Kubernetes gives every pod —
  its hostname (the pod's name, also ``$HOSTNAME``) resolves to it in the pod's own
  ``/etc/hosts``. Not the downward API: Knative refuses ``fieldRef`` unless the cluster turns
  on ``kubernetes.podspec-fieldref``. (``$XDT_POD_IP``, ``$XDT_POD_NAME`` and
  ``$XDT_NAMESPACE`` override, for a sidecar run outside a pod.) The object server binds every
  address on :data:`OBJECTS_PORT`.
- The pod's name: the instance's name (S3 keys, logs); the namespace, where other functions'
  service URLs are, is the one the manifests were rendered for.
- Everything else of its :class:`~.config.SidecarConfig` — the transfer mode and settings,
  concurrency, timeouts, the tenant — comes from the spec, rendered as JSON into
  ``$XDT_SIDECAR_CONFIG``; secrets do not: the key ring is a file of a Secret mounted into this
  container only (:data:`KEYRING_FILE`), the Redis URL comes from a Secret as
  ``$XDT_REDIS_URL``, S3 credentials as boto3's own ``AWS_*`` variables.

On SIGTERM (:func:`drained`) it takes no new invocation (503) and fails its probe, and exits
once nothing is in flight and no object it holds is live — pulled, released or expired — or
when ``grace`` (the revision's timeout, which Knative makes the pod's termination grace
period) is nearly over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .._core.errors import ConfigError
from .._core.refs import KeyRing
from .._util.names import netloc
from .config import Faces, KnativeMode, Launch, SidecarConfig

__all__ = [
    "CLUSTER_LOCAL",
    "CONFIG_ENV",
    "EGRESS_SOCKET",
    "FUNCTION_PORT",
    "FUNCTION_UID",
    "GRACE_MARGIN",
    "KEYRING_FILE",
    "OBJECTS_PORT",
    "RUNTIME_SOCKET",
    "SERVING_PORT",
    "SHARED_GID",
    "SIDECAR_UID",
    "SOCKETS",
    "drained",
    "launch_from_env",
    "serving",
]

# -- the pod's contract: xdt knative render and deploy/knative/ use these, and tests hold
#    the three to each other -------------------------------------------------------------------
SERVING_PORT = 8080  # the sidecar's ingress: Knative's $PORT for the serving container
OBJECTS_PORT = 8079  # the pull protocol, between sidecars of any two pods
FUNCTION_PORT = 9000  # a command function's $PORT, on the pod's loopback
SOCKETS = "/var/run/xdt"  # an emptyDir both containers mount
RUNTIME_SOCKET = f"{SOCKETS}/runtime.sock"  # the Python runtime's
EGRESS_SOCKET = f"{SOCKETS}/egress.sock"  # the sidecar's, the SDK's way out
KEYRING_FILE = "/etc/xdt/keyring/keyring"  # the Secret's key "keyring", in the sidecar only
SIDECAR_UID = 10001
FUNCTION_UID = 10002
SHARED_GID = 10000  # both containers' group (runAsGroup): both may use the sockets in SOCKETS
CONFIG_ENV = "XDT_SIDECAR_CONFIG"
POD_IP_ENV = "XDT_POD_IP"
POD_NAME_ENV = "XDT_POD_NAME"
NAMESPACE_ENV = "XDT_NAMESPACE"
REDIS_URL_ENV = "XDT_REDIS_URL"
# Where the sockets and the key ring are, when not where the pod has them (tests run the
# sidecar as a process, not in a pod).
SOCKETS_ENV = "XDT_SOCKETS"
KEYRING_FILE_ENV = "XDT_KEYRING_FILE"
CLUSTER_LOCAL = "http://{function}.{namespace}.svc.cluster.local"  # Knative's own, per function
DRAIN_POLL = 0.1
GRACE_MARGIN = 2.0  # exit this long before the grace period ends: before SIGKILL


def _address_of(pod_name: str) -> str:
    """The pod's IP: what its own name resolves to (kubelet writes it into /etc/hosts)."""
    try:
        return socket.gethostbyname(pod_name)
    except OSError as exc:
        raise ConfigError(
            f"cannot find this pod's IP: its name {pod_name!r} does not resolve ({exc}); set "
            f"${POD_IP_ENV}"
        ) from None


def launch_from_env(env: Mapping[str, str]) -> Launch:
    """The configuration and key ring of a sidecar in a Knative pod, from its environment.
    Raises :class:`~xdt.ConfigError` naming what is missing or wrong."""

    def need(name: str) -> str:
        value = env.get(name)
        if not value:
            raise ConfigError(
                f"${name} is not set: the sidecar runs on Knative (--knative) in a pod that "
                "xdt knative render describes; see docs/knative.md"
            )
        return value

    try:
        config = SidecarConfig.from_json(need(CONFIG_ENV))
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"${CONFIG_ENV} is not a sidecar configuration: {exc}") from None
    service = need("K_SERVICE")
    if service != config.function:
        raise ConfigError(
            f"Knative runs this sidecar as service {service!r}, but its configuration is for "
            f"function {config.function!r}: render the manifests again (xdt knative render)"
        )
    try:
        port = int(env.get("PORT", SERVING_PORT))
    except ValueError:
        raise ConfigError(f"$PORT is not a port number: {env.get('PORT')!r}") from None
    pod_name = env.get(POD_NAME_ENV) or env.get("HOSTNAME") or socket.gethostname()
    pod_ip = env.get(POD_IP_ENV) or _address_of(pod_name)
    sockets = Path(env.get(SOCKETS_ENV, SOCKETS))
    objects_port = config.faces.objects_port or OBJECTS_PORT
    faces = Faces(
        host="::" if ":" in pod_ip else "0.0.0.0",
        ingress_port=port,
        objects_port=objects_port,
        advertise=netloc(pod_ip, objects_port),
        egress_socket=str(sockets / Path(EGRESS_SOCKET).name),
        egress_tcp=False,  # the function reaches it over the shared socket only
    )
    upstream = config.upstream
    if upstream.startswith("unix:"):
        upstream = f"unix:{sockets / Path(upstream.removeprefix('unix:')).name}"
    knative = config.knative or KnativeMode(call_url=CLUSTER_LOCAL)
    namespace = env.get(NAMESPACE_ENV) or knative.namespace
    stores = config.stores
    if env.get(REDIS_URL_ENV):
        stores = dataclasses.replace(stores, redis_url=env[REDIS_URL_ENV])
    config = dataclasses.replace(
        config,
        instance=pod_name,
        faces=faces,
        upstream=upstream,
        stores=stores,
        knative=dataclasses.replace(knative, namespace=namespace),
    )
    keyring_file = Path(env.get(KEYRING_FILE_ENV, KEYRING_FILE))
    try:
        text = keyring_file.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the key ring at {keyring_file} ({exc.strerror}): mount the Secret "
            "(kubectl create secret generic xdt-keyring --from-file=keyring=...)"
        ) from None
    return Launch(config, KeyRing.from_text(text, origin=str(keyring_file)))


def serving(env: Mapping[str, str]) -> str:
    """What the log's first line says: the service, revision and configuration Knative runs
    this sidecar as."""
    service = env.get("K_SERVICE", "?")
    return (
        f"serving {service}, revision {env.get('K_REVISION', '?')} of configuration "
        f"{env.get('K_CONFIGURATION', service)}"
    )


async def drained(
    in_flight: Callable[[], int], live_objects: Callable[[], int], grace: float
) -> bool:
    """Wait until nothing is in flight and no object is live (True), or until ``grace``
    seconds less :data:`GRACE_MARGIN` have passed (False)."""
    deadline = time.monotonic() + max(0.0, grace - GRACE_MARGIN)
    while in_flight() or live_objects():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(DRAIN_POLL)
    return True
