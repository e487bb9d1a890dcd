"""Reading /proc (``xdt._util.procfs``), against real processes and real memfds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

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


def test_tcp_owner_is_the_uid_of_the_connecting_socket_here() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname()) as client,
    ):
        accepted, peer = listener.accept()
        with accepted:
            us = accepted.getsockname()
            assert procfs.tcp_owner(peer, us) == os.getuid()
            assert procfs.tcp_owner(("127.0.0.1", client.getsockname()[1] ^ 1), us) is None
            assert procfs.tcp_owner(us, peer) == os.getuid()  # our end, the other way


def test_tcp_owner_sees_an_ipv4_client_of_a_dual_stack_listener() -> None:
    try:
        listener = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
    except OSError as exc:
        pytest.skip(f"no IPv6 here: {exc}")
    with listener, socket.create_connection(("127.0.0.1", listener.getsockname()[1])):
        accepted, peer = listener.accept()
        with accepted:
            assert peer[0] == "::ffff:127.0.0.1"
            assert procfs.tcp_owner(peer[:2], accepted.getsockname()[:2]) == os.getuid()


@pytest.mark.skipif(os.geteuid() != 0, reason="connecting as another uid needs root")
def test_tcp_owner_names_another_users_client() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        code = (
            "import socket, sys, time\n"
            f"s = socket.create_connection(('127.0.0.1', {port}))\n"
            "sys.stdout.write('connected\\n'); sys.stdout.flush(); time.sleep(30)\n"
        )
        child = subprocess.Popen(
            ["/usr/bin/python3", "-c", code], user=65534, stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout is not None and child.stdout.readline() == "connected\n"
            accepted, peer = listener.accept()
            with accepted:
                assert procfs.tcp_owner(peer, accepted.getsockname()) == 65534
        finally:
            child.kill()
            child.communicate()
