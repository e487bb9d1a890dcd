"""Running `xdt up` as a real process for the platform tests."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from _support.folders import make_readable_folder
from xdt import KeyRing
from xdt._util.procfs import descendants
from xdt.bench import soak_functions
from xdt.testing import LaunchedPlatform

FUNCTIONS = Path(__file__).parent / "functions"


class RunningPlatform(LaunchedPlatform):
    """``xdt up`` as a real subprocess on a free port. Its spec and functions are in
    :attr:`code`, a folder every user can read (as root, functions run under uids of their
    own, and pytest's ``tmp_path`` is under a folder only root may enter); the key ring, and
    ``up.log`` with everything it prints, stay in the private ``folder``."""

    def __init__(self, folder: Path, spec: dict[str, Any], options: Sequence[str] = ()) -> None:
        self.code = make_readable_folder()
        try:
            for source in [*FUNCTIONS.iterdir(), Path(soak_functions.__file__)]:
                if source.suffix == ".py":
                    shutil.copy(source, self.code / source.name)
            self.keyring = KeyRing.generate()
            keys = folder / "keys"
            keys.touch(mode=0o600)
            keys.write_text(self.keyring.to_text())
            spec.setdefault("platform", {})["key_file"] = str(keys)
            (self.code / "xdt.yaml").write_text(yaml.safe_dump(spec))
            self.folder = folder
            super().__init__(
                self.code / "xdt.yaml", folder / "up.log", start_timeout=30, options=options
            )
        except BaseException:
            shutil.rmtree(self.code, ignore_errors=True)
            raise

    def stop(self, timeout: float = 30.0) -> str:
        """Ctrl-C; what it printed. Logs it kept (an instance crashed) are removed."""
        log = super().stop(timeout)
        kept = re.search(r"its logs are kept in (\S+)", log)
        if kept:
            shutil.rmtree(Path(kept.group(1)).parent, ignore_errors=True)
        shutil.rmtree(self.code, ignore_errors=True)
        return log


def fast_autoscaler(**overrides: Any) -> dict[str, Any]:
    """Windows short enough for tests; Knative's proportions otherwise."""
    settings: dict[str, Any] = {
        "stable_window": "3s",
        "panic_window_percentage": 20.0,
        "tick_interval": "250ms",
        "bucket_size": "250ms",
        "scale_to_zero_grace": "1s",
    }
    settings.update(overrides)
    return settings


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def child_named(platform: LaunchedPlatform, name: bytes) -> int:
    """The pid of the platform's descendant whose command line holds ``name``."""
    for pid in descendants(platform.process.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if name in cmdline.read():
                    return pid
        except OSError:
            continue
    raise LookupError(f"no {name!r} among the platform's processes")
