"""The pull protocol's frames, and a bounded reader that cuts them out of a byte stream.

Every frame starts with an 8-byte header: ``b"XD"``, protocol version, frame type, payload
length (u32, big-endian). A pull on one persistent connection::

    receiver                                   source
      PULL(flags, tenant, proof, sealed reference) ──►
                                           ◄── OBJECT(size, flags) + `size` raw bytes   (TCP)
                                           ◄── OBJECT(size, flags) + memfd in SCM_RIGHTS (local)
                                           ◄── ERROR(code, message)        (and nothing else)
      DONE ──►                              (bytes checked: the pull counts)
      FAILED ──►                            (bytes wrong: the pull does not count)

Every PULL carries a *proof* that the receiver holds the key ring, i.e. is a sidecar
(:meth:`xdt._core.refs.KeyRing.pull_proof`, an HMAC of the tenant and the reference): a source
serves no pull without it, and the tenant the pull acts for is the one the proof covers. On
the same host the memfd is either *given* (sealed read-only: the receiver may keep it) or
*lent* (the source's own warm buffer: the receiver copies out before DONE, after which the
source reuses it).

Control payloads are small (at most :data:`MAX_CONTROL_PAYLOAD` bytes), so a peer can never make
the other buffer more than that; anything else is a :class:`~xdt.ProtocolError`.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import struct
from dataclasses import dataclass

from .._core import fdio
from .._core.errors import ProtocolError
from .._core.refs import PROOF_LEN

__all__ = [
    "HEADER",
    "MAX_CONTROL_PAYLOAD",
    "PROTOCOL_VERSION",
    "SMALL_OBJECT",
    "FrameReader",
    "FrameType",
    "ObjectHeader",
    "PullRequest",
    "decode_error",
    "decode_object",
    "decode_pull",
    "encode_done",
    "encode_error",
    "encode_failed",
    "encode_object",
    "encode_pull",
    "parse_header",
    "read_frame",
]

MAGIC = b"XD"
PROTOCOL_VERSION = 3  # 2: ERROR frames carry a code as text; 3: PULLs carry a proof, FAILED
HEADER = struct.Struct("!2sBBI")
MAX_CONTROL_PAYLOAD = 2048
SMALL_OBJECT = 64 << 10  # objects up to this size are sent in one write with their header
_OBJECT = struct.Struct("!QB")
_MAX_CODE = 64  # an error code (xdt._core.errors) is short ASCII

FLAG_WANT_FD = 0x01  # PULL: the receiver is on this host and can take a memfd
FLAG_FD_ATTACHED = 0x01  # OBJECT: the bytes come as a memfd, not on the stream
FLAG_FD_LENT = 0x02  # OBJECT: ... and that memfd is lent: copy out, then DONE


class FrameType(enum.IntEnum):
    PULL = 1
    OBJECT = 2
    DONE = 3
    ERROR = 4
    FAILED = 5


@dataclass(frozen=True, slots=True)
class PullRequest:
    token: str
    tenant: str
    proof: bytes  # PROOF_LEN bytes (KeyRing.pull_proof)
    want_fd: bool = False


@dataclass(frozen=True, slots=True)
class ObjectHeader:
    size: int
    fd_attached: bool = False
    fd_lent: bool = False  # with fd_attached: the source's buffer, valid until DONE


def _frame(frame_type: FrameType, payload: bytes = b"") -> bytes:
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, frame_type, len(payload)) + payload


def parse_header(data: bytes | bytearray | memoryview) -> tuple[FrameType, int]:
    """Type and payload length of the 8 header bytes in ``data``; ProtocolError if not ours."""
    if len(data) < HEADER.size:
        raise ProtocolError(f"a frame header is {HEADER.size} bytes; got {len(data)}")
    magic, version, frame_type, length = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError("peer is not speaking the xdt pull protocol (bad magic)")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"peer speaks pull protocol version {version}; this xdt speaks {PROTOCOL_VERSION}"
        )
    try:
        kind = FrameType(frame_type)
    except ValueError:
        raise ProtocolError(f"unknown frame type {frame_type}") from None
    if length > MAX_CONTROL_PAYLOAD:
        raise ProtocolError(f"{kind.name} frame of {length} bytes exceeds {MAX_CONTROL_PAYLOAD}")
    return kind, length


def encode_pull(request: PullRequest) -> bytes:
    tenant = request.tenant.encode()
    token = request.token.encode("ascii")
    if len(tenant) > 255:
        raise ValueError("tenant is longer than 255 bytes")
    if len(request.proof) != PROOF_LEN:
        raise ValueError(f"a pull's proof is {PROOF_LEN} bytes")
    flags = FLAG_WANT_FD if request.want_fd else 0
    payload = bytes((flags, len(tenant))) + tenant + request.proof + token
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError("reference too long for a PULL frame")
    return _frame(FrameType.PULL, payload)


def decode_pull(payload: bytes | bytearray | memoryview) -> PullRequest:
    data = bytes(payload)
    if len(data) < 2 or len(data) < 2 + data[1]:
        raise ProtocolError("PULL frame is truncated")
    flags, tenant_end = data[0], 2 + data[1]
    token_start = tenant_end + PROOF_LEN
    if len(data) < token_start:
        raise ProtocolError("PULL frame is truncated")
    try:
        tenant = data[2:tenant_end].decode()
        token = data[token_start:].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("PULL frame holds text that is not valid") from None
    return PullRequest(
        token=token,
        tenant=tenant,
        proof=data[tenant_end:token_start],
        want_fd=bool(flags & FLAG_WANT_FD),
    )


def encode_object(header: ObjectHeader) -> bytes:
    flags = (FLAG_FD_ATTACHED if header.fd_attached else 0) | (
        FLAG_FD_LENT if header.fd_lent else 0
    )
    return _frame(FrameType.OBJECT, _OBJECT.pack(header.size, flags))


def decode_object(payload: bytes | bytearray | memoryview) -> ObjectHeader:
    if len(payload) != _OBJECT.size:
        raise ProtocolError(f"OBJECT frame has {len(payload)} bytes, expected {_OBJECT.size}")
    size, flags = _OBJECT.unpack_from(payload)
    return ObjectHeader(
        size=size,
        fd_attached=bool(flags & FLAG_FD_ATTACHED),
        fd_lent=bool(flags & FLAG_FD_ATTACHED and flags & FLAG_FD_LENT),
    )


def encode_done() -> bytes:
    return _frame(FrameType.DONE)


def encode_failed() -> bytes:
    return _frame(FrameType.FAILED)


def encode_error(code: str, message: str) -> bytes:
    """ERROR(code length u8, code, message): the error's wire code (:mod:`xdt._core.errors`)
    and its message, cut to fit a control frame."""
    raw_code = code.encode("ascii")
    if not 0 < len(raw_code) <= _MAX_CODE:
        raise ValueError(f"an error code is 1 to {_MAX_CODE} ASCII characters")
    text = message.encode()[: MAX_CONTROL_PAYLOAD - 1 - len(raw_code)]
    return _frame(FrameType.ERROR, bytes((len(raw_code),)) + raw_code + text)


def decode_error(payload: bytes | bytearray | memoryview) -> tuple[str, str]:
    """(code, message) of an ERROR frame's payload."""
    data = bytes(payload)
    if not data or not 0 < data[0] <= _MAX_CODE or len(data) < 1 + data[0]:
        raise ProtocolError("ERROR frame is truncated or has no code")
    try:
        code = data[1 : 1 + data[0]].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("ERROR frame has a code that is not ASCII") from None
    return code, data[1 + data[0] :].decode(errors="replace")


class FrameReader:
    """Cuts frames out of what a stream delivers, in a fixed buffer of ``capacity`` bytes.

    Read into :meth:`space`, call :meth:`advance` with the count, then :meth:`next_frame` until
    it returns ``None``. Raw bytes that follow an OBJECT frame are taken with :meth:`take_into`.
    """

    __slots__ = ("_buffer", "_end", "_start", "_view")

    def __init__(self, capacity: int = HEADER.size + MAX_CONTROL_PAYLOAD) -> None:
        if capacity < HEADER.size + MAX_CONTROL_PAYLOAD:
            raise ValueError("a frame reader must hold at least one whole control frame")
        self._buffer = bytearray(capacity)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0

    @property
    def buffered(self) -> int:
        return self._end - self._start

    def space(self) -> memoryview:
        """Where the next read goes (never empty while a frame can still be incomplete)."""
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == len(self._buffer):
            # Slide the partial frame to the front; it is at most one control frame long.
            pending = self._end - self._start
            self._buffer[:pending] = self._buffer[self._start : self._end]
            self._start, self._end = 0, pending
        return self._view[self._end :]

    def advance(self, count: int) -> None:
        self._end += count

    def next_frame(self) -> tuple[FrameType, bytes] | None:
        """The next whole frame (type, payload), or None if more bytes are needed."""
        if self._end - self._start < HEADER.size:
            return None
        kind, length = parse_header(self._view[self._start : self._start + HEADER.size])
        begin = self._start + HEADER.size
        if self._end - begin < length:
            return None
        self._start = begin + length
        return kind, bytes(self._view[begin : begin + length])

    def take_into(self, destination: memoryview) -> int:
        """Move buffered raw bytes into ``destination``; returns how many."""
        count = min(self._end - self._start, destination.nbytes)
        destination[:count] = self._view[self._start : self._start + count]
        self._start += count
        return count


async def read_frame(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    reader: FrameReader,
    fds: list[int] | None = None,
) -> tuple[FrameType, bytes] | None:
    """The next frame, or None if the peer closed cleanly between frames. With ``fds``, file
    descriptors passed alongside (Unix sockets) are collected there instead of being lost."""
    while True:
        frame = reader.next_frame()
        if frame is not None:
            return frame
        if fds is None:
            count = await loop.sock_recv_into(sock, reader.space())
        else:
            count, passed = await fdio.recv_fds(loop, sock, reader.space(), max_fds=1)
            fds.extend(passed)
        if count == 0:
            if reader.buffered:
                raise ProtocolError(
                    f"connection closed inside a frame ({reader.buffered} bytes of it arrived)"
                )
            return None
        reader.advance(count)
