"""The object server: serves a store's objects to sidecars that present a valid reference.

It listens on TCP (``host:port``, the address sealed into references) and, for receivers on the
same host, on a Unix socket: a file in ``local_dir`` (the platform's private folder, which no
function can reach or write), or without one an abstract socket named after the address. Over
the Unix socket an object travels as a memfd (SCM_RIGHTS), not through the socket: given when
it is sealed read-only, lent (our warm buffer, copied out by the receiver before DONE) when the
peer also runs as our own user.

Only sidecars may pull: every PULL must carry a proof made with the key ring
(:meth:`~xdt._core.refs.KeyRing.pull_proof`) over the reference and the tenant it is pulled
for, and that tenant must be the reference's. Anything else is refused with
:class:`~xdt.PullRefused` before the store is asked. A pull is counted when the receiver
confirms (DONE), not when it says the bytes arrived wrong (FAILED); one that had every byte
handed over and never confirmed counts by the store's rule (:class:`~xdt._core.store.Pull`).

Whatever arrives, the server answers with an OBJECT or a coded ERROR frame, or closes that one
connection; it never lets a peer's input take it down, and it buffers at most one control frame
per connection.

Any local process can connect, so a connection is *unproven* until it sends a PULL with a valid
proof: unproven ones have ``handshake_timeout`` to send that PULL and a cap of their own
(``max_unproven``), over which the *oldest* unproven connection is dropped, and one that sends
a PULL without a valid proof is answered and closed. A sidecar sends its PULL as soon as it
connects, so a flood of slow or hostile connections can neither crowd out the sidecars'
proven connections (``max_connections``) nor keep a new sidecar connection from proving itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import sys
from dataclasses import dataclass

from .._core import fdio
from .._core.errors import ProtocolError, PullRefused, SourceUnavailable, XdtError
from .._core.peercred import bind_unix, peer_is_us
from .._core.refs import KeyRing, TransferMode
from .._core.store import ObjectStore, Pull, StoredObject
from .._util.names import netloc
from .._util.tasks import TaskSet
from .frames import (
    SMALL_OBJECT,
    FrameReader,
    FrameType,
    ObjectHeader,
    PullRequest,
    decode_pull,
    encode_error,
    encode_object,
    read_frame,
)

__all__ = ["DEFAULT_SERVER_CONFIG", "ObjectServer", "ServerConfig", "ServerStats", "local_name"]


def local_name(address: str, local_dir: str | None = None) -> str:
    """Where the object server advertising ``address`` listens for same-host receivers: a
    file in ``local_dir``, or an abstract socket name."""
    if local_dir is not None:
        return os.path.join(local_dir, f"{address}.sock")
    return f"\0xdt-objects:{address}"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"  # where to listen, and the host sealed into references
    port: int = 0  # 0: any free port
    advertise: str | None = None  # host:port to seal into references, if not host:port
    local: bool = True  # also serve same-host receivers over a Unix socket (fd passing)
    local_dir: str | None = None  # that socket's folder (private); None: the abstract namespace
    fd_threshold: int = 256 << 10  # pass objects this big as memfds; stream smaller ones
    max_connections: int = 1024  # proven: connections that have sent a sidecar's PULL
    max_unproven: int = 256  # connected, not yet proven
    handshake_timeout: float = 5.0  # for an unproven connection's first PULL
    idle_timeout: float = 300.0  # an idle proven connection is closed after this
    io_timeout: float = 30.0  # a pull that makes no progress for this long is aborted


DEFAULT_SERVER_CONFIG = ServerConfig()


@dataclass(slots=True)
class ServerStats:
    connections: int = 0  # open now, proven
    unproven: int = 0  # open now, no sidecar's PULL yet
    dropped_unproven: int = 0  # the oldest unproven, dropped for a newer one over the cap
    pulls_tcp: int = 0
    pulls_local: int = 0  # completed as memfds
    bytes_sent: int = 0  # over streams (memfds are not counted: nothing was copied)
    errors: int = 0  # ERROR frames sent
    refused: int = 0  # pulls without a sidecar's proof
    failed: int = 0  # pulls the receiver said arrived wrong (FAILED)
    protocol_errors: int = 0  # connections closed for garbage


class ObjectServer:
    """Serves ``store``'s objects. Use ``async with ObjectServer(...) as server:``."""

    def __init__(
        self,
        store: ObjectStore,
        keyring: KeyRing,
        config: ServerConfig = DEFAULT_SERVER_CONFIG,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.config = config
        self.stats = ServerStats()
        self.address = ""
        self._listeners: list[socket.socket] = []
        self._tasks = TaskSet()
        self._unproven: dict[socket.socket, asyncio.Task[None]] = {}  # oldest first

    async def __aenter__(self) -> ObjectServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((self.config.host, self.config.port))
        tcp.listen(1024)
        tcp.setblocking(False)
        self._listeners.append(tcp)
        self.address = self.config.advertise or netloc(self.config.host, tcp.getsockname()[1])
        self._tasks.spawn(self._accept(loop, tcp, local=False))
        if self.config.local:
            unix = self._bind_local()
            if unix is not None:
                self._listeners.append(unix)
                self._tasks.spawn(self._accept(loop, unix, local=True))

    def _bind_local(self) -> socket.socket | None:
        """The same-host listener, or None — and a log line — when its name is taken: an
        abstract name is open to every process on the host, so a function may have bound it
        first; receivers then pull over TCP (they check who serves the name, too)."""
        where = local_name(self.address, self.config.local_dir)
        if self.config.local_dir is not None:
            return bind_unix(where, mode=0o600)
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            unix.bind(where)
            unix.listen(1024)
        except OSError as exc:
            unix.close()
            message = f"the same-host socket of object server {self.address} is taken"
            print(f"xdt: {message} ({exc.strerror}); serving over TCP only", file=sys.stderr)
            return None
        unix.setblocking(False)
        return unix

    async def close(self) -> None:
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        await self._tasks.cancel()

    def seal(self, obj: StoredObject) -> str:
        """A sealed reference to an object of this server's store, pointing at this server."""
        return self.keyring.seal(obj.reference(self.address))

    # -- serving -----------------------------------------------------------------------------

    async def _accept(
        self, loop: asyncio.AbstractEventLoop, listener: socket.socket, *, local: bool
    ) -> None:
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError:
                if listener.fileno() < 0:
                    return
                await asyncio.sleep(0.05)  # EMFILE and friends: back off, keep serving
                continue
            sock.setblocking(False)
            if not local:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if len(self._unproven) >= self.config.max_unproven:
                oldest = next(iter(self._unproven))
                self._unproven.pop(oldest).cancel()  # its task closes it
                self.stats.dropped_unproven += 1
            task = self._tasks.spawn(self._serve(loop, sock, local=local))
            self._unproven[sock] = task
            # Also when cancelled before it ran: the socket is closed and forgotten.
            task.add_done_callback(functools.partial(self._forget, sock))
            self.stats.unproven = len(self._unproven)

    def _forget(self, sock: socket.socket, task: asyncio.Task[None]) -> None:
        self._unproven.pop(sock, None)
        self.stats.unproven = len(self._unproven)
        sock.close()

    def _turn_away(self, sock: socket.socket, why: str) -> None:
        with contextlib.suppress(OSError):
            sock.send(encode_error(SourceUnavailable.code, f"object server busy: {why}"))
        sock.close()

    async def _serve(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, *, local: bool
    ) -> None:
        proven = False
        reader = FrameReader()
        try:
            while True:
                wait = self.config.idle_timeout if proven else self.config.handshake_timeout
                async with asyncio.timeout(wait):
                    frame = await read_frame(loop, sock, reader)
                if frame is None:
                    return
                kind, payload = frame
                if kind is not FrameType.PULL:
                    raise ProtocolError(f"expected a PULL frame, got {kind.name}")
                request = decode_pull(payload)
                if not self.keyring.proves(request.token, request.tenant, request.proof):
                    await self._refuse(loop, sock)
                    return  # a sidecar never sends one: whoever did gets no second try
                if not proven:
                    if self.stats.connections >= self.config.max_connections:
                        self._turn_away(sock, "too many connections")
                        return
                    proven = True
                    self._unproven.pop(sock, None)
                    self.stats.unproven = len(self._unproven)
                    self.stats.connections += 1
                await self._serve_pull(loop, sock, reader, request, local=local)
        except ProtocolError as exc:
            self.stats.protocol_errors += 1
            with contextlib.suppress(OSError):
                sock.send(encode_error(ProtocolError.code, str(exc)))
        except (OSError, TimeoutError):
            pass  # the peer left or stalled: only this connection ends
        finally:
            if proven:
                self.stats.connections -= 1
            sock.close()  # and _forget, once the task is done

    async def _refuse(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.stats.refused += 1
        self.stats.errors += 1
        refused = PullRefused(
            "this object server serves only the sidecars of its platform: the pull carries "
            "no proof made with the platform's key ring"
        )
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(self.config.io_timeout):
                await fdio.sendall(loop, sock, encode_error(refused.code, str(refused)))

    async def _serve_pull(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        reader: FrameReader,
        request: PullRequest,
        *,
        local: bool,
    ) -> None:
        try:
            ref = self.keyring.open(request.token, tenant=request.tenant)
            if ref.mode is not TransferMode.XDT:
                raise ProtocolError(f"a {ref.mode.name} reference cannot be pulled from a sidecar")
            pull = await self.store.begin_pull(ref.object_id)
        except XdtError as exc:
            self.stats.errors += 1
            await fdio.sendall(loop, sock, encode_error(exc.code, str(exc)))
            return
        sent_fd = handed_over = False
        try:
            async with asyncio.timeout(self.config.io_timeout):
                sent_fd = await self._send_object(loop, sock, pull, request, local=local)
                handed_over = True
                frame = await read_frame(loop, sock, reader)
            if frame is not None and frame[0] is FrameType.FAILED:
                self.stats.failed += 1
                handed_over = False  # the receiver says it did not get the object right
                return
            if frame is None or frame[0] is not FrameType.DONE:
                raise ConnectionResetError("receiver left before confirming the object")
            pull.complete()
            if sent_fd:
                self.stats.pulls_local += 1
            else:
                self.stats.pulls_tcp += 1
        finally:
            if sent_fd and not pull.completed and not pull.object.buffer.sealed:
                # Lent, and never confirmed: the receiver may still be copying it, so the
                # buffer is never handed out again (closed once the object goes).
                pull.object.buffer.retired = True
            pull.abort(handed_over=handed_over)  # no-op once completed

    async def _send_object(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        pull: Pull,
        request: PullRequest,
        *,
        local: bool,
    ) -> bool:
        buffer = pull.object.buffer
        size = pull.object.size
        if local and request.want_fd and size >= self.config.fd_threshold:
            if buffer.sealed:  # a function's memfd, or a many-pull object: anyone may keep it
                header = encode_object(ObjectHeader(size=size, fd_attached=True))
                await fdio.send_fds(loop, sock, header, [buffer.fd])
                return True
            if peer_is_us(sock):  # a second lock besides the proof: a process of ours
                # Our warm (writable, reused) buffer, lent to a sidecar only: it copies the
                # bytes out before DONE, and the buffer returns to the pool with no fresh
                # pages (a new 64 MiB memfd costs ~40 ms here, a warm copy ~7 ms). A process
                # of another user would get a window into later objects: it is streamed to.
                buffer.fix_size()
                header = encode_object(ObjectHeader(size=size, fd_attached=True, fd_lent=True))
                await fdio.send_fds(loop, sock, header, [buffer.fd])
                return True
        header = encode_object(ObjectHeader(size=size))
        if size <= SMALL_OBJECT:  # one send, header and bytes together
            await fdio.sendall(loop, sock, header + buffer.view().tobytes())
        else:
            # Copied out of the mapping, not sendfile(2): sendfile leaves the pages referenced
            # by socket buffers for a while, and sealing the memfd for a later same-host pull
            # then blocks in the kernel for up to ~150 ms before failing with EBUSY (measured:
            # a third of such seals stalled). The copy runs on the sender's core, in parallel
            # with the receiver, and measured as fast as sendfile here.
            await fdio.sendall(loop, sock, header)
            await loop.sock_sendall(sock, buffer.view())
        self.stats.bytes_sent += size
        return False
