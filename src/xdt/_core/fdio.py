"""Socket primitives the event loop lacks: sending whole messages, and passing descriptors.

They work on both asyncio's loop and uvloop: each tries the system call first and waits for
readiness (``add_reader``/``add_writer``) only when the kernel says it would block.
"""

from __future__ import annotations

import array
import asyncio
import os
import socket

__all__ = ["recv_fds", "send_fds", "sendall"]


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
