"""Sealed references and the key ring (``xdt._core.refs``)."""

from __future__ import annotations

import base64
import dataclasses
import os
import re
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from xdt import (
    KeyRing,
    KeyRingError,
    Reference,
    ReferenceExpired,
    ReferenceMalformed,
    ReferenceRejected,
    ReferenceTampered,
    TransferMode,
    WrongTenant,
)
from xdt._core.refs import DEFAULT_TENANT, FORMAT_VERSION, KEYRING_ENV

NOW = 1_700_000_000.0
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+$")

RING = KeyRing.generate()
OTHER_RING = KeyRing.generate()


def make_ref(**changes: object) -> Reference:
    fields: dict[str, object] = {
        "object_id": bytes(range(16)),
        "source": "10.0.0.17:7100",  # 94 sealed bytes: unused bits in the last char
        "size": 123_456,
        "checksum": 0xDEADBEEFCAFEF00D,
        "expires_at": NOW + 60.0,
        "tenant": "acme",
        "mode": TransferMode.XDT,
    }
    fields.update(changes)
    return Reference(**fields)  # type: ignore[arg-type]


def unseal_raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def reseal_raw(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def at_ms(ref: Reference) -> Reference:
    """The reference as it comes back: expiry kept to the millisecond."""
    return dataclasses.replace(ref, expires_at=round(ref.expires_at * 1000) / 1000)


TOKEN = RING.seal(make_ref())
KEY = base64.urlsafe_b64encode(bytes(32)).rstrip(b"=").decode()


# -- round trips ----------------------------------------------------------------------------


def test_round_trip_with_every_field() -> None:
    ref = make_ref(
        object_id=os.urandom(16),
        source="redis-cluster.internal/bucket/key-01",
        size=(1 << 63) - 1,
        checksum=(1 << 64) - 1,
        expires_at=NOW + 3600.123,
        tenant="tenant-ü-🚀",
        mode=TransferMode.S3,
    )
    token = RING.seal(ref)
    assert TOKEN_RE.match(token)
    opened = RING.open(token, tenant="tenant-ü-🚀", now=NOW)
    assert opened == at_ms(ref)
    assert opened.object_hex == ref.object_id.hex()
    assert opened.mode is TransferMode.S3
    assert opened.ttl(NOW) == pytest.approx(3600.123, abs=1e-3)
    assert not opened.expired(NOW)


def test_defaults_round_trip() -> None:
    ref = Reference(object_id=b"\x00" * 16, source="s", size=0, checksum=0, expires_at=NOW + 1)
    assert ref.tenant == DEFAULT_TENANT
    assert ref.mode is TransferMode.XDT
    assert RING.open(RING.seal(ref), tenant=DEFAULT_TENANT, now=NOW) == ref


def test_seal_is_randomised_and_hides_the_contents() -> None:
    ref = make_ref(source="secret-host.example:9999", tenant="secret-tenant")
    first, second = RING.seal(ref), RING.seal(ref)
    assert first != second  # fresh nonce each time
    for token in (first, second):
        raw = unseal_raw(token)
        assert raw[0] == FORMAT_VERSION
        assert raw[1:5].hex() == RING.primary_key_id
        assert b"secret-host" not in raw
        assert b"secret-tenant" not in raw
        assert ref.object_id not in raw
        assert RING.open(token, now=NOW) == ref


def test_longest_fields_round_trip() -> None:
    tenant = "é" * 127 + "a"  # 255 bytes of UTF-8
    source = "s" * 255
    assert len(tenant.encode()) == 255
    ref = make_ref(tenant=tenant, source=source)
    assert RING.open(RING.seal(ref), tenant=tenant, now=NOW) == ref


@pytest.mark.parametrize(
    "changes",
    [
        {"object_id": b"\x00" * 15},
        {"object_id": b"\x00" * 17},
        {"tenant": ""},
        {"source": ""},
        {"tenant": "t" * 256},
        {"source": "é" * 128},  # 256 bytes
        {"size": -1},
        {"size": 1 << 63},
        {"checksum": -1},
        {"checksum": 1 << 64},
    ],
)
def test_reference_rejects_bad_fields(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make_ref(**changes)


utf8_field = (
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=255)
    .map(lambda s: s.encode()[:255].decode("utf-8", "ignore"))
    .filter(bool)
)

references = st.builds(
    Reference,
    object_id=st.binary(min_size=16, max_size=16),
    source=utf8_field,
    size=st.integers(0, (1 << 63) - 1),
    checksum=st.integers(0, (1 << 64) - 1),
    expires_at=st.floats(min_value=NOW + 0.01, max_value=NOW + 1e9),
    tenant=utf8_field,
    mode=st.sampled_from([mode for mode in TransferMode if mode is not TransferMode.INLINE]),
)


@settings(max_examples=250, deadline=None)
@given(ref=references)
def test_any_reference_round_trips(ref: Reference) -> None:
    token = RING.seal(ref)
    assert TOKEN_RE.match(token)
    opened = RING.open(token, tenant=ref.tenant, now=NOW)
    assert opened == at_ms(ref)
    assert abs(opened.expires_at - ref.expires_at) <= 0.0005 + 1e-6
    assert RING.open(token, tenant=None, now=NOW) == opened


# -- tampering and truncation ---------------------------------------------------------------


def test_every_base64_substitution_is_rejected() -> None:
    for position, original in enumerate(TOKEN):
        for char in B64URL:
            if char == original:
                continue
            altered = TOKEN[:position] + char + TOKEN[position + 1 :]
            with pytest.raises(ReferenceRejected):
                RING.open(altered, now=NOW)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_single_character_change_is_rejected(data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(TOKEN) - 1), label="position")
    char = data.draw(
        st.one_of(st.sampled_from(B64URL + "=+/. \n\t\x00"), st.characters()), label="char"
    )
    assume(char != TOKEN[position])
    altered = TOKEN[:position] + char + TOKEN[position + 1 :]
    with pytest.raises(ReferenceRejected):
        RING.open(altered, now=NOW)


@settings(max_examples=300, deadline=None)
@given(position=st.integers(0, len(TOKEN) - 1), bit=st.integers(0, 20))
def test_any_single_bit_flip_of_a_character_is_rejected(position: int, bit: int) -> None:
    char = chr(ord(TOKEN[position]) ^ (1 << bit))
    altered = TOKEN[:position] + char + TOKEN[position + 1 :]
    with pytest.raises(ReferenceRejected):
        RING.open(altered, now=NOW)


def test_every_truncation_is_rejected() -> None:
    for length in range(len(TOKEN)):
        with pytest.raises(ReferenceRejected):
            RING.open(TOKEN[:length], now=NOW)


def test_short_truncation_says_so() -> None:
    with pytest.raises(ReferenceMalformed, match="truncated"):
        RING.open(TOKEN[:20], now=NOW)
    with pytest.raises(ReferenceMalformed):
        RING.open("", now=NOW)


def test_appended_characters_are_rejected() -> None:
    for suffix in ("A", "AA", "AAAA", "=", "==", " ", "\n"):
        with pytest.raises(ReferenceRejected):
            RING.open(TOKEN + suffix, now=NOW)


def test_overlong_token_is_malformed() -> None:
    with pytest.raises(ReferenceMalformed, match="characters"):
        RING.open("A" * 5000, now=NOW)


def test_non_canonical_padding_bits_are_rejected() -> None:
    raw = unseal_raw(TOKEN)
    assert len(TOKEN) % 4 != 0, "the fixed reference leaves unused bits in the last character"
    # Same bytes, different spelling: flip an unused low bit of the last character.
    altered = TOKEN[:-1] + B64URL[B64URL.index(TOKEN[-1]) ^ 1]
    assert unseal_raw(altered) == raw
    with pytest.raises(ReferenceMalformed, match="canonical"):
        RING.open(altered, now=NOW)


def test_token_from_another_key_ring_is_tampered() -> None:
    with pytest.raises(ReferenceTampered) as info:
        OTHER_RING.open(TOKEN, now=NOW)
    assert RING.primary_key_id in str(info.value)


def test_same_key_id_other_key_fails_authentication() -> None:
    impostor = KeyRing([(bytes.fromhex(RING.primary_key_id), os.urandom(32))])
    with pytest.raises(ReferenceTampered, match="authentication"):
        impostor.open(TOKEN, now=NOW)


def test_altered_body_fails_authentication() -> None:
    raw = bytearray(unseal_raw(TOKEN))
    raw[40] ^= 0x01
    with pytest.raises(ReferenceTampered, match="authentication"):
        RING.open(reseal_raw(bytes(raw)), now=NOW)


def test_altered_nonce_fails_authentication() -> None:
    raw = bytearray(unseal_raw(TOKEN))
    raw[10] ^= 0x80
    with pytest.raises(ReferenceTampered):
        RING.open(reseal_raw(bytes(raw)), now=NOW)


def test_unknown_format_version_is_malformed() -> None:
    raw = bytearray(unseal_raw(TOKEN))
    raw[0] = FORMAT_VERSION + 1
    with pytest.raises(ReferenceMalformed, match=f"version {FORMAT_VERSION + 1}"):
        RING.open(reseal_raw(bytes(raw)), now=NOW)


@pytest.mark.parametrize("token", [b"abc", None, 42, ["x"], TOKEN.encode()])
def test_non_text_is_malformed(token: object) -> None:
    with pytest.raises(ReferenceMalformed, match=type(token).__name__):
        RING.open(token, now=NOW)  # type: ignore[arg-type]


def test_non_ascii_text_is_malformed() -> None:
    with pytest.raises(ReferenceMalformed, match="base64url"):
        RING.open("é" * len(TOKEN), now=NOW)


# -- expiry and tenants ---------------------------------------------------------------------


def test_expired_reference() -> None:
    ref = make_ref(expires_at=NOW + 10)
    token = RING.seal(ref)
    assert RING.open(token, now=NOW + 9.999) == ref
    with pytest.raises(ReferenceExpired):
        RING.open(token, now=NOW + 10)
    with pytest.raises(ReferenceExpired) as info:
        RING.open(token, now=NOW + 15)
    message = str(info.value)
    assert "expired" in message
    assert "5.0s" in message
    assert ref.object_id.hex() not in message  # sealed fields are not echoed back


def test_expired_is_a_rejection() -> None:
    token = RING.seal(make_ref(expires_at=NOW - 1))
    with pytest.raises(ReferenceRejected):
        RING.open(token, now=NOW)


def test_open_without_now_uses_the_clock() -> None:
    past = RING.seal(make_ref(expires_at=1_000.0))
    with pytest.raises(ReferenceExpired):
        RING.open(past)
    future = RING.seal(make_ref(expires_at=4_000_000_000.0))
    assert RING.open(future).expires_at == 4_000_000_000.0


def test_wrong_tenant() -> None:
    token = RING.seal(make_ref(tenant="alice"))
    with pytest.raises(WrongTenant) as info:
        RING.open(token, tenant="mallory", now=NOW)
    assert "'alice'" not in str(info.value)  # nor whose the reference is
    assert "'mallory'" in str(info.value)
    assert "'mallory'" in str(info.value)
    assert isinstance(info.value, ReferenceRejected)


def test_tenant_none_skips_the_check() -> None:
    token = RING.seal(make_ref(tenant="alice"))
    assert RING.open(token, tenant=None, now=NOW).tenant == "alice"
    assert RING.open(token, now=NOW).tenant == "alice"
    assert RING.open(token, tenant="alice", now=NOW).tenant == "alice"


def test_tenant_match_is_exact() -> None:
    token = RING.seal(make_ref(tenant="alice"))
    for other in ("Alice", "alice ", "alic", "", DEFAULT_TENANT):
        with pytest.raises(WrongTenant):
            RING.open(token, tenant=other, now=NOW)


# -- key ring text, environment, file -------------------------------------------------------


def test_text_round_trip() -> None:
    ring = KeyRing.generate().rotated().rotated()
    text = ring.to_text()
    assert text.endswith("\n")
    assert len(text.splitlines()) == 3
    again = KeyRing.from_text(text)
    assert again.key_ids == ring.key_ids
    assert again.primary_key_id == ring.primary_key_id
    assert again.to_text() == text
    ref = make_ref()
    assert again.open(ring.seal(ref), now=NOW) == ref
    assert ring.open(again.seal(ref), now=NOW) == ref


def test_text_line_format() -> None:
    ring = KeyRing.generate()
    (line,) = ring.to_text().splitlines()
    key_id, key = line.split(" ")
    assert key_id == ring.primary_key_id
    assert re.fullmatch(r"[0-9a-f]{8}", key_id)
    assert TOKEN_RE.match(key)
    assert len(unseal_raw(key)) == 32


def test_text_allows_comments_blank_lines_and_padding() -> None:
    key_id = "0a1b2c3d"
    key = base64.urlsafe_b64encode(bytes(range(32))).decode()  # with "=" padding
    text = f"# the platform key ring\n\n   {key_id}   {key}   # primary\n\n"
    ring = KeyRing.from_text(text)
    assert ring.key_ids == [key_id]
    assert ring.primary_key_id == key_id


def test_from_env_with_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = KeyRing.generate().rotated()
    monkeypatch.setenv(KEYRING_ENV, ring.to_text().strip().replace("\n", ","))
    assert KEYRING_ENV == "XDT_KEYRING"
    loaded = KeyRing.from_env()
    assert loaded.key_ids == ring.key_ids
    assert loaded.primary_key_id == ring.primary_key_id
    ref = make_ref()
    assert loaded.open(ring.seal(ref), now=NOW) == ref


def test_from_env_other_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = KeyRing.generate()
    monkeypatch.setenv("MY_RING", ring.to_text())
    assert KeyRing.from_env("MY_RING").key_ids == ring.key_ids


def test_from_env_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYRING_ENV, raising=False)
    with pytest.raises(KeyRingError) as info:
        KeyRing.from_env()
    assert "$XDT_KEYRING is not set" in str(info.value)
    assert "xdt keygen" in str(info.value)


def test_from_env_bad_text_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    good = KeyRing.generate().to_text().strip()
    monkeypatch.setenv(KEYRING_ENV, f"{good},not-a-key-line")
    with pytest.raises(KeyRingError, match=r"\$XDT_KEYRING, entry 2"):
        KeyRing.from_env()


def test_from_env_empty_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEYRING_ENV, "")
    with pytest.raises(KeyRingError, match="no key"):
        KeyRing.from_env()


def test_from_file(tmp_path: Path) -> None:
    ring = KeyRing.generate().rotated()
    path = tmp_path / "keyring"
    path.write_text(ring.to_text())
    loaded = KeyRing.from_file(path)
    assert loaded.key_ids == ring.key_ids
    assert KeyRing.from_file(str(path)).primary_key_id == ring.primary_key_id


def test_from_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(KeyRingError, match="cannot read key ring file") as info:
        KeyRing.from_file(path)
    assert str(path) in str(info.value)


def test_from_file_bad_text_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keyring"
    path.write_text("# comment\n0a1b2c3d tooshort\n")
    with pytest.raises(KeyRingError, match="not 32 bytes") as info:
        KeyRing.from_file(path)
    assert f"{path}, entry 2" in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0a1b2c3d", "expected '<8 hex digit key id> <base64url key>'"),
        (f"0a1b2c3d {KEY} extra", "expected '<8 hex digit key id>"),
        (f"0A1B2C3D {KEY}", "expected '<8 hex digit key id>"),  # upper case hex
        (f"0a1b2c3 {KEY}", "expected '<8 hex digit key id>"),
        (f"0a1b2c3d0 {KEY}", "expected '<8 hex digit key id>"),
        (f"zzzzzzzz {KEY}", "expected '<8 hex digit key id>"),
        ("0a1b2c3d AAAA", "the key is not 32 bytes of base64url"),
        (f"0a1b2c3d {KEY}AAAA", "the key is not 32 bytes of base64url"),
        ("0a1b2c3d A", "the key is not 32 bytes of base64url"),
    ],
)
def test_from_text_rejects_bad_entries(text: str, message: str) -> None:
    with pytest.raises(KeyRingError, match=re.escape(message)) as info:
        KeyRing.from_text(text, origin="test ring")
    assert "test ring, entry 1" in str(info.value)


def test_from_text_entry_numbers_count_lines() -> None:
    text = f"# comment\n0a1b2c3d {KEY}\n\nbroken\n"
    with pytest.raises(KeyRingError, match="key ring, entry 4"):
        KeyRing.from_text(text)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", " , ,"])
def test_from_text_without_keys(text: str) -> None:
    with pytest.raises(KeyRingError, match="holds no key"):
        KeyRing.from_text(text)


def test_empty_ring() -> None:
    with pytest.raises(KeyRingError, match="xdt keygen"):
        KeyRing([])


def test_duplicate_key_id() -> None:
    key_id = bytes.fromhex("01020304")
    with pytest.raises(KeyRingError, match="01020304 appears twice"):
        KeyRing([(key_id, os.urandom(32)), (key_id, os.urandom(32))])
    text = f"01020304 {KEY}\n01020304 {KEY}\n"
    with pytest.raises(KeyRingError, match="appears twice"):
        KeyRing.from_text(text)


@pytest.mark.parametrize(
    ("key_id", "key"), [(b"\x00" * 3, bytes(32)), (b"\x00" * 5, bytes(32)), (b"\x00" * 4, b"k")]
)
def test_bad_key_shapes(key_id: bytes, key: bytes) -> None:
    with pytest.raises(KeyRingError, match="4 bytes"):
        KeyRing([(key_id, key)])


def test_primary_is_the_first_key() -> None:
    ring = KeyRing([(b"\x00\x00\x00\x01", os.urandom(32)), (b"\x00\x00\x00\x02", os.urandom(32))])
    assert ring.primary_key_id == "00000001"
    assert ring.key_ids == ["00000001", "00000002"]
    assert unseal_raw(ring.seal(make_ref()))[1:5] == b"\x00\x00\x00\x01"


def test_secondary_keys_open_references() -> None:
    old = KeyRing.generate()
    both = KeyRing.from_text(f"00000001 {KEY}\n" + old.to_text())
    assert both.primary_key_id == "00000001"
    ref = make_ref()
    assert both.open(old.seal(ref), now=NOW) == ref
    assert unseal_raw(both.seal(ref))[1:5] == b"\x00\x00\x00\x01"


# -- rotation -------------------------------------------------------------------------------


def test_rotation_keeps_old_keys() -> None:
    old = KeyRing.generate()
    new = old.rotated()
    assert new.primary_key_id != old.primary_key_id
    assert new.key_ids == [new.primary_key_id, old.primary_key_id]
    assert old.key_ids == [old.primary_key_id]  # the old ring is unchanged

    ref = make_ref()
    old_token = old.seal(ref)
    assert new.open(old_token, now=NOW) == ref

    new_token = new.seal(ref)
    assert unseal_raw(new_token)[1:5].hex() == new.primary_key_id
    assert new.open(new_token, now=NOW) == ref
    with pytest.raises(ReferenceTampered) as info:
        old.open(new_token, now=NOW)
    assert new.primary_key_id in str(info.value)


def test_rotating_twice_keeps_every_key_in_order() -> None:
    first = KeyRing.generate()
    second = first.rotated()
    third = second.rotated()
    assert third.key_ids == [third.primary_key_id, *second.key_ids]
    ref = make_ref()
    for ring in (first, second, third):
        assert third.open(ring.seal(ref), now=NOW) == ref


def test_a_pull_proof_is_bound_to_the_key_ring_the_token_and_the_tenant() -> None:
    ring = KeyRing.generate()
    token = ring.seal(make_ref())
    other_token = ring.seal(make_ref())
    proof = ring.pull_proof(token, "acme")
    assert len(proof) == 16 and ring.proves(token, "acme", proof)
    assert not ring.proves(other_token, "acme", proof)
    assert not ring.proves(token, "evil", proof)  # the tenant it pulls for is part of it
    assert not ring.proves(token, "acme", proof[:-1] + bytes((proof[-1] ^ 1,)))
    stranger = KeyRing.generate()
    assert not stranger.proves(token, "acme", proof)  # cannot even find its key id
    with pytest.raises(ReferenceTampered):
        stranger.pull_proof(token, "acme")
    assert not ring.proves("not a token", "acme", b"\x00" * 16)
    rotated = ring.rotated()  # older references are still proven after a rotation
    assert rotated.proves(token, "acme", proof)


def test_an_inline_payload_is_never_a_sealed_reference() -> None:
    with pytest.raises(ValueError, match="inline"):
        make_ref(mode=TransferMode.INLINE)


@pytest.mark.parametrize("label", ["inline", "xdt", "elasticache", "s3"])
def test_modes_are_named_as_a_spec_names_them(label: str) -> None:
    assert TransferMode.named(label).label == label


@pytest.mark.parametrize("label", ["XDT", "", "redis", "Inline"])
def test_an_unknown_mode_name_says_which_there_are(label: str) -> None:
    with pytest.raises(ValueError, match="inline, xdt, elasticache, s3"):
        TransferMode.named(label)


def test_the_hop_secret_is_the_rings_own_and_survives_rotation() -> None:
    ring = KeyRing.generate()
    assert ring.hop_secret() == KeyRing.from_text(ring.to_text()).hop_secret()
    assert ring.is_hop(ring.hop_secret())
    assert not ring.is_hop(KeyRing.generate().hop_secret())
    for wrong in (None, "", ring.hop_secret()[:-1], ring.hop_secret() + "x", "é" * 44):
        assert not ring.is_hop(wrong)
    rotated = ring.rotated()
    assert rotated.hop_secret() != ring.hop_secret()
    assert rotated.is_hop(ring.hop_secret())  # a sidecar still on the old ring is still ours
