"""Peer credentials of Unix sockets (``xdt._core.peercred``), with real processes of other uids."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from _support.users import STDLIB_PYTHON
from xdt._core.peercred import PeerCheck, bind_unix, peer_of

OTHER_UID = 2_000_000_000 + 4242  # a uid of the isolation range, held by nobody here
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running as another uid needs root")

CONNECT = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(sys.argv[1])
try:
    sock.sendall(b"hello")
    print(sock.recv(16).decode() or "closed")
except (BrokenPipeError, ConnectionResetError):  # closed before, or with our bytes unread
    print("closed")
"""


def test_peer_of_a_connected_socket_is_the_process_at_the_other_end() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        peer = peer_of(right)
    assert (peer.pid, peer.uid, peer.gid) == (os.getpid(), os.getuid(), os.getgid())


def test_bind_unix_gives_the_socket_file_its_mode_and_group(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    with bind_unix(path, mode=0o660, group=os.getgid()) as listener:
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
        assert info.st_gid == os.getgid() and listener.getsockname() == path
    with bind_unix(path) as again:  # a stale file in the way is replaced
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and again.fileno() >= 0


def _serve_one(listener: socket.socket, check: PeerCheck) -> bool:
    listener.settimeout(30)
    conn, _ = listener.accept()
    with conn:
        admitted = check.admits(conn)
        if admitted:
            conn.recv(16)
            conn.sendall(b"welcome")
        return admitted


@needs_root
def test_a_peer_of_another_uid_is_refused_and_logged(shared_path: Path) -> None:
    path = str(shared_path / "s.sock")
    lines: list[str] = []
    check = PeerCheck({os.getuid()}, "test socket", log=lines.append)
    with bind_unix(path, mode=0o666) as listener:
        client = subprocess.Popen(
            [STDLIB_PYTHON, "-c", CONNECT, path], stdout=subprocess.PIPE, text=True,
            user=OTHER_UID, group=OTHER_UID, extra_groups=[],
        )  # fmt: skip
        assert not _serve_one(listener, check)
        out, _ = client.communicate(timeout=30)
        assert out.strip() == "closed"

        ours = subprocess.Popen(
            [STDLIB_PYTHON, "-c", CONNECT, path], stdout=subprocess.PIPE, text=True
        )
        assert _serve_one(listener, check)
        assert ours.communicate(timeout=30)[0].strip() == "welcome"
    assert check.refused == 1
    (line,) = lines
    assert line.startswith(f"xdt: refused a connection to the test socket from pid {client.pid}")
    assert f"uid {OTHER_UID}: only uid {os.getuid()} may connect" in line


def test_refusals_are_logged_once_a_second_at_most_with_a_count_of_the_rest() -> None:
    lines: list[str] = []
    now = [100.0]
    check = PeerCheck({os.getuid() + 1}, "test socket", log=lines.append, clock=lambda: now[0])

    def refuse() -> None:
        left, right = socket.socketpair(socket.AF_UNIX)
        with left, right:
            assert not check.admits(right)

    for _ in range(3):
        refuse()
    assert len(lines) == 1 and "more refused" not in lines[0]
    now[0] += 0.9
    refuse()
    assert len(lines) == 1
    now[0] += 0.2
    refuse()
    assert len(lines) == 2 and lines[1].endswith("(3 more refused since the last line)")
    assert check.refused == 5
