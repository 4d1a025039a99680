"""SFrame (RFC 9605), sans-I/O: the end-to-end encryption of one audio packet.

An SFrame ciphertext is ``header + AEAD(plaintext) + tag``. The header carries the key id (KID)
and the counter (CTR), both 0 … 2**64 - 1, minimally encoded big-endian after a config byte
(values below 8 sit in the config byte itself, RFC 9605 §4.3). The key and salt of a KID come
from its ``base_key`` by HKDF (§4.4.2), the nonce is ``salt XOR CTR`` (§4.4.3) and the AAD is
the header followed by the caller's ``metadata`` (authenticated, never sent).

Cipher suites (:class:`CipherSuite`, the IANA values of §8.1):

* ``AES_128_CTR_HMAC_SHA256_80`` / ``_64`` / ``_32``: AES-128-CTR then HMAC-SHA256 truncated to
  10, 8 or 4 bytes (§4.5.1); short tags for small audio packets. The default is ``_80``.
* ``AES_128_GCM_SHA256_128`` and ``AES_256_GCM_SHA512_128``: AES-GCM, 16-byte tags.

Every primitive is the ``cryptography`` package's (AES-CTR, AES-GCM, HMAC, HKDF-Expand); HKDF-
Extract is its HMAC keyed with the empty salt, as RFC 5869 defines it.

Counters must never repeat under one key: a repeated (key, nonce) pair breaks both AES-CTR and
GCM. :class:`Sender` counts up from ``first_counter`` and refuses (:class:`CounterExhausted`)
once it has used ``MAX_COUNTER``. A sender that outlives its process must persist
:attr:`Sender.next_counter` *before* sending with it (RFC 9605 §9.1) and start again from the
stored value, or start with a fresh ``base_key``; nothing here remembers across restarts.

:class:`Receiver` rejects replays per KID with a sliding window (as SRTP's, RFC 3711 §3.3.2):
it remembers the highest counter it has accepted and which of the ``replay_window`` counters
just below it it has seen. A counter seen before, or further below the highest than the
window reaches, raises :class:`ReplayedPacket`; packets out of order within the window (voice
jitter) are accepted once each. The window moves only after a packet's tag has verified, so a
forged packet cannot push it forward and get genuine packets refused.

Keys and salts are derived once per KID and the cipher objects are kept with them, so a
packet costs one AES pass and one HMAC (or one GCM call). :class:`Sender` and
:class:`Receiver` keep per-key cipher state: use each from one thread at a time.
"""

from __future__ import annotations

import enum
import struct
from hmac import compare_digest
from typing import Final, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from pttd.errors import PttdError

__all__ = [
    "DEFAULT_SUITE",
    "MAX_COUNTER",
    "MAX_KID",
    "MAX_REPLAY_WINDOW",
    "AuthenticationFailed",
    "CipherSuite",
    "CounterExhausted",
    "Decrypted",
    "MalformedPacket",
    "Receiver",
    "ReplayedPacket",
    "SFrameError",
    "Sender",
    "UnknownKey",
    "decode_header",
    "derive_key_salt",
    "encode_header",
    "seal",
    "unseal",
]

MAX_COUNTER: Final = 2**64 - 1
"""The last counter a header can carry (8 bytes); a sender that has used it is exhausted."""
MAX_KID: Final = 2**64 - 1
"""The largest key id a header can carry."""
MAX_REPLAY_WINDOW: Final = 2**16
"""The widest replay window a :class:`Receiver` keeps (a bitmap of that many bits per KID)."""

_KEY_LABEL: Final = b"SFrame 1.0 Secret key "
_SALT_LABEL: Final = b"SFrame 1.0 Secret salt "
_IV_TAIL: Final = b"\x00\x00\x00\x00"  # AES-CTR's initial counter block is nonce + 4 zero bytes
_TAG_PREFIX: Final = struct.Struct(">QQQ12s")  # len(aad), len(ct), Nt (8 bytes each), nonce


# --- errors -----------------------------------------------------------------------------------


class SFrameError(PttdError, ValueError):
    """Base of this module's errors (also raised as such for arguments out of range).

    ``kid`` and ``counter`` are the packet's when it could be read that far, else ``None``.
    """

    def __init__(self, message: str, *, kid: int | None = None, counter: int | None = None) -> None:
        super().__init__(message)
        self.kid = kid
        self.counter = counter


class MalformedPacket(SFrameError):
    """Not an SFrame ciphertext: a truncated or non-minimal header, or too short for the tag."""


class UnknownKey(SFrameError):
    """A KID the receiver has no key for (RFC 9605 allows buffering it until the key comes)."""


class AuthenticationFailed(SFrameError):
    """The tag does not verify: tampered packet, wrong key or wrong metadata."""


class ReplayedPacket(SFrameError):
    """A counter already accepted for this KID, or older than the replay window reaches."""


class CounterExhausted(SFrameError):
    """The sender has used ``MAX_COUNTER``: one more packet would repeat a nonce."""


# --- cipher suites ----------------------------------------------------------------------------


class _Params(NamedTuple):
    nh: int  # hash output size
    nka: int  # AES key size inside the CTR+HMAC key (0: a GCM suite)
    nk: int  # AEAD key size
    nn: int  # nonce size
    nt: int  # tag size
    hash: hashes.HashAlgorithm


class CipherSuite(enum.IntEnum):
    """The SFrame cipher suites, by their IANA value (RFC 9605 §8.1); sizes from Table 1."""

    AES_128_CTR_HMAC_SHA256_80 = 0x0001
    AES_128_CTR_HMAC_SHA256_64 = 0x0002
    AES_128_CTR_HMAC_SHA256_32 = 0x0003
    AES_128_GCM_SHA256_128 = 0x0004
    AES_256_GCM_SHA512_128 = 0x0005

    @property
    def hash_size(self) -> int:
        """Nh: the size of the hash's output, in bytes."""
        return _PARAMS[self].nh

    @property
    def enc_key_size(self) -> int:
        """Nka: the AES key's share of an AES-CTR+HMAC key, in bytes; 0 for the GCM suites."""
        return _PARAMS[self].nka

    @property
    def key_size(self) -> int:
        """Nk: the size of ``sframe_key`` (for AES-CTR+HMAC: AES key + HMAC key), in bytes."""
        return _PARAMS[self].nk

    @property
    def nonce_size(self) -> int:
        """Nn: the size of the nonce and of ``sframe_salt``, in bytes."""
        return _PARAMS[self].nn

    @property
    def tag_size(self) -> int:
        """Nt: the bytes the AEAD adds to the plaintext (the tag)."""
        return _PARAMS[self].nt

    @property
    def is_ctr_hmac(self) -> bool:
        """Whether this is one of the AES-CTR+HMAC suites (RFC 9605 §4.5.1)."""
        return _PARAMS[self].nka != 0

    @property
    def hash_algorithm(self) -> hashes.HashAlgorithm:
        """The hash of its HKDF (and of its HMAC, for AES-CTR+HMAC)."""
        return _PARAMS[self].hash


_SHA256: Final = hashes.SHA256()
_PARAMS: Final[dict[int, _Params]] = {
    CipherSuite.AES_128_CTR_HMAC_SHA256_80: _Params(32, 16, 48, 12, 10, _SHA256),
    CipherSuite.AES_128_CTR_HMAC_SHA256_64: _Params(32, 16, 48, 12, 8, _SHA256),
    CipherSuite.AES_128_CTR_HMAC_SHA256_32: _Params(32, 16, 48, 12, 4, _SHA256),
    CipherSuite.AES_128_GCM_SHA256_128: _Params(32, 0, 16, 12, 16, _SHA256),
    CipherSuite.AES_256_GCM_SHA512_128: _Params(64, 0, 32, 12, 16, hashes.SHA512()),
}

DEFAULT_SUITE: Final = CipherSuite.AES_128_CTR_HMAC_SHA256_80


def _suite(suite: int) -> CipherSuite:
    try:
        return CipherSuite(suite)
    except ValueError:
        raise SFrameError(f"unknown SFrame cipher suite {suite!r}") from None


# --- header (RFC 9605 §4.3) -------------------------------------------------------------------


def _check_u64(name: str, value: int) -> None:
    if not 0 <= value <= MAX_COUNTER:
        raise SFrameError(f"SFrame {name} {value} is out of range 0 … 2**64 - 1")


def _kid_part(kid: int) -> tuple[int, bytes]:
    """The config byte's X and K bits for ``kid``, and the bytes that follow it."""
    _check_u64("KID", kid)
    if kid < 8:
        return kid << 4, b""
    size = (kid.bit_length() + 7) >> 3
    return 0x80 | (size - 1) << 4, kid.to_bytes(size, "big")


def _header(kid_bits: int, kid_bytes: bytes, ctr: int) -> bytes:
    if ctr < 8:
        return bytes((kid_bits | ctr,)) + kid_bytes
    size = (ctr.bit_length() + 7) >> 3
    return bytes((kid_bits | 0x08 | (size - 1),)) + kid_bytes + ctr.to_bytes(size, "big")


def encode_header(kid: int, ctr: int) -> bytes:
    """The SFrame header for ``kid`` and ``ctr`` (each 0 … 2**64 - 1), minimally encoded."""
    kid_bits, kid_bytes = _kid_part(kid)
    _check_u64("counter", ctr)
    return _header(kid_bits, kid_bytes, ctr)


_LAYOUT: Final = tuple(
    (((c >> 4) & 0x07) + 1 if c & 0x80 else 0, (c & 0x07) + 1 if c & 0x08 else 0)
    for c in range(256)
)
"""Per config byte: the sizes of the KID and CTR fields after it (0: the value is inline)."""
_SMALLEST: Final = (0, 8, *(1 << 8 * (n - 1) for n in range(2, 9)))
"""Per field size: the smallest value that needs it (values below 8 belong in the config byte)."""


def decode_header(data: bytes) -> tuple[int, int, int]:
    """``(kid, ctr, header_length)`` of the header at the start of ``data``.

    :class:`MalformedPacket` when ``data`` is shorter than the header it announces, or when the
    header is not minimally encoded (RFC 9605 §4.3 says MUST), so each (KID, CTR) has exactly
    one header.
    """
    if not data:
        raise MalformedPacket("empty SFrame packet")
    config = data[0]
    kid_size, ctr_size = _LAYOUT[config]
    end = 1 + kid_size + ctr_size
    if len(data) < end:
        raise MalformedPacket(
            f"truncated SFrame header: {len(data)} bytes, its config byte announces {end}"
        )
    if kid_size:
        kid = int.from_bytes(data[1 : 1 + kid_size], "big")
        if kid < _SMALLEST[kid_size]:
            raise MalformedPacket(f"SFrame header with KID {kid} not minimally encoded")
    else:
        kid = config >> 4
    if ctr_size:
        ctr = int.from_bytes(data[1 + kid_size : end], "big")
        if ctr < _SMALLEST[ctr_size]:
            raise MalformedPacket(
                f"SFrame header with counter {ctr} not minimally encoded", kid=kid
            )
    else:
        ctr = config & 0x07
    return kid, ctr, end


# --- key derivation (RFC 9605 §4.4.2) ---------------------------------------------------------


def _labels(suite: CipherSuite, kid: int) -> tuple[bytes, bytes]:
    """``sframe_key_label`` and ``sframe_salt_label``: KID as 8 bytes, the suite as 2."""
    tail = kid.to_bytes(8, "big") + suite.to_bytes(2, "big")
    return _KEY_LABEL + tail, _SALT_LABEL + tail


def _extract(suite: CipherSuite, base_key: bytes) -> bytes:
    """``sframe_secret = HKDF-Extract("", base_key)``: HMAC keyed with the empty salt."""
    mac = hmac.HMAC(b"", suite.hash_algorithm)
    mac.update(base_key)
    return mac.finalize()


def derive_key_salt(suite: CipherSuite, kid: int, base_key: bytes) -> tuple[bytes, bytes]:
    """``(sframe_key, sframe_salt)`` of ``kid`` under ``base_key`` (Nk and Nn bytes)."""
    suite = _suite(suite)
    _check_u64("KID", kid)
    if not base_key:
        raise SFrameError("SFrame base_key is empty")
    secret = _extract(suite, base_key)
    key_label, salt_label = _labels(suite, kid)
    params = _PARAMS[suite]
    key = HKDFExpand(params.hash, params.nk, key_label).derive(secret)
    salt = HKDFExpand(params.hash, params.nn, salt_label).derive(secret)
    return key, salt


# --- the AEAD of one key ----------------------------------------------------------------------

_RESETTABLE = hasattr(CipherContext, "reset_nonce")  # cryptography >= 43


class _Keyed:
    """One ``(sframe_key, sframe_salt)`` with its cipher objects made once, sealing and opening
    SFrame ciphertexts. Keeps cipher state between calls: one thread at a time.

    The hot paths are written out flat: at ~100 bytes a packet, a call or a memoryview costs
    as much as the copy of a slice.
    """

    __slots__ = ("_aes", "_ctr", "_gcm", "_mac", "_nt", "_salt", "suite")

    def __init__(self, suite: CipherSuite, key: bytes, salt: bytes) -> None:
        params = _PARAMS[suite]
        if len(key) != params.nk:
            raise SFrameError(f"{suite.name} needs a {params.nk}-byte key, not {len(key)} bytes")
        if len(salt) != params.nn:
            raise SFrameError(f"{suite.name} needs a {params.nn}-byte salt, not {len(salt)} bytes")
        self.suite = suite
        self._nt = params.nt
        self._salt = int.from_bytes(salt, "big")
        self._gcm: AESGCM | None = None
        self._ctr: CipherContext | None = None
        if params.nka:
            # derive_subkeys: the AES key is the first Nka bytes, the HMAC key the other Nh
            self._aes = algorithms.AES(key[: params.nka])
            self._mac = hmac.HMAC(key[params.nka :], params.hash)
            if _RESETTABLE:  # one CTR context, its nonce reset per packet
                self._ctr = Cipher(self._aes, modes.CTR(bytes(16))).encryptor()
        else:
            self._gcm = AESGCM(key)

    def nonce(self, ctr: int) -> bytes:
        """``sframe_salt XOR CTR`` (RFC 9605 §4.4.3)."""
        return (self._salt ^ ctr).to_bytes(12, "big")

    def _ctr_xor(self, nonce: bytes, data: bytes) -> bytes:
        """AES-CTR from the counter block ``nonce + 00000000`` (encrypts and decrypts alike)."""
        ctx = self._ctr
        if ctx is None:  # cryptography < 43: a context per packet
            return Cipher(self._aes, modes.CTR(nonce + _IV_TAIL)).encryptor().update(data)
        ctx.reset_nonce(nonce + _IV_TAIL)
        return ctx.update(data)

    def _tag(self, nonce: bytes, aad: bytes, ct: bytes) -> bytes:
        """``compute_tag`` of RFC 9605 §4.5.1."""
        mac = self._mac.copy()
        mac.update(_TAG_PREFIX.pack(len(aad), len(ct), self._nt, nonce))
        mac.update(aad)
        mac.update(ct)
        return mac.finalize()[: self._nt]

    # The AEAD alone, nonce and AAD given (RFC 9605 §4.5.1 and the C.2 test vectors).

    def aead_encrypt(self, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        if self._gcm is not None:
            return self._gcm.encrypt(nonce, plaintext, aad)
        ct = self._ctr_xor(nonce, plaintext)
        return ct + self._tag(nonce, aad, ct)

    def aead_decrypt(self, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        if self._gcm is not None:
            try:
                return self._gcm.decrypt(nonce, ciphertext, aad)
            except InvalidTag:
                raise AuthenticationFailed("SFrame tag mismatch") from None
        end = len(ciphertext) - self._nt
        if end < 0:
            raise MalformedPacket("SFrame ciphertext shorter than its tag")
        ct = ciphertext[:end]
        if not compare_digest(self._tag(nonce, aad, ct), ciphertext[end:]):
            raise AuthenticationFailed("SFrame tag mismatch")
        return self._ctr_xor(nonce, ct)

    # Whole SFrame ciphertexts (RFC 9605 §4.4.3, §4.4.4): the AAD is header + metadata.

    def seal(self, header: bytes, ctr: int, metadata: bytes, plaintext: bytes) -> bytes:
        """``header + ciphertext + tag``."""
        nonce = (self._salt ^ ctr).to_bytes(12, "big")
        if self._gcm is not None:
            return header + self._gcm.encrypt(nonce, plaintext, header + metadata)
        ctx = self._ctr
        if ctx is None:
            ct = self._ctr_xor(nonce, plaintext)
        else:
            ctx.reset_nonce(nonce + _IV_TAIL)
            ct = ctx.update(plaintext)
        mac = self._mac.copy()
        mac.update(_TAG_PREFIX.pack(len(header) + len(metadata), len(ct), self._nt, nonce))
        mac.update(header)
        if metadata:
            mac.update(metadata)
        mac.update(ct)
        return header + ct + mac.finalize()[: self._nt]

    def open(self, packet: bytes, kid: int, ctr: int, start: int, metadata: bytes) -> bytes:
        """The plaintext of ``packet``, whose header (``kid``, ``ctr``) ends at ``start``."""
        nt = self._nt
        end = len(packet) - nt
        if end < start:
            raise MalformedPacket(
                f"SFrame packet of {len(packet)} bytes too short for its {start}-byte header"
                f" and {nt}-byte tag",
                kid=kid,
                counter=ctr,
            )
        nonce = (self._salt ^ ctr).to_bytes(12, "big")
        if self._gcm is not None:
            try:
                return self._gcm.decrypt(nonce, packet[start:], packet[:start] + metadata)
            except InvalidTag:
                raise _mismatch(kid, ctr) from None
        mac = self._mac.copy()
        mac.update(_TAG_PREFIX.pack(start + len(metadata), end - start, nt, nonce))
        if metadata:
            mac.update(packet[:start])
            mac.update(metadata)
            mac.update(packet[start:end])
        else:  # header and ciphertext are contiguous: one update
            mac.update(packet[:end])
        if not compare_digest(mac.finalize()[:nt], packet[end:]):
            raise _mismatch(kid, ctr)
        ctx = self._ctr
        if ctx is None:
            return self._ctr_xor(nonce, packet[start:end])
        ctx.reset_nonce(nonce + _IV_TAIL)
        return ctx.update(packet[start:end])


def _mismatch(kid: int, ctr: int) -> AuthenticationFailed:
    return AuthenticationFailed(
        f"SFrame tag mismatch for KID {kid} counter {ctr} (tampered, wrong key or metadata)",
        kid=kid,
        counter=ctr,
    )


# --- one-shot functions -----------------------------------------------------------------------


def seal(
    suite: CipherSuite,
    key: bytes,
    salt: bytes,
    kid: int,
    ctr: int,
    metadata: bytes,
    plaintext: bytes,
) -> bytes:
    """The SFrame ciphertext (header + ciphertext + tag) of ``plaintext`` under ``sframe_key``
    ``key`` and ``sframe_salt`` ``salt`` (from :func:`derive_key_salt`).

    One-shot: it sets the ciphers up for this call. For a stream of packets use
    :class:`Sender`, which also makes sure that no counter is used twice.
    """
    kid_bits, kid_bytes = _kid_part(kid)
    _check_u64("counter", ctr)
    keyed = _Keyed(_suite(suite), key, salt)
    return keyed.seal(_header(kid_bits, kid_bytes, ctr), ctr, metadata, plaintext)


def unseal(
    suite: CipherSuite, key: bytes, salt: bytes, packet: bytes, metadata: bytes
) -> tuple[int, int, bytes]:
    """``(kid, ctr, plaintext)`` of the SFrame ciphertext ``packet`` (the inverse of
    :func:`seal`; "open" in RFC 9605's words, named so as not to shadow the builtin).

    The caller chose ``key`` and ``salt``, so the KID is only reported, not checked. Raises
    :class:`MalformedPacket` or :class:`AuthenticationFailed`; no replay check (see
    :class:`Receiver`).
    """
    kid, ctr, start = decode_header(packet)
    return kid, ctr, _Keyed(_suite(suite), key, salt).open(packet, kid, ctr, start, metadata)


# --- sender and receiver ----------------------------------------------------------------------


class Sender:
    """Encrypts one stream with one KID and its ``base_key``, counting from ``first_counter``.

    Each :meth:`encrypt` uses the next counter; after ``MAX_COUNTER`` it raises
    :class:`CounterExhausted` for good. ``base_key`` must be this sender's alone (RFC 9605
    §4.4.1): two senders with one key would repeat nonces.
    """

    __slots__ = ("_keyed", "_kid_bits", "_kid_bytes", "_next", "kid", "suite")

    def __init__(
        self, suite: CipherSuite, kid: int, base_key: bytes, first_counter: int = 0
    ) -> None:
        self.suite = _suite(suite)
        self.kid = kid
        self._kid_bits, self._kid_bytes = _kid_part(kid)
        if not 0 <= first_counter <= MAX_COUNTER + 1:
            raise SFrameError(f"SFrame first counter {first_counter} is out of range 0 … 2**64")
        self._next = first_counter
        self._keyed = _Keyed(self.suite, *derive_key_salt(self.suite, kid, base_key))

    @property
    def next_counter(self) -> int:
        """The counter the next :meth:`encrypt` will use (``MAX_COUNTER + 1`` once exhausted).

        Persist it before sending when the sender must survive a restart, and pass the stored
        value back as ``first_counter``.
        """
        return self._next

    def encrypt(self, plaintext: bytes, metadata: bytes = b"") -> bytes:
        """The SFrame ciphertext of ``plaintext``, with ``metadata`` authenticated alongside."""
        ctr = self._next
        if ctr > MAX_COUNTER:
            raise CounterExhausted(
                f"SFrame sender for KID {self.kid} has used its last counter: it needs a new key",
                kid=self.kid,
            )
        self._next = ctr + 1  # used even if what follows fails: a counter is never reused
        return self._keyed.seal(
            _header(self._kid_bits, self._kid_bytes, ctr), ctr, metadata, plaintext
        )

    def __repr__(self) -> str:
        return f"Sender({self.suite.name}, kid={self.kid}, next_counter={self._next})"


class Decrypted(NamedTuple):
    """A packet :meth:`Receiver.decrypt` accepted."""

    kid: int
    counter: int
    plaintext: bytes


class _Inbound:
    """A receiving KID: its ciphers and its replay window."""

    __slots__ = ("base_key", "highest", "keyed", "seen")

    def __init__(self, keyed: _Keyed, base_key: bytes) -> None:
        self.keyed = keyed
        self.base_key = base_key
        self.highest = -1  # the highest counter accepted; -1: none yet
        self.seen = 0  # bit i: counter highest - i accepted (bits 0 … replay_window)


class Receiver:
    """Decrypts the SFrame ciphertexts of the KIDs it has keys for, rejecting replays.

    ``replay_window`` is how many counters below the highest accepted one are still accepted
    (once each) per KID, 0 … ``MAX_REPLAY_WINDOW``; 0 accepts only rising counters. The default,
    256, is about 5 s of 20 ms packets.
    """

    __slots__ = ("_keys", "_mask", "replay_window", "suite")

    def __init__(self, suite: CipherSuite, replay_window: int = 256) -> None:
        self.suite = _suite(suite)
        if not 0 <= replay_window <= MAX_REPLAY_WINDOW:
            raise SFrameError(
                f"SFrame replay window {replay_window} is out of range 0 … {MAX_REPLAY_WINDOW}"
            )
        self.replay_window = replay_window
        self._mask = (1 << (replay_window + 1)) - 1
        self._keys: dict[int, _Inbound] = {}

    def add_key(self, kid: int, base_key: bytes) -> None:
        """Accept ``kid`` under ``base_key`` (its key and salt derived here, once).

        Adding a KID again with the same ``base_key`` changes nothing; with another key it
        replaces the key and starts a fresh replay window.
        """
        old = self._keys.get(kid)
        if old is not None and compare_digest(old.base_key, base_key):
            return
        keyed = _Keyed(self.suite, *derive_key_salt(self.suite, kid, base_key))
        self._keys[kid] = _Inbound(keyed, bytes(base_key))

    def remove_key(self, kid: int) -> None:
        """Forget ``kid`` and its replay window (nothing if it is not there)."""
        self._keys.pop(kid, None)

    def kids(self) -> frozenset[int]:
        """The KIDs this receiver has keys for."""
        return frozenset(self._keys)

    def decrypt(self, packet: bytes, metadata: bytes = b"") -> Decrypted:
        """The plaintext of ``packet`` with its KID and counter.

        Raises :class:`MalformedPacket`, :class:`UnknownKey`, :class:`ReplayedPacket` or
        :class:`AuthenticationFailed`, all :class:`SFrameError`; the window only moves for a
        packet that decrypted.
        """
        kid, ctr, start = decode_header(packet)
        inbound = self._keys.get(kid)
        if inbound is None:
            raise UnknownKey(f"no SFrame key for KID {kid}", kid=kid, counter=ctr)
        behind = inbound.highest - ctr
        if behind >= 0:
            if behind > self.replay_window:
                raise ReplayedPacket(
                    f"SFrame counter {ctr} of KID {kid} is older than the replay window"
                    f" ({self.replay_window} below {inbound.highest})",
                    kid=kid,
                    counter=ctr,
                )
            if inbound.seen >> behind & 1:
                raise ReplayedPacket(
                    f"SFrame counter {ctr} of KID {kid} was already received",
                    kid=kid,
                    counter=ctr,
                )
        plaintext = inbound.keyed.open(packet, kid, ctr, start, metadata)
        if behind < 0:  # a new highest counter: slide the window up
            ahead = -behind
            # (a jump past the window clears it; never shift by a 64-bit amount)
            inbound.seen = (
                (inbound.seen << ahead | 1) & self._mask if ahead <= self.replay_window else 1
            )
            inbound.highest = ctr
        else:
            inbound.seen |= 1 << behind
        return Decrypted(kid, ctr, plaintext)

    def __repr__(self) -> str:
        return f"Receiver({self.suite.name}, kids={sorted(self._keys)})"
