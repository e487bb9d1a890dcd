"""Reading /proc (``xdt._util.procfs``), against real processes and real memfds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from xdt._core.buffers import Buffer
from xdt._util import procfs

MiB = 1 << 20


def test_a_child_is_a_descendant_with_us_as_its_parent() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert procfs.parent_of(child.pid) == os.getpid()
        assert child.pid in procfs.descendants(os.getpid())
        assert child.pid in set(procfs.pids())
        ids = procfs.ids_of(child.pid)
        assert ids is not None and {os.getuid(), os.getgid()} <= ids
    finally:
        child.kill()
        child.wait()
    assert procfs.ids_of(child.pid) is None  # gone: no answer, no error
    assert procfs.parent_of(child.pid) is None


def test_a_memfd_is_counted_once_however_many_descriptors_hold_it() -> None:
    before = procfs.memfd_bytes([os.getpid()])
    buffer = Buffer(32 * MiB)  # its pages touched (MAP_POPULATE); the mmap holds another fd
    extra = os.dup(buffer.fd)
    try:
        held = procfs.memfd_bytes([os.getpid(), os.getpid()]) - before
        assert 32 * MiB <= held < 33 * MiB
        own = procfs.memory(os.getpid())
        assert own.rss >= own.pss >= own.own > 0
    finally:
        os.close(extra)
        buffer.close()
    assert procfs.memfd_bytes([os.getpid()]) == before


def test_the_memfds_of_another_process_are_counted() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import os, sys, time; fd = os.memfd_create('x'); os.ftruncate(fd, 8 << 20); "
         "os.pwrite(fd, b'x' * (8 << 20), 0); print(flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline()
        assert procfs.memfd_bytes([child.pid]) == 8 * MiB
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_tcp_listeners_names_the_uid_that_listens_on_a_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert procfs.tcp_listeners(port) == [os.getuid()]
    assert procfs.tcp_listeners(port) == []
