"""The object server and pull client, with real sockets and, where the point is a process
boundary, a real producer process (tests/_support/producer.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest

import xdt
from _support.users import STDLIB_PYTHON
from _support.waiting import eventually
from xdt import (
    ClientConfig,
    KeyRing,
    ObjectServer,
    ObjectStore,
    PullClient,
    Reference,
    ServerConfig,
)
from xdt._util.loops import run
from xdt.pull.frames import (
    FrameReader,
    FrameType,
    ObjectHeader,
    PullRequest,
    decode_error,
    encode_done,
    encode_object,
    encode_pull,
    read_frame,
)

TCP = ClientConfig(local=False)
LOCAL = ClientConfig(local=True)
SIZES = [0, 1, 64 << 10, 16 << 20, 256 << 20]


def sha256(view: memoryview) -> str:
    return hashlib.sha256(view).hexdigest()


# -- round trips across two OS processes -------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=xdt._util.units.format_size)
@pytest.mark.parametrize("path", ["tcp", "local"])
async def test_round_trip_across_processes(
    producer: Any, keyring: KeyRing, size: int, path: str
) -> None:
    token, digest = producer.put(size)
    async with PullClient(keyring, TCP if path == "tcp" else LOCAL) as client:
        with await client.pull(token) as pulled:
            assert pulled.size == size
            assert sha256(pulled.view()) == digest
            # Big objects on the same host travel as a sealed memfd; small ones stream.
            assert pulled.via == path
    await eventually(lambda: producer.stats()["store"]["pulls"] == 1)
    stats = producer.stats()
    assert stats["store"]["objects"] == 0  # a budget of one: freed once pulled
    if path == "local" and size >= ServerConfig().fd_threshold:
        assert stats["server"]["pulls_local"] == 1
        assert client.stats.bytes_received == 0  # no byte crossed a socket
    else:
        assert stats["server"]["bytes_sent"] == size


async def test_memfd_path_after_tcp_pulls_of_the_same_object(
    producer: Any, keyring: KeyRing
) -> None:
    """Regression: with sendfile on the TCP path, the pages stayed referenced by socket buffers
    and sealing for a later same-host pull stalled ~150 ms, then fell back to streaming."""
    async with PullClient(keyring, TCP) as tcp, PullClient(keyring, LOCAL) as local:
        for _ in range(5):
            token, digest = producer.put(1 << 20, pulls=None)
            for _ in range(3):
                with await tcp.pull(token) as pulled:
                    assert sha256(pulled.view()) == digest
            with await local.pull(token) as pulled:
                assert sha256(pulled.view()) == digest
    assert local.stats.pulls_local == 5
    assert local.stats.bytes_received == 0  # every one came as a memfd, none streamed
    await eventually(lambda: producer.stats()["server"]["pulls_local"] == 5)


def test_round_trip_on_uvloop(producer: Any, keyring: KeyRing) -> None:
    tokens = [producer.put(size) for size in (1 << 10, 4 << 20)]

    async def pull_all() -> list[str]:
        async with PullClient(keyring, TCP) as client:
            digests = []
            for token, _ in tokens:
                with await client.pull(token) as pulled:
                    digests.append(sha256(pulled.view()))
            return digests

    assert run(pull_all(), "uvloop") == [digest for _, digest in tokens]


# -- many pulls at once ------------------------------------------------------------------------


async def test_many_concurrent_pulls_from_one_source(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    data = os.urandom(3 << 20)
    token = server.seal(await store.put(data, pulls=None))  # broadcast: unlimited until expiry
    async with PullClient(keyring, TCP) as client:

        async def one() -> bytes:
            with await client.pull(token) as pulled:
                return pulled.tobytes()

        results = await asyncio.gather(*(one() for _ in range(32)))
    assert all(result == data for result in results)
    await eventually(lambda: store.stats.pulls == 32)
    # Bounded: never more connections than the per-source limit.
    assert client.stats.connections_opened <= TCP.max_connections_per_source


async def test_concurrent_pulls_from_many_sources(keyring: KeyRing) -> None:
    stores = [ObjectStore() for _ in range(4)]
    servers = [ObjectServer(store, keyring) for store in stores]
    for server in servers:
        await server.start()
    try:
        payloads = [os.urandom((i + 1) << 18) for i in range(4)]
        tokens = [
            server.seal(await store.put(data))
            for server, store, data in zip(servers, stores, payloads, strict=True)
        ]
        async with PullClient(keyring, LOCAL) as client:

            async def one(token: str) -> bytes:
                with await client.pull(token) as pulled:
                    return pulled.tobytes()

            assert await asyncio.gather(*map(one, tokens)) == payloads
    finally:
        for server, store in zip(servers, stores, strict=True):
            await server.close()
            store.close()


async def test_budget_of_one_pulled_concurrently_succeeds_once(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    token = server.seal(await store.put(os.urandom(8 << 20), pulls=1))
    async with PullClient(keyring, TCP) as first, PullClient(keyring, TCP) as second:
        results = await asyncio.gather(
            first.pull(token), second.pull(token), return_exceptions=True
        )
    successes = [r for r in results if isinstance(r, xdt.Pulled)]
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(successes) == 1 and len(failures) == 1
    assert isinstance(failures[0], xdt.PullBudgetExhausted)
    successes[0].release()


# -- bad references: typed errors, and the server keeps serving --------------------------------


async def raw_pull(
    address: str, token: str, tenant: str = "default", *, keyring: KeyRing | None = None
) -> tuple[FrameType, bytes]:
    """Send one PULL straight to the server (no client-side checks), with the proof a sidecar
    holding ``keyring`` would make (none can be made without one: sixteen zeros); return the
    server's first frame."""
    loop = asyncio.get_running_loop()
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setblocking(False)
    try:
        proof = bytes(16)
        if keyring is not None:
            with contextlib.suppress(xdt.ReferenceRejected):
                proof = keyring.pull_proof(token, tenant)
        request = PullRequest(token=token, tenant=tenant, proof=proof)
        await loop.sock_sendall(sock, encode_pull(request))
        frame = await read_frame(loop, sock, FrameReader())
        assert frame is not None, "server closed without answering"
        return frame
    finally:
        sock.close()


async def assert_still_serving(store: ObjectStore, server: ObjectServer, keyring: KeyRing) -> None:
    data = os.urandom(100_000)
    token = server.seal(await store.put(data))
    async with PullClient(keyring, TCP) as client:
        with await client.pull(token) as pulled:
            assert pulled.tobytes() == data


def flip_char(token: str, index: int) -> str:
    replacement = "A" if token[index] != "A" else "B"
    return token[:index] + replacement + token[index + 1 :]


@pytest.mark.parametrize("where", [0, 5, 30, 60, -1])
async def test_altered_reference_is_rejected_by_client_and_server(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing, where: int
) -> None:
    token = server.seal(await store.put(b"secret"))
    altered = flip_char(token, where if where >= 0 else len(token) - 1)
    async with PullClient(keyring, TCP) as client:
        with pytest.raises(xdt.ReferenceRejected):
            await client.pull(altered)
    kind, payload = await raw_pull(server.address, altered, keyring=keyring)
    assert kind is FrameType.ERROR
    code, message = decode_error(payload)
    assert code in ("reference_tampered", "reference_malformed", "pull_refused")
    assert message
    assert len(store) == 1  # the real object is untouched
    await assert_still_serving(store, server, keyring)


async def test_truncated_reference(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    token = server.seal(await store.put(b"x"))
    async with PullClient(keyring, TCP) as client:
        for cut in (1, 10, len(token) // 2, len(token) - 1):
            with pytest.raises(xdt.ReferenceRejected, match=r"truncated|base64url|altered"):
                await client.pull(token[:cut])
    kind, _ = await raw_pull(server.address, token[: len(token) // 2], keyring=keyring)
    assert kind is FrameType.ERROR
    await assert_still_serving(store, server, keyring)


async def test_reference_from_another_key_ring(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    obj = await store.put(b"data")
    foreign = KeyRing.generate().seal(obj.reference(server.address))
    async with PullClient(keyring, TCP) as client:
        with pytest.raises(xdt.ReferenceTampered, match="does not hold"):
            await client.pull(foreign)
    kind, payload = await raw_pull(server.address, foreign, keyring=keyring)
    assert kind is FrameType.ERROR
    assert decode_error(payload)[0] == "pull_refused"  # no proof can be made for it
    await assert_still_serving(store, server, keyring)


async def test_expired_reference(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    token = server.seal(await store.put(b"short-lived", ttl=0.2))
    await asyncio.sleep(0.3)
    async with PullClient(keyring, TCP) as client:
        with pytest.raises(xdt.ReferenceExpired, match="expired"):
            await client.pull(token)
    kind, payload = await raw_pull(server.address, token, keyring=keyring)
    assert kind is FrameType.ERROR
    assert decode_error(payload)[0] == "reference_expired"
    assert store.stats.expiries == 1 and store.stats.bytes_held == 0


async def test_another_tenants_reference(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    token = server.seal(await store.put(b"tenant a's data", tenant="a"))
    async with PullClient(keyring, TCP, tenant="b") as client:
        with pytest.raises(xdt.WrongTenant, match="another tenant than 'b'") as refused:
            await client.pull(token)
    assert "'a'" not in str(refused.value)  # whoever presents it does not learn whose it is
    kind, payload = await raw_pull(server.address, token, tenant="b", keyring=keyring)
    assert kind is FrameType.ERROR
    code, message = decode_error(payload)
    assert code == "wrong_tenant" and "'a'" not in message
    async with PullClient(keyring, TCP, tenant="a") as owner:
        with await owner.pull(token) as pulled:
            assert pulled.tobytes() == b"tenant a's data"


async def test_budget_of_one_pulled_twice(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    token = server.seal(await store.put(b"once", pulls=1))
    async with PullClient(keyring, TCP) as client:
        (await client.pull(token)).release()
        with pytest.raises(xdt.PullBudgetExhausted, match="every pull"):
            await client.pull(token)
        await assert_still_serving(store, server, keyring)


async def test_unknown_object(store: ObjectStore, server: ObjectServer, keyring: KeyRing) -> None:
    ghost = Reference(
        object_id=os.urandom(16),
        source=server.address,
        size=10,
        checksum=0,
        expires_at=time.time() + 60,
    )
    async with PullClient(keyring, TCP) as client:
        with pytest.raises(xdt.ObjectNotFound, match="not held here"):
            await client.pull(keyring.seal(ghost))
    await assert_still_serving(store, server, keyring)


@pytest.mark.parametrize(
    "garbage",
    [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00" * 64, b"XD\x01\x01\xff\xff\xff\xff", b"XD"],
    ids=["http", "zeros", "huge-length", "half-header"],
)
async def test_garbage_on_the_server_port(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing, garbage: bytes
) -> None:
    host, port = server.address.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    with socket.create_connection((host, int(port))) as sock:
        sock.setblocking(False)
        await loop.sock_sendall(sock, garbage)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        async with asyncio.timeout(10):
            while chunk := await loop.sock_recv(sock, 4096):
                answer += chunk
    # Either a coded ERROR frame or a plain close; never a hang, never a crash.
    if answer:
        reader = FrameReader()
        reader.space()[: len(answer)] = answer
        reader.advance(len(answer))
        frame = reader.next_frame()
        assert frame is not None and frame[0] is FrameType.ERROR
    await assert_still_serving(store, server, keyring)


async def test_receiver_disconnects_mid_stream(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    data = os.urandom(64 << 20)
    token = server.seal(await store.put(data, pulls=1))
    host, port = server.address.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    sock = socket.create_connection((host, int(port)))
    sock.setblocking(False)
    proof = keyring.pull_proof(token, "default")
    await loop.sock_sendall(
        sock, encode_pull(PullRequest(token=token, tenant="default", proof=proof))
    )
    received = 0
    while received < 1 << 20:
        received += len(await loop.sock_recv(sock, 65536))
    sock.close()  # gone, mid-object
    for _ in range(100):  # the server notices the reset and gives the pull back
        if store.stats.rejects == 0 and all(o.readers == 0 for o in store._objects.values()):
            break
        await asyncio.sleep(0.01)
    assert store.stats.pulls == 0
    async with PullClient(keyring, TCP) as client:
        with await client.pull(token) as pulled:
            assert pulled.tobytes() == data
    await eventually(lambda: store.stats.pulls == 1)


def memfds_named(name: str) -> int:
    """How many memfds of that name this process holds open."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor listdir itself used
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(f"/memfd:{name}")
    return count


async def test_source_killed_mid_stream(producer: Any, keyring: KeyRing) -> None:
    token, _ = producer.put(256 << 20)
    # 256 MiB take ~0.1 s to stream; the kill lands within a millisecond of the first bytes.
    before = memfds_named("xdt-pulled")
    async with PullClient(keyring, TCP) as client:
        pull = asyncio.ensure_future(client.pull(token))
        deadline = time.monotonic() + 20
        while client.stats.bytes_received == 0 and not pull.done():
            assert time.monotonic() < deadline, "pull never started"
            await asyncio.sleep(0)
        producer.kill()
        with pytest.raises((xdt.SourceUnavailable, xdt.TransferCorrupted)) as caught:
            await pull
        # The partial buffer is held by nothing: it went back to the pool, idle (kept warm
        # for the next pull of that size, unless the host is short of memory).
        assert client.pool.idle_bytes in (0, 256 << 20)
        assert client.pool.stats.reused + client.pool.stats.created == 1
        assert "nothing was delivered" in str(caught.value) or isinstance(
            caught.value, xdt.TransferCorrupted
        )
        # The next pull of anything from that source fails fast, typed.
        with pytest.raises(xdt.SourceUnavailable):
            await client.pull(token)
    assert memfds_named("xdt-pulled") == before  # and closing the client gave it back


async def test_source_that_is_not_there(keyring: KeyRing) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{placeholder.getsockname()[1]}"  # bound, not listening
        token = keyring.seal(
            Reference(
                object_id=os.urandom(16),
                source=address,
                size=1,
                checksum=0,
                expires_at=time.time() + 60,
            )
        )
        async with PullClient(keyring, LOCAL) as client:
            started = time.monotonic()
            with pytest.raises(xdt.SourceUnavailable, match="cannot reach"):
                await client.pull(token)
            assert time.monotonic() - started < LOCAL.connect_timeout + 1


async def test_pooled_connection_closed_by_server_is_retried(
    store: ObjectStore, keyring: KeyRing
) -> None:
    config = ServerConfig(idle_timeout=0.2)
    async with ObjectServer(store, keyring, config) as server, PullClient(keyring, TCP) as client:
        for _ in range(2):
            data = os.urandom(1000)
            with await client.pull(server.seal(await store.put(data))) as pulled:
                assert pulled.tobytes() == data
            await asyncio.sleep(0.4)  # the server drops the idle connection
        assert client.stats.connections_opened == 2
        assert client.stats.failures == 0


async def test_stale_pooled_connections_are_all_replaced_at_once(
    store: ObjectStore, keyring: KeyRing
) -> None:
    """Several pooled connections, all closed by the server while idle: the next pulls take
    fresh ones instead of failing on one stale connection after another."""
    config = ServerConfig(idle_timeout=0.2)
    async with ObjectServer(store, keyring, config) as server, PullClient(keyring, TCP) as client:
        tokens = [server.seal(await store.put(os.urandom(1000))) for _ in range(4)]
        for pulled in await asyncio.gather(*(client.pull(t) for t in tokens)):
            pulled.release()
        opened = client.stats.connections_opened
        assert opened == 4
        await asyncio.sleep(0.4)  # the server drops every idle connection
        for _ in range(4):
            with await client.pull(server.seal(await store.put(b"again"))) as pulled:
                assert pulled.tobytes() == b"again"
        assert client.stats.failures == 0
        assert client.stats.connections_opened == opened + 1


async def test_a_connection_idle_past_the_clients_timeout_is_not_reused(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    async with PullClient(keyring, ClientConfig(local=False, idle_timeout=0.1)) as client:
        for _ in range(2):
            with await client.pull(server.seal(await store.put(b"x" * 100))):
                pass
            await asyncio.sleep(0.2)
        assert client.stats.connections_opened == 2 and client.stats.failures == 0


async def _silent_connection(server: ObjectServer) -> socket.socket:
    host, port = server.address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setblocking(False)
    return sock


async def test_a_flood_of_silent_connections_cannot_keep_sidecars_out(
    store: ObjectStore, keyring: KeyRing
) -> None:
    """Connections that never send a PULL fill only the unproven cap, whose oldest are
    dropped for newer ones: a sidecar connecting in the middle of the flood still pulls."""
    config = ServerConfig(max_unproven=8, handshake_timeout=30)
    async with ObjectServer(store, keyring, config) as server, PullClient(keyring, TCP) as client:
        flood = [await _silent_connection(server) for _ in range(40)]
        try:
            data = os.urandom(1000)
            with await client.pull(server.seal(await store.put(data))) as pulled:
                assert pulled.tobytes() == data
            flood += [await _silent_connection(server) for _ in range(40)]
            await eventually(lambda: server.stats.dropped_unproven >= 80 - 8)
            assert server.stats.unproven <= 8 and server.stats.connections == 1
            # The sidecar's proven connection is kept, pooled, and serves the next pull too.
            with await client.pull(server.seal(await store.put(data))) as pulled:
                assert pulled.tobytes() == data
            assert client.stats.connections_opened == 1
        finally:
            for sock in flood:
                sock.close()


async def test_a_connection_that_sends_no_pull_is_closed_after_the_handshake_timeout(
    store: ObjectStore, keyring: KeyRing
) -> None:
    async with ObjectServer(store, keyring, ServerConfig(handshake_timeout=0.2)) as server:
        sock = await _silent_connection(server)
        try:
            async with asyncio.timeout(5):
                assert await asyncio.get_running_loop().sock_recv(sock, 10) == b""
        finally:
            sock.close()
        await eventually(lambda: server.stats.unproven == 0)


async def test_a_refused_pull_ends_the_connection(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    """Bad PULLs pipelined on one connection: the first is answered, then it is closed."""
    token = server.seal(await store.put(b"secret"))
    bad = encode_pull(PullRequest(token=token, tenant="default", proof=bytes(16)))
    loop = asyncio.get_running_loop()
    sock = await _silent_connection(server)
    try:
        await loop.sock_sendall(sock, bad * 20)
        reader = FrameReader(1 << 20)
        async with asyncio.timeout(5):
            frame = await read_frame(loop, sock, reader)
            assert frame is not None and decode_error(frame[1])[0] == "pull_refused"
            # Closed, not 19 more answers (reset: our unread PULLs were discarded).
            with contextlib.suppress(ConnectionResetError):
                assert await read_frame(loop, sock, reader) is None
    finally:
        sock.close()
    assert server.stats.refused == 1


async def test_nothing_leaks_after_pulls(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    async with PullClient(keyring, LOCAL) as client:
        for size in (10, 1 << 20):
            with await client.pull(server.seal(await store.put(os.urandom(size)))):
                pass
        # The streamed object's buffer is back in the client's pool, ready for reuse.
        assert client.pool.idle_bytes > 0
    await eventually(lambda: store.stats.pulls == 2)
    assert store.stats.objects == 0 and store.stats.bytes_held == 0


async def test_corrupted_bytes_are_never_delivered(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    data = os.urandom(200_000)
    obj = await store.put(data, pulls=2)
    token = server.seal(obj)
    # Simulate a bit flipped in the source's memory or on the wire after the checksum was taken.
    obj.buffer.writable()[123_456] ^= 0x01
    async with PullClient(keyring, TCP) as client:
        with pytest.raises(xdt.TransferCorrupted, match="wrong checksum"):
            await client.pull(token)
        assert client.pool.idle_bytes > 0  # the received buffer went back unread
    obj.buffer.writable()[123_456] ^= 0x01  # repaired: the pull was never counted
    async with PullClient(keyring, TCP) as client:
        with await client.pull(token) as pulled:
            assert pulled.tobytes() == data
    await eventually(lambda: store.stats.pulls == 1)


async def test_source_offering_the_wrong_size_is_refused(keyring: KeyRing) -> None:
    """A peer on the source address that answers with an object of another length."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    address = f"127.0.0.1:{listener.getsockname()[1]}"

    async def impostor() -> None:
        conn, _ = await loop.sock_accept(listener)
        with conn:
            conn.setblocking(False)
            await read_frame(loop, conn, FrameReader())
            await loop.sock_sendall(conn, encode_object(ObjectHeader(size=3)) + b"abc")
            await read_frame(loop, conn, FrameReader())  # until the client hangs up

    serving = asyncio.ensure_future(impostor())
    token = keyring.seal(
        Reference(
            object_id=os.urandom(16),
            source=address,
            size=10,
            checksum=0,
            expires_at=time.time() + 60,
        )
    )
    try:
        async with PullClient(keyring, TCP) as client:
            with pytest.raises(xdt.TransferCorrupted, match="offers 3 bytes"):
                await client.pull(token)
        await asyncio.wait_for(serving, 5)
    finally:
        listener.close()


# -- same-host memory goes only to sidecars ----------------------------------------------------


async def pull_locally(
    server: ObjectServer, request: PullRequest, *, confirm: bool = True
) -> tuple[ObjectHeader, int]:
    """One raw PULL on the server's abstract Unix socket: the OBJECT header and how many
    descriptors came with it (closed here), after reading any streamed bytes and saying DONE
    (or, with ``confirm=False``, leaving without a word once the header came)."""
    from xdt.pull.frames import decode_object, encode_done
    from xdt.pull.server import local_name

    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    fds: list[int] = []
    try:
        await loop.sock_connect(sock, local_name(server.address))
        await loop.sock_sendall(sock, encode_pull(request))
        reader = FrameReader(1 << 20)
        frame = await read_frame(loop, sock, reader, fds)
        assert frame is not None and frame[0] is FrameType.OBJECT, frame
        header = decode_object(frame[1])
        if not confirm:
            return header, len(fds)
        if not header.fd_attached:
            got = reader.buffered
            while got < header.size:
                got += len(await loop.sock_recv(sock, 1 << 20))
        await loop.sock_sendall(sock, encode_done())
        return header, len(fds)
    finally:
        for fd in fds:
            os.close(fd)
        sock.close()


async def test_a_sidecars_local_pull_borrows_the_buffer_and_keeps_a_copy(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    """A sidecar's pull is lent the source's warm buffer and copies it: the buffer goes back to
    the pool for the next object (no fresh pages), and what was pulled does not change."""
    first, second = b"\x01" * (4 << 20), b"\x02" * (4 << 20)
    async with PullClient(keyring, LOCAL) as client:
        with await client.pull(server.seal(await store.put(first))) as pulled:
            await eventually(lambda: store.stats.objects == 0)
            reused = store.pool.reused
            token = server.seal(await store.put(second))  # into the buffer just lent
            assert store.pool.reused == reused + 1
            assert pulled.view() == first
        with await client.pull(token) as again:
            assert again.view() == second
    assert client.stats.bytes_received == 0  # neither crossed the socket
    await eventually(lambda: server.stats.pulls_local == 2)


async def test_a_sidecars_pull_of_a_sealed_object_is_given(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    """An object that is a local function's sealed memfd may be kept by anyone: it is given."""
    from xdt._core.buffers import sealed_buffer

    data = os.urandom(1 << 20)
    token = server.seal(await store.adopt(sealed_buffer(data)))
    request = PullRequest(
        token=token, tenant="default", proof=keyring.pull_proof(token, "default"), want_fd=True
    )
    header, descriptors = await pull_locally(server, request)
    assert (header.fd_attached, header.fd_lent, descriptors) == (True, False, 1)


async def test_a_makers_checksum_is_taken_and_a_wrong_one_fails_only_its_transfers(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    """A function's sealed memfd carries the checksum its SDK computed; the sidecar takes it
    rather than faulting every page in to hash them. A lying function only breaks its own
    object: a pull that checks (over TCP) refuses the bytes."""
    from xdt._core.buffers import sealed_buffer
    from xdt._core.checksum import checksum

    data = os.urandom(1 << 20)
    honest = sealed_buffer(data)
    assert (await store.adopt(honest)).checksum == checksum(data)
    liar = sealed_buffer(data)
    liar.checksum = checksum(data) ^ 1
    token = server.seal(await store.adopt(liar))
    async with PullClient(keyring, TCP) as client:
        with pytest.raises(xdt.TransferCorrupted, match="wrong checksum"):
            await client.pull(token)
    await assert_still_serving(store, server, keyring)


async def test_a_lent_buffer_never_confirmed_is_never_reused(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    """A receiver that was lent the buffer and left without DONE may still be copying it: the
    buffer is not handed to a later object, even once this one is gone."""
    obj = await store.put(os.urandom(1 << 20), pulls=None)
    token = server.seal(obj)
    request = PullRequest(
        token=token, tenant="default", proof=keyring.pull_proof(token, "default"), want_fd=True
    )
    header, descriptors = await pull_locally(server, request, confirm=False)
    assert header.fd_lent and descriptors == 1  # lent, and gone without DONE
    await eventually(lambda: all(o.readers == 0 for o in store._objects.values()))
    assert obj.buffer.retired
    assert store.release(obj.id)
    reused = store.pool.reused
    await store.put(os.urandom(1 << 20))
    assert store.pool.reused == reused  # a new buffer, not the one still out there


async def test_a_proof_replayed_by_another_user_is_not_lent_memory(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    """Even a valid proof, replayed by a process of another user (an isolated function),
    gets the bytes streamed: the server lends only to peers of its own user or root."""
    import subprocess

    from xdt.pull.server import local_name

    if os.geteuid() != 0:
        pytest.skip("needs root to run the peer under another uid")
    token = server.seal(await store.put(os.urandom(1 << 20)))
    request = PullRequest(
        token=token, tenant="default", proof=keyring.pull_proof(token, "default"), want_fd=True
    )
    peer = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "s.connect(bytes.fromhex(sys.argv[1])); s.sendall(bytes.fromhex(sys.argv[2]))\n"
        "data, fds, _, _ = socket.recv_fds(s, 64, 4)\n"
        "print(len(fds))\n"
    )
    answer = await asyncio.to_thread(
        subprocess.run,
        [STDLIB_PYTHON, "-c", peer, _name_hex(local_name(server.address)),
         encode_pull(request).hex()],
        capture_output=True, text=True, timeout=30, user=65534, group=65534, extra_groups=[],
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "0"  # no descriptor: streamed


def _name_hex(name: str | bytes) -> str:
    """An abstract socket name (it starts with NUL) as hex, to pass on a command line."""
    return (name.encode() if isinstance(name, str) else name).hex()


# -- only sidecars pull: the attacks that broke before proofs ------------------------------------


@pytest.mark.parametrize("proof", ["none", "forged", "other key ring", "another tenant's"])
@pytest.mark.parametrize("path", ["tcp", "local"])
async def test_a_pull_without_a_sidecars_proof_gets_nothing(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing, proof: str, path: str
) -> None:
    """The cross-tenant read: a process that holds a reference of tenant 'bank' (a function of
    another tenant, handed it; an outside client) and speaks the protocol itself, naming 'bank'
    as its tenant. Without the key ring it cannot make the proof, and gets nothing at all."""
    data = os.urandom(300 << 10)
    token = server.seal(await store.put(data, tenant="bank"))
    other = KeyRing.generate()  # a well-made proof, by a ring that is not the platform's
    made = {
        "none": bytes(16),
        "forged": os.urandom(16),
        "other key ring": other.pull_proof(other.seal(keyring.open(token)), "bank"),
        "another tenant's": keyring.pull_proof(token, "evil"),  # a real proof, for 'evil'
    }[proof]
    request = PullRequest(token=token, tenant="bank", proof=made, want_fd=path == "local")
    kind, payload = await _one_frame(server, request, local=path == "local")
    assert kind is FrameType.ERROR
    code, message = decode_error(payload)
    assert code == "pull_refused" and "bank" not in message
    assert server.stats.refused == 1 and store.stats.pulls == 0
    assert (store.get(obj_id := keyring.open(token).object_id)).readers == 0
    assert obj_id in store  # untouched, still there for its owner
    async with PullClient(keyring, TCP, tenant="bank") as owner:
        with await owner.pull(token) as pulled:
            assert pulled.tobytes() == data


async def _one_frame(
    server: ObjectServer, request: PullRequest, *, local: bool
) -> tuple[FrameType, bytes]:
    from xdt.pull.server import local_name

    loop = asyncio.get_running_loop()
    if local:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        await loop.sock_connect(sock, local_name(server.address))
    else:
        host, port = server.address.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
        sock.setblocking(False)
    try:
        await loop.sock_sendall(sock, encode_pull(request))
        frame = await read_frame(loop, sock, FrameReader(1 << 20), [] if local else None)
        assert frame is not None
        return frame
    finally:
        sock.close()


async def test_a_puller_that_never_confirms_reads_at_most_twice_the_budget(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    """Confirming is a sidecar's duty, but even one that never says DONE (a bug, a crash after
    the bytes arrived) cannot read a pulls=N object more than 2N times: the first N hand-overs
    without DONE are forgiven (its receiver may have died: the retry must work), the next
    count."""
    data = os.urandom(100 << 10)
    token = server.seal(await store.put(data, pulls=1))
    request = PullRequest(token=token, tenant="default", proof=keyring.pull_proof(token, "default"))
    for expected_left in (1, 0):
        header, _ = await pull_over_tcp(server, request, confirm=False)
        assert header.size == len(data)  # every byte went out, no DONE came back
        await eventually(lambda: all(o.readers == 0 for o in store._objects.values()))
        live = [o for o in store._objects.values()]
        assert [o.pulls_left for o in live] == ([1] if expected_left else [])
    kind, payload = await raw_pull(server.address, token, keyring=keyring)
    assert kind is FrameType.ERROR and decode_error(payload)[0] == "pull_budget_exhausted"


async def test_a_receiver_that_dies_before_every_byte_arrived_leaves_it_for_a_retry(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    """Not handed over: it costs nothing, however often (that is test_receiver_disconnects_mid_
    stream with a big object; here the budget's forgiveness is not even touched)."""
    obj = await store.put(os.urandom(32 << 20), pulls=1)
    token = server.seal(obj)
    request = PullRequest(token=token, tenant="default", proof=keyring.pull_proof(token, "default"))
    for _ in range(3):
        await pull_over_tcp(server, request, confirm=False, read=1 << 20)
        await eventually(lambda: obj.readers == 0)
    assert obj.pulls_left == 1 and obj.unconfirmed == 0


async def test_bytes_that_arrive_wrong_are_reported_and_not_counted(
    store: ObjectStore, server: ObjectServer, keyring: KeyRing
) -> None:
    from xdt._core.buffers import sealed_buffer
    from xdt._core.checksum import checksum

    data = os.urandom(1 << 20)
    liar = sealed_buffer(data)
    liar.checksum = checksum(data) ^ 1  # a function that lied about its own object
    obj = await store.adopt(liar, pulls=1)
    token = server.seal(obj)
    async with PullClient(keyring, TCP) as client:
        for _ in range(3):
            with pytest.raises(xdt.TransferCorrupted):
                await client.pull(token)
        assert client.stats.connections_opened == 1  # reported FAILED: still in step
    await eventually(lambda: server.stats.failed == 3)
    assert obj.pulls_left == 1 and obj.unconfirmed == 0 and store.stats.pulls == 0


async def pull_over_tcp(
    server: ObjectServer, request: PullRequest, *, confirm: bool, read: int | None = None
) -> tuple[ObjectHeader, int]:
    """One raw PULL over TCP: reads the OBJECT header and ``read`` bytes (all, by default),
    then says DONE or just leaves."""
    from xdt.pull.frames import decode_object

    loop = asyncio.get_running_loop()
    host, port = server.address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setblocking(False)
    try:
        await loop.sock_sendall(sock, encode_pull(request))
        reader = FrameReader(1 << 20)
        frame = await read_frame(loop, sock, reader)
        assert frame is not None and frame[0] is FrameType.OBJECT, frame
        header = decode_object(frame[1])
        wanted = header.size if read is None else read
        got = reader.buffered
        while got < wanted:
            chunk = await loop.sock_recv(sock, 1 << 20)
            assert chunk, "the server closed mid-object"
            got += len(chunk)
        if confirm:
            await loop.sock_sendall(sock, encode_done())
        return header, got
    finally:
        sock.close()


async def test_the_same_host_socket_can_live_in_a_private_folder(
    store: ObjectStore, keyring: KeyRing, tmp_path: Path
) -> None:
    """The platform puts every object socket in a folder only it may enter: no function can
    reach, take or predict one."""
    config = ServerConfig(local_dir=str(tmp_path))
    async with ObjectServer(store, keyring, config) as server:
        from xdt.pull.server import local_name

        where = Path(local_name(server.address, str(tmp_path)))
        assert where.parent == tmp_path and stat.S_IMODE(os.stat(where).st_mode) == 0o600
        data = os.urandom(1 << 20)
        token = server.seal(await store.put(data))
        async with PullClient(keyring, ClientConfig(local_dir=str(tmp_path))) as client:
            with await client.pull(token) as pulled:
                assert pulled.via == "local" and pulled.tobytes() == data


async def test_a_taken_abstract_name_does_not_stop_the_server(
    store: ObjectStore, keyring: KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a private folder the same-host socket is an abstract name, which any process
    on the host could bind first: the server then serves over TCP only, and says so."""
    from xdt.pull.server import local_name

    with socket.socket(socket.AF_INET) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    squatter.bind(local_name(f"127.0.0.1:{port}"))
    try:
        async with ObjectServer(store, keyring, ServerConfig(port=port)) as server:
            assert "is taken" in capsys.readouterr().err
            token = server.seal(await store.put(b"over tcp"))
            async with PullClient(keyring, TCP) as client:
                with await client.pull(token) as pulled:
                    assert pulled.tobytes() == b"over tcp"
    finally:
        squatter.close()
