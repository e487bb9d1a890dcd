"""Socket primitives the event loop lacks: fd passing, and reading whole frames.

They work on both asyncio's loop and uvloop: each tries the system call first and waits for
readiness (``add_reader``/``add_writer``) only when the kernel says it would block.
"""

from __future__ import annotations

import array
import asyncio
import os
import socket

from .._errors import ProtocolError
from ._framing import FrameReader, FrameType

__all__ = ["read_frame", "recv_fds", "send_fds", "sendall"]


async def _wait(loop: asyncio.AbstractEventLoop, sock: socket.socket, *, write: bool) -> None:
    waiter: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not waiter.done():
            waiter.set_result(None)

    if write:
        loop.add_writer(fd, ready)
    else:
        loop.add_reader(fd, ready)
    try:
        await waiter
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


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
            count, passed = await recv_fds(loop, sock, reader.space(), max_fds=1)
            fds.extend(passed)
        if count == 0:
            if reader.buffered:
                raise ProtocolError(
                    f"connection closed inside a frame ({reader.buffered} bytes of it arrived)"
                )
            return None
        reader.advance(count)


async def sendall(loop: asyncio.AbstractEventLoop, sock: socket.socket, data: bytes) -> None:
    # Try once directly: a small control frame almost always fits the socket buffer.
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        await loop.sock_sendall(sock, memoryview(data)[sent:])


async def send_fds(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, data: bytes, fds: list[int]
) -> None:
    """Send ``data`` with ``fds`` attached (SCM_RIGHTS) on a Unix stream socket."""
    while True:
        try:
            sent = socket.send_fds(sock, [data], fds)
            break
        except BlockingIOError:
            await _wait(loop, sock, write=True)
    if sent < len(data):
        await loop.sock_sendall(sock, memoryview(data)[sent:])


async def recv_fds(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, view: memoryview, max_fds: int
) -> tuple[int, list[int]]:
    """One read into ``view`` that also collects passed file descriptors."""
    fds = array.array("i")
    ancillary = socket.CMSG_SPACE(max_fds * fds.itemsize)
    while True:
        try:
            count, ancdata, flags, _ = sock.recvmsg_into([view], ancillary)
            break
        except BlockingIOError:
            await _wait(loop, sock, write=False)
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        raise ConnectionResetError("peer passed more file descriptors than expected")
    return count, fds.tolist()
