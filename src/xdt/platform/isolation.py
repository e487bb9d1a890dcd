"""Function isolation: each function's processes under a uid and gid of their own.

With ``platform.isolation: auto`` (the default) and ``xdt up`` running as root, or with
``isolation: on`` (which requires root), every function gets a uid and gid:

- from :data:`UID_BASE` … :data:`UID_BASE` + :data:`UID_SPAN` - 1 (2,000,000,000 …
  2,016,777,215), a range systemd leaves unused: above the container ranges (524,288 …
  1,879,048,191), below its "foreign" range and the sign bit, far from the users a system or
  a directory service hands out; a uid or gid the system knows by name, or that a running
  process holds, is skipped;
- the same for every instance of a function and distinct for every (tenant, function) of the
  platform; drawn afresh for each run (keyed by a random salt), so that two platforms on one
  host do not share a uid because their functions share a name;
- with no supplementary groups, ``PR_SET_NO_NEW_PRIVS`` and umask 077;
- with a private folder per instance (mode 0700, owned by that uid) for ``$HOME`` and
  ``$TMPDIR``, removed when the instance stops.

What that uid is then kept from: the other functions' sidecar sockets (file modes, and
``SO_PEERCRED`` checks in the sidecar and the runtime), their processes (``/proc/<pid>/environ``,
``ptrace``, signals) and the platform's files. The function's folder, its handler and the Python
that runs it must be readable by other users: :func:`check_reachable` says which path is not.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import pwd
import shutil
import signal
import stat
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from .._core.errors import IsolationError, SpecError
from .._util import procfs
from .spec import FunctionSpec, PlatformSpec

__all__ = [
    "UID_BASE",
    "UID_SPAN",
    "Identity",
    "allocate",
    "check_reachable",
    "isolation_wanted",
    "make_private_folder",
    "mapped",
    "remove_private_folder",
    "stop_processes_of",
]

UID_BASE = 2_000_000_000
UID_SPAN = 1 << 24  # 16,777,216 uids: collisions between platforms are improbable, and checked


class Identity(NamedTuple):
    uid: int
    gid: int


def isolation_wanted(platform: PlatformSpec, euid: int | None = None) -> bool:
    """Whether functions run under uids of their own, for a platform run by ``euid`` (ours
    by default). Raises :class:`SpecError` for ``isolation: on`` without root."""
    euid = os.geteuid() if euid is None else euid
    if platform.isolation == "on" and euid != 0:
        raise SpecError(
            f"platform.isolation: on runs each function under a uid of its own, which needs "
            f"root, and xdt up runs as uid {euid}: run it as root, or set isolation: auto "
            "(isolated when root) or off"
        )
    return platform.isolation != "off" and euid == 0


def allocate(
    functions: Sequence[FunctionSpec], *, salt: bytes | None = None
) -> dict[str, Identity]:
    """A distinct uid (and the same gid) per function, by name. Raises
    :class:`IsolationError` when this user namespace cannot run processes under them."""
    salt = os.urandom(16) if salt is None else salt
    for kind in ("uid", "gid"):
        try:
            with open(f"/proc/self/{kind}_map") as table:
                mapping = table.read()
        except OSError:
            continue  # no user namespaces here: every id is usable
        if not mapped(UID_BASE, UID_SPAN, mapping):
            raise IsolationError(
                f"functions run under {kind}s {UID_BASE} … {UID_BASE + UID_SPAN - 1} "
                f"(isolation), which this user namespace does not map (/proc/self/{kind}_map): "
                "run xdt up where they are mapped, or set platform.isolation: off"
            )
    busy = _ids_in_use()
    identities: dict[str, Identity] = {}
    for function in functions:
        digest = hashlib.blake2b(
            f"{function.tenant}\0{function.name}".encode(), key=salt, digest_size=8
        ).digest()
        slot = int.from_bytes(digest, "big") % UID_SPAN
        while UID_BASE + slot in busy or _known(UID_BASE + slot):
            slot = (slot + 1) % UID_SPAN
        uid = UID_BASE + slot
        busy.add(uid)
        identities[function.name] = Identity(uid, uid)
    return identities


def mapped(first: int, count: int, mapping: str) -> bool:
    """Whether ids ``first`` … ``first + count - 1`` all fall in one range of a
    ``/proc/<pid>/uid_map`` (lines: inside, outside, count)."""
    for line in mapping.splitlines():
        inside, _, length = (int(field) for field in line.split())
        if inside <= first and first + count <= inside + length:
            return True
    return False


def _known(id_: int) -> bool:
    """A uid or gid the system has a name for (``/etc/passwd``, ``/etc/group``, NSS)."""
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(id_)
        except KeyError:
            continue
        return True
    return False


def _processes() -> Iterator[tuple[int, set[int]]]:
    """(pid, its uids and gids) of every process still there."""
    for pid in procfs.pids():
        ids = procfs.ids_of(pid)
        if ids is not None:
            yield pid, ids


def _ids_in_use() -> set[int]:
    return {i for _, ids in _processes() for i in ids if UID_BASE <= i < UID_BASE + UID_SPAN}


def stop_processes_of(uids: Iterable[int], *, rounds: int = 20) -> int:
    """SIGKILL every process running under one of ``uids`` (a function's own daemons, which
    left its process group, included); how many. The uids are this platform's alone."""
    wanted = set(uids)
    killed = 0
    for _ in range(rounds):  # again, in case one forked while we looked
        found = [pid for pid, ids in _processes() if ids & wanted]
        if not found:
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed


# -- private folders ---------------------------------------------------------------------------


def make_private_folder(path: Path, identity: Identity) -> tuple[Path, Path]:
    """``path`` with ``home`` and ``tmp`` in it, all mode 0700 and owned by ``identity``;
    (home, tmp). ``path``'s parent must be ours and closed to others (the run folder)."""
    for folder in (path, path / "home", path / "tmp"):
        folder.mkdir(mode=0o700)
        os.chown(folder, identity.uid, identity.gid)
    return path / "home", path / "tmp"


def remove_private_folder(path: Path) -> None:
    # rmtree works on file descriptors here (Linux): a symlink the function left in its folder
    # cannot make us delete anything outside it.
    if not shutil.rmtree.avoids_symlink_attacks:  # a check, not an assert: -O keeps it
        raise RuntimeError("this platform's rmtree can follow symlinks: refusing to remove")
    shutil.rmtree(path, ignore_errors=True)


# -- can the function's uid use its files? -----------------------------------------------------

_R, _W, _X = 4, 2, 1


def check_reachable(function: FunctionSpec, identity: Identity, *, sandboxed: bool = False) -> None:
    """Raises :class:`IsolationError` naming the first path ``function`` needs that its uid
    cannot read (or search, or run), and what to do about it. Judged by mode bits, as the
    kernel does without ACLs. ``sandboxed`` (:mod:`.sandbox`): what is bound into the sandbox
    is reached there without the folders above it, so only the paths themselves, and the
    folders between the function's folder and its files, must let the uid in."""
    folder = function.folder
    # (path, need, what, where the walk starts: the path itself when sandboxed, else "/")
    needs: list[tuple[Path, int, str, Path | None]] = [
        (folder, _R | _X, "its folder", folder if sandboxed else None)
    ]
    inside = folder if sandboxed else None
    if function.handler is not None:
        module = _module_file(folder, function.handler)
        if module is not None:
            needs.append((module, _R, "its handler's module", inside))
        for path, need, what in (
            (Path(sys.executable), _X, "the Python that runs handlers"),
            (Path(os.__file__).parent, _R | _X, "that Python's standard library"),
            (Path(__file__).parent.parent, _R | _X, "the xdt package"),
        ):
            needs.append((path, need, what, path if sandboxed else None))
    else:
        assert function.command is not None
        program = _program(function)
        if program is not None:
            needs.append((program, _X, "its command", command_root(program) if sandboxed else None))
        for argument in function.command[1:]:
            candidate = folder / argument
            if "\0" not in argument and candidate.is_file():
                needs.append((candidate, _R, "a file its command names", inside))
    for path, need, what, root in needs:
        blocked = _blocked(path, identity, need, root)
        if blocked is None:
            continue
        step, mode, owner = blocked
        if what in ("its command", "the Python that runs handlers"):
            raise IsolationError(
                f"functions[{function.name}]: {what}, {path}, cannot be run by the function's "
                f"own uid {identity.uid} (isolation): {step} is mode {mode:04o}, owner uid "
                f"{owner}. Use an interpreter every user can run (e.g. /usr/bin/python3), or "
                "set platform.isolation: off"
            )
        advice = (
            "Let that uid read it (chmod o+rx on the folder, o+r on files)"
            if sandboxed
            else "Let every user read it (chmod o+rx on folders, o+x on the folders above "
            "them, o+r on files), install bubblewrap for a sandbox that needs no folder above "
            "it opened"
        )
        raise IsolationError(
            f"functions[{function.name}]: {what}, {path}, is not readable by the "
            f"function's own uid {identity.uid} (isolation): {step} is mode {mode:04o}, owner "
            f"uid {owner}. {advice}, or set platform.isolation: off"
        )


def command_root(program: Path) -> Path:
    """What of a ``command:``'s program a sandbox binds: its installation (``…/bin/x`` → ``…``),
    so that an interpreter finds its libraries."""
    real = Path(os.path.realpath(program))
    return real.parent.parent if real.parent.name == "bin" else real.parent


def _module_file(folder: Path, handler: str) -> Path | None:
    """Where ``module:function``'s module is, if it is in ``folder``."""
    parts = handler.partition(":")[0].split(".")
    base = folder.joinpath(*parts)
    for candidate in (base.with_name(parts[-1] + ".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _program(function: FunctionSpec) -> Path | None:
    assert function.command is not None
    name = function.command[0]
    if "/" in name:
        return function.folder / name
    path = function.env.get("PATH", os.environ.get("PATH", os.defpath))
    found = shutil.which(name, path=path)
    return Path(found) if found is not None else None


def _blocked(
    path: Path, identity: Identity, need: int, root: Path | None = None
) -> tuple[Path, int, int] | None:
    """The first step to ``path`` that ``identity`` may not take: (that path, its mode, its
    owner). Its folders need search permission, ``path`` itself ``need``. Both the path as
    written and where its symbolic links lead are walked, from ``/`` or from ``root``."""
    written = Path(os.path.abspath(path))
    top = Path(os.path.abspath(root)) if root is not None else None
    for target in dict.fromkeys((written, Path(os.path.realpath(written)))):
        folders = [p for p in reversed(target.parents) if top is None or top in (p, *p.parents)]
        if top is not None and target != written:
            folders = []  # where a link leads, inside the sandbox: only the target itself
        for step, wanted in [*((p, _X) for p in folders), (target, need)]:
            try:
                info = step.stat()
            except OSError:
                return None  # not there: the process's own error will say so
            if not _allows(info, identity, wanted):
                return step, stat.S_IMODE(info.st_mode), info.st_uid
    return None


def _allows(info: os.stat_result, identity: Identity, need: int) -> bool:
    if info.st_uid == identity.uid:
        bits = info.st_mode >> 6
    elif info.st_gid == identity.gid:  # no supplementary groups: this is the only group
        bits = info.st_mode >> 3
    else:
        bits = info.st_mode
    return bits & need == need
