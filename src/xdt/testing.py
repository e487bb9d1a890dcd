"""``xdt up`` as a child process: for benchmarks, demos and tests that want the platform in a
process of its own (so that their own event loop does not share its CPU time)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["LaunchedPlatform"]

_URL = re.compile(r"xdt is up at (http://\S+)")


class LaunchedPlatform:
    """Starts ``xdt up -f spec --port 0``; everything it prints goes to ``log_path``.
    :attr:`url` is the gateway. :meth:`stop` sends SIGINT (Ctrl-C) and waits."""

    def __init__(self, spec_path: Path, log_path: Path, *, start_timeout: float = 60.0) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "xdt", "up", "-f", str(spec_path), "--port", "0"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
        self.url = self._wait_for_url(start_timeout)

    def _wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _URL.search(self.log_path.read_text(errors="replace"))
            if match:
                return match.group(1)
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"xdt up exited:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"xdt up did not start in {timeout:g} s:\n{self.log_path.read_text()}")

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        """The platform's ``/status``."""
        with urllib.request.urlopen(f"{self.url}/status", timeout=timeout) as answer:
            status: dict[str, Any] = json.loads(answer.read())
            return status

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until every function has at least one ready instance."""
        deadline = time.monotonic() + timeout
        while not all(f["ready"] >= 1 for f in self.status()["functions"].values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the functions did not become ready in {timeout:g} s")
            time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> str:
        """Stop the platform (as Ctrl-C does); what it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.log_path.read_text(errors="replace")
