"""The same-host wire between a function and its sidecar: messages, given and lent memfds."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import socket
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xdt._core.buffers import PAGE, Buffer, BufferPool, PoolLimits, sealed_buffer
from xdt._core.errors import PeerGone, ProtocolError
from xdt._core.loans import LOANS
from xdt.channel import FD_THRESHOLD, HEADER, Channel, Kind

BIG = FD_THRESHOLD + 12345
Wire = tuple[socket.socket, Channel]  # a raw socket to write what a peer might, and the receiver


@pytest.fixture
async def wire() -> AsyncIterator[Wire]:
    """A raw socket to write what a peer might send, and the Channel that receives it."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    receiver = Channel(b)
    yield a, receiver
    a.close()
    receiver.close()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Channel, Channel]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    left, right = Channel(a, BufferPool(name="test-lend")), Channel(b, BufferPool(name="test"))
    yield left, right
    left.close()
    right.close()


async def test_small_payloads_and_metadata_travel_inline(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    await left.send(Kind.CALL, {"op": "get", "n": 3}, b"hello")
    message = await right.receive()
    assert (message.kind, message.meta, message.payload) == (
        Kind.CALL,
        {"op": "get", "n": 3},
        b"hello",
    )


async def test_big_bytes_are_lent_and_come_back_to_the_pool_after_the_answer(
    pair: tuple[Channel, Channel],
) -> None:
    left, right = pair
    data = os.urandom(BIG)
    await left.send(Kind.INVOKE, None, data)
    message = await right.receive()
    assert isinstance(message.payload, Buffer) and message.payload.lent
    assert message.payload.view() == data
    lent = left._lent
    assert lent is not None  # still the receiver's to read
    # The lent memfd cannot be shrunk under the reader, nor grown.
    with pytest.raises(PermissionError):
        os.ftruncate(lent.fd, 0)
    assert message.data() == data  # copied out; the mapping is gone
    await right.send(Kind.RESULT, None, b"ok")
    assert (await left.receive()).payload == b"ok"
    assert left._lent is None  # answered: the buffer is back in the pool, warm
    again = left.pool.acquire(BIG) if left.pool else None
    assert again is lent


async def test_big_bytes_without_a_pool_and_buffers_are_given_sealed() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    left, right = Channel(a), Channel(b)
    try:
        data = os.urandom(BIG)
        await left.send(Kind.RESULT, None, data)
        given = (await right.receive()).payload
        assert isinstance(given, Buffer) and given.sealed and not given.lent
        assert given.view() == data
        with pytest.raises(PermissionError):  # sealed: nobody can write to it any more
            os.pwrite(given.fd, b"x", 0)
        given.close()

        sealed = sealed_buffer(data)
        await left.send(Kind.INVOKE, None, sealed)
        assert sealed.closed  # given away
        again = (await right.receive()).payload
        assert isinstance(again, Buffer) and again.sealed and again.view() == data
        again.close()

        mine = Buffer(BIG)  # one of ours, not sealed: lent as it is, no copy
        mine.fill(data)
        await left.send(Kind.INVOKE, None, mine)
        lent = await right.receive()
        assert isinstance(lent.payload, Buffer) and lent.payload.lent
        assert lent.data() == data
        await right.send(Kind.RESULT)
        await left.receive()
        assert mine.closed  # no pool on this channel: closed once answered
    finally:
        left.close()
        right.close()


async def test_a_lent_memfd_that_could_shrink_is_refused(
    wire: Wire,
) -> None:
    a, receiver = wire
    unsafe = Buffer(BIG)  # no seals at all: its owner could truncate it mid-read
    head = HEADER.pack(Kind.INVOKE, 2, 0, BIG)
    socket.send_fds(a, [head], [unsafe.fd])
    with pytest.raises(ProtocolError, match="sealed against shrinking"):
        await receiver.receive()
    unsafe.close()


async def test_a_given_memfd_that_is_not_sealed_is_refused(
    wire: Wire,
) -> None:
    a, receiver = wire
    writable = Buffer(BIG)
    socket.send_fds(a, [HEADER.pack(Kind.INVOKE, 1, 0, BIG)], [writable.fd])
    with pytest.raises(ProtocolError, match="not sealed read-only"):
        await receiver.receive()
    writable.close()
    sealed = sealed_buffer(b"z" * BIG)
    assert fcntl.fcntl(sealed.fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_WRITE
    sealed.close()


async def test_a_peer_that_goes_away_mid_message_is_channel_closed(
    wire: Wire,
) -> None:
    a, receiver = wire
    a.sendall(HEADER.pack(Kind.INVOKE, 0, 0, 100) + b"only part")
    a.close()
    with pytest.raises(PeerGone):
        await asyncio.wait_for(receiver.receive(), 5)


async def test_garbage_is_refused(wire: Wire) -> None:
    a, receiver = wire
    a.sendall(bytes([99]) + b"\x00" * (HEADER.size - 1))
    with pytest.raises(ProtocolError):
        await asyncio.wait_for(receiver.receive(), 5)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_what_an_untrusted_peer_sends_is_checked_before_anything_is_allocated(
    wire: Wire,
) -> None:
    a, receiver = wire
    receiver.max_payload = 1 << 20
    before = _open_fds()
    # A header claiming 2 GiB inline: refused at once, nothing allocated.
    a.sendall(HEADER.pack(Kind.CALL, 0, 0, 2 << 30))
    with pytest.raises(ProtocolError, match="over the 1048576 allowed"):
        await asyncio.wait_for(receiver.receive(), 5)
    # An unknown kind with a memfd attached: refused, and the descriptor is not kept.
    sparse = Buffer(4096)
    socket.send_fds(a, [HEADER.pack(99, 1, 0, 4096)], [sparse.fd])
    with pytest.raises(ProtocolError, match="unknown message kind"):
        await asyncio.wait_for(receiver.receive(), 5)
    # Metadata that is not a JSON object.
    a.sendall(HEADER.pack(Kind.CALL, 0, 2, 0) + b"[]")
    with pytest.raises(ProtocolError, match="JSON object"):
        await asyncio.wait_for(receiver.receive(), 5)
    sparse.close()
    assert _open_fds() <= before


async def test_a_lent_buffer_is_not_reused_when_the_channel_closes_unanswered(
    pair: tuple[Channel, Channel],
) -> None:
    left, _ = pair
    await left.send(Kind.INVOKE, None, os.urandom(BIG))
    lent = left._lent
    assert lent is not None
    left.close()  # e.g. a timeout: the peer may still be reading it
    assert lent.closed
    assert left.pool is not None and left.pool.acquire(BIG) is not lent


async def test_bytes_too_big_to_lend_are_given_sealed_and_made_again_after_the_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from xdt import channel
    from xdt._core.checksum import checksum

    monkeypatch.setattr(channel, "LEND_UP_TO", FD_THRESHOLD)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pool = BufferPool(PoolLimits(make_ahead_from=PAGE))
    left, right = Channel(a, pool), Channel(b)
    try:
        data = os.urandom(BIG)  # over what is lent: given sealed (no idle buffer: a fresh one)
        await left.send(Kind.CALL, {"op": "put"}, data)
        assert left._lent is None and pool.created == 0
        message = await right.receive()
        given = message.payload
        assert isinstance(given, Buffer) and given.sealed and given.view() == data
        assert given.checksum == checksum(data)  # computed by the maker, from its own bytes
        assert message.meta == {"op": "put"}  # the checksum rode in the metadata, taken out
        given.close()
        assert pool.stats.made_ahead == 0  # not while the peer may hold the given one
        await right.send(Kind.RESULT)
        await left.receive()  # the answer: now the pool makes the next buffer ahead
        reused = pool.acquire(BIG)  # waits for the one being made rather than making another
        assert (pool.created, pool.reused, pool.stats.made_ahead) == (0, 1, 1)
        assert reused is not given and not reused.sealed
        reused.fill(data)  # the next send of that size takes the one made ahead: no fresh pages
        pool.release(reused)
        await left.send(Kind.CALL, {"op": "put"}, data)
        again = await right.receive()
        assert isinstance(again.payload, Buffer) and again.payload.view() == data
        assert again.meta == {"op": "put"} and pool.reused == 2
        again.close()
    finally:
        left.close()
        right.close()


async def test_a_claimed_checksum_that_is_not_a_64_bit_number_is_ignored(
    wire: Wire,
) -> None:
    a, receiver = wire
    sealed = sealed_buffer(b"q" * BIG)
    meta = json.dumps({"xdt.xxh3": -1}).encode()
    socket.send_fds(a, [HEADER.pack(Kind.CALL, 1, len(meta), BIG) + meta], [sealed.fd])
    sealed.close()
    message = await receiver.receive()
    assert isinstance(message.payload, Buffer) and message.payload.checksum is None
    message.close()


async def test_a_big_payload_declared_on_the_socket_is_refused_before_allocation(
    wire: Wire,
) -> None:
    """Bytes of FD_THRESHOLD and more always travel as a memfd: a 14-byte header declaring
    256 MiB on the socket (four of them grew a sidecar by 1.1 GB) is refused at once."""
    a, receiver = wire
    receiver.max_payload = 1 << 30
    a.sendall(HEADER.pack(Kind.CALL, 0, 0, 256 << 20))
    with pytest.raises(ProtocolError, match="must be passed as a memfd"):
        await asyncio.wait_for(receiver.receive(), 5)


async def test_a_loan_the_peer_never_answers_is_given_up_not_kept(
    pair: tuple[Channel, Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle channel must not pin a big warm buffer: unanswered past the loan timeout, the
    loan is dropped (closed, never reused: the peer may still read its copy)."""
    monkeypatch.setattr("xdt.channel.LOAN_IDLE_TIMEOUT", 0.1)
    left, right = pair
    await left.send(Kind.RESULT, None, os.urandom(BIG))
    lent = left._lent
    assert lent is not None
    message = await right.receive()
    assert message.data()[:1]  # the peer copied it out, and goes idle without answering
    await asyncio.sleep(0.3)
    assert left._lent is None and lent.closed
    assert left.pool is not None and left.pool.acquire(BIG) is not lent
    # The channel still works, and a loan that is answered in time comes back warm.
    await left.send(Kind.RESULT, None, os.urandom(BIG))
    second = left._lent
    (await right.receive()).close()
    await right.send(Kind.CALL, None, b"next")
    assert (await left.receive()).payload == b"next"
    assert left.pool.acquire(BIG) is second


async def test_peer_closed_tells_a_pooled_channel_that_is_gone(
    pair: tuple[Channel, Channel],
) -> None:
    left, right = pair
    assert not left.peer_closed()
    right.close()
    assert left.peer_closed()


# -- fuzzing: whatever a peer writes ------------------------------------------------------------

_message = st.tuples(
    st.sampled_from([*Kind, 0, 99, 255]),  # kind
    st.integers(0, 255),  # flags: FD, LENT, both, and bits nobody defined
    st.one_of(st.just(b""), st.just(b'{"op": "get"}'), st.binary(max_size=64)),  # meta
    st.sampled_from([0, 1, 100, FD_THRESHOLD - 1, FD_THRESHOLD, 1 << 20, 2**63]),  # declared
    st.binary(max_size=300),  # the bytes that actually follow
    st.sampled_from(["none", "sealed", "unsealed", "two"]),  # memfds attached
)


def _memfds(which: str) -> list[Buffer]:
    if which == "none":
        return []
    if which == "sealed":
        return [sealed_buffer(b"s" * 5000)]
    unsealed = Buffer(8192)
    unsealed.fill(b"u" * 8192)
    return [unsealed] if which == "unsealed" else [unsealed, sealed_buffer(b"t" * 100)]


@settings(max_examples=150, deadline=None)
@given(st.lists(_message, min_size=1, max_size=4), st.sampled_from([None, 4096]))
def test_whatever_a_peer_writes_ends_as_a_message_or_a_typed_error(
    messages: list[tuple[int, int, bytes, int, bytes, str]], max_payload: int | None
) -> None:
    """No crash, no hang, no descriptor kept: each receive is a message, a ProtocolError or
    PeerGone (the writer closes after its last byte), within a bound. (Lent memfds stay
    mapped in LOANS, bounded, for the lender's next loan: let go of before counting.)"""

    async def run() -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        receiver = Channel(b, BufferPool(name="fuzz"))
        receiver.max_payload = max_payload
        sent: list[Buffer] = []
        try:
            for kind, flags, meta, declared, body, attached in messages:
                head = HEADER.pack(kind, flags, len(meta), declared) + meta
                buffers = _memfds(attached)
                sent += buffers
                if buffers:
                    socket.send_fds(a, [head], [buf.fd for buf in buffers])
                else:
                    a.sendall(head)
                a.sendall(body)
            a.shutdown(socket.SHUT_WR)
            for _ in range(len(messages) + 1):
                try:
                    message = await asyncio.wait_for(receiver.receive(), 5)
                except (ProtocolError, PeerGone):
                    break
                message.close()
        finally:
            receiver.close()
            a.close()
            for buffer in sent:
                buffer.close()

    before = _open_fds()
    asyncio.run(run())
    assert LOANS.mapped_bytes <= LOANS.max_bytes
    LOANS.trim(everything=True)
    assert _open_fds() <= before
