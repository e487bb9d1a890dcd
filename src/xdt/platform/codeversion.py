"""A function's code version: a hash of the code files in its folder.

``xdt status`` shows it for each instance, so that an instance still running older code is
seen, and ``xdt up --watch`` rolls a function whose hash changed. What counts as code:

- files whose suffix is a source or configuration language's (:data:`CODE_SUFFIXES`: ``.py``,
  ``.js``, ``.json``, ``.yaml``, …), and executable files (a ``command:``'s binary);
- not data (``in.bin``, ``up.log``, ``*.csv``: anything else), not the spec file itself (it is
  read once, at start: a change to it takes a restart), not caches or version control.

So writing inputs, outputs or logs into a function's folder neither changes its version nor
makes ``--watch`` roll it. Functions that share a folder share their code, and a version. A
folder whose code is too big to hash quickly says so instead of a hash.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from .spec import FunctionSpec

__all__ = ["CODE_SUFFIXES", "MAX_BYTES", "MAX_FILES", "code_version", "folder_version", "is_code"]

SKIPPED = frozenset({"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache",
                     ".ruff_cache", ".venv", "node_modules"})  # fmt: skip
CODE_SUFFIXES = frozenset(
    {
        # Python, its native modules and packaging
        ".py", ".pyi", ".pyx", ".so", ".pth", ".cfg", ".toml", ".ini", ".lock",
        # other languages a command: may run
        ".js", ".mjs", ".cjs", ".ts", ".rb", ".php", ".pl", ".lua", ".sh", ".go", ".rs",
        ".java", ".jar", ".class", ".wasm", ".r", ".jl",
        # configuration the code reads
        ".json", ".yaml", ".yml", ".env",
    }
)  # fmt: skip
MAX_FILES = 5000  # more code files than this under one function's folder: not hashed
MAX_BYTES = 256 << 20


def code_version(function: FunctionSpec, spec_file: Path | None = None) -> str:
    """The version of ``function``'s code (12 hex digits), "too-big" or "unreadable"."""
    return folder_version(function.folder, skip=spec_file)


def is_code(path: Path, mode: int) -> bool:
    """Whether a regular file of ``mode`` at ``path`` is code (see the module docstring)."""
    return path.suffix.lower() in CODE_SUFFIXES or bool(mode & 0o111)


def folder_version(folder: Path, *, skip: Path | None = None) -> str:
    digest = hashlib.sha256()
    files = total = 0
    skipped = skip.resolve() if skip is not None else None
    try:
        for root, folders, names in os.walk(folder):
            folders[:] = sorted(f for f in folders if f not in SKIPPED)
            for name in sorted(names):
                path = Path(root, name)
                try:
                    info = path.stat()  # through a link: what it points at
                except FileNotFoundError:
                    continue  # gone while we looked, or a broken link
                if not stat.S_ISREG(info.st_mode) or not is_code(path, info.st_mode):
                    continue
                if skipped is not None and path.resolve() == skipped:
                    continue
                files += 1
                total += info.st_size
                if files > MAX_FILES or total > MAX_BYTES:
                    return "too-big"
                digest.update(str(path.relative_to(folder)).encode() + b"\0")
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    except OSError:
        return "unreadable"
    return digest.hexdigest()[:12]
