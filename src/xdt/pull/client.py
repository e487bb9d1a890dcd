"""The pull client: fetches the object behind a sealed reference from its source sidecar.

One :class:`PullClient` per sidecar keeps persistent connections per source (bounded), and
receives straight into a warm memfd-backed buffer from its own pool, checking length and
checksum before anything is handed over. Every pull carries the key ring's proof that it
comes from a sidecar (object servers serve nothing else). When the source is on this host (its
Unix socket answers, from a process of our own user) no byte crosses a socket: the source lends
its buffer (copied once into ours, warm) or gives a sealed memfd (kept as it is). Bytes that
arrive wrong are reported (FAILED), so the source does not count the pull.

Every failure is a typed error, and nothing partial is ever returned::

    ReferenceMalformed / ReferenceTampered / WrongTenant / ReferenceExpired   (before connecting)
    SourceUnavailable      cannot connect, or the source went away mid-pull
    ObjectNotFound, PullBudgetExhausted, ...   as the source decided
    TransferCorrupted      wrong length or checksum
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Literal

from .._core import fdio
from .._core.buffers import DEFAULT_POOL_LIMITS, Buffer, BufferPool, PoolLimits
from .._core.checksum import Checksum, checksum
from .._core.errors import (
    ProtocolError,
    PullRefused,
    ReferenceRejected,
    SourceUnavailable,
    TransferCorrupted,
    XdtError,
    error_for_code,
)
from .._core.loans import Loans
from .._core.peercred import peer_is_us
from .._core.refs import DEFAULT_TENANT, KeyRing, Reference, TransferMode
from .._util.units import format_size
from .frames import (
    HEADER,
    MAX_CONTROL_PAYLOAD,
    SMALL_OBJECT,
    FrameReader,
    FrameType,
    PullRequest,
    decode_error,
    decode_object,
    encode_done,
    encode_failed,
    encode_pull,
    read_frame,
)
from .server import local_name

__all__ = ["DEFAULT_CLIENT_CONFIG", "ClientConfig", "ClientStats", "PullClient", "Pulled"]

# The receive buffer for control frames also takes the start of an object's bytes, so a small
# object (sent with its header in one write) usually arrives in one read.
_READ_AHEAD = HEADER.size + MAX_CONTROL_PAYLOAD + SMALL_OBJECT


@dataclass(frozen=True, slots=True)
class ClientConfig:
    connect_timeout: float = 2.0
    io_timeout: float = 30.0  # a pull that makes no progress for this long fails
    max_connections_per_source: int = 16  # concurrent pulls from one source beyond this wait
    # A pooled connection idle this long is closed, not reused: well inside the server's idle
    # timeout (ServerConfig, 300 s), so a reused connection is one the server still keeps.
    idle_timeout: float = 60.0
    local: bool = True  # take the same-host memfd fast path when the source is on this host
    local_dir: str | None = None  # where same-host sources' sockets are (ServerConfig's)
    # Also checksum memfds. Off: they are sealed by a trusted sidecar (costs ~10 ms per 256 MiB).
    verify_local: bool = False
    pool: PoolLimits = DEFAULT_POOL_LIMITS


DEFAULT_CLIENT_CONFIG = ClientConfig()


@dataclass(slots=True)
class ClientStats:
    pulls_tcp: int = 0
    pulls_local: int = 0  # same-host: over the Unix socket (as a memfd when big enough)
    bytes_received: int = 0  # over streams, counted as they arrive
    failures: int = 0
    connections_opened: int = 0


class Pulled:
    """An object pulled into this process: read-only bytes in a memfd.

    Use it as a context manager, or call :meth:`release` when done, so its buffer can be
    reused. Views taken from :meth:`view` must not be used after that.
    """

    __slots__ = ("_buffer", "_pool", "_populated", "reference", "via")

    def __init__(
        self,
        reference: Reference,
        buffer: Buffer,
        pool: BufferPool | None,
        via: Literal["tcp", "local"],
    ) -> None:
        self.reference = reference
        self.via = via
        self._buffer: Buffer | None = buffer
        self._pool = pool
        self._populated = False

    @property
    def size(self) -> int:
        return self.reference.size

    def view(self) -> memoryview:
        buffer = self._live()
        if self.via == "local" and buffer.sealed and not self._populated:
            buffer.populate()  # a given memfd, about to be read: its pages mapped in one call
            self._populated = True
        return buffer.view()

    def tobytes(self) -> bytes:
        return self._live().view().tobytes()

    def detach(self) -> Buffer:
        """Take the buffer over: the caller owns (and closes) it; this object is released."""
        buffer = self._live()
        self._buffer = None
        return buffer

    def sealed_buffer(self) -> Buffer | None:
        """The underlying memfd if it is sealed read-only (a same-host pull): it can be
        passed on to another local process without copying. Still released by
        :meth:`release`."""
        buffer = self._live()
        return buffer if buffer.sealed else None

    def fileno(self) -> int:
        """The memfd holding the bytes (sealed read-only when ``via == "local"``)."""
        return self._live().fd

    def release(self) -> None:
        buffer, self._buffer = self._buffer, None
        if buffer is None:
            return
        if self._pool is not None:
            self._pool.release(buffer)
        else:
            buffer.close()

    def __enter__(self) -> Pulled:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _live(self) -> Buffer:
        if self._buffer is None:
            raise ValueError("this pulled object was released")
        return self._buffer


class _StaleConnection(Exception):
    """A reused connection turned out closed before the source answered: retry on a new one."""


class _Refused(Exception):
    """The source answered with an ERROR frame: the connection is still in step."""

    def __init__(self, error: XdtError) -> None:
        self.error = error


@dataclass(eq=False, slots=True)
class _Connection:
    sock: socket.socket
    local: bool
    reader: FrameReader = field(default_factory=lambda: FrameReader(_READ_AHEAD))
    fds: list[int] | None = None  # descriptors passed to us; a list only on local connections
    used: bool = False
    idle_since: float = 0.0  # time.monotonic() when it went back to the pool

    def __post_init__(self) -> None:
        if self.local:
            self.fds = []

    def close(self) -> None:
        for fd in self.fds or ():
            os.close(fd)
        self.sock.close()


@dataclass(eq=False, slots=True)
class _Source:
    address: str
    slots: asyncio.Semaphore
    idle: list[_Connection] = field(default_factory=list)
    local: bool | None = None  # None: not tried yet


class PullClient:
    """Pulls objects by reference. Use one per process; close it when done."""

    def __init__(
        self,
        keyring: KeyRing,
        config: ClientConfig = DEFAULT_CLIENT_CONFIG,
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        self.keyring = keyring
        self.config = config
        self.tenant = tenant
        self.stats = ClientStats()
        self.pool = BufferPool(config.pool, name="xdt-pulled")
        # Peers' lent buffers, mapped apart from what local functions lend (xdt.channel):
        # a function's memfd can never be taken for a cached mapping of a peer's.
        self.loans = Loans()
        self._sources: dict[str, _Source] = {}

    async def __aenter__(self) -> PullClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        for source in self._sources.values():
            for conn in source.idle:
                conn.close()
            source.idle.clear()
        self.pool.close()
        self.loans.trim(everything=True)

    async def pull(self, token: str, *, tenant: str | None = None) -> Pulled:
        """Fetch the object behind ``token`` on behalf of ``tenant`` (default: the client's)."""
        tenant = self.tenant if tenant is None else tenant
        ref = self.keyring.open(token, tenant=tenant)
        if ref.mode is not TransferMode.XDT:
            raise ReferenceRejected(
                f"this is a {ref.mode.name.lower()} reference; only xdt references are pulled "
                "from a sidecar"
            )
        source = self._sources.get(ref.source)
        if source is None:
            slots = asyncio.Semaphore(self.config.max_connections_per_source)
            source = self._sources[ref.source] = _Source(ref.source, slots)
        try:
            async with source.slots:
                for _ in range(2):
                    conn = await self._connect(source)
                    try:
                        pulled = await self._pull_on(conn, token, tenant, ref)
                    except _StaleConnection:
                        # The others went idle about as long ago: a fresh one, not another.
                        conn.close()
                        self._drop_idle(source)
                        continue
                    except _Refused as refused:
                        if isinstance(refused.error, PullRefused):
                            conn.close()  # the server closes after a refused pull
                        else:
                            self._keep(source, conn)
                        raise refused.error from None
                    except BaseException:
                        conn.close()
                        raise
                    self._keep(source, conn)
                    return pulled
                raise SourceUnavailable(f"source {ref.source} keeps closing connections")
        except XdtError:
            self.stats.failures += 1
            raise

    # -- connections -------------------------------------------------------------------------

    @staticmethod
    def _keep(source: _Source, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        source.idle.append(conn)

    @staticmethod
    def _drop_idle(source: _Source) -> None:
        for conn in source.idle:
            conn.close()
        source.idle.clear()

    async def _connect(self, source: _Source) -> _Connection:
        fresh_since = time.monotonic() - self.config.idle_timeout
        while source.idle and source.idle[0].idle_since < fresh_since:
            source.idle.pop(0).close()  # idle too long: the server may be closing it now
        if source.idle:
            return source.idle.pop()  # the most recently used
        loop = asyncio.get_running_loop()
        if self.config.local and source.local is not False:
            conn = await self._connect_local(loop, source.address)
            source.local = conn is not None
            if conn is not None:
                self.stats.connections_opened += 1
                return conn
        host, port = _split_address(source.address)
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, kind, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, kind, proto)
        except (OSError, IndexError) as exc:
            raise SourceUnavailable(f"cannot resolve source {source.address}: {exc}") from None
        sock.setblocking(False)
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                await loop.sock_connect(sock, sockaddr)
        except (OSError, TimeoutError) as exc:
            sock.close()
            why = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
            raise SourceUnavailable(
                f"cannot reach source sidecar {source.address} ({why}); it has stopped or is "
                "unreachable, so the object it held is gone"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stats.connections_opened += 1
        return _Connection(sock, local=False)

    async def _connect_local(
        self, loop: asyncio.AbstractEventLoop, address: str
    ) -> _Connection | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, local_name(address, self.config.local_dir))
        except OSError:
            sock.close()
            return None
        if not peer_is_us(sock):  # only a server run by our own user (or root) hands us memory
            sock.close()
            return None
        return _Connection(sock, local=True)

    # -- one pull ----------------------------------------------------------------------------

    async def _pull_on(self, conn: _Connection, token: str, tenant: str, ref: Reference) -> Pulled:
        loop = asyncio.get_running_loop()
        reused, conn.used = conn.used, True
        proof = self.keyring.pull_proof(token, tenant)
        request = encode_pull(
            PullRequest(token=token, tenant=tenant, proof=proof, want_fd=conn.local)
        )
        try:
            async with asyncio.timeout(self.config.io_timeout) as deadline:
                try:
                    await fdio.sendall(loop, conn.sock, request)
                    frame = await read_frame(loop, conn.sock, conn.reader, conn.fds)
                except OSError as exc:
                    if reused:
                        raise _StaleConnection from None
                    raise self._gone(ref, exc) from None
                if frame is None:
                    if reused:
                        raise _StaleConnection
                    raise SourceUnavailable(f"source {ref.source} closed the connection")
                kind, payload = frame
                if kind is FrameType.ERROR:
                    code, message = decode_error(payload)
                    raise _Refused(error_for_code(code, f"source {ref.source}: {message}"))
                if kind is not FrameType.OBJECT:
                    raise ProtocolError(f"source {ref.source} answered a PULL with {kind.name}")
                header = decode_object(payload)
                if header.size != ref.size:
                    raise TransferCorrupted(
                        f"source {ref.source} offers {header.size} bytes for an object the "
                        f"reference says is {ref.size} bytes"
                    )
                try:
                    if header.fd_lent:
                        pulled = self._copy_lent(conn, ref)
                    elif header.fd_attached:
                        pulled = self._adopt_fd(conn, ref)
                    else:
                        pulled = await self._receive(loop, conn, ref, deadline)
                except TransferCorrupted as corrupted:
                    # Every byte (or the memfd) arrived, wrongly: say so, so that the pull is
                    # not counted, and the connection stays in step for the next one.
                    await fdio.sendall(loop, conn.sock, encode_failed())
                    raise _Refused(corrupted) from None
        except TimeoutError:
            raise SourceUnavailable(
                f"source {ref.source} made no progress for {self.config.io_timeout:g}s"
            ) from None
        try:
            await fdio.sendall(loop, conn.sock, encode_done())
        except OSError as exc:
            pulled.release()  # unconfirmed: the source does not count it, so neither do we
            raise self._gone(ref, exc) from None
        return pulled

    async def _receive(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: _Connection,
        ref: Reference,
        deadline: asyncio.Timeout,
    ) -> Pulled:
        buffer = self.pool.acquire(ref.size)
        try:
            # Released on the way out, so a failed pull's traceback cannot pin the mapping.
            hashed = Checksum()  # each piece as it arrives, still in the cache
            with buffer.writable()[: ref.size] as destination:
                got = conn.reader.take_into(destination)
                hashed.update(destination[:got])
                self.stats.bytes_received += got
                while got < ref.size:
                    try:
                        count = await loop.sock_recv_into(conn.sock, destination[got:])
                    except OSError as exc:
                        raise self._gone(ref, exc, got) from None
                    if count == 0:
                        raise self._gone(ref, None, got)
                    hashed.update(destination[got : got + count])
                    got += count
                    self.stats.bytes_received += count
                    deadline.reschedule(loop.time() + self.config.io_timeout)
            buffer.size = ref.size
            if hashed.value() != ref.checksum:
                raise TransferCorrupted(
                    f"the object from {ref.source} arrived with a wrong checksum; "
                    "it was not delivered"
                )
        except BaseException:
            self.pool.release(buffer)
            raise
        if conn.local:
            self.stats.pulls_local += 1
        else:
            self.stats.pulls_tcp += 1
        return Pulled(ref, buffer, self.pool, "local" if conn.local else "tcp")

    @staticmethod
    def _passed_fd(conn: _Connection, ref: Reference) -> int:
        fds, conn.fds = conn.fds or [], []
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise ProtocolError(f"source {ref.source} passed {len(fds)} descriptors, not 1")
        return fds[0]

    def _copy_lent(self, conn: _Connection, ref: Reference) -> Pulled:
        """Copy a source's lent buffer into one of ours before DONE gives it back."""
        try:
            lent = self.loans.borrow(self._passed_fd(conn, ref), ref.size)
        except (OSError, ValueError) as exc:
            raise TransferCorrupted(
                f"the object from {ref.source} came as an unusable memfd: {exc}"
            ) from None
        try:
            buffer = self.pool.acquire(ref.size)
            buffer.fill(lent.view())
        finally:
            lent.close()
        if self.config.verify_local and checksum(buffer.view()) != ref.checksum:
            self.pool.release(buffer)
            raise TransferCorrupted("the object lent memfd has a wrong checksum")
        self.stats.pulls_local += 1
        return Pulled(ref, buffer, self.pool, "local")

    def _adopt_fd(self, conn: _Connection, ref: Reference) -> Pulled:
        try:
            buffer = Buffer.from_sealed_fd(self._passed_fd(conn, ref), ref.size)
        except (OSError, ValueError) as exc:
            raise TransferCorrupted(
                f"the object from {ref.source} came as an unusable memfd: {exc}"
            ) from None
        if self.config.verify_local and checksum(buffer.view()) != ref.checksum:
            buffer.close()
            raise TransferCorrupted("the object memfd has a wrong checksum")
        self.stats.pulls_local += 1
        return Pulled(ref, buffer, None, "local")

    @staticmethod
    def _gone(ref: Reference, exc: OSError | None, got: int | None = None) -> SourceUnavailable:
        where = "" if got is None else f" after {format_size(got)} of {format_size(ref.size)}"
        why = f" ({exc.strerror or exc})" if exc is not None else ""
        return SourceUnavailable(
            f"source {ref.source} went away{where}{why}; nothing was delivered, and the object "
            "stays there for a retry if the source is still up"
        )


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise SourceUnavailable(f"source address {address!r} is not host:port") from None
