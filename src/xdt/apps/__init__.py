"""Three real workflows, each runnable in every transfer mode with no change to its code.

==========  ===================================================================================
``vid``     video analytics: streaming → decoder → 6 × recognition (OpenCV), as vSwarm's
``set``     stacking-ensemble training: a driver shares a dataset with 4 trainers
            (scikit-learn), a reducer gathers their predictions, a meta-trainer fits on them
``mr``      MapReduce: 8 mappers, 2 reducers, a real shuffle of references (numpy)
==========  ===================================================================================

Each is a folder a user can copy: ``functions.py`` (plain Python on the public SDK, nothing
else of xdt's), ``xdt.yaml`` (its spec: ``xdt up -f src/xdt/apps/video/xdt.yaml``) and
``app.py`` (its set-up, its order for a given ``scale``, and a checker that computes the right
answer in one process: a wrong answer raises :class:`WrongAnswer`, never counts as a run).
``xdt bench apps`` runs them side by side in all four modes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["APPS", "App", "WrongAnswer", "app_named"]

HERE = Path(__file__).parent


class WrongAnswer(AssertionError):
    """A workflow's answer is not the one the single-process computation gives."""


@dataclass(frozen=True)
class App:
    key: str  # what --apps names
    title: str
    package: str  # its folder under xdt/apps
    entry: str  # the function a run invokes
    prepare: Callable[[Path, float], None]  # set-up in the functions' folder, before the runs
    order: Callable[[float, int], bytes]  # (scale, seed) → the entry's request body
    check: Callable[[Path, bytes, bytes], dict[str, Any]]  # (folder, order, answer) → summary
    in_flight_bytes: Callable[[float], int]  # payload bytes one run moves, about

    @property
    def folder(self) -> Path:
        return HERE / self.package

    def functions(self) -> list[dict[str, Any]]:
        """Its spec's ``functions:`` entries."""
        import yaml

        document = yaml.safe_load((self.folder / "xdt.yaml").read_text())
        functions: list[dict[str, Any]] = document["functions"]
        return functions


def _load() -> dict[str, App]:
    apps = {}
    for package in ("video", "stacking", "mapreduce"):
        app: App = importlib.import_module(f".{package}.app", __name__).APP
        apps[app.key] = app
    return apps


APPS = _load()


def app_named(key: str) -> App:
    try:
        return APPS[key]
    except KeyError:
        raise ValueError(f"no app named {key!r} (known: {', '.join(APPS)})") from None
