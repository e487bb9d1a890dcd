from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _support.platform import FUNCTIONS, RunningPlatform

# The tests compute expected answers with the same helpers the functions use.
sys.path.insert(0, str(FUNCTIONS))


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
