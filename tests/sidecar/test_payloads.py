"""A sidecar's payloads (``xdt.sidecar.payloads``): what travels inline, what by reference, in
each mode, with the real memory path underneath (the storage paths: tests/modes)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

import xdt
from xdt import KeyRing, ObjectServer, ObjectStore, PullClient
from xdt._core.buffers import as_bytes
from xdt._core.refs import TransferMode
from xdt.modes import PathMaker, StoreSettings, TransferSettings
from xdt.modes.inline import is_inline
from xdt.sidecar.payloads import Payloads

WHAT = "the call to 'g'"  # what an error names the payload
KiB = 1 << 10

Make = Callable[..., Payloads]


@pytest.fixture
async def make(keyring: KeyRing, store: ObjectStore, server: ObjectServer) -> AsyncIterator[Make]:
    client = PullClient(keyring)
    made: list[Payloads] = []

    def make(mode: TransferMode, **settings: int) -> Payloads:
        paths = PathMaker(
            keyring=keyring, sender="test-1", stores=StoreSettings(),
            inline_limit=settings.get("inline_limit", 64 * KiB),
            store=store, server=server, client=client, function="f",
        )  # fmt: skip
        payloads = Payloads(
            TransferSettings(mode=mode, **settings), paths, function="f", tenant="default"
        )
        made.append(payloads)
        return payloads

    yield make
    for payloads in made:
        await payloads.close()
    await client.close()


async def test_xdt_mode_sends_small_payloads_inline_and_big_ones_by_reference(make: Make) -> None:
    payloads = make(TransferMode.XDT, xdt_threshold=1 * KiB)
    assert await payloads.outbound(b"x" * KiB, what=WHAT) == (b"x" * KiB, False)
    body, by_reference = await payloads.outbound(b"y" * (KiB + 1), what=WHAT)
    assert by_reference and not is_inline(body.decode())
    assert as_bytes(await payloads.inbound(body, True)) == b"y" * (KiB + 1)
    assert (payloads.bytes_inline, payloads.bytes_by_reference) == (KiB, KiB + 1)


async def test_inline_mode_refuses_what_is_over_the_limit_naming_it(make: Make) -> None:
    payloads = make(TransferMode.INLINE, inline_limit=2 * KiB)
    assert (await payloads.outbound(b"z" * 2 * KiB, what=WHAT))[1] is False
    with pytest.raises(
        xdt.PayloadTooLarge, match=r"the call to 'g' of function 'f' .*platform\.inline_limit"
    ):
        await payloads.outbound(b"z" * (2 * KiB + 1), what=WHAT)


async def test_a_broadcast_put_is_inline_below_the_configured_threshold_only(make: Make) -> None:
    """broadcast's small payloads follow the function's own xdt_threshold, not a copy of the
    default in the SDK (which sent 64 KiB inline whatever the spec said)."""
    payloads = make(TransferMode.XDT, xdt_threshold=1 * KiB)
    assert is_inline(await payloads.put(b"s" * 512, pulls=None, inline_small=True))
    stored = await payloads.put(b"b" * (4 * KiB), pulls=None, inline_small=True)
    assert not is_inline(stored)  # over 1 KiB: one object, pulled n times
    for _ in range(3):
        assert as_bytes(await payloads.get(stored)) == b"b" * (4 * KiB)
    assert await payloads.release(stored) is True
    assert not is_inline(await payloads.put(b"s" * 512, pulls=None))  # a plain put: an object


async def test_an_inline_reference_is_the_bytes_and_resolves_anywhere(make: Make) -> None:
    token = await make(TransferMode.XDT).put(b"small", pulls=None, inline_small=True)
    for mode in (TransferMode.INLINE, TransferMode.XDT):
        assert await make(mode).get(token) == b"small"
        assert await make(mode).release(token) is False  # nothing held anywhere


async def test_references_of_another_tenant_are_refused(
    make: Make, keyring: KeyRing, store: ObjectStore, server: ObjectServer
) -> None:
    token = await make(TransferMode.XDT).put(b"mine" * 100)
    client = PullClient(keyring)
    paths = PathMaker(
        keyring=keyring, sender="other-1", stores=StoreSettings(), inline_limit=64 * KiB,
        store=store, server=server, client=client,
    )  # fmt: skip
    other = Payloads(TransferSettings(), paths, function="g", tenant="someone-else")
    with pytest.raises(xdt.WrongTenant):
        await other.get(token)
    await client.close()


@pytest.mark.parametrize("mode", [TransferMode.ELASTICACHE, TransferMode.S3])
async def test_storage_modes_send_small_payloads_inline_up_to_their_threshold(
    make: Make, mode: TransferMode
) -> None:
    """As beside the paper's baselines: a recognition's few-byte answer travels in the
    invocation, not through S3 (no store is configured here: touching one would fail)."""
    assert TransferSettings(mode=mode).inline_up_to == 64 * KiB
    assert TransferSettings(mode=mode, storage_threshold=0).inline_up_to == 0
    payloads = make(mode, storage_threshold=2 * KiB)
    assert await payloads.outbound(b"r" * 2 * KiB, what=WHAT) == (b"r" * 2 * KiB, False)
    assert (payloads.bytes_inline, payloads.bytes_by_reference) == (2 * KiB, 0)
