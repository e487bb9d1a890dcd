"""Sealed references: the capability that travels instead of the bytes.

A :class:`Reference` names one object and everything a receiver needs to fetch and check it:
where it lives, how big it is, its checksum, when it expires and which tenant may use it. It
leaves a sidecar only sealed by a :class:`KeyRing` into compact URL-safe text::

    base64url( version:u8 | key_id:4 | nonce:12 | ChaCha20-Poly1305(body) )

The first 17 bytes travel in the clear (so a receiver can pick the key) and are authenticated as
associated data; the body (mode, object id, size, checksum, expiry, tenant, source) is encrypted
and authenticated. Function code can keep and forward the text but can neither read nor alter
it: any change is refused by :meth:`KeyRing.open` with one of the typed errors in
:mod:`xdt._core.errors`.

The key ring text format (a file, or the ``XDT_KEYRING`` environment variable) is one key per
line, ``<key id> <key>``, key id 8 hex digits, key 32 bytes in base64url; the first line is the
key new references are sealed with, the others still open older references (rotation). Commas
may stand for newlines, so a ring fits in one environment variable.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import re
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .errors import (
    KeyRingError,
    ReferenceExpired,
    ReferenceMalformed,
    ReferenceTampered,
    WrongTenant,
)

__all__ = [
    "DEFAULT_TENANT",
    "FORMAT_VERSION",
    "KEYRING_ENV",
    "PROOF_LEN",
    "KeyRing",
    "Reference",
    "TransferMode",
]

FORMAT_VERSION = 1
DEFAULT_TENANT = "default"
KEYRING_ENV = "XDT_KEYRING"

_HEADER = struct.Struct("!B4s12s")  # version, key id, nonce
_BODY = struct.Struct("!B16sQQQ")  # mode, object id, size, checksum, expires_at (unix ms)
_TAG_LEN = 16
PROOF_LEN = 16
CALL_PROOF_WINDOW = 60.0  # seconds a call proof is good for, either side of its time
_PROOF_LABEL = b"xdt sidecar pull v1"
_HOP_LABEL = b"xdt platform hop v1"
_KEY_LEN = 32
_MAX_TEXT_FIELD = 255  # tenant and source are length-prefixed with one byte
_MIN_SEALED = _HEADER.size + _BODY.size + 2 + _TAG_LEN
_MAX_SEALED = _MIN_SEALED + 2 * _MAX_TEXT_FIELD
_MAX_TOKEN_CHARS = (_MAX_SEALED * 4 + 2) // 3
_MAX_EXPIRY = 253402300800.0  # 10000-01-01T00:00:00Z
_KEY_ID = re.compile(r"^[0-9a-f]{8}$")


class TransferMode(enum.IntEnum):
    """The transfer modes, and where the bytes behind a reference to each live. Its names,
    lower-cased, are the modes' names in a spec (``transfer: xdt``); the sealed references of
    the three that store payloads carry its value."""

    INLINE = 0  # in the invocation itself: never sealed (an inline "reference" is the bytes)
    XDT = 1  # in the source sidecar's memory, pulled directly
    ELASTICACHE = 2  # in a Redis server, under the key in ``source``
    S3 = 3  # in an S3 bucket, under the key in ``source``

    @property
    def label(self) -> str:
        """The mode's name in a spec: ``"xdt"``."""
        return self.name.lower()

    @classmethod
    def named(cls, label: str) -> TransferMode:
        """The mode a spec names; ValueError naming the modes for anything else."""
        try:
            return cls[label.upper()] if label == label.lower() else cls[""]
        except KeyError:
            names = ", ".join(mode.label for mode in cls)
            raise ValueError(f"{label!r} is not a transfer mode ({names})") from None


@dataclass(frozen=True, slots=True)
class Reference:
    """What a sealed reference says. Build one to seal it; :meth:`KeyRing.open` returns one."""

    object_id: bytes
    source: str
    size: int
    checksum: int
    expires_at: float
    tenant: str = DEFAULT_TENANT
    mode: TransferMode = TransferMode.XDT

    def __post_init__(self) -> None:
        if self.mode is TransferMode.INLINE:
            raise ValueError("inline payloads travel as themselves, not as sealed references")
        if len(self.object_id) != 16:
            raise ValueError("object_id must be 16 bytes")
        for name in ("tenant", "source"):
            value: str = getattr(self, name)
            if not value or len(value.encode()) > _MAX_TEXT_FIELD:
                raise ValueError(f"{name} must be 1 to {_MAX_TEXT_FIELD} bytes of UTF-8")
        if not 0 <= self.size < 1 << 63 or not 0 <= self.checksum < 1 << 64:
            raise ValueError("size and checksum must be non-negative 64-bit integers")
        if not 0 <= self.expires_at < _MAX_EXPIRY:  # also refuses nan
            raise ValueError("expires_at must be a unix time in seconds, from 0 to year 9999")

    @property
    def object_hex(self) -> str:
        return self.object_id.hex()

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    def ttl(self, now: float | None = None) -> float:
        """Seconds left before expiry (negative once expired)."""
        return self.expires_at - (time.time() if now is None else now)


class KeyRing:
    """The platform's reference keys: one to seal with (the primary), all to open with.

    Only sidecars and the platform hold a key ring; function code never does.
    """

    __slots__ = ("_aeads", "_hops", "_keys", "_primary", "_proof_keys")

    def __init__(self, keys: Iterable[tuple[bytes, bytes]]) -> None:
        """``keys`` are ``(key id, key)`` pairs, the primary first."""
        self._keys: dict[bytes, bytes] = {}
        self._aeads: dict[bytes, ChaCha20Poly1305] = {}
        self._proof_keys: dict[bytes, bytes] = {}
        self._hops: dict[bytes, bytes] = {}  # hop secrets, as base64url
        primary: bytes | None = None
        for key_id, key in keys:
            if len(key_id) != 4 or len(key) != _KEY_LEN:
                raise KeyRingError("a key id is 4 bytes and a key 32 bytes")
            if key_id in self._aeads:
                raise KeyRingError(f"key id {key_id.hex()} appears twice in the key ring")
            self._keys[key_id] = bytes(key)
            self._aeads[key_id] = ChaCha20Poly1305(key)
            # A key of its own for pull proofs, derived so that no MAC ever uses the AEAD key.
            self._proof_keys[key_id] = hmac.digest(key, _PROOF_LABEL, hashlib.sha256)
            hop = hmac.digest(key, _HOP_LABEL, hashlib.sha256)
            self._hops[key_id] = base64.urlsafe_b64encode(hop)
            primary = key_id if primary is None else primary
        if primary is None:
            raise KeyRingError("the key ring holds no key; make one with `xdt keygen`")
        self._primary = primary

    # -- making and loading ------------------------------------------------------------------

    @classmethod
    def generate(cls) -> KeyRing:
        """A key ring with one fresh random key."""
        return cls([(os.urandom(4), ChaCha20Poly1305.generate_key())])

    @classmethod
    def from_text(cls, text: str, *, origin: str = "key ring") -> KeyRing:
        """Parse the text format (see the module docstring); ``origin`` names it in errors."""
        pairs: list[tuple[bytes, bytes]] = []
        for number, raw in enumerate(re.split(r"[\n,]", text), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2 or not _KEY_ID.match(parts[0]):
                raise KeyRingError(
                    f"{origin}, entry {number}: expected '<8 hex digit key id> <base64url key>'"
                )
            try:
                padded = (parts[1] + "=" * (-len(parts[1]) % 4)).encode("ascii")
                key = base64.b64decode(padded, altchars=b"-_", validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) != _KEY_LEN:
                raise KeyRingError(
                    f"{origin}, entry {number}: the key is not 32 bytes of base64url"
                )
            pairs.append((bytes.fromhex(parts[0]), key))
        if not pairs:
            raise KeyRingError(f"{origin} holds no key; make one with `xdt keygen`")
        return cls(pairs)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> KeyRing:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise KeyRingError(f"cannot read key ring file {path}: {exc.strerror}") from None
        return cls.from_text(text, origin=str(path))

    @classmethod
    def from_env(cls, variable: str = KEYRING_ENV) -> KeyRing:
        text = os.environ.get(variable)
        if text is None:
            raise KeyRingError(
                f"${variable} is not set; make a key ring with `xdt keygen` and put it there"
            )
        return cls.from_text(text, origin=f"${variable}")

    def to_text(self) -> str:
        """The text format, primary first. It holds secrets: store it like a password."""
        lines = [
            f"{key_id.hex()} {base64.urlsafe_b64encode(key).rstrip(b'=').decode()}"
            for key_id, key in self._keys.items()
        ]
        return "\n".join(lines) + "\n"

    def rotated(self) -> KeyRing:
        """A copy with a fresh primary key; existing keys still open older references."""
        fresh = KeyRing.generate()
        return KeyRing([*fresh._keys.items(), *self._keys.items()])

    @property
    def primary_key_id(self) -> str:
        return self._primary.hex()

    @property
    def key_ids(self) -> list[str]:
        return [key_id.hex() for key_id in self._aeads]

    # -- sealing and opening -----------------------------------------------------------------

    def seal(self, ref: Reference) -> str:
        """The reference as opaque URL-safe text, sealed under the primary key."""
        tenant, source = ref.tenant.encode(), ref.source.encode()
        body = b"".join(
            (
                _BODY.pack(
                    ref.mode,
                    ref.object_id,
                    ref.size,
                    ref.checksum,
                    max(0, round(ref.expires_at * 1000)),
                ),
                bytes((len(tenant),)),
                tenant,
                bytes((len(source),)),
                source,
            )
        )
        header = _HEADER.pack(FORMAT_VERSION, self._primary, os.urandom(12))
        sealed = header + self._aeads[self._primary].encrypt(header[5:], body, header)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open(self, token: str, *, tenant: str | None = None, now: float | None = None) -> Reference:
        """Check and read a sealed reference.

        ``tenant`` is the tenant on whose behalf it is used (``None`` skips the check, for the
        platform itself). Raises :class:`ReferenceMalformed`, :class:`ReferenceTampered`,
        :class:`WrongTenant` or :class:`ReferenceExpired`.
        """
        sealed = _decode_token(token)
        version, key_id, nonce = _HEADER.unpack_from(sealed)
        if version != FORMAT_VERSION:
            raise ReferenceMalformed(
                f"reference format version {version} is not supported (this xdt reads "
                f"version {FORMAT_VERSION}); was it made by a newer xdt?"
            )
        aead = self._aeads.get(key_id)
        if aead is None:
            raise ReferenceTampered(
                f"reference is sealed under key {key_id.hex()}, which this key ring does not "
                "hold: it was altered, comes from another platform, or its key was retired"
            )
        header = sealed[: _HEADER.size]
        try:
            body = aead.decrypt(nonce, sealed[_HEADER.size :], header)
        except InvalidTag:
            raise ReferenceTampered(
                "reference failed authentication: it was altered or truncated in transit"
            ) from None
        ref = _parse_body(body)
        if tenant is not None and ref.tenant != tenant:
            # Not naming the reference's tenant: whoever presents it must not learn it.
            raise WrongTenant(
                f"the reference belongs to another tenant than {tenant!r}; references never "
                "cross tenants"
            )
        if ref.expired(now):
            ago = -ref.ttl(now)
            raise ReferenceExpired(
                f"the reference expired {ago:.1f}s ago; make the object with a longer ttl or "
                "pull it sooner"
            )
        return ref

    # -- proving a puller is a sidecar ------------------------------------------------------

    def pull_proof(self, token: str, tenant: str) -> bytes:
        """Proof that whoever pulls ``token`` for ``tenant`` holds this key ring — a sidecar,
        never function code, which may hold the token itself. An object server serves only
        pulls that carry it, and the tenant it covers is the one the pull acts for.
        Raises like :meth:`open` for a token it could not open."""
        sealed = _decode_token(token)
        _, key_id, _ = _HEADER.unpack_from(sealed)
        key = self._proof_keys.get(key_id)
        if key is None:
            raise ReferenceTampered(f"reference is sealed under unknown key {key_id.hex()}")
        encoded = tenant.encode()
        message = bytes((len(encoded),)) + encoded + sealed
        return hmac.digest(key, message, hashlib.sha256)[:PROOF_LEN]

    def proves(self, token: str, tenant: str, proof: bytes) -> bool:
        """Whether ``proof`` is :meth:`pull_proof` of ``token`` and ``tenant``."""
        try:
            expected = self.pull_proof(token, tenant)
        except (ReferenceMalformed, ReferenceTampered):
            return False
        return hmac.compare_digest(expected, proof)

    def hop_secret(self) -> str:
        """What marks an HTTP hop as the platform's own (a sidecar's call through the
        gateway, the gateway's forward to an instance): only they may send or ask for a
        reference (``X-Xdt-Transfer`` / ``X-Xdt-Accept``). Derived from the primary key, so
        every process holding the key ring agrees on it, and function code never has it."""
        return self._hops[self._primary].decode()

    def call_proof(self, target: str, now: float | None = None) -> str:
        """What a sidecar's call to function ``target`` carries where the hop secret itself
        may not travel (between pods on a cluster's network): ``<time>.<mac>``, an HMAC under
        the hop key over the target and the time, so it proves a sidecar sent it, for that
        function, within :data:`CALL_PROOF_WINDOW` seconds — a replay is confined to them."""
        when = int(time.time() if now is None else now)
        return f"{when}.{self._call_mac(self._primary, target, when)}"

    def proves_call(self, value: str | None, target: str, now: float | None = None) -> bool:
        """Whether ``value`` is a :meth:`call_proof` for ``target``, made within
        :data:`CALL_PROOF_WINDOW` seconds of ``now`` (by any key of the ring)."""
        when_text, _, mac = (value or "").partition(".")
        if not when_text.isdigit() or len(when_text) > 12:
            return False
        when = int(when_text)
        if abs((time.time() if now is None else now) - when) > CALL_PROOF_WINDOW:
            return False
        found = False
        for key_id in self._hops:
            found |= hmac.compare_digest(self._call_mac(key_id, target, when), mac)
        return found

    def _call_mac(self, key_id: bytes, target: str, when: int) -> str:
        message = b"call\0" + target.encode() + b"\0" + str(when).encode()
        digest = hmac.digest(self._hops[key_id], message, hashlib.sha256)[:PROOF_LEN]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def is_hop(self, value: str | None) -> bool:
        """Whether ``value`` is the :meth:`hop_secret` of a key of this ring (compared in
        constant time; any key, so that a ring being rotated in agrees with the old one)."""
        if not value:
            return False
        given = value.encode("ascii", "replace")
        found = False
        for expected in self._hops.values():
            found |= hmac.compare_digest(expected, given)
        return found


def _decode_token(token: str) -> bytes:
    if not isinstance(token, str):
        raise ReferenceMalformed(f"a reference is text, not {type(token).__name__}")
    if not _MIN_SEALED * 4 // 3 <= len(token) <= _MAX_TOKEN_CHARS:
        raise ReferenceMalformed(
            f"a reference is {_MIN_SEALED * 4 // 3} to {_MAX_TOKEN_CHARS} characters of "
            f"base64url; got {len(token)} (was it truncated?)"
        )
    try:
        raw = token.encode("ascii")
        sealed = base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_", validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise ReferenceMalformed("a reference is base64url text; this one is not") from None
    # Only the canonical spelling is accepted, so every changed character is a changed byte.
    if base64.urlsafe_b64encode(sealed).rstrip(b"=") != raw:
        raise ReferenceMalformed("reference is not canonical base64url (altered in transit?)")
    if len(sealed) < _MIN_SEALED:
        raise ReferenceMalformed("reference is too short to be an xdt reference (truncated?)")
    return sealed


def _parse_body(body: bytes) -> Reference:
    try:
        mode, object_id, size, checksum, expires_ms = _BODY.unpack_from(body)
        offset = _BODY.size
        tenant_len = body[offset]
        tenant = body[offset + 1 : offset + 1 + tenant_len].decode()
        offset += 1 + tenant_len
        source_len = body[offset]
        source = body[offset + 1 : offset + 1 + source_len].decode()
        if offset + 1 + source_len != len(body):
            raise ValueError("trailing bytes")
        return Reference(
            object_id=object_id,
            source=source,
            size=size,
            checksum=checksum,
            expires_at=expires_ms / 1000,
            tenant=tenant,
            mode=TransferMode(mode),
        )
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
        raise ReferenceMalformed(f"reference body is not understood ({exc})") from None
