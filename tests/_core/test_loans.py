"""Mappings of memfds peers lend us, kept between loans (``xdt._core.loans``)."""

from __future__ import annotations

import fcntl
import os

import pytest

from xdt._core import loans as loans_module
from xdt._core.buffers import FIXED_SIZE_SEALS, PAGE, Buffer
from xdt._core.loans import Loans

MiB = 1 << 20


def lend(buffer: Buffer, data: bytes) -> int:
    """What a lender does: fill its warm buffer, seal its size, pass a new descriptor."""
    buffer.fill(data)
    buffer.fix_size()
    return os.dup(buffer.fd)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_buffer_lent_again_is_not_mapped_again() -> None:
    loans = Loans()
    lender = Buffer(1 << 20)
    try:
        first = loans.borrow(lend(lender, b"a" * 1000), 1000)
        assert first.view() == b"a" * 1000 and first.lent
        first.close()
        second = loans.borrow(lend(lender, b"b" * 2000), 2000)  # more bytes in use: remapped
        second.close()
        third = loans.borrow(lend(lender, b"c" * 500), 500)
        # The kept mapping shows what the lender wrote since: it is the lender's memory.
        assert third.view() == b"c" * 500
        third.close()
        assert loans.hits == 1
        assert loans.mapped_bytes == 2000
        with pytest.raises(ValueError, match="closed"):
            third.view()
    finally:
        loans.trim(everything=True)
        lender.close()


def test_loans_are_bounded_and_give_descriptors_back() -> None:
    loans = Loans(max_bytes=3 << 20)
    lenders = [Buffer(1 << 20) for _ in range(5)]
    before = open_descriptors()
    try:
        held = loans.borrow(lend(lenders[0], b"x" * (1 << 20)), 1 << 20)  # in use: stays
        for lender in lenders[1:]:
            loans.borrow(lend(lender, b"y" * (1 << 20)), 1 << 20).close()
        assert loans.mapped_bytes <= 3 << 20
        assert held.view()[:1] == b"x"
        assert open_descriptors() - before <= 3  # unmapped ones closed their descriptors
        held.close()
        loans.trim(everything=True)
        assert loans.mapped_bytes == 0
        assert open_descriptors() == before
    finally:
        for lender in lenders:
            lender.close()


def test_idle_loans_are_unmapped_after_idle_seconds() -> None:
    loans = Loans(idle_seconds=0.0)
    lenders = [Buffer(PAGE), Buffer(PAGE)]
    try:
        held = loans.borrow(lend(lenders[0], b"1"), 1)
        loans.borrow(lend(lenders[1], b"2"), 1).close()  # idle past 0 s as it is given back
        assert loans.mapped_bytes == 1  # only the one still in use stays
        held.close()
        assert loans.mapped_bytes == 0
    finally:
        loans.trim(everything=True)
        for lender in lenders:
            lender.close()


def test_a_loan_must_have_a_fixed_size() -> None:
    loans = Loans()
    lender = Buffer(PAGE)
    before = open_descriptors()
    try:
        lender.fill(b"data")
        with pytest.raises(ValueError, match="shrinking"):
            loans.borrow(os.dup(lender.fd), 4)
        lender.fix_size()
        with pytest.raises(ValueError, match="holds"):
            loans.borrow(os.dup(lender.fd), PAGE + 1)
        assert open_descriptors() == before  # refused descriptors are closed
        assert loans.mapped_bytes == 0
    finally:
        lender.close()


def test_loans_keep_at_most_max_count_mappings() -> None:
    loans = Loans(max_count=2)
    lenders = [Buffer(PAGE) for _ in range(4)]
    before = open_descriptors()
    try:
        for lender in lenders:
            loans.borrow(lend(lender, b"z"), 1).close()
        assert loans.mapped_bytes == 2  # the two most recent
        assert open_descriptors() - before == 2
    finally:
        loans.trim(everything=True)
        for lender in lenders:
            lender.close()


def test_a_lender_cannot_shrink_its_memfd_between_our_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The seals are read before the size: once sealed, the size cannot change. Read the
    other way round, a lender could shrink the memfd right after we saw its size, and reading
    the mapping would kill us with SIGBUS."""
    loans = Loans()
    lender = Buffer(1 << 20)
    real_fstat = os.fstat

    def shrink_and_seal_after_looking(fd: int) -> os.stat_result:
        seen = real_fstat(fd)
        os.ftruncate(lender.fd, 0)
        lender.fix_size()
        return seen

    try:
        lender.fill(b"x" * (1 << 20))
        monkeypatch.setattr(loans_module.os, "fstat", shrink_and_seal_after_looking)
        with pytest.raises(ValueError, match="sealed against shrinking"):
            loans.borrow(os.dup(lender.fd), 1 << 20)
        assert loans.mapped_bytes == 0
    finally:
        monkeypatch.undo()
        lender.close()


def test_a_lent_hugetlb_memfd_is_refused() -> None:
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING | os.MFD_HUGETLB
    try:
        fd = os.memfd_create("huge", flags)
    except OSError as exc:
        pytest.skip(f"this kernel makes no hugetlb memfd ({exc.strerror})")
    try:
        os.ftruncate(fd, 2 << 20)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, FIXED_SIZE_SEALS)
    except OSError as exc:
        os.close(fd)
        pytest.skip(f"no hugetlb memfd of 2 MiB here ({exc.strerror})")
    with pytest.raises(ValueError, match="ordinary shared memory"):
        Loans().borrow(fd, 4096)  # a hole punched in it could SIGBUS the reader


def test_loans_do_not_keep_mappings_bigger_than_a_pool_keeps() -> None:
    loans = Loans(max_kept=PAGE)
    lender = Buffer(4 * PAGE)
    try:
        loan = loans.borrow(lend(lender, b"b" * (2 * PAGE)), 2 * PAGE)
        assert loans.mapped_bytes == 2 * PAGE
        loan.close()
        assert loans.mapped_bytes == 0  # its lender does not reuse it: neither do we keep it
    finally:
        lender.close()


def test_a_loan_is_read_only() -> None:
    loans = Loans()
    lender = Buffer(PAGE)
    try:
        loan = loans.borrow(lend(lender, b"r" * 10), 10)
        with pytest.raises(ValueError, match="lent to us"):
            loan.writable()
        with pytest.raises(TypeError):
            loan._view[:1] = b"w"  # type: ignore[index]
        loan.close()
    finally:
        loans.trim(everything=True)
        lender.close()


def test_a_loan_dropped_without_close_is_given_back() -> None:
    loans = Loans(max_kept=PAGE)
    lender = Buffer(4 * PAGE)
    try:
        loans.borrow(lend(lender, b"d" * (2 * PAGE)), 2 * PAGE)  # dropped at once, unclosed
        assert loans.mapped_bytes == 0  # given back: too big to keep, so unmapped
    finally:
        lender.close()


def test_a_memfd_lent_again_bigger_while_in_use_is_remapped_safely() -> None:
    loans = Loans()
    lender = Buffer(4 * PAGE)
    try:
        small = loans.borrow(lend(lender, b"s" * PAGE), PAGE)
        big = loans.borrow(lend(lender, b"B" * (3 * PAGE)), 3 * PAGE)
        assert loans.mapped_bytes == 3 * PAGE  # the new mapping only
        assert small.view() == b"B" * PAGE  # the old one still reads: the same memory
        assert big.view() == b"B" * (3 * PAGE)
        small.close()
        big.close()
        assert loans.hits == 0
    finally:
        loans.trim(everything=True)
        lender.close()
