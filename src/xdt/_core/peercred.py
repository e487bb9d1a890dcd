"""Who is at the other end of a Unix socket (``SO_PEERCRED``), and admitting only whom we expect.

The kernel records the credentials of a Unix socket's peer when it connects (or, for a
client, of the listener when it called ``listen``): unlike anything the peer sends, they cannot
be forged. File modes on a socket's path decide who may *try* to connect; this is the check
that counts. For TCP there is no such thing, but the kernel does say which uid owns each
listening socket (:func:`xdt._util.procfs.tcp_listeners`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Peer", "PeerCheck", "bind_unix", "peer_is_us", "peer_of"]

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_LOG_EVERY = 1.0  # seconds: a peer hammering a socket cannot flood the log


class _HasSockopt(Protocol):
    def getsockopt(self, level: int, option: int, buflen: int) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_of(sock: _HasSockopt) -> Peer:
    """The credentials of a connected Unix socket's peer. Raises OSError if it has none."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return Peer(pid, uid, gid)


def peer_is_us(sock: _HasSockopt) -> bool:
    """Whether the peer runs as our own user or root — sidecars and the platform do, isolated
    functions do not. False when the peer left (no credentials)."""
    try:
        return peer_of(sock).uid in (os.geteuid(), 0)
    except OSError:
        return False


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class PeerCheck:
    """Admits connections whose peer runs under one of ``uids``; the others are refused with a
    log line (at most one a second, with the count of those not logged)."""

    def __init__(
        self,
        uids: Iterable[int],
        what: str,
        log: Callable[[str], None] = _stderr,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uids = frozenset(uids)
        self.what = what
        self.log = log
        self.clock = clock
        self.refused = 0
        self._unlogged = 0
        self._logged_at: float | None = None

    def admits(self, sock: _HasSockopt) -> bool:
        try:
            peer = peer_of(sock)
        except OSError:
            peer = None  # no credentials (the peer already left): nothing to admit
        if peer is not None and peer.uid in self.uids:
            return True
        self.refused += 1
        now = self.clock()
        if self._logged_at is not None and now - self._logged_at < _LOG_EVERY:
            self._unlogged += 1
            return False
        who = f"pid {peer.pid} uid {peer.uid}" if peer is not None else "an unknown peer"
        allowed = ", ".join(str(uid) for uid in sorted(self.uids))
        more = f" ({self._unlogged} more refused since the last line)" if self._unlogged else ""
        self.log(f"xdt: refused a connection to the {self.what} from {who}: only uid {allowed} "
                 f"may connect{more}")  # fmt: skip
        self._logged_at, self._unlogged = now, 0
        return False


def bind_unix(
    path: str, *, mode: int = 0o600, group: int | None = None, backlog: int = 1024
) -> socket.socket:
    """A listening Unix socket at ``path`` whose file has ``mode`` (and ``group``): connecting
    needs write permission on it. Bound under a umask that lets nobody in until the mode is
    set, so there is no moment when the socket is more open than asked."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        previous = os.umask(0o177)
        try:
            listener.bind(path)
        finally:
            os.umask(previous)
        if group is not None:
            os.chown(path, -1, group)
        os.chmod(path, mode)
        listener.listen(backlog)
    except BaseException:
        listener.close()
        raise
    listener.setblocking(False)
    return listener
