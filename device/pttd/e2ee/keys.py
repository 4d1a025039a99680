"""Identity keys, fingerprints and room key bundles: the key material of end-to-end encrypted voice.

Sans-I/O: no files, clock, sockets or threads; only the standard library and ``cryptography``.

Who holds what
--------------
* Each device (or client) makes an :class:`IdentityKey` when it is paired: an ML-KEM-768 seed and
  an X25519 private key, the two halves of the hybrid post-quantum HPKE KEM
  ``MLKEM768_X25519`` (:data:`HPKE_SUITE`). Its :class:`IdentityPublicKey` goes to the server;
  its :class:`Fingerprint` is shown on the device's serial console.
* The admin's room key authority holds an :class:`AuthorityKey` (Ed25519). Its public half
  travels in the pairing link the installer carries, so a device learns it from the installer,
  never from the server.
* The authority approves a device only after the admin has typed in the fingerprint read off the
  device (a server that swapped in a key of its own is caught there), then wraps each room's
  epoch secret for every approved member with HPKE and signs the result: a *bundle*
  (:func:`seal_bundle`). The server only passes bundles on; it can neither read nor forge them.
* A member opens its bundle (:func:`open_bundle`) into a :class:`RoomKey`: the room, the epoch,
  the SFrame suite, its own sender index, the roster of the epoch and the epoch secret. Each
  sender's SFrame base key is :func:`sender_base_key` of the epoch secret and its index, and its
  SFrame key id is :func:`make_kid` of the epoch and the index, so no two senders ever share a
  key or a nonce, and a listener knows who spoke.

Fingerprints
------------
A fingerprint is SHA-256 over ``FINGERPRINT_LABEL`` and :meth:`IdentityPublicKey.to_bytes`. For
people it is shown as 40 decimal digits in 8 groups of 5 (``12345 67890 …``): the digest read as
a 256-bit big-endian number, reduced modulo 10**40, written with leading zeros. That keeps
log2(10**40) ≈ 132.9 bits, and the reduction's bias is below 2**-123 (10**40 / 2**256). What the
digits must resist is a second-preimage search: a hostile server has to make a key pair whose
fingerprint has the same 40 digits as the device's, about 2**132 key generations, far beyond reach
(the brief's bar was 100 bits). The QR form (:attr:`Fingerprint.qr_text`) carries the whole
digest, ``pttd-fp:<64 hex digits>``; :meth:`Fingerprint.parse` reads either form.

The authority's :attr:`AuthorityPublicKey.fingerprint` is shorter, 30 digits in 6 groups of 5
(≈ 99.7 bits, like one party's half of a Signal safety number), for people to tell which
authority a link or a device names.

Bundles
-------
A bundle is ``BUNDLE_MAGIC || body || signature``: ``body`` is canonical JSON (sorted keys, no
spaces, UTF-8) and ``signature`` the 64-byte Ed25519 signature of ``SIGN_CONTEXT || body``. The
body names the room, epoch, SFrame suite, the recipient's sender index, the roster, the recipient's
name and full fingerprint, the authority's public key, and the HPKE ciphertext of the epoch secret
(``enc || ct``, 1168 bytes), whose ``info`` binds the room, epoch, suite, recipient name and
fingerprint. A bundle for a room of a few members is about 1.9 KB; it is never more than
:data:`MAX_BUNDLE_BYTES`, so that its base64url text fits in one 64 KiB protocol text frame.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pttd.errors import PttdError

VERSION: Final = "pttd-e2ee-v1"
"""The version label of this key scheme; part of every label, HPKE ``info`` and bundle."""

HPKE_SUITE: Final = hpke.Suite(
    hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM
)
HPKE_SUITE_NAME: Final = "MLKEM768_X25519/HKDF_SHA256/AES_128_GCM"

SFRAME_DEFAULT_SUITE: Final = 1
"""RFC 9605 ``AES_128_CTR_HMAC_SHA256_80``. Suites are 16-bit ids; 0 is reserved."""

MLKEM_SEED_BYTES: Final = 64
MLKEM_PUBLIC_BYTES: Final = 1184
X25519_BYTES: Final = 32
ED25519_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
EPOCH_SECRET_BYTES: Final = 32
SENDER_KEY_BYTES: Final = 32

IDENTITY_TAG: Final = 0x01
"""First byte of an identity key's bytes (private and public): ML-KEM-768 + X25519, this version."""
IDENTITY_PRIVATE_BYTES: Final = 1 + MLKEM_SEED_BYTES + X25519_BYTES  # 97
IDENTITY_SEED_TAG: Final = 0x02
"""First byte of an identity private key kept as its 32-byte X-Wing seed (what new keys are)."""
XWING_SEED_BYTES: Final = 32
IDENTITY_SEED_BYTES: Final = 1 + XWING_SEED_BYTES  # 33
IDENTITY_PUBLIC_BYTES: Final = 1 + MLKEM_PUBLIC_BYTES + X25519_BYTES  # 1217

FINGERPRINT_LABEL: Final = b"pttd-e2ee-v1 identity fingerprint\x00"
AUTHORITY_FINGERPRINT_LABEL: Final = b"pttd-e2ee-v1 authority fingerprint\x00"
FINGERPRINT_DIGITS: Final = 40  # 8 groups of 5: log2(10**40) ≈ 132.9 bits
AUTHORITY_FINGERPRINT_DIGITS: Final = 30  # 6 groups of 5: ≈ 99.7 bits
FINGERPRINT_QR_PREFIX: Final = "pttd-fp:"

BUNDLE_MAGIC: Final = b"PTTD-RK\x01"
SIGN_CONTEXT: Final = b"pttd-e2ee-v1 room key bundle\x00"
HPKE_INFO_LABEL: Final = "pttd-e2ee-v1 epoch secret"
SENDER_KEY_SALT: Final = b"pttd-e2ee-v1"
SENDER_KEY_LABEL: Final = b"pttd-e2ee-v1 sframe sender base key"

MAX_BUNDLE_BYTES: Final = 45 * 1024
"""The largest bundle made or opened: its base64url text (60 KiB) fits in one 64 KiB text frame
with room for the message around it. 1024 members with 20-character names make about 34 KB."""
MAX_ROSTER: Final = 1024
MAX_NAME: Final = 64  # room and member names, as the wire protocol's MAX_NAME
MAX_SENDER_INDEX: Final = 0xFFFF
MAX_EPOCH: Final = 2**32 - 1
MAX_SUITE: Final = 0xFFFF

# Why a bundle is refused (KeyRefused.reason): short lines for people, never naming a secret.
REFUSED_MALFORMED: Final = "malformed room key"
REFUSED_VERSION: Final = "room key of an unknown format version"
REFUSED_SIGNATURE: Final = "not signed by this room's key authority"
REFUSED_OTHER_DEVICE: Final = "wrapped for another device"
REFUSED_OTHER_NAME: Final = "wrapped for this device under another name"
REFUSED_UNOPENABLE: Final = "cannot be opened with this device's key"

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGITS = re.compile(r"[0-9]*")
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212]+")  # spaces, hyphens, dashes, minus


class E2eeError(PttdError):
    """Base of the end-to-end encryption errors."""


class KeyFormatError(E2eeError, ValueError):
    """Key bytes or text, a fingerprint, or a room key's fields that cannot be used; the message
    says what is wrong and never contains secret bytes."""


class KeyRefused(E2eeError):
    """A room key bundle this device will not use. ``reason`` is one of the ``REFUSED_*`` lines
    (``not signed by this room's key authority`` …), short and safe to show or log."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"room key refused: {reason}")
        self.reason = reason


# --- encodings --------------------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, what: str = "text") -> bytes:
    """The bytes of canonical unpadded base64url ``text``; KeyFormatError naming ``what``."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise KeyFormatError(f"{what} is not base64url text")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"{what} is not base64url text") from None
    if b64url_encode(data) != text:  # stray bits in the last character: not the canonical form
        raise KeyFormatError(f"{what} is not canonical base64url text")
    return data


def check_name(name: object, what: str = "name") -> str:
    """``name`` if it is a usable room or member name (1 to ``MAX_NAME`` printable characters, no
    leading or trailing space, the server's rule), else KeyFormatError."""
    if not isinstance(name, str):
        raise KeyFormatError(f"{what} must be a string, not {type(name).__name__}")
    if not name:
        raise KeyFormatError(f"{what} is empty")
    if len(name) > MAX_NAME:
        raise KeyFormatError(f"{what} {name[:MAX_NAME]!r}… is longer than {MAX_NAME} characters")
    if not name.isprintable():
        raise KeyFormatError(f"{what} {name!r} contains a control or non-printable character")
    if name != name.strip():
        raise KeyFormatError(f"{what} {name!r} has a leading or trailing space")
    return name


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_range(value: object, low: int, high: int, what: str) -> int:
    if not _is_int(value):
        raise KeyFormatError(f"{what} must be an integer, not {type(value).__name__}")
    assert isinstance(value, int)
    if not low <= value <= high:
        raise KeyFormatError(f"{what} {value} is not between {low} and {high}")
    return value


def _digits(digest: bytes, count: int) -> str:
    """``digest`` as ``count`` decimal digits, grouped by 5: the big-endian number modulo
    10**count with leading zeros."""
    number = str(int.from_bytes(digest, "big") % 10**count).zfill(count)
    return " ".join(number[i : i + 5] for i in range(0, count, 5))


# --- fingerprints -----------------------------------------------------------------------------


class Fingerprint:
    """An identity public key's fingerprint (see the module's docstring for the format).

    Made from a key (:attr:`IdentityPublicKey.fingerprint`) or parsed from what someone read or
    scanned (:meth:`parse`). One parsed from the digits knows only the digits; the others also
    know the whole digest. :meth:`matches` (and ``==``) compares the digests when both sides know
    them, else the digits, in constant time.
    """

    __slots__ = ("_digest", "_digits")

    def __init__(self, digits: str, digest: bytes | None = None) -> None:
        plain = _SEPARATORS.sub("", digits) if isinstance(digits, str) else ""
        if not (len(plain) == FINGERPRINT_DIGITS and _DIGITS.fullmatch(plain)):
            raise KeyFormatError(f"a fingerprint is {FINGERPRINT_DIGITS} digits")
        if digest is not None and (
            len(digest) != 32 or _digits(digest, FINGERPRINT_DIGITS).replace(" ", "") != plain
        ):
            raise KeyFormatError("fingerprint digits and digest disagree")
        self._digits = plain
        self._digest = None if digest is None else bytes(digest)

    @classmethod
    def of(cls, public_key_bytes: bytes) -> Fingerprint:
        """The fingerprint of a public key's bytes (:meth:`IdentityPublicKey.to_bytes`)."""
        digest = hashlib.sha256(FINGERPRINT_LABEL + bytes(public_key_bytes)).digest()
        return cls(_digits(digest, FINGERPRINT_DIGITS), digest)

    @classmethod
    def parse(cls, text: str) -> Fingerprint:
        """A fingerprint from the 40 digits (any spaces or dashes between them) or from
        :attr:`qr_text` (``pttd-fp:`` and 64 hex digits, or ``pttd-fp:`` and the 40 digits).
        KeyFormatError saying what was expected otherwise."""
        if not isinstance(text, str):
            raise KeyFormatError(f"a fingerprint must be text, not {type(text).__name__}")
        stripped = text.strip()
        if stripped[: len(FINGERPRINT_QR_PREFIX)].lower() == FINGERPRINT_QR_PREFIX:
            rest = stripped[len(FINGERPRINT_QR_PREFIX) :].strip()
            if _HEX64.fullmatch(rest.lower()):
                digest = bytes.fromhex(rest)
                return cls(_digits(digest, FINGERPRINT_DIGITS), digest)
            stripped = rest
        plain = _SEPARATORS.sub("", stripped)
        if not _DIGITS.fullmatch(plain):
            raise KeyFormatError(
                f"a fingerprint is {FINGERPRINT_DIGITS} digits in groups of 5 "
                f"(or a {FINGERPRINT_QR_PREFIX} code); this has other characters"
            )
        if len(plain) != FINGERPRINT_DIGITS:
            raise KeyFormatError(
                f"a fingerprint is {FINGERPRINT_DIGITS} digits in groups of 5; "
                f"this has {len(plain)}"
            )
        return cls(plain)

    @property
    def digits(self) -> str:
        """The 40 digits in 8 groups of 5, separated by spaces: what people compare."""
        return " ".join(self._digits[i : i + 5] for i in range(0, FINGERPRINT_DIGITS, 5))

    @property
    def digest(self) -> bytes | None:
        """The whole SHA-256 digest, when known (not for one parsed from digits)."""
        return self._digest

    @property
    def qr_text(self) -> str:
        """``pttd-fp:`` and the digest in lower-case hex (or the 40 digits when the digest is
        not known): what a QR code of the fingerprint holds."""
        if self._digest is not None:
            return FINGERPRINT_QR_PREFIX + self._digest.hex()
        return FINGERPRINT_QR_PREFIX + self._digits

    def matches(self, other: Fingerprint) -> bool:
        """Whether ``other`` is the same fingerprint, compared in constant time."""
        if self._digest is not None and other._digest is not None:
            return hmac.compare_digest(self._digest, other._digest)
        return hmac.compare_digest(self._digits.encode(), other._digits.encode())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fingerprint) and self.matches(other)

    def __hash__(self) -> int:
        return hash(self._digits)

    def __str__(self) -> str:
        return self.digits

    def __repr__(self) -> str:
        return f"Fingerprint({self.digits!r})"


# --- identity keys ----------------------------------------------------------------------------


class IdentityPublicKey:
    """A device's (or client's) public identity: ML-KEM-768 and X25519 public keys.

    Bytes: ``IDENTITY_TAG`` (1 byte), the ML-KEM-768 public key (1184), the X25519 public key
    (32): 1217 bytes; text: their base64url, 1623 characters.
    """

    __slots__ = ("_bytes", "_fingerprint", "_hpke")

    def __init__(
        self, mlkem_key: mlkem.MLKEM768PublicKey, x25519_key: x25519.X25519PublicKey
    ) -> None:
        self._bytes = (
            bytes([IDENTITY_TAG]) + mlkem_key.public_bytes_raw() + x25519_key.public_bytes_raw()
        )
        self._hpke = hpke.MLKEM768X25519PublicKey(mlkem_key, x25519_key)
        self._fingerprint = Fingerprint.of(self._bytes)

    @classmethod
    def from_bytes(cls, data: bytes) -> IdentityPublicKey:
        """The key of :meth:`to_bytes`; KeyFormatError when ``data`` is not one."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise KeyFormatError(f"an identity public key is bytes, not {type(data).__name__}")
        data = bytes(data)
        if len(data) != IDENTITY_PUBLIC_BYTES:
            raise KeyFormatError(
                f"an identity public key is {IDENTITY_PUBLIC_BYTES} bytes, not {len(data)}"
            )
        if data[0] != IDENTITY_TAG:
            raise KeyFormatError(f"identity public key of unknown kind {data[0]}")
        try:
            mlkem_key = mlkem.MLKEM768PublicKey.from_public_bytes(data[1 : 1 + MLKEM_PUBLIC_BYTES])
        except ValueError:
            raise KeyFormatError("identity public key: not a valid ML-KEM-768 key") from None
        x25519_key = x25519.X25519PublicKey.from_public_bytes(data[1 + MLKEM_PUBLIC_BYTES :])
        try:  # a low-order point gives an all-zero shared secret, which X25519 refuses
            x25519.X25519PrivateKey.generate().exchange(x25519_key)
        except ValueError:
            raise KeyFormatError("identity public key: not a usable X25519 key") from None
        return cls(mlkem_key, x25519_key)

    @classmethod
    def from_text(cls, text: str) -> IdentityPublicKey:
        """The key of :meth:`to_text`; KeyFormatError when ``text`` is not one."""
        if isinstance(text, str) and len(text) > 2 * IDENTITY_PUBLIC_BYTES:
            raise KeyFormatError("an identity public key text is too long")
        return cls.from_bytes(b64url_decode(text, "identity public key"))

    def to_bytes(self) -> bytes:
        return self._bytes

    def to_text(self) -> str:
        """base64url of :meth:`to_bytes`, no padding."""
        return b64url_encode(self._bytes)

    @property
    def fingerprint(self) -> Fingerprint:
        return self._fingerprint

    @property
    def hpke_key(self) -> hpke.MLKEM768X25519PublicKey:
        """The key to HPKE-encrypt to."""
        return self._hpke

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdentityPublicKey) and hmac.compare_digest(
            self._bytes, other._bytes
        )

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __repr__(self) -> str:
        return f"IdentityPublicKey(fingerprint={self._fingerprint.digits!r})"


class IdentityKey:
    """A device's (or client's) private identity: an ML-KEM-768 seed (64 bytes) and an X25519
    private key (32), the two halves of the hybrid KEM, which is X-Wing. New keys are made from
    one 32-byte X-Wing seed, expanded as X-Wing does (SHAKE256 to 96 bytes: the ML-KEM seed, then
    the X25519 key), so that other X-Wing implementations (a browser's) make and hold the same
    keys. Bytes: ``IDENTITY_SEED_TAG`` and the seed, 33 bytes; keys of the first format
    (``IDENTITY_TAG``, the ML-KEM seed, the X25519 key: 97 bytes) still load. Its repr shows the
    public fingerprint only."""

    __slots__ = ("_hpke", "_mlkem", "_public", "_seed", "_x25519")

    def __init__(
        self,
        mlkem_key: mlkem.MLKEM768PrivateKey,
        x25519_key: x25519.X25519PrivateKey,
        seed: bytes | None = None,
    ) -> None:
        self._seed = seed
        self._mlkem = mlkem_key
        self._x25519 = x25519_key
        self._hpke = hpke.MLKEM768X25519PrivateKey(mlkem_key, x25519_key)
        self._public = IdentityPublicKey(mlkem_key.public_key(), x25519_key.public_key())

    @classmethod
    def generate(cls) -> IdentityKey:
        return cls.from_seed(secrets.token_bytes(XWING_SEED_BYTES))

    @classmethod
    def from_seed(cls, seed: bytes) -> IdentityKey:
        """The identity of an X-Wing seed (32 bytes)."""
        if len(seed) != XWING_SEED_BYTES:
            raise KeyFormatError(f"an identity seed is {XWING_SEED_BYTES} bytes, not {len(seed)}")
        expanded = hashlib.shake_256(seed).digest(MLKEM_SEED_BYTES + X25519_BYTES)
        try:
            mlkem_key = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:MLKEM_SEED_BYTES])
            x25519_key = x25519.X25519PrivateKey.from_private_bytes(expanded[MLKEM_SEED_BYTES:])
        except ValueError:
            raise KeyFormatError("not a valid identity seed") from None
        return cls(mlkem_key, x25519_key, bytes(seed))

    @classmethod
    def from_bytes(cls, data: bytes) -> IdentityKey:
        """The key of :meth:`to_bytes`; KeyFormatError (naming no byte of it) when it is not."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise KeyFormatError(f"an identity key is bytes, not {type(data).__name__}")
        data = bytes(data)
        if data[:1] == bytes([IDENTITY_SEED_TAG]):
            if len(data) != IDENTITY_SEED_BYTES:
                raise KeyFormatError(
                    f"an identity seed key is {IDENTITY_SEED_BYTES} bytes, not {len(data)}"
                )
            return cls.from_seed(data[1:])
        if len(data) != IDENTITY_PRIVATE_BYTES:
            raise KeyFormatError(
                f"an identity key is {IDENTITY_PRIVATE_BYTES} bytes, not {len(data)}"
            )
        if data[0] != IDENTITY_TAG:
            raise KeyFormatError(f"identity key of unknown kind {data[0]}")
        try:
            mlkem_key = mlkem.MLKEM768PrivateKey.from_seed_bytes(data[1 : 1 + MLKEM_SEED_BYTES])
            x25519_key = x25519.X25519PrivateKey.from_private_bytes(data[1 + MLKEM_SEED_BYTES :])
        except ValueError:
            raise KeyFormatError("not a valid identity key") from None
        return cls(mlkem_key, x25519_key)

    def to_bytes(self) -> bytes:
        """The private key's bytes: keep them secret (a 0600 file)."""
        if self._seed is not None:
            return bytes([IDENTITY_SEED_TAG]) + self._seed
        return (
            bytes([IDENTITY_TAG])
            + self._mlkem.private_bytes_raw()
            + self._x25519.private_bytes_raw()
        )

    @property
    def public(self) -> IdentityPublicKey:
        return self._public

    def __repr__(self) -> str:
        return f"IdentityKey(fingerprint={self._public.fingerprint.digits!r})"


# --- the authority's signing key --------------------------------------------------------------


class AuthorityPublicKey:
    """The room key authority's Ed25519 public key: 32 bytes, as text their base64url (43
    characters), which the pairing link carries to the device."""

    __slots__ = ("_bytes", "_key")

    def __init__(self, key: ed25519.Ed25519PublicKey) -> None:
        self._key = key
        self._bytes = key.public_bytes_raw()

    @classmethod
    def from_bytes(cls, data: bytes) -> AuthorityPublicKey:
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) != ED25519_BYTES:
            raise KeyFormatError(f"a key authority's public key is {ED25519_BYTES} bytes")
        try:
            return cls(ed25519.Ed25519PublicKey.from_public_bytes(bytes(data)))
        except ValueError:
            raise KeyFormatError("not a valid key authority public key") from None

    @classmethod
    def from_text(cls, text: str) -> AuthorityPublicKey:
        if isinstance(text, str) and len(text) > 64:
            raise KeyFormatError("a key authority's public key text is too long")
        return cls.from_bytes(b64url_decode(text, "key authority public key"))

    def to_bytes(self) -> bytes:
        return self._bytes

    def to_text(self) -> str:
        return b64url_encode(self._bytes)

    @property
    def fingerprint(self) -> str:
        """30 digits in 6 groups of 5 (≈ 99.7 bits) for people to tell authorities apart."""
        digest = hashlib.sha256(AUTHORITY_FINGERPRINT_LABEL + self._bytes).digest()
        return _digits(digest, AUTHORITY_FINGERPRINT_DIGITS)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AuthorityPublicKey) and hmac.compare_digest(
            self._bytes, other._bytes
        )

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __repr__(self) -> str:
        return f"AuthorityPublicKey({self.to_text()!r})"


class AuthorityKey:
    """The room key authority's Ed25519 signing key (32 bytes). Its repr shows the public half."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key
        self._public = AuthorityPublicKey(key.public_key())

    @classmethod
    def generate(cls) -> AuthorityKey:
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, data: bytes) -> AuthorityKey:
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) != ED25519_BYTES:
            raise KeyFormatError(f"a key authority's private key is {ED25519_BYTES} bytes")
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(data)))

    def to_bytes(self) -> bytes:
        """The private key's 32 bytes: keep them secret."""
        return self._key.private_bytes_raw()

    @property
    def public(self) -> AuthorityPublicKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"AuthorityKey(public={self._public.to_text()!r})"


# --- room keys --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomKey:
    """What a member holds for a room after opening its bundle.

    ``roster`` is ``(index, name)`` of every member of the epoch, sorted by index, no index or
    name twice, and it includes ``(sender_index, <this member's name>)``. ``epoch_secret`` (32
    bytes) is not in the repr. KeyFormatError on construction when a field is out of range.
    """

    room: str
    epoch: int
    suite: int = SFRAME_DEFAULT_SUITE
    sender_index: int
    roster: tuple[tuple[int, str], ...]
    epoch_secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_name(self.room, "room")
        _check_range(self.epoch, 1, MAX_EPOCH, "epoch")
        _check_range(self.suite, 1, MAX_SUITE, "SFrame suite")
        _check_range(self.sender_index, 0, MAX_SENDER_INDEX, "sender index")
        if not isinstance(self.epoch_secret, bytes) or len(self.epoch_secret) != EPOCH_SECRET_BYTES:
            raise KeyFormatError(f"an epoch secret is {EPOCH_SECRET_BYTES} bytes")
        if not isinstance(self.roster, tuple):
            raise KeyFormatError("roster must be a tuple of (index, name)")
        if len(self.roster) > MAX_ROSTER:
            raise KeyFormatError(f"roster of {len(self.roster)} members, over {MAX_ROSTER}")
        names: set[str] = set()
        previous = -1
        for entry in self.roster:
            if not (isinstance(entry, tuple) and len(entry) == 2):
                raise KeyFormatError("roster must be a tuple of (index, name)")
            index = _check_range(entry[0], 0, MAX_SENDER_INDEX, "roster index")
            name = check_name(entry[1], "roster name")
            if index <= previous:
                raise KeyFormatError("roster must be sorted by index, each index once")
            if name in names:
                raise KeyFormatError(f"roster names {name!r} twice")
            names.add(name)
            previous = index
        if self.name_of(self.sender_index) is None:
            raise KeyFormatError(f"sender index {self.sender_index} is not in the roster")

    def name_of(self, index: int) -> str | None:
        """The name of the member with sender ``index`` in this epoch, None if there is none."""
        for member_index, name in self.roster:
            if member_index == index:
                return name
        return None

    @property
    def name(self) -> str:
        """This member's own name (the roster's name for ``sender_index``)."""
        name = self.name_of(self.sender_index)
        assert name is not None  # checked on construction
        return name

    @property
    def kid(self) -> int:
        """This member's SFrame key id for this epoch (:func:`make_kid`)."""
        return make_kid(self.epoch, self.sender_index)


def new_epoch_secret() -> bytes:
    """A fresh random 32-byte epoch secret."""
    return secrets.token_bytes(EPOCH_SECRET_BYTES)


def sender_base_key(epoch_secret: bytes, sender_index: int) -> bytes:
    """The SFrame base key (32 bytes) of sender ``sender_index`` in the epoch of ``epoch_secret``:
    HKDF-SHA256 with salt ``SENDER_KEY_SALT`` and info ``SENDER_KEY_LABEL || index (2 bytes,
    big-endian)``."""
    if not isinstance(epoch_secret, bytes) or len(epoch_secret) != EPOCH_SECRET_BYTES:
        raise KeyFormatError(f"an epoch secret is {EPOCH_SECRET_BYTES} bytes")
    index = _check_range(sender_index, 0, MAX_SENDER_INDEX, "sender index")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=SENDER_KEY_BYTES,
        salt=SENDER_KEY_SALT,
        info=SENDER_KEY_LABEL + index.to_bytes(2, "big"),
    )
    return hkdf.derive(epoch_secret)


def make_kid(epoch: int, sender_index: int) -> int:
    """The SFrame key id of a sender in an epoch: ``epoch << 16 | sender_index`` (epoch 1 to
    2**32 - 1, index 0 to 65535, so a key id is at most 48 bits and never below 65536)."""
    e = _check_range(epoch, 1, MAX_EPOCH, "epoch")
    i = _check_range(sender_index, 0, MAX_SENDER_INDEX, "sender index")
    return e << 16 | i


def split_kid(kid: int) -> tuple[int, int]:
    """``(epoch, sender_index)`` of a key id made by :func:`make_kid`; KeyFormatError for one it
    cannot have made (below 65536, i.e. epoch 0, or over 48 bits)."""
    k = _check_range(kid, 1 << 16, (MAX_EPOCH << 16) | MAX_SENDER_INDEX, "key id")
    return k >> 16, k & MAX_SENDER_INDEX


# --- bundles ----------------------------------------------------------------------------------


def _hpke_info(room: str, epoch: int, suite: int, name: str, fingerprint_hex: str) -> bytes:
    """HPKE ``info``: the label, room, epoch, suite, recipient name and fingerprint, as a compact
    JSON list (unambiguous: every string is quoted and escaped)."""
    fields = [HPKE_INFO_LABEL, room, epoch, suite, name, fingerprint_hex]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def seal_bundle(
    authority: AuthorityKey, key: RoomKey, recipient_name: str, recipient: IdentityPublicKey
) -> bytes:
    """``key``'s epoch secret wrapped for ``recipient`` (HPKE, :data:`HPKE_SUITE`) with the rest
    of ``key``, signed by ``authority``: the bundle :func:`open_bundle` opens. ``key.sender_index``
    is the recipient's index and the roster must give it ``recipient_name``. KeyFormatError when
    it does not, or when the bundle would be over :data:`MAX_BUNDLE_BYTES`."""
    check_name(recipient_name, "recipient name")
    if key.name_of(key.sender_index) != recipient_name:
        raise KeyFormatError(
            f"the roster gives sender index {key.sender_index} to "
            f"{key.name_of(key.sender_index)!r}, not to {recipient_name!r}"
        )
    digest = recipient.fingerprint.digest
    assert digest is not None  # a key's fingerprint knows its digest
    info = _hpke_info(key.room, key.epoch, key.suite, recipient_name, digest.hex())
    try:
        wrapped = HPKE_SUITE.encrypt(key.epoch_secret, recipient.hpke_key, info=info)
    except ValueError:
        raise KeyFormatError("cannot encrypt to this identity public key") from None
    body = {
        "v": 1,
        "scheme": VERSION,
        "hpke": HPKE_SUITE_NAME,
        "room": key.room,
        "epoch": key.epoch,
        "suite": key.suite,
        "sender_index": key.sender_index,
        "roster": [[index, name] for index, name in key.roster],
        "recipient": recipient_name,
        "recipient_fingerprint": digest.hex(),
        "authority": authority.public.to_text(),
        "wrapped": b64url_encode(wrapped),
    }
    data = _canonical(body)
    bundle = BUNDLE_MAGIC + data + authority.sign(SIGN_CONTEXT + data)
    if len(bundle) > MAX_BUNDLE_BYTES:
        raise KeyFormatError(
            f"the room key bundle would be {len(bundle)} bytes, over the limit of "
            f"{MAX_BUNDLE_BYTES}: {len(key.roster)} members with these names are too many"
        )
    return bundle


def bundle_to_text(bundle: bytes) -> str:
    """A bundle as base64url text (no padding), for a JSON field."""
    return b64url_encode(bundle)


def bundle_from_text(text: str) -> bytes:
    """The bundle of :func:`bundle_to_text`; KeyRefused(``malformed room key``) otherwise."""
    if not isinstance(text, str) or len(text) > (MAX_BUNDLE_BYTES * 4 + 2) // 3:
        raise KeyRefused(REFUSED_MALFORMED)
    try:
        return b64url_decode(text, "room key bundle")
    except KeyFormatError:
        raise KeyRefused(REFUSED_MALFORMED) from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_body(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(
            data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except (ValueError, RecursionError):
        raise KeyRefused(REFUSED_MALFORMED) from None
    if not isinstance(body, dict):
        raise KeyRefused(REFUSED_MALFORMED)
    return body


def _field(body: dict[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise KeyRefused(REFUSED_MALFORMED)
    return value


def open_bundle(
    data: bytes, authority: AuthorityPublicKey, identity: IdentityKey, name: str | None = None
) -> RoomKey:
    """The room key in bundle ``data``, after checking, in this order: that ``authority`` (the
    key the device got at pairing) signed it; that it is for ``identity`` (its fingerprint) and,
    when given, under ``name``; that it decrypts. KeyRefused with a ``REFUSED_*`` reason
    otherwise, whatever ``data`` is. The caller checks the room is the one it asked for and
    refuses an epoch older than the one it holds."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise KeyRefused(REFUSED_MALFORMED)
    data = bytes(data)
    if len(data) > MAX_BUNDLE_BYTES or len(data) < len(BUNDLE_MAGIC) + 2 + SIGNATURE_BYTES:
        raise KeyRefused(REFUSED_MALFORMED)
    if data[: len(BUNDLE_MAGIC)] != BUNDLE_MAGIC:
        if data[: len(BUNDLE_MAGIC) - 1] == BUNDLE_MAGIC[:-1]:
            raise KeyRefused(REFUSED_VERSION)
        raise KeyRefused(REFUSED_MALFORMED)
    body_bytes = data[len(BUNDLE_MAGIC) : -SIGNATURE_BYTES]
    if not authority.verify(data[-SIGNATURE_BYTES:], SIGN_CONTEXT + body_bytes):
        raise KeyRefused(REFUSED_SIGNATURE)

    body = _parse_body(body_bytes)
    if body.get("v") != 1 or body.get("scheme") != VERSION or body.get("hpke") != HPKE_SUITE_NAME:
        raise KeyRefused(REFUSED_VERSION)
    if _field(body, "authority", str) != authority.to_text():
        raise KeyRefused(REFUSED_SIGNATURE)
    fingerprint_hex = _field(body, "recipient_fingerprint", str)
    own = identity.public.fingerprint.digest
    assert own is not None
    if not hmac.compare_digest(fingerprint_hex.encode("utf-8"), own.hex().encode("ascii")):
        raise KeyRefused(REFUSED_OTHER_DEVICE)
    recipient = _field(body, "recipient", str)
    if name is not None and recipient != name:
        raise KeyRefused(REFUSED_OTHER_NAME)
    room = _field(body, "room", str)
    epoch = _field(body, "epoch", int)
    suite = _field(body, "suite", int)
    sender_index = _field(body, "sender_index", int)
    roster_list = _field(body, "roster", list)
    if len(roster_list) > MAX_ROSTER or not all(
        isinstance(e, list) and len(e) == 2 for e in roster_list
    ):
        raise KeyRefused(REFUSED_MALFORMED)
    roster = tuple((e[0], e[1]) for e in roster_list)
    try:
        wrapped = b64url_decode(_field(body, "wrapped", str), "wrapped epoch secret")
        check_name(room, "room")
        check_name(recipient, "recipient")
        _check_range(epoch, 1, MAX_EPOCH, "epoch")
        _check_range(suite, 1, MAX_SUITE, "suite")
        info = _hpke_info(room, epoch, suite, recipient, fingerprint_hex)
    except KeyFormatError:
        raise KeyRefused(REFUSED_MALFORMED) from None

    try:
        secret = HPKE_SUITE.decrypt(wrapped, identity._hpke, info=info)
    except (InvalidTag, ValueError):  # ValueError: a ciphertext of the wrong size
        raise KeyRefused(REFUSED_UNOPENABLE) from None

    try:
        key = RoomKey(
            room=room,
            epoch=epoch,
            suite=suite,
            sender_index=sender_index,
            roster=roster,
            epoch_secret=secret,
        )
    except KeyFormatError:
        raise KeyRefused(REFUSED_MALFORMED) from None
    if key.name_of(sender_index) != recipient:
        raise KeyRefused(REFUSED_MALFORMED)
    return key
