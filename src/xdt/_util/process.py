"""Small process helpers shared by the instance manager and the embedded stores."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket

__all__ = ["die_with_parent", "free_port", "isolated_child", "signal_group"]

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """Run in a child between fork and exec (``preexec_fn``). Children get their own session,
    so Ctrl-C reaches only the platform, which stops them in order; if the platform itself
    dies without that chance (SIGKILL), the kernel kills them too: nothing is left behind."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


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


def isolated_child() -> None:
    """``preexec_fn`` for a function under a uid of its own (it runs after the switch to that
    uid, so the parent-death signal, which a change of uid clears, stays set). No new
    privileges: a setuid binary the function runs does not give it any back."""
    die_with_parent()
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
