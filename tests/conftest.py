from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _support.folders import readable_folder
from _support.platform import FUNCTIONS, RunningPlatform
from xdt import KeyRing, ObjectServer, ObjectStore, StoreConfig

SUPPORT = Path(__file__).parent / "_support"

# The tests compute expected answers with the same helpers the functions use.
sys.path.insert(0, str(FUNCTIONS))


@pytest.fixture
def shared_path() -> Iterator[Path]:
    """Like ``tmp_path``, but every user can read it: for processes of other uids."""
    with readable_folder() as folder:
        yield folder


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
async def store() -> AsyncIterator[ObjectStore]:
    store = ObjectStore(StoreConfig(quota_bytes=512 << 20))
    yield store
    store.close()


@pytest.fixture
async def server(store: ObjectStore, keyring: KeyRing) -> AsyncIterator[ObjectServer]:
    async with ObjectServer(store, keyring) as server:
        yield server


class Producer:
    """An object store and server in a separate OS process (tests/_support/producer.py)."""

    def __init__(self, keyring: KeyRing) -> None:
        env = {**os.environ, "XDT_KEYRING": keyring.to_text()}
        self.process = subprocess.Popen(
            [sys.executable, str(SUPPORT / "producer.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.address = self._read()["address"]

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "producer process died"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._read()

    def put(self, size: int, *, pulls: int | None = 1, ttl: float = 60.0) -> tuple[str, str]:
        """Make an object of random bytes there; returns (sealed reference, sha256 hex)."""
        answer = self._ask({"put": size, "pulls": pulls, "ttl": ttl})
        return answer["token"], answer["sha256"]

    def stats(self) -> dict[str, Any]:
        return self._ask({"stats": True})

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process.stdin.close()
        self.process.stdout.close()


@pytest.fixture
def producer(keyring: KeyRing) -> Iterator[Producer]:
    process = Producer(keyring)
    yield process
    process.stop()


@pytest.fixture
def start_platform(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], RunningPlatform]]:
    """Start ``xdt up`` with a spec; stopped (SIGINT) at the end of the test."""
    started: list[RunningPlatform] = []

    def start(spec: dict[str, Any]) -> RunningPlatform:
        folder = tmp_path / f"platform{len(started)}"
        folder.mkdir()
        platform = RunningPlatform(folder, spec)
        started.append(platform)
        return platform

    yield start
    for platform in started:
        platform.stop()
