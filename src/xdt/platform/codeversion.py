"""A function's code version: a hash of the files in its folder.

``xdt status`` shows it for each instance, so that an instance still running older code is
seen, and ``xdt up --watch`` rolls a function whose hash changed. What is hashed is every
regular file under the function's folder, by relative path and content, except caches and
version-control folders; a folder too big to hash quickly says so instead of a hash.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .spec import FunctionSpec

__all__ = ["MAX_FILES", "code_version", "folder_version"]

SKIPPED = frozenset({"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache"})
MAX_FILES = 5000  # more than this under one function's folder: not hashed ("too-big")
MAX_BYTES = 256 << 20


def code_version(function: FunctionSpec) -> str:
    """The version of ``function``'s code (12 hex digits), "too-big" or "unreadable"."""
    return folder_version(function.folder)


def folder_version(folder: Path) -> str:
    digest = hashlib.sha256()
    files = total = 0
    try:
        for root, folders, names in os.walk(folder):
            folders[:] = sorted(f for f in folders if f not in SKIPPED)
            for name in sorted(names):
                path = Path(root, name)
                if not path.is_file() or (path.is_symlink() and not path.resolve().is_file()):
                    continue
                files += 1
                total += path.stat().st_size
                if files > MAX_FILES or total > MAX_BYTES:
                    return "too-big"
                digest.update(str(path.relative_to(folder)).encode() + b"\0")
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    except OSError:
        return "unreadable"
    return digest.hexdigest()[:12]
