"""Child processes: started to die with us, stopped with a grace, and their ports."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
from collections.abc import Callable

__all__ = [
    "become",
    "chain",
    "die_with_parent",
    "free_port",
    "isolated_child",
    "limit_memory",
    "raise_fd_limit",
    "signal_group",
    "stop",
    "terminate",
]

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def raise_fd_limit() -> int:
    """Raise this process's descriptor limit to its hard limit (as Go's runtime does), so
    that the connection caps of its listeners, not the soft limit, are what turns a flood
    away; returns the limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def die_with_parent() -> None:
    """Run in a child between fork and exec (``preexec_fn``). Children get their own session,
    so Ctrl-C reaches only the platform, which stops them in order; if the platform itself
    dies without that chance (SIGKILL), the kernel kills them too: nothing is left behind."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def chain(*steps: Callable[[], None] | None) -> Callable[[], None]:
    """One ``preexec_fn`` that runs ``steps`` in order (e.g. enter a host's network
    namespace, then :func:`die_with_parent`), skipping the ones that are None."""
    given = [step for step in steps if step is not None]

    def run() -> None:
        for step in given:
            step()

    return run


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal a child's whole process group (each leads its own, ``start_new_session``)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def free_port() -> int:
    """A free loopback TCP port. A child that needs its port before it starts (a command's
    $PORT, a store server) races any other binder in between: the price of the contract."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


_PR_SET_NO_NEW_PRIVS = 38


def become(uid: int, gid: int) -> None:
    """In a child between fork and exec: drop to ``uid``:``gid`` with no supplementary
    groups — what subprocess's ``user``/``group``/``extra_groups`` do, as a step of a
    ``preexec_fn`` for when something must run as root first."""
    os.setgroups([])
    os.setregid(gid, gid)
    os.setreuid(uid, uid)


def isolated_child() -> None:
    """``preexec_fn`` for a function under a uid of its own (it runs after the switch to that
    uid, so the parent-death signal, which a change of uid clears, stays set). No new
    privileges: a setuid binary the function runs does not give it any back."""
    die_with_parent()
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


def limit_memory(limit: int) -> None:
    """Bound this process (call it in a child before exec; children inherit it) to ``limit``
    bytes: ``RLIMIT_DATA`` — its heap, anonymous and private writable mappings, thread stacks
    (allocating beyond it fails: ``MemoryError`` in Python) — and ``RLIMIT_FSIZE`` — any one
    file it writes or resizes, a memfd included (beyond it: ``EFBIG``). Memory shared over
    many files, or tmpfs, is beyond what rlimits bound: that takes a cgroup."""
    import resource

    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file too big is an error, not a kill


async def terminate(
    process: asyncio.subprocess.Process,
    *,
    grace: float,
    group: bool = True,
    sig: signal.Signals = signal.SIGTERM,
) -> int:
    """Stop a child: ``sig`` (to its whole process group, each child leading its own), then
    SIGKILL if it has not exited within ``grace`` seconds; with ``group``, whatever of its
    group outlived it is killed too. Its exit code."""

    def send(which: signal.Signals) -> None:
        if group:
            signal_group(process.pid, which)
        elif process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(which)

    if process.returncode is None:
        send(sig)
    try:
        async with asyncio.timeout(grace):
            code = await process.wait()
    except TimeoutError:
        send(signal.SIGKILL)
        code = await process.wait()
    if group:
        signal_group(process.pid, signal.SIGKILL)
    return code


def stop(
    process: subprocess.Popen[bytes] | subprocess.Popen[str],
    *,
    grace: float,
    sig: signal.Signals = signal.SIGTERM,
) -> int:
    """:func:`terminate` for a ``subprocess.Popen`` child (code without an event loop)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
