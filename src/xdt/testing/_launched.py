"""``xdt up`` as a child process, for tests, benchmarks and demos.

    from xdt.testing import LaunchedPlatform

    platform = LaunchedPlatform(Path("xdt.yaml"), Path("up.log"))
    try:
        platform.wait_ready()
        status, headers, body = platform.invoke("greet", b"world")
    finally:
        platform.stop()

The platform runs in a process of its own, so the caller's event loop does not share its CPU
time, and is driven only through its public faces (the gateway's HTTP API and signals), as a
user would. Everything it prints goes to ``log_path``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from .._util.polling import until_sync
from .._util.process import stop
from ..platform.status import FunctionStatus, PlatformStatus, UsageRecord, UsageReport

_URL = re.compile(r"xdt is up at (http://\S+)")


class LaunchedPlatform:
    """Starts ``xdt up -f spec --port 0``; :attr:`url` is the gateway. :meth:`stop` sends
    SIGINT (Ctrl-C) and waits."""

    def __init__(
        self,
        spec_path: Path,
        log_path: Path,
        *,
        start_timeout: float = 60.0,
        options: Sequence[str] = (),
    ) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "xdt", "up", "-f", str(spec_path), "--port", "0", *options],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
        self.url = self._wait_for_url(start_timeout)

    def _wait_for_url(self, timeout: float) -> str:
        found: list[str] = []

        def started() -> bool:
            match = _URL.search(self.log_path.read_text(errors="replace"))
            if match:
                found.append(match.group(1))
                return True
            if self.process.poll() is not None:
                raise RuntimeError(f"xdt up exited:\n{self.stop()}")
            return False

        if not until_sync(started, timeout=timeout):
            raise RuntimeError(f"xdt up did not start in {timeout:g} s:\n{self.stop()}")
        return found[0]

    # -- asking it ---------------------------------------------------------------------------

    def status(self, timeout: float = 10.0) -> PlatformStatus:
        """The platform's ``/status``."""
        with urllib.request.urlopen(f"{self.url}/status", timeout=timeout) as answer:
            return cast(PlatformStatus, json.loads(answer.read()))

    def usage(self, timeout: float = 30.0) -> dict[str, UsageRecord]:
        """The platform's ``/usage``: what each function used, fresh from every instance."""
        with urllib.request.urlopen(f"{self.url}/usage", timeout=timeout) as answer:
            return cast(UsageReport, json.loads(answer.read()))["functions"]

    def function(self, name: str) -> FunctionStatus:
        """One function's part of ``/status``."""
        return self.status()["functions"][name]

    def invoke(
        self,
        function: str,
        data: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, dict[str, str], bytes]:
        """POST ``data`` to ``function``: (status, headers, body), errors included."""
        url = f"{self.url}/invoke/{function}"
        request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, dict(answer.headers.items()), answer.read()
        except urllib.error.HTTPError as answer:
            return answer.code, dict(answer.headers.items()), answer.read()

    def wait_for(
        self, condition: Callable[[PlatformStatus], bool], timeout: float = 30, what: str = ""
    ) -> PlatformStatus:
        """Poll ``/status`` until ``condition(status)`` holds; the status that satisfied it.
        Raises AssertionError, with the last status, if it does not within ``timeout``."""
        last: list[PlatformStatus] = []

        def holds() -> bool:
            last[:] = [self.status()]
            return condition(last[0])

        if not until_sync(holds, timeout=timeout, interval=0.1):
            raise AssertionError(
                f"timed out waiting for {what or 'a condition'}; last status:\n"
                + json.dumps(last[0], indent=1)[:6000]
            )
        return last[0]

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until every function has at least one ready instance."""
        self.wait_for(
            lambda s: all(f["ready"] >= 1 for f in s["functions"].values()),
            timeout=timeout,
            what="every function to have a ready instance",
        )

    def pids(self) -> list[int]:
        """Every instance's sidecar and function process."""
        found = []
        for function in self.status()["functions"].values():
            for instance in function["instances"]:
                found += [p for p in (instance["sidecar_pid"], instance["function_pid"]) if p]
        return found

    # -- stopping ----------------------------------------------------------------------------

    def stop(self, timeout: float = 30.0) -> str:
        """Stop the platform (as Ctrl-C does; SIGKILL after ``timeout``); what it printed."""
        stop(self.process, grace=timeout, sig=signal.SIGINT)
        self._log.close()
        return self.log_path.read_text(errors="replace")
