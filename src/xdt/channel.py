"""The same-host wire between a function process and its sidecar: messages on a Unix socket,
big payloads as sealed memfds passed alongside (SCM_RIGHTS) rather than streamed.

::

    kind (1) | flags (1) | meta length (4) | payload length (8) | meta | payload (unless FD)

``meta`` is a little UTF-8 JSON (an operation's arguments, an error). Payloads of
:data:`FD_THRESHOLD` bytes and more travel as an attached memfd, never through the socket:

- *given* (``FD``): sealed read-only by the sender, checked by the receiver, which keeps it
  (an object's memfd passed on, or :func:`xdt.buffer`'s);
- *lent* (``LENT``): a warm buffer from the sender's pool, sealed only against resizing (so
  mapping it is safe), which the sender reuses once the peer has answered. Fresh pages cost
  more than copies (a new 64 MiB memfd: ~55 ms; refilling a warm one: ~7 ms), so bytes up to
  :data:`LEND_UP_TO` are lent, and the receiver copies what it keeps.

Bigger bytes are *given*: copied into a buffer of the sender's pool (warm, or made ahead) and
sealed, so the receiver keeps it without a copy and nothing of that size stays lent; once the
peer has answered (the next message) the pool makes the next such buffer ahead of need.

Used both ways: the sidecar invokes the Python runtime (INVOKE → RESULT / FAILED), and the
function's SDK calls its sidecar (CALL → RESULT / ERROR). One request at a time per
connection; each side pools connections.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from ._core.buffers import Buffer, BufferPool, as_bytes, sealed_buffer, sealed_copy
from ._core.errors import PeerGone, ProtocolError
from ._core.fdio import recv_fds, send_fds, sendall
from ._core.loans import LOANS

__all__ = [
    "FD_THRESHOLD",
    "LEND_UP_TO",
    "Channel",
    "Kind",
    "Message",
]

HEADER = struct.Struct("!BBIQ")
FD_THRESHOLD = 256 << 10  # below this a payload is cheaper to copy through the socket
# Bytes payloads up to this are lent; bigger ones are given sealed (see above): lending them
# costs the receiver a copy it must keep, a third payload's worth of memory on the way.
LEND_UP_TO = 64 << 20
# A loan the peer has not answered for this long is given up: dropped, not reused, so that an
# idle channel does not pin a big warm buffer (256 MiB of memfds after a gather and 75 s idle).
LOAN_IDLE_TIMEOUT = 5.0
MAX_META = 64 << 10  # an operation's arguments or an error's fields: small
_FLAG_FD = 1  # the payload is the attached memfd, sealed read-only: the receiver keeps it
_FLAG_LENT = 2  # the payload is the attached memfd, lent: copy it out before answering
_CHECKSUM = "xdt.xxh3"  # meta: the given memfd's checksum, as its maker computed it


class Kind(enum.IntEnum):
    INVOKE = 1  # sidecar → runtime: run the handler on the payload
    RESULT = 2  # the answer's payload
    FAILED = 3  # the handler raised: meta {"error": text}
    PING = 4
    PONG = 5
    CALL = 6  # SDK → sidecar: meta {"op": ..., args}
    ERROR = 7  # sidecar → SDK: meta is the error, xdt._core.errors.to_wire


_KINDS = frozenset(Kind)


@dataclass
class Message:
    kind: Kind
    meta: dict[str, Any] = field(default_factory=dict)
    payload: bytes | Buffer = b""

    def data(self) -> bytes:
        """The payload as bytes (a copy out of a passed memfd), releasing the memfd."""
        self.payload = as_bytes(self.payload)
        return self.payload

    def close(self) -> None:
        if isinstance(self.payload, Buffer):
            self.payload.close()


class Channel:
    """One connected Unix stream socket, non-blocking, on the running loop. With a ``pool``,
    big bytes payloads are lent from it (see above); the lent buffer returns to the pool when
    the next message arrives (the peer's answer, or its next request) or the channel closes."""

    def __init__(
        self,
        sock: socket.socket,
        pool: BufferPool | None = None,
        *,
        max_payload: int | None = None,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.pool = pool
        self.max_payload = max_payload  # what a peer we do not trust may send us, at most
        self._lent: Buffer | None = None
        self._loan_timer: asyncio.TimerHandle | None = None
        # A pool buffer given away, to be made again once the peer has answered.
        self._given: tuple[BufferPool, int] | None = None

    @classmethod
    async def connect(cls, path: str, pool: BufferPool | None = None) -> Channel:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, path)
        except BaseException:
            sock.close()
            raise
        return cls(sock, pool)

    def close(self) -> None:
        self.sock.close()
        self._drop_lent()

    def _drop_lent(self) -> None:
        """Give up the loan without reusing the buffer: the peer may still be reading it. Its
        memory goes once the peer closes its copy of the memfd too."""
        self._cancel_loan_timer()
        lent, self._lent = self._lent, None
        if lent is not None:
            lent.close()

    def _cancel_loan_timer(self) -> None:
        if self._loan_timer is not None:
            self._loan_timer.cancel()
            self._loan_timer = None

    async def _lend(self, kind: Kind, meta_bytes: bytes, buffer: Buffer) -> None:
        self._return_lent()
        self._lent = buffer
        buffer.fix_size()
        head = HEADER.pack(kind, _FLAG_LENT, len(meta_bytes), buffer.size) + meta_bytes
        await self._write(head, buffer.fd)
        self._loan_timer = self.loop.call_later(LOAN_IDLE_TIMEOUT, self._drop_lent)

    def _return_lent(self) -> None:
        self._cancel_loan_timer()
        lent, self._lent = self._lent, None
        if lent is None:
            return
        if self.pool is not None:
            self.pool.release(lent)
        else:
            lent.close()

    @property
    def closed(self) -> bool:
        return self.sock.fileno() < 0

    def peer_closed(self) -> bool:
        """Whether the peer has closed its end (or sent what nobody asked for): a pooled
        channel to check before reuse. Reads nothing."""
        if self.closed:
            return True
        try:
            self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False  # nothing to read: open and in step
        except OSError:
            pass
        return True  # end of file, an error, or bytes nobody asked for

    async def send(
        self,
        kind: Kind,
        meta: dict[str, Any] | None = None,
        payload: bytes | bytearray | memoryview | Buffer = b"",
    ) -> None:
        """Send a message. A big payload travels as a memfd: bytes are lent from the pool (or
        given sealed, without one); a Buffer is taken over — a sealed one is given (and closed
        here), one of ours is lent as is (and returns to the pool after the answer)."""
        if isinstance(payload, Buffer) and payload.sealed and payload.checksum is not None:
            meta = {**(meta or {}), _CHECKSUM: payload.checksum}
        meta_bytes = json.dumps(meta).encode() if meta else b""
        if isinstance(payload, Buffer):
            if payload.sealed:
                await self._give(kind, meta_bytes, payload)
                return
            if not payload.lent:  # one of our own warm buffers: lent as it is, no copy
                await self._lend(kind, meta_bytes, payload)
                return
            payload = as_bytes(payload)  # another process's memory is never passed on
        if len(payload) >= FD_THRESHOLD:
            if len(payload) > LEND_UP_TO or self.pool is None:
                given = (
                    sealed_buffer(payload) if self.pool is None else sealed_copy(payload, self.pool)
                )
                await self.send(kind, meta, given)
                return
            lent = self.pool.acquire(len(payload))
            lent.fill(payload)
            await self._lend(kind, meta_bytes, lent)
            return
        head = HEADER.pack(kind, 0, len(meta_bytes), len(payload)) + meta_bytes
        await self._write(head + bytes(payload))

    async def _write(self, data: bytes, fd: int | None = None) -> None:
        try:
            if fd is None:
                await sendall(self.loop, self.sock, data)
            else:
                await send_fds(self.loop, self.sock, data, [fd])
        except OSError as exc:
            raise PeerGone(f"the peer left mid-message ({exc.strerror or exc})") from None

    async def _give(self, kind: Kind, meta_bytes: bytes, buffer: Buffer) -> None:
        """Pass a sealed memfd for the peer to keep; ours is closed once sent."""
        if buffer.made_by is not None:
            self._given = (buffer.made_by, buffer.capacity)
        try:
            head = HEADER.pack(kind, _FLAG_FD, len(meta_bytes), buffer.size) + meta_bytes
            await self._write(head, buffer.fd)
        finally:
            buffer.close()

    async def receive(self) -> Message:
        """The next message. Raises :class:`~xdt.PeerGone` when the peer left, and
        :class:`~xdt.ProtocolError` for garbage (an unknown kind, metadata that is not a JSON
        object, a payload over ``max_payload``, a memfd that is not sealed as it must be),
        before anything of the payload is allocated or mapped."""
        fds: list[int] = []
        try:
            head = await self._exactly(HEADER.size, fds)
            kind, flags, meta_length, payload_length = HEADER.unpack(head)
            if kind not in _KINDS:
                raise ProtocolError(f"unknown message kind {kind}")
            if meta_length > MAX_META:
                raise ProtocolError(f"message metadata of {meta_length} bytes is too big")
            if self.max_payload is not None and payload_length > self.max_payload:
                raise ProtocolError(
                    f"a payload of {payload_length} bytes is over the {self.max_payload} allowed"
                )
            if payload_length >= FD_THRESHOLD and not flags & (_FLAG_FD | _FLAG_LENT):
                # Bytes this big always travel as a memfd: a peer declaring them on the
                # socket would have us allocate the declared size before a byte arrived.
                raise ProtocolError(
                    f"a payload of {payload_length} bytes must be passed as a memfd, not sent"
                )
            meta = _meta(await self._exactly(meta_length, fds)) if meta_length else {}
            if flags & (_FLAG_FD | _FLAG_LENT):
                if len(fds) != 1:
                    raise ProtocolError(f"expected one passed memfd, got {len(fds)}")
                adopt = Buffer.from_sealed_fd if flags & _FLAG_FD else LOANS.borrow
                try:
                    passed = adopt(fds.pop(), payload_length)
                except (OSError, ValueError) as exc:
                    raise ProtocolError(f"the passed memfd cannot be used: {exc}") from None
                claimed = meta.pop(_CHECKSUM, None)
                if flags & _FLAG_FD and type(claimed) is int and 0 <= claimed < 1 << 64:
                    passed.checksum = claimed
                payload: bytes | Buffer = passed
            else:
                payload = await self._exactly(payload_length, fds)
            if fds:
                if isinstance(payload, Buffer):
                    payload.close()
                raise ProtocolError("unexpected file descriptors passed")
        finally:
            for fd in fds:
                os.close(fd)
        self._return_lent()  # a whole message came back: the peer is done with what we lent
        given, self._given = self._given, None
        if given is not None:  # ... and with what we gave: its pages are likely gone by now
            given[0].replenish(given[1])
        return Message(Kind(kind), meta, payload)

    async def _exactly(self, size: int, fds: list[int]) -> bytes:
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            try:
                count, passed = await recv_fds(self.loop, self.sock, view[got:], max_fds=1)
            except OSError as exc:
                raise PeerGone(f"the peer left mid-message ({exc.strerror or exc})") from None
            fds.extend(passed)
            if count == 0:
                raise PeerGone("the peer closed the connection")
            got += count
        return bytes(buffer)


def _meta(raw: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolError("message metadata is not JSON") from None
    if not isinstance(meta, dict):
        raise ProtocolError("message metadata must be a JSON object")
    return meta
