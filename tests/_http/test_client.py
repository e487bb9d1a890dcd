"""The platform's own keep-alive HTTP/1.1 client, against aiohttp and hand-written servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from xdt._core.errors import PeerGone, ProtocolError
from xdt._http.client import ConnectionPool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def aiohttp_port() -> AsyncIterator[int]:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(
            body=body[::-1], headers={"X-Seen-Caller": request.headers.get("X-Caller", "")}
        )

    app = web.Application(client_max_size=8 << 20)
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    yield server.sockets[0].getsockname()[1]
    await runner.cleanup()


async def raw_server(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return await reader.readexactly(length)


async def test_posts_reuse_one_connection_and_carry_headers(aiohttp_port: int) -> None:
    pool = ConnectionPool("127.0.0.1", aiohttp_port)
    for i in range(5):
        answer = await pool.post("/echo", f"body {i}".encode(), {"X-Caller": "test"})
        assert (answer.status, answer.body) == (200, f"{i} ydob".encode())
        assert answer.header("x-seen-caller") == "test"
    assert len(pool._idle) == 1  # one connection, reused
    answer = await pool.post("/missing", b"")
    assert answer.status == 404
    pool.close()


async def test_large_bodies_round_trip(aiohttp_port: int) -> None:
    pool = ConnectionPool("127.0.0.1", aiohttp_port)
    body = bytes(range(256)) * 4096  # 1 MiB
    assert (await pool.post("/echo", body)).body == body[::-1]
    pool.close()


async def test_chunked_answers_and_connection_close() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server, port = await raw_server(handler)
    async with server:
        pool = ConnectionPool("127.0.0.1", port)
        answer = await pool.post("/", b"x")
        assert (answer.status, answer.body) == (201, b"hello world")
        assert pool._idle == []  # the server said close: not kept


async def test_a_connection_closed_while_idle_is_retried_on_a_fresh_one() -> None:
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        body = await read_request(reader)
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()
        await (
            writer.wait_closed()
        )  # without saying Connection: close: the client finds out on reuse

    server, port = await raw_server(handler)
    async with server:
        pool = ConnectionPool("127.0.0.1", port)
        assert (await pool.post("/", b"one")).body == b"one"
        await asyncio.sleep(0.05)
        assert (await pool.post("/", b"two")).body == b"two"
        assert served == 2
        pool.close()


def answers_then_hangs_up(raw: bytes) -> Any:
    """A raw server's handler: reads one request, writes ``raw``, closes."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    return handler


async def test_a_server_that_dies_mid_answer_is_peer_gone() -> None:
    handler = answers_then_hangs_up(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
    server, port = await raw_server(handler)
    async with server:
        pool = ConnectionPool("127.0.0.1", port)
        with pytest.raises(PeerGone, match="went away mid-answer"):
            await pool.post("/", b"x")
        assert pool._idle == []


async def test_nobody_listening_is_peer_gone() -> None:
    server, port = await raw_server(lambda r, w: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    with pytest.raises(PeerGone, match=f"cannot connect to 127.0.0.1:{port}"):
        await ConnectionPool("127.0.0.1", port).post("/", b"x")


async def test_garbage_instead_of_http_is_a_protocol_error() -> None:
    server, port = await raw_server(answers_then_hangs_up(b"SSH-2.0-OpenSSH\r\n\r\n"))
    async with server:
        with pytest.raises(ProtocolError, match=r"not HTTP/1\.1"):
            await ConnectionPool("127.0.0.1", port).post("/", b"x")


async def test_an_answer_without_content_length_is_read_to_the_end_and_not_reused() -> None:
    server, port = await raw_server(answers_then_hangs_up(b"HTTP/1.1 200 OK\r\n\r\nall of it"))
    async with server:
        pool = ConnectionPool("127.0.0.1", port)
        answer = await pool.post("/", b"x")
        assert (answer.status, answer.body) == (200, b"all of it")  # not b"", as it was
        assert pool._idle == []  # framed by its end: that connection is done


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000,
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 100000,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % 60000
        + b"x" * 60000
        + b"\r\n"
        + b"%x\r\n" % 60000
        + b"x" * 60000
        + b"\r\n0\r\n\r\n",
    ],
    ids=["content-length", "to-the-end", "chunked"],
)
async def test_an_answer_over_max_answer_is_refused(answer: bytes) -> None:
    server, port = await raw_server(answers_then_hangs_up(answer))
    async with server:
        with pytest.raises(ProtocolError, match="over the 65536"):
            await ConnectionPool("127.0.0.1", port, max_answer=65536).post("/", b"x")


async def test_a_content_length_that_is_not_a_number_is_a_protocol_error() -> None:
    server, port = await raw_server(
        answers_then_hangs_up(b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nabc")
    )
    async with server:
        with pytest.raises(ProtocolError, match="Content-Length '-5'"):
            await ConnectionPool("127.0.0.1", port).post("/", b"x")


async def test_no_content_no_body() -> None:
    server, port = await raw_server(answers_then_hangs_up(b"HTTP/1.1 204 No Content\r\n\r\n"))
    async with server:
        pool = ConnectionPool("127.0.0.1", port)
        answer = await pool.post("/", b"x")
        assert (answer.status, answer.body) == (204, b"")
        pool.close()


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/invoke/a HTTP/1.1\r\nHost: x\r\n\r\nPOST /invoke/b", {}),
        ("/invoke/a b", {}),
        ("/invoke/a", {"X-Caller": "f\r\nX-Injected: 1"}),
    ],
)
async def test_requests_that_would_break_framing_are_refused(
    path: str, headers: dict[str, str]
) -> None:
    """On a pooled keep-alive connection an injected request would shift every later answer."""
    with pytest.raises(ValueError, match="CR, LF or space"):
        await ConnectionPool("127.0.0.1", 9).post(path, b"x", headers)


async def test_a_big_answer_comes_as_a_stream_and_its_connection_is_reused(
    aiohttp_port: int,
) -> None:
    pool = ConnectionPool("127.0.0.1", aiohttp_port, stream_over=1000)
    data = bytes(range(256)) * 10_000  # 2.56 MB: more than one chunk
    answer = await pool.post("/echo", data)
    assert answer.body == b"" and answer.stream is not None
    assert answer.stream.length == len(data)
    chunks = [chunk async for chunk in answer.stream]
    assert b"".join(chunks) == data[::-1] and max(map(len, chunks)) <= 1 << 20
    answer.stream.close()
    assert len(pool._idle) == 1  # read to its end: reused
    small = await pool.post("/echo", b"abc")
    assert (small.body, small.stream) == (b"cba", None)  # small answers are read whole
    assert len(pool._idle) == 1
    pool.close()


async def test_a_stream_given_up_midway_closes_its_connection(aiohttp_port: int) -> None:
    pool = ConnectionPool("127.0.0.1", aiohttp_port, stream_over=1000)
    answer = await pool.post("/echo", b"x" * 3_000_000)
    assert answer.stream is not None
    async for _ in answer.stream:
        break
    answer.stream.close()
    assert pool._idle == []  # bytes of it are still on the wire: never reused
    pool.close()


async def test_a_server_that_dies_mid_stream_is_peer_gone() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n" + b"y" * 10_000)
        await writer.drain()
        writer.close()

    server, port = await raw_server(handler)
    async with server:
        pool = ConnectionPool("127.0.0.1", port, stream_over=1000)
        answer = await pool.post("/x", b"")
        assert answer.stream is not None
        got = 0
        with pytest.raises(PeerGone, match="unsent"):
            async for chunk in answer.stream:
                got += len(chunk)
        assert got == 10_000 and pool._idle == []


async def test_a_request_the_peer_may_have_taken_is_never_sent_twice() -> None:
    """The peer read the request and hung up without a byte of answer (a crash mid-request):
    it may have acted on it, so the POST is not sent again — PeerGone, delivered unknown."""
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(reader)
        served += 1
        writer.close()

    server, port = await raw_server(handler)
    async with server:
        pool = ConnectionPool("127.0.0.1", port)
        with pytest.raises(PeerGone) as gone:
            await pool.post("/", b"charge the card")
        assert gone.value.delivered is None and served == 1
        pool.close()


async def test_nobody_taking_the_connection_is_undelivered() -> None:
    server, port = await raw_server(lambda r, w: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    pool = ConnectionPool("127.0.0.1", port)
    with pytest.raises(PeerGone) as gone:
        await pool.post("/", b"x")
    assert gone.value.delivered is False  # safe to send elsewhere


async def test_a_connection_idle_past_the_pools_timeout_is_not_reused(aiohttp_port: int) -> None:
    pool = ConnectionPool("127.0.0.1", aiohttp_port, idle_timeout=0.1)
    await pool.post("/echo", b"one")
    ((_, first),) = pool._idle
    await asyncio.sleep(0.2)
    await pool.post("/echo", b"two")
    ((_, second),) = pool._idle
    assert second is not first and first[1].is_closing()
    pool.close()
