"""A Knative pod as processes: the xdt runtime and the sidecar in its Knative mode, given the
environment Knative gives a pod (``$PORT``, ``K_SERVICE``…, the pod's IP and name) and the
configuration ``xdt knative render`` writes for the function. The sockets' folder and the key
ring file stand where the pod's volumes would be."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from _support.platform import FUNCTIONS
from xdt import KeyRing
from xdt._util.polling import until_sync
from xdt._util.process import free_port
from xdt.knative.render import Rendering, sidecar_config
from xdt.platform.spec import parse_spec
from xdt.sidecar.config import KnativeMode

__all__ = ["Pod"]


class Pod:
    """One function's pod. ``call_url``: where its calls go (``{function}`` is filled in);
    ``enter``: a preexec step (a test host's namespace) for both processes."""

    def __init__(
        self,
        folder: Path,
        function: dict[str, Any],
        keyring: KeyRing,
        *,
        platform: dict[str, Any] | None = None,
        pod_ip: str = "127.0.0.1",
        call_url: str = "http://127.0.0.1:1",
        grace: float | None = None,
        enter: Any = None,
    ) -> None:
        self.name = function["name"]
        self.folder = folder / self.name
        self.folder.mkdir(parents=True)
        sockets = self.folder / "sockets"
        sockets.mkdir()
        keys = self.folder / "keyring"
        keys.write_text(keyring.to_text())
        spec = parse_spec({"platform": platform or {}, "functions": [function]}, folder=FUNCTIONS)
        config = sidecar_config(spec, spec.functions[0], Rendering("registry.test"))
        assert config.knative is not None
        self.objects_port = free_port()
        config = dataclasses.replace(
            config,
            faces=dataclasses.replace(config.faces, objects_port=self.objects_port),
            runs_as=None,  # one uid here: the pod's two would be 10001 and 10002
            knative=KnativeMode(
                call_url=call_url, namespace="test", grace=grace or config.knative.grace
            ),
        )
        self.port = free_port()
        self.url = f"http://{pod_ip}:{self.port}"
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "K_SERVICE": self.name,
            "K_REVISION": f"{self.name}-00001",
            "K_CONFIGURATION": self.name,
            "XDT_POD_IP": pod_ip,
            "XDT_POD_NAME": f"{self.name}-00001-deployment-abc12",
            "XDT_NAMESPACE": "test",
            "XDT_SIDECAR_CONFIG": config.to_json(),
            "XDT_SOCKETS": str(sockets),
            "XDT_KEYRING_FILE": str(keys),
        }
        self.log = open(self.folder / "pod.log", "wb")  # noqa: SIM115 - closed by stop()
        common: dict[str, Any] = {"stdout": self.log, "stderr": subprocess.STDOUT}
        if enter is not None:
            common["preexec_fn"] = enter
        if "handler" in function:
            self.function = subprocess.Popen(
                [sys.executable, "-m", "xdt.runtime", "--handler", function["handler"],
                 "--folder", str(FUNCTIONS), "--socket", str(sockets / "runtime.sock"),
                 "--threads", "8", "--outlive", str(sockets / "egress.sock")],
                env={**os.environ, "XDT_EGRESS_SOCKET": str(sockets / "egress.sock")}, **common,
            )  # fmt: skip
        self.sidecar = subprocess.Popen(
            [sys.executable, "-m", "xdt.sidecar", "--knative"], env=self.env, **common
        )
        if not until_sync(lambda: self.ready() == 200, timeout=30, interval=0.05):
            self.stop()
            raise RuntimeError(f"the pod {self.name} did not get ready: {self.output()}")

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(
            self.url + path, data=body or None, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def ready(self) -> int | None:
        with contextlib.suppress(OSError):
            return self.request("GET", "/xdt/ready")[0]
        return None

    def terminate(self) -> None:
        """What Kubernetes does first: SIGTERM to every container of the pod at once."""
        for process in (self.sidecar, getattr(self, "function", None)):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)

    def output(self) -> str:
        self.log.flush()
        return (self.folder / "pod.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in (self.sidecar, getattr(self, "function", None)):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        self.log.close()

    def describe(self) -> dict[str, Any]:
        return json.loads(self.env["XDT_SIDECAR_CONFIG"])
