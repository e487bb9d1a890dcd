"""Folders every user can read, for code that runs under other uids (isolated functions).

pytest's ``tmp_path`` is under ``/tmp/pytest-of-<user>``, which only that user may enter, so a
process of another uid cannot reach anything in it, whatever its own mode.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["make_readable_folder", "readable_folder"]


def make_readable_folder(prefix: str = "xdt-test-") -> Path:
    """A fresh folder in the system's temporary folder, mode 0755; the caller removes it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


@contextmanager
def readable_folder(prefix: str = "xdt-test-") -> Iterator[Path]:
    """:func:`make_readable_folder`, removed afterwards."""
    folder = make_readable_folder(prefix)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
