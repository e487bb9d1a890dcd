"""Running test processes under other uids, wherever the checkout is.

A checkout may sit behind a private (0700) folder — a clone in ``/root``, ``mktemp -d`` — where
no other uid can reach its virtualenv. Scripts that need only the standard library run on
:data:`STDLIB_PYTHON`, the interpreter the virtualenv links to (every user can run it: see
tools/pick-python); what needs xdt itself runs in the platform's sandbox (:func:`as_user`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from xdt.platform.sandbox import Sandbox, available

__all__ = ["STDLIB_PYTHON", "as_user", "venv_reachable_by_others"]

STDLIB_PYTHON = os.path.realpath(sys.executable)


def venv_reachable_by_others() -> bool:
    """Whether other uids can reach this checkout's virtualenv (no private folder above)."""
    path = Path(sys.prefix)
    return all(os.stat(p).st_mode & 0o001 for p in [*path.parents, path])


def as_user(
    uid: int, argv: Sequence[str], *, cwd: Path, writable: Sequence[Path] = ()
) -> list[str]:
    """``argv`` as it runs under ``uid`` with xdt importable: in the sandbox when bwrap is
    there, else as it is (the caller runs it with ``user=uid``), or a skip saying why not."""
    if available() is not None:
        sandbox = Sandbox(uid, uid, read_only=[Path(sys.prefix), _xdt_root(), cwd],
                          read_write=list(writable))  # fmt: skip
        return sandbox.argv(argv, cwd=cwd)
    if not venv_reachable_by_others():
        pytest.skip("this checkout's venv is behind a private folder and bwrap is missing")
    return list(argv)


def _xdt_root() -> Path:
    import xdt

    return Path(xdt.__file__).parent.parent
