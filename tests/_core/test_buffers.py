"""memfd-backed buffers and the buffer pool (``xdt._core.buffers``)."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import tempfile
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xdt._core import buffers as buffers_module
from xdt._core.buffers import PAGE, Buffer, BufferPool, PoolLimits, size_class

ALL_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
MiB = 1 << 20


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        assert exc.errno == errno.EBADF
        return False
    return True


def sealed_memfd(data: bytes, seals: int = ALL_SEALS) -> int:
    fd = os.memfd_create("test", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


@pytest.fixture
def buffer() -> Iterator[Buffer]:
    made = Buffer(size_class(10_000))
    yield made
    made.close()


@pytest.fixture
def pool() -> Iterator[BufferPool]:
    made = BufferPool(PoolLimits(max_idle_bytes=64 * MiB, idle_seconds=30.0), name="test")
    yield made
    made.close()


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- size classes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "capacity"),
    [
        (0, PAGE),
        (1, PAGE),
        (PAGE, PAGE),
        (PAGE + 1, 2 * PAGE),
        (8 * PAGE, 8 * PAGE),
        (8 * PAGE + 1, 9 * PAGE),
        (16 * PAGE + 1, 18 * PAGE),
        (256 * MiB, 256 * MiB),
        (256 * MiB + 1, 256 * MiB + 32 * MiB),
        (300_000_000, 288 * MiB),
    ],
)
def test_size_class_examples(size: int, capacity: int) -> None:
    assert size_class(size) == capacity


@pytest.mark.parametrize("power", [16, 20, 28, 34])
def test_size_class_eight_classes_per_doubling(power: int) -> None:
    low, step = 1 << power, 1 << (power - 3)
    assert step >= PAGE
    classes = {size_class(low + j * step + k) for j in range(8) for k in (1, step // 2, step)}
    assert sorted(classes) == [low + (j + 1) * step for j in range(8)]


@settings(max_examples=300, deadline=None)
@given(size=st.integers(0, 1 << 40))
def test_size_class_properties(size: int) -> None:
    capacity = size_class(size)
    assert capacity >= size
    assert capacity >= PAGE
    assert capacity % PAGE == 0
    waste = capacity - size
    assert waste < max(PAGE, size / 8) or size == 0
    if size >= 8 * PAGE:
        assert waste * 8 <= size  # at most 1/8 wasted once classes are finer than a page
    assert size_class(capacity) == capacity  # a capacity is its own class
    assert size_class(size + 1) >= capacity  # monotonic


# -- buffers --------------------------------------------------------------------------------


def test_new_buffer(buffer: Buffer) -> None:
    assert buffer.capacity == size_class(10_000)
    assert buffer.size == 0
    assert not buffer.sealed and not buffer.closed
    assert os.fstat(buffer.fd).st_size == buffer.capacity
    assert os.get_inheritable(buffer.fd) is False  # MFD_CLOEXEC
    assert buffer.view() == b""
    assert len(buffer.writable()) == buffer.capacity


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_fill_and_view(buffer: Buffer, kind: type) -> None:
    data = os.urandom(10_000)
    buffer.fill(kind(data))
    assert buffer.size == 10_000
    view = buffer.view()
    assert view.readonly
    assert view == data
    with pytest.raises(TypeError):
        view[0] = 0
    view.release()
    buffer.fill(b"short")
    assert buffer.view() == b"short"
    assert os.pread(buffer.fd, 5, 0) == b"short"  # the bytes live in the memfd


def test_fill_with_a_memoryview_slice(buffer: Buffer) -> None:
    whole = bytearray(range(256))
    buffer.fill(memoryview(whole)[100:164])
    assert buffer.size == 64
    assert buffer.view() == bytes(range(100, 164))


def test_fill_too_much(buffer: Buffer) -> None:
    with pytest.raises(ValueError, match="do not fit"):
        buffer.fill(bytes(buffer.capacity + 1))
    buffer.fill(bytes(buffer.capacity))
    assert buffer.size == buffer.capacity


def test_zero_size_buffer_views_are_empty(buffer: Buffer) -> None:
    buffer.fill(b"")
    assert buffer.view() == b""
    assert len(buffer.view()) == 0
    buffer.seal()
    assert buffer.view() == b""
    assert os.fstat(buffer.fd).st_size == 0


def test_close(buffer: Buffer) -> None:
    fd = buffer.fd
    buffer.fill(b"data")
    buffer.close()
    assert buffer.closed
    assert not fd_is_open(fd)
    with pytest.raises(ValueError, match="closed"):
        buffer.view()
    with pytest.raises(ValueError):
        buffer.writable()
    buffer.close()  # twice is fine


def test_close_with_a_view_held(buffer: Buffer) -> None:
    buffer.fill(b"held")
    view = buffer.view()
    buffer.close()
    assert buffer.closed
    assert view == b"held"  # the mapping lives on until its last view goes
    view.release()


def test_seal_makes_the_memfd_read_only(buffer: Buffer) -> None:
    data = os.urandom(5000)
    buffer.fill(data)
    buffer.seal()
    assert buffer.sealed
    seals = fcntl.fcntl(buffer.fd, fcntl.F_GET_SEALS)
    assert seals & fcntl.F_SEAL_WRITE
    assert seals & fcntl.F_SEAL_SHRINK and seals & fcntl.F_SEAL_GROW
    assert seals & fcntl.F_SEAL_SEAL
    assert os.fstat(buffer.fd).st_size == 5000  # shrunk to the bytes held
    with pytest.raises(PermissionError):
        os.write(buffer.fd, b"x")
    with pytest.raises(PermissionError):
        os.pwrite(buffer.fd, b"x", 100)
    with pytest.raises(PermissionError):
        os.ftruncate(buffer.fd, 10_000)
    with pytest.raises(PermissionError):
        mmap.mmap(buffer.fd, 5000, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    view = buffer.view()
    assert view.readonly
    assert view == data
    view.release()
    with pytest.raises(ValueError, match="sealed"):
        buffer.writable()
    with pytest.raises(ValueError):
        buffer.fill(b"again")
    buffer.seal()  # sealing twice is a no-op
    assert buffer.view() == data


def test_seal_refused_while_a_writable_view_is_out(buffer: Buffer) -> None:
    buffer.fill(b"abc")
    held = buffer.writable()[:3]
    with pytest.raises(OSError) as info:
        buffer.seal()
    assert info.value.errno == errno.EBUSY
    assert not buffer.sealed
    assert fcntl.fcntl(buffer.fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_WRITE == 0
    held.release()


# -- adopting a sealed memfd ----------------------------------------------------------------


def test_from_sealed_fd_of_a_sealed_buffer(buffer: Buffer) -> None:
    data = os.urandom(7777)
    buffer.fill(data)
    buffer.seal()
    adopted = Buffer.from_sealed_fd(os.dup(buffer.fd), len(data))
    try:
        assert adopted.sealed
        assert adopted.size == adopted.capacity == len(data)
        assert adopted.view() == data
        with pytest.raises(ValueError):
            adopted.writable()
        with pytest.raises(ValueError):
            adopted.fill(b"x")
    finally:
        adopted.close()
    assert adopted.closed


def test_from_sealed_fd_read_only_seals_suffice() -> None:
    fd = sealed_memfd(b"abc", buffers_module.READ_ONLY_SEALS)
    adopted = Buffer.from_sealed_fd(fd, 3)
    assert adopted.view() == b"abc"
    adopted.close()
    assert not fd_is_open(fd)


def test_from_sealed_fd_empty() -> None:
    fd = sealed_memfd(b"")
    adopted = Buffer.from_sealed_fd(fd, 0)
    assert adopted.view() == b""
    assert not adopted.closed
    adopted.close()
    assert not fd_is_open(fd)


@pytest.mark.parametrize(
    "seals",
    [
        0,
        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW,
        fcntl.F_SEAL_WRITE,
        fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW,
        fcntl.F_SEAL_SEAL,
    ],
)
def test_from_sealed_fd_rejects_unsealed(seals: int) -> None:
    fd = sealed_memfd(b"abcd", seals)
    with pytest.raises(ValueError, match="not sealed read-only"):
        Buffer.from_sealed_fd(fd, 4)
    assert not fd_is_open(fd)


def test_from_sealed_fd_rejects_a_memfd_that_cannot_be_sealed() -> None:
    fd = os.memfd_create("unsealable", os.MFD_CLOEXEC)
    os.write(fd, b"abcd")
    with pytest.raises(ValueError, match="not sealed read-only"):
        Buffer.from_sealed_fd(fd, 4)
    assert not fd_is_open(fd)


@pytest.mark.parametrize("claimed", [0, 3, 5, 1 << 30])
def test_from_sealed_fd_rejects_wrong_size(claimed: int) -> None:
    fd = sealed_memfd(b"abcd")
    with pytest.raises(ValueError, match=f"holds 4 bytes, not {claimed}"):
        Buffer.from_sealed_fd(fd, claimed)
    assert not fd_is_open(fd)


def test_from_sealed_fd_rejects_a_regular_file() -> None:
    with tempfile.TemporaryFile() as file:
        file.write(b"abcd")
        file.flush()
        fd = os.dup(file.fileno())
    with pytest.raises(OSError):
        Buffer.from_sealed_fd(fd, 4)
    assert not fd_is_open(fd)


# -- the pool -------------------------------------------------------------------------------


def test_pool_reuses_a_released_buffer(pool: BufferPool) -> None:
    first = pool.acquire(1000)
    assert first.capacity == PAGE
    assert (pool.created, pool.reused, pool.idle_bytes) == (1, 0, 0)
    first.fill(b"old bytes")
    pool.release(first)
    assert pool.idle_bytes == PAGE
    assert not first.closed

    again = pool.acquire(PAGE)  # same size class
    assert again is first
    assert again.size == 0
    assert again.view() == b""
    assert (pool.created, pool.reused, pool.idle_bytes) == (1, 1, 0)

    other = pool.acquire(PAGE + 1)  # another class: a new buffer
    assert other is not first
    assert other.capacity == 2 * PAGE
    assert (pool.created, pool.reused) == (2, 1)
    pool.release(again)
    pool.release(other)
    assert pool.idle_bytes == 3 * PAGE


def test_pool_hands_out_the_most_recently_released(pool: BufferPool) -> None:
    a, b = pool.acquire(10), pool.acquire(10)
    pool.release(a)
    pool.release(b)
    assert pool.acquire(10) is b
    assert pool.acquire(10) is a
    assert pool.acquire(10) not in (a, b)
    assert pool.reused == 2


def test_pool_keeps_at_most_max_idle_bytes() -> None:
    pool = BufferPool(PoolLimits(max_idle_bytes=2 * PAGE))
    buffers = [pool.acquire(1) for _ in range(3)]
    for held in buffers:
        pool.release(held)
    assert pool.idle_bytes == 2 * PAGE
    # The one idle the longest made room: the last released is the likeliest wanted again.
    assert [held.closed for held in buffers] == [True, False, False]
    big = pool.acquire(3 * PAGE)
    pool.release(big)  # bigger than the whole limit
    assert big.closed
    assert pool.idle_bytes == 2 * PAGE
    pool.close()
    assert all(held.closed for held in buffers)


def test_a_pool_full_of_small_buffers_makes_room_for_a_big_one() -> None:
    """A mix of sizes used to keep a big buffer from ever staying warm: released into a full
    pool, it was the one closed. Now the small ones idle the longest give way."""
    pool = BufferPool(PoolLimits(max_idle_bytes=8 * PAGE))
    small = [pool.acquire(PAGE) for _ in range(8)]
    for held in small:
        pool.release(held)
    big = pool.acquire(4 * PAGE)
    pool.release(big)
    assert not big.closed and pool.acquire(4 * PAGE) is big
    assert [held.closed for held in small] == [True] * 4 + [False] * 4
    pool.close()


def test_trim_everything(pool: BufferPool) -> None:
    buffers = [pool.acquire(size) for size in (1, 1, 5 * PAGE, 100_000)]
    total = sum(held.capacity for held in buffers)
    for held in buffers:
        pool.release(held)
    assert pool.idle_bytes == total
    assert pool.trim() == 0  # nothing has been idle long
    assert pool.trim(everything=True) == total
    assert pool.idle_bytes == 0
    assert all(held.closed for held in buffers)
    fresh = pool.acquire(1)
    assert fresh not in buffers
    assert pool.created == len(buffers) + 1
    pool.release(fresh)


def test_trim_with_zero_idle_seconds_frees() -> None:
    pool = BufferPool(PoolLimits(idle_seconds=0))
    held = pool.acquire(1)
    pool.release(held)
    assert pool.trim() == PAGE
    assert held.closed
    assert pool.idle_bytes == 0


def test_trim_frees_only_buffers_idle_too_long(
    pool: BufferPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(buffers_module.time, "monotonic", clock)
    old, young = pool.acquire(1), pool.acquire(1)
    pool.release(old)
    clock.now += 20
    pool.release(young)
    clock.now += 15  # old idle 35 s, young 15 s; the limit is 30 s
    assert pool.trim() == PAGE
    assert old.closed and not young.closed
    assert pool.idle_bytes == PAGE
    assert pool.acquire(1) is young
    pool.release(young)


def test_release_trims_stale_buffers_first(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(buffers_module.time, "monotonic", clock)
    pool = BufferPool(PoolLimits(max_idle_bytes=PAGE, idle_seconds=5))
    stale, fresh = pool.acquire(1), pool.acquire(1)
    pool.release(stale)
    clock.now += 10
    pool.release(fresh)  # room only because the stale one is trimmed first
    assert stale.closed and not fresh.closed
    assert pool.idle_bytes == PAGE
    pool.close()
    assert fresh.closed


def test_sealed_buffer_is_closed_not_pooled(pool: BufferPool) -> None:
    held = pool.acquire(100)
    held.fill(b"published")
    held.seal()
    pool.release(held)
    assert held.closed
    assert pool.idle_bytes == 0
    assert pool.acquire(100) is not held


def test_closed_or_adopted_buffers_are_not_pooled(pool: BufferPool) -> None:
    closed = pool.acquire(100)
    closed.close()
    pool.release(closed)
    assert pool.idle_bytes == 0
    adopted = Buffer.from_sealed_fd(sealed_memfd(b"x" * 100), 100)
    pool.release(adopted)
    assert adopted.closed
    assert pool.idle_bytes == 0


def test_pool_close_closes_idle_buffers(pool: BufferPool) -> None:
    held = pool.acquire(1)
    pool.release(held)
    pool.close()
    assert held.closed
    assert pool.idle_bytes == 0


def test_failed_seal_leaves_the_buffer_usable() -> None:
    pool = BufferPool()
    buf = pool.acquire(300_000)
    buf.fill(b"x" * 300_000)
    held = buf.writable()[:10]
    with pytest.raises(OSError, match="still held"):
        buf.seal()
    held.release()
    assert buf.view() == b"x" * 300_000
    pool.release(buf)
    again = pool.acquire(300_000)
    assert again is buf
    again.writable()[:3] = b"abc"  # still a writable, pooled buffer
    again.close()


def test_fill_takes_any_memoryview_format() -> None:
    buf = Buffer(4096)
    buf.fill(memoryview(bytearray(range(64))).cast("I"))
    assert buf.view() == bytes(range(64))
    buf.close()


def test_a_pool_keeps_no_buffer_over_its_biggest() -> None:
    pool = BufferPool(PoolLimits(max_buffer_bytes=1 << 20))
    small, big = pool.acquire(1 << 20), pool.acquire((1 << 20) + 1)
    pool.release(small)
    pool.release(big)
    assert big.closed and not small.closed
    assert pool.idle_bytes == small.capacity
    pool.close()


# -- the warm reserve: big buffers while memory is plentiful ------------------------------------

BIG_LIMITS = PoolLimits(
    max_idle_bytes=64 * PAGE, max_buffer_bytes=64 * PAGE, big_buffer_bytes=4 * PAGE,
    min_available_bytes=1 << 30, make_ahead_from=PAGE,
)  # fmt: skip


def test_a_big_buffer_is_kept_warm_while_memory_is_plentiful_and_given_back_under_pressure() -> (
    None
):
    free = [8 << 30]
    pool = BufferPool(BIG_LIMITS, available=lambda: free[0])
    big = pool.acquire(16 * PAGE)
    pool.release(big)
    assert not big.closed and pool.idle_bytes == 16 * PAGE  # plenty: kept
    assert pool.acquire(16 * PAGE) is big and pool.reused == 1
    free[0] = 512 << 20  # now under min_available_bytes
    pool.release(big)
    assert big.closed and pool.idle_bytes == 0
    assert pool.stats.trimmed_pressure_bytes == 16 * PAGE
    small = pool.acquire(2 * PAGE)  # not big: kept whatever the host has free
    pool.release(small)
    assert not small.closed and pool.idle_bytes == 2 * PAGE


def test_idle_big_buffers_go_when_memory_runs_short_or_they_idle_too_long() -> None:
    free = [8 << 30]
    pool = BufferPool(BIG_LIMITS, available=lambda: free[0])
    big, small = pool.acquire(16 * PAGE), pool.acquire(PAGE)
    pool.release(big)
    pool.release(small)
    assert pool.trim() == 0  # fresh, and memory is plentiful
    free[0] = 0
    assert pool.trim() == 16 * PAGE and big.closed and not small.closed
    assert pool.stats.trimmed_pressure_bytes == 16 * PAGE
    idle = BufferPool(replace(BIG_LIMITS, idle_seconds=0.0))
    kept = idle.acquire(PAGE)
    idle.release(kept)
    assert idle.trim() == PAGE and kept.closed and idle.stats.trimmed_idle_bytes == PAGE


def test_a_sealed_big_buffer_is_made_again_ahead_of_need_within_the_cap() -> None:
    free = [8 << 30]
    pool = BufferPool(BIG_LIMITS, available=lambda: free[0])
    given = pool.acquire(16 * PAGE)
    given.fill(b"published")
    given.seal()
    pool.release(given)  # given away sealed: closed, and a blank successor is made
    again = pool.acquire(16 * PAGE)  # waits for the one being made, rather than making another
    assert (pool.created, pool.reused, pool.stats.made_ahead) == (1, 1, 1)
    assert again is not given and bytes(again.writable()[:9]) == bytes(9)  # blank
    assert not pool.replenish(128 * PAGE)  # over the cap: not made
    free[0] = 0
    assert not pool.replenish(16 * PAGE)  # under pressure: not made
    pool.release(again)
    pool.close()


def test_a_buffer_lent_at_another_size_refuses_to_seal_and_stays_usable(pool: BufferPool) -> None:
    buffer = pool.acquire(3 * PAGE)  # capacity: a size class above what it holds
    buffer.fill(b"old object" * 1000)
    buffer.fix_size()  # lent once: it can no longer shrink
    buffer.fill(b"new")
    with pytest.raises(OSError) as refused:
        buffer.seal()  # the bytes past "new" are an older object's: never given away
    assert refused.value.errno == errno.EPERM and not buffer.sealed
    buffer.writable()[:3] = b"NEW"  # still mapped and writable, as it was
    assert bytes(buffer.view()) == b"NEW"


def test_a_seal_refused_by_the_kernel_leaves_the_buffer_as_it_was(pool: BufferPool) -> None:
    buffer = pool.acquire(2 * PAGE)
    buffer.fill(b"held")
    # A peer's read-only mapping of a writable descriptor (a lent memfd, kept by its Loans)
    # still counts as writable to the kernel: F_SEAL_WRITE is refused with EBUSY.
    descriptor = os.dup(buffer.fd)
    peer = mmap.mmap(descriptor, 2 * PAGE, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    os.close(descriptor)  # the mapping keeps its own
    try:
        with pytest.raises(OSError) as refused:
            buffer.seal()
        assert refused.value.errno == errno.EBUSY and not buffer.sealed
        buffer.writable()[:4] = b"HELD"  # mapped and writable again, at its full size
        assert bytes(buffer.view()) == b"HELD" and os.fstat(buffer.fd).st_size == 2 * PAGE
    finally:
        peer.close()
    buffer.seal()  # once the peer has let go, it seals
    assert buffer.sealed and bytes(buffer.view()) == b"HELD"


def _shared_memory() -> int:
    """Bytes of shared memory (memfd pages) this process has touched."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssShmem:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssShmem in /proc/self/status")


def test_a_buffer_not_populated_makes_its_pages_as_they_are_written() -> None:
    before = _shared_memory()
    lazy = Buffer(64 * MiB, populate=False)
    try:
        assert _shared_memory() - before < 8 * MiB
        lazy.writable()[: 16 * MiB] = b"x" * (16 * MiB)
        assert 16 * MiB <= _shared_memory() - before < 24 * MiB
        eager = Buffer(64 * MiB)
        try:
            assert _shared_memory() - before >= 80 * MiB
        finally:
            eager.close()
    finally:
        lazy.close()


def test_a_pool_makes_an_unpopulated_buffer_only_when_none_is_idle() -> None:
    pool = BufferPool(PoolLimits())
    warm = pool.acquire(8 * MiB)
    pool.release(warm)
    assert pool.acquire(8 * MiB, populate=False) is warm  # idle and warm: taken as it is
    before = _shared_memory()
    fresh = pool.acquire(8 * MiB, populate=False)
    assert fresh is not warm and _shared_memory() - before < 2 * MiB
    pool.close()
