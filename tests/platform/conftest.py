from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _support.platform import RunningPlatform


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
