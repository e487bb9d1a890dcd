"""Who holds the client's end of a TCP connection (``xdt._util.tcpowner``), against real
sockets: by netlink and by the /proc fallback alike."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable

import pytest

from xdt._util import tcpowner
from xdt._util.tcpowner import Owner, is_local_address, tcp_owner

Lookup = Callable[[tuple[str, int], tuple[str, int]], Owner | None]
LOOKUPS = [pytest.param(tcp_owner, id="netlink"), pytest.param(tcpowner._by_proc, id="proc")]


@pytest.mark.parametrize("lookup", LOOKUPS)
def test_the_owner_of_a_live_client_is_its_uid(lookup: Lookup) -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname()) as client,
    ):
        accepted, peer = listener.accept()
        with accepted:
            us = accepted.getsockname()
            assert lookup(peer, us) == Owner(os.getuid(), True, "established")
            other_port = ("127.0.0.1", client.getsockname()[1] ^ 1)
            assert lookup(other_port, us) is None


@pytest.mark.parametrize("lookup", LOOKUPS)
def test_a_client_that_closed_is_no_ones_whatever_uid_the_kernel_says(lookup: Lookup) -> None:
    """A client that sends and closes at once leaves an orphaned socket, reported as uid 0
    (root): it must not pass for a live root process."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, peer = listener.accept()
        with accepted:
            client.close()  # the client closes first: its end waits in TIME_WAIT
            accepted.recv(1)
            accepted.close()
            deadline = time.monotonic() + 5
            owner = lookup(peer, listener.getsockname())
            while owner is not None and owner.live and time.monotonic() < deadline:
                time.sleep(0.05)
                owner = lookup(peer, listener.getsockname())
            assert owner is not None and not owner.live, owner


def test_an_ipv4_client_of_a_dual_stack_listener_is_found() -> None:
    try:
        listener = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
    except OSError as exc:
        pytest.skip(f"no IPv6 here: {exc}")
    with listener, socket.create_connection(("127.0.0.1", listener.getsockname()[1])):
        accepted, peer = listener.accept()
        with accepted:
            assert peer[0] == "::ffff:127.0.0.1"
            for lookup in (tcp_owner, tcpowner._by_proc):
                owner = lookup(peer[:2], accepted.getsockname()[:2])
                assert owner is not None and owner.uid == os.getuid(), lookup


@pytest.mark.skipif(os.geteuid() != 0, reason="connecting as another uid needs root")
def test_another_users_client_is_named_by_its_uid() -> None:
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
                for lookup in (tcp_owner, tcpowner._by_proc):
                    owner = lookup(peer, accepted.getsockname())
                    assert owner == Owner(65534, True, "established"), lookup
        finally:
            child.kill()
            child.communicate()


def test_local_addresses_are_told_from_remote_ones() -> None:
    assert is_local_address("127.0.0.1") and is_local_address("::1")
    assert is_local_address("::ffff:127.0.0.1")
    assert not is_local_address("198.18.255.254")  # the benchmarking range: not configured here
