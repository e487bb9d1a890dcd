"""A sandbox per function process: its own mount and PID namespaces, under its own uid.

With ``platform.sandbox: auto`` (the default) and isolation on, every function process runs
inside bubblewrap (Debian's ``bubblewrap``, which Flatpak uses), started as root:

- its file system holds only what it needs, bound read-only — ``/usr`` and ``/etc`` (and the
  host's ``/bin``, ``/lib``… links into them), the Python xdt runs under, its virtualenv, the
  xdt package, the function's own folder — plus its private folder read-write (``$HOME``,
  ``$TMPDIR``, the runtime's socket), its sidecar's egress socket, a fresh ``/tmp``, ``/dev``
  and a ``/proc`` of its own. No other part of the host's file system is there: other
  functions' code and folders, the platform's run folder and logs, the spec file, ``/root``,
  ``/home``. Paths are the same as outside, so nothing else changes.
- the folders *above* what is bound are the sandbox's own (0755): a checkout, a virtualenv or a
  function folder under a private (0700) folder — a clone in ``/root``, ``mktemp -d`` — works;
- its own PID namespace: it sees only its own processes, and whatever it leaves running dies
  with it (the namespace goes when its first process does);
- then ``setpriv`` drops to the function's uid and gid (no supplementary groups, no new
  privileges, no capabilities): it is that uid outside the sandbox too, not a user-namespace
  mapping of root, which would still own root's files.

Measured here (``xdt bench platform``'s cold start, sandbox on against off): see the README.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SANDBOX_SETTINGS", "Sandbox", "available", "sandbox_wanted"]

SANDBOX_SETTINGS = ("auto", "on", "off")
_SYSTEM = ("/usr", "/etc")
_LINKED = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # links into /usr, or dirs


def available() -> str | None:
    """The bwrap and setpriv programs, if both are installed (bwrap's path)."""
    bwrap, setpriv = shutil.which("bwrap"), shutil.which("setpriv")
    return bwrap if bwrap and setpriv else None


def sandbox_wanted(setting: str, isolated: bool) -> bool:
    """Whether function processes run sandboxed: ``auto`` when isolated and bwrap is there,
    ``on`` always when isolated (an error without bwrap, said by the caller), ``off`` never."""
    if not isolated or setting == "off":
        return False
    return setting == "on" or available() is not None


@dataclass
class Sandbox:
    """The argv prefix that runs a command sandboxed as ``uid``:``gid``."""

    uid: int
    gid: int
    read_only: list[Path] = field(default_factory=list)
    read_write: list[Path] = field(default_factory=list)

    @classmethod
    def for_function(
        cls,
        uid: int,
        gid: int,
        *,
        folder: Path,
        private: Path,
        sockets: Iterable[Path] = (),
        extra: Iterable[Path] = (),
    ) -> Sandbox:
        """What a function process needs: the Python xdt runs under and its packages, the
        function's folder, its private folder and its sidecar's socket(s)."""
        import xdt  # the package's own location, wherever it is installed

        python = {Path(sys.base_prefix), Path(sys.prefix), Path(xdt.__file__).parent.parent}
        read_only = [*python, folder.resolve(), *extra]
        return cls(uid, gid, read_only=read_only, read_write=[private, *sockets])

    def argv(self, command: Sequence[str], *, cwd: Path) -> list[str]:
        bwrap = available()
        if bwrap is None:
            raise FileNotFoundError("bwrap (Debian's bubblewrap) and setpriv are needed")
        setpriv = shutil.which("setpriv") or "setpriv"
        args = [bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--new-session"]
        for system in _SYSTEM:
            args += ["--ro-bind", system, system]
        for name in _LINKED:
            if os.path.islink(name):
                args += ["--symlink", os.readlink(name), name]
            elif os.path.isdir(name):
                args += ["--ro-bind", name, name]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        binds = [(p, "--ro-bind") for p in _outside_system(self.read_only)]
        binds += [(p, "--bind") for p in self.read_write]
        for folder in _folders_above(p for p, _ in binds):
            args += ["--perms", "0755", "--dir", str(folder)]
        for path, how in sorted(binds, key=lambda b: len(b[0].parts)):
            args += [how, str(path), str(path)]
        args += ["--chdir", str(cwd)]
        args += [setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                 "--no-new-privs", "--"]  # fmt: skip
        return [*args, *command]


def _outside_system(paths: Iterable[Path]) -> list[Path]:
    """The paths not already inside a system bind, each once, and none inside another."""
    kept: list[Path] = []
    for path in sorted({Path(os.path.abspath(p)) for p in paths}, key=lambda p: len(p.parts)):
        inside = [*map(Path, _SYSTEM), *kept]
        if not any(path == root or root in path.parents for root in inside):
            kept.append(path)
    return kept


def _folders_above(paths: Iterable[Path]) -> list[Path]:
    """Every folder above ``paths`` that the sandbox must make itself (0755), shallowest
    first; ``/`` and the system binds are already there."""
    folders: set[Path] = set()
    for path in paths:
        for parent in Path(os.path.abspath(path)).parents:
            if parent != Path("/") and str(parent) not in (*_SYSTEM, *_LINKED, "/tmp"):
                folders.add(parent)
    return sorted(folders, key=lambda p: (len(p.parts), str(p)))
