"""pttd.e2ee.keys: identity keys, fingerprints, the authority's key, room key bundles, KIDs."""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pttd.e2ee import keys
from pttd.e2ee.keys import (
    BUNDLE_MAGIC,
    IDENTITY_PUBLIC_BYTES,
    MAX_BUNDLE_BYTES,
    REFUSED_MALFORMED,
    REFUSED_OTHER_DEVICE,
    REFUSED_OTHER_NAME,
    REFUSED_SIGNATURE,
    REFUSED_UNOPENABLE,
    REFUSED_VERSION,
    SIGN_CONTEXT,
    SIGNATURE_BYTES,
    AuthorityKey,
    AuthorityPublicKey,
    Fingerprint,
    IdentityKey,
    IdentityPublicKey,
    KeyFormatError,
    KeyRefused,
    RoomKey,
    bundle_from_text,
    bundle_to_text,
    make_kid,
    new_epoch_secret,
    open_bundle,
    seal_bundle,
    sender_base_key,
    split_kid,
)
from pttd.errors import PttdError

FIXED_IDENTITY = b"\x01" + bytes(range(96))  # ML-KEM seed 0..63, X25519 key 64..95
FIXED_DIGITS = "55517 62196 37182 93811 16877 87883 98406 04449"
FIXED_PUBLIC_SHA256 = "08fbad7966cc2cd0834976067ad492f84c9e316f9b1bb86bd1b688f6fc09b1a2"
SECRET = bytes(range(100, 132))
ROSTER = ((0, "alice"), (1, "bob"), (4, "radio-7"))


def room_key(sender_index: int = 1, epoch: int = 3, secret: bytes = SECRET) -> RoomKey:
    return RoomKey(
        room="ops",
        epoch=epoch,
        suite=1,
        sender_index=sender_index,
        roster=ROSTER,
        epoch_secret=secret,
    )


_FIXED_BUNDLE = seal_bundle(
    AuthorityKey.from_bytes(bytes(range(32))),
    room_key(),
    "bob",
    IdentityKey.from_bytes(FIXED_IDENTITY).public,
)
"""A bundle from fixed keys, for the hypothesis tests (no fixtures there)."""


@pytest.fixture(scope="module")
def authority() -> AuthorityKey:
    return AuthorityKey.generate()


@pytest.fixture(scope="module")
def bob() -> IdentityKey:
    return IdentityKey.generate()


@pytest.fixture(scope="module")
def bundle(authority: AuthorityKey, bob: IdentityKey) -> bytes:
    return seal_bundle(authority, room_key(), "bob", bob.public)


def split(bundle: bytes) -> dict[str, object]:
    body = json.loads(bundle[len(BUNDLE_MAGIC) : -SIGNATURE_BYTES])
    assert isinstance(body, dict)
    return body


def resign(authority: AuthorityKey, body: dict[str, object] | bytes) -> bytes:
    """A bundle with ``body`` that the real authority did sign (to reach the checks after the
    signature)."""
    data = body if isinstance(body, bytes) else json.dumps(body, sort_keys=True).encode()
    return BUNDLE_MAGIC + data + authority.sign(SIGN_CONTEXT + data)


def refusal(
    data: bytes, authority: AuthorityKey, identity: IdentityKey, name: str | None = None
) -> str:
    """Why ``open_bundle`` refuses ``data``."""
    with pytest.raises(KeyRefused) as caught:
        open_bundle(data, authority.public, identity, name)
    return caught.value.reason


# --- identity keys ----------------------------------------------------------------------------


def test_identity_round_trips_through_bytes_and_text() -> None:
    identity = IdentityKey.generate()
    raw = identity.to_bytes()
    assert len(raw) == 33 and raw[0] == 2  # an X-Wing seed
    again = IdentityKey.from_bytes(raw)
    assert again.to_bytes() == raw
    assert again.public == identity.public
    assert again.public.fingerprint == identity.public.fingerprint

    public = identity.public.to_bytes()
    assert len(public) == IDENTITY_PUBLIC_BYTES == 1217 and public[0] == 1
    text = identity.public.to_text()
    assert len(text) == 1623 and "=" not in text and re.fullmatch(r"[A-Za-z0-9_-]+", text)
    assert IdentityPublicKey.from_text(text) == identity.public
    assert IdentityPublicKey.from_bytes(public).to_bytes() == public
    assert IdentityKey.generate().public != identity.public


XWING = json.loads((Path(__file__).parent / "data" / "xwing_keygen.json").read_text())


@pytest.mark.parametrize("vector", XWING["vectors"], ids=lambda v: v["seed"][:8])
def test_an_identity_is_the_x_wing_key_of_its_seed(vector: dict[str, str]) -> None:
    """The same seed makes the same key pair as an independent X-Wing implementation (the one a
    browser client would use), so the two can hold and open the same identities."""
    identity = IdentityKey.from_seed(bytes.fromhex(vector["seed"]))
    assert identity.public.to_bytes() == b"\x01" + bytes.fromhex(vector["public_key"])
    assert IdentityKey.from_bytes(identity.to_bytes()).public == identity.public


def test_identities_of_the_first_format_still_load() -> None:
    """Keys saved before identities were X-Wing seeds (97 bytes: ML-KEM seed, X25519 key)."""
    old = IdentityKey.from_bytes(FIXED_IDENTITY)
    assert old.to_bytes() == FIXED_IDENTITY
    assert IdentityKey.from_bytes(old.to_bytes()).public == old.public


def test_identity_from_a_fixed_seed_is_stable() -> None:
    """ML-KEM-768 key generation from a seed is deterministic (FIPS 203): the same bytes give the
    same public key and the same fingerprint on every machine and version."""
    public = IdentityKey.from_bytes(FIXED_IDENTITY).public
    assert hashlib.sha256(public.to_bytes()).hexdigest() == FIXED_PUBLIC_SHA256
    assert public.fingerprint.digits == FIXED_DIGITS


def test_identity_repr_shows_no_secret() -> None:
    identity = IdentityKey.from_bytes(FIXED_IDENTITY)
    shown = repr(identity) + str(identity)
    assert FIXED_DIGITS in shown
    raw = identity.to_bytes()
    for secret_form in (raw.hex(), raw[1:33].hex(), raw[65:].hex(), keys.b64url_encode(raw)):
        assert secret_form[:16] not in shown
    assert "IdentityPublicKey(fingerprint='55517" in repr(identity.public)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "an identity key is 97 bytes, not 0"),
        (b"\x01" + bytes(95), "an identity key is 97 bytes, not 96"),
        (b"\x02" + bytes(96), "an identity seed key is 33 bytes, not 97"),
        (b"\x03" + bytes(96), "identity key of unknown kind 3"),
        ("not bytes", "an identity key is bytes, not str"),
    ],
)
def test_bad_identity_bytes_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(KeyFormatError) as caught:
        IdentityKey.from_bytes(data)
    assert str(caught.value) == message
    assert isinstance(caught.value, PttdError) and isinstance(caught.value, ValueError)


def test_bad_public_keys_are_refused() -> None:
    good = IdentityKey.from_bytes(FIXED_IDENTITY).public.to_bytes()
    cases = {
        good[:-1]: "an identity public key is 1217 bytes, not 1216",
        b"\x07" + good[1:]: "identity public key of unknown kind 7",
        # coefficients of the ML-KEM key must be below q = 3329; 0xffff is not
        b"\x01" + b"\xff" * 1184 + good[-32:]: "identity public key: not a valid ML-KEM-768 key",
        # the X25519 point 0 is of low order: every shared secret with it is zero
        good[:-32] + bytes(32): "identity public key: not a usable X25519 key",
    }
    for data, message in cases.items():
        with pytest.raises(KeyFormatError) as caught:
            IdentityPublicKey.from_bytes(data)
        assert str(caught.value) == message
    for text in ("", "a=b", "abc def", "A" * 5000, keys.b64url_encode(good) + "A"):
        with pytest.raises(KeyFormatError):
            IdentityPublicKey.from_text(text)


# --- fingerprints -----------------------------------------------------------------------------


def test_fingerprint_digits_are_the_digest_mod_ten_to_the_forty() -> None:
    public = IdentityKey.generate().public
    fingerprint = public.fingerprint
    assert re.fullmatch(r"\d{5}( \d{5}){7}", fingerprint.digits)
    assert str(fingerprint) == fingerprint.digits
    digest = hashlib.sha256(b"pttd-e2ee-v1 identity fingerprint\x00" + public.to_bytes()).digest()
    assert fingerprint.digest == digest
    assert fingerprint.digits.replace(" ", "") == str(int.from_bytes(digest, "big") % 10**40).zfill(
        40
    )
    assert fingerprint.qr_text == "pttd-fp:" + digest.hex()


@pytest.mark.parametrize(
    "typed",
    [
        FIXED_DIGITS,
        FIXED_DIGITS.replace(" ", ""),
        FIXED_DIGITS.replace(" ", "-"),
        FIXED_DIGITS.replace(" ", " - "),
        FIXED_DIGITS.replace(" ", "\u2013"),  # an en dash, pasted from a document
        "  " + FIXED_DIGITS.replace(" ", "\n") + "\n",
        "5551762196-3718293811 1687787883 9840604449",
        "pttd-fp:8d264590f53861c867a82681332cfecc8c0cce8f7de2f50dafa6e1df16f80121",
        "PTTD-FP:8D264590F53861C867A82681332CFECC8C0CCE8F7DE2F50DAFA6E1DF16F80121",
        "pttd-fp:" + FIXED_DIGITS.replace(" ", ""),
    ],
)
def test_a_typed_or_scanned_fingerprint_matches_the_key(typed: str) -> None:
    key_fingerprint = IdentityKey.from_bytes(FIXED_IDENTITY).public.fingerprint
    parsed = Fingerprint.parse(typed)
    assert parsed.matches(key_fingerprint) and key_fingerprint.matches(parsed)
    assert parsed == key_fingerprint and hash(parsed) == hash(key_fingerprint)
    assert parsed.digits == FIXED_DIGITS


def test_a_fingerprint_off_by_one_digit_does_not_match() -> None:
    key_fingerprint = IdentityKey.from_bytes(FIXED_IDENTITY).public.fingerprint
    for position in range(0, len(FIXED_DIGITS), 7):
        if FIXED_DIGITS[position] == " ":
            continue
        digit = str((int(FIXED_DIGITS[position]) + 1) % 10)
        wrong = Fingerprint.parse(FIXED_DIGITS[:position] + digit + FIXED_DIGITS[position + 1 :])
        assert not wrong.matches(key_fingerprint) and wrong != key_fingerprint
    other = IdentityKey.generate().public.fingerprint
    assert not other.matches(key_fingerprint)
    wrong_digest = "pttd-fp:" + "0" * 64
    assert not Fingerprint.parse(wrong_digest).matches(key_fingerprint)


def test_digits_only_fingerprint_has_a_qr_text_of_digits() -> None:
    parsed = Fingerprint.parse(FIXED_DIGITS)
    assert parsed.digest is None
    assert parsed.qr_text == "pttd-fp:" + FIXED_DIGITS.replace(" ", "")
    assert Fingerprint.parse(parsed.qr_text) == parsed


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        (FIXED_DIGITS[:-1], "a fingerprint is 40 digits in groups of 5; this has 39"),
        (FIXED_DIGITS + "1", "a fingerprint is 40 digits in groups of 5; this has 41"),
        ("", "a fingerprint is 40 digits in groups of 5; this has 0"),
        (
            FIXED_DIGITS.replace("5", "S"),
            "a fingerprint is 40 digits in groups of 5 (or a pttd-fp: code); "
            "this has other characters",
        ),
        (
            "\u0661" * 40,
            "a fingerprint is 40 digits in groups of 5 (or a pttd-fp: code); "
            "this has other characters",
        ),
        (
            "pttd-fp:" + "ab" * 31,
            "a fingerprint is 40 digits in groups of 5 (or a pttd-fp: code); "
            "this has other characters",
        ),
    ],
)
def test_what_is_not_a_fingerprint_is_refused_saying_why(typed: str, message: str) -> None:
    with pytest.raises(KeyFormatError) as caught:
        Fingerprint.parse(typed)
    assert str(caught.value) == message


# --- the authority's key ----------------------------------------------------------------------


def test_authority_key_round_trip_and_text() -> None:
    key = AuthorityKey.from_bytes(bytes(range(32)))
    assert key.to_bytes() == bytes(range(32))
    text = key.public.to_text()
    assert text == "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"
    assert AuthorityPublicKey.from_text(text) == key.public
    assert key.public.fingerprint == "67861 03351 86923 48508 53776 98223"
    assert re.fullmatch(r"\d{5}( \d{5}){5}", AuthorityKey.generate().public.fingerprint)
    assert keys.b64url_encode(bytes(range(32))) not in repr(key)
    assert text in repr(key)
    signature = key.sign(b"hello")
    assert key.public.verify(signature, b"hello")
    assert not key.public.verify(signature, b"hellO")
    for bad in ("", text[:-1], text + "A", "!" * 43):
        with pytest.raises(KeyFormatError):
            AuthorityPublicKey.from_text(bad)
    with pytest.raises(KeyFormatError):
        AuthorityKey.from_bytes(bytes(31))


# --- room keys and bundles --------------------------------------------------------------------


def test_a_bundle_opens_for_its_recipient_to_the_exact_room_key(
    authority: AuthorityKey, bob: IdentityKey, bundle: bytes
) -> None:
    opened = open_bundle(bundle, authority.public, bob, "bob")
    assert opened == room_key()
    assert opened.epoch_secret == SECRET
    assert (opened.room, opened.epoch, opened.suite, opened.sender_index) == ("ops", 3, 1, 1)
    assert opened.roster == ROSTER
    assert opened.name == "bob" and opened.name_of(4) == "radio-7" and opened.name_of(2) is None
    assert opened.kid == 3 << 16 | 1
    assert open_bundle(bundle, authority.public, bob) == opened  # the name is optional
    assert open_bundle(bytearray(bundle), authority.public, bob) == opened  # type: ignore[arg-type]


def test_bundle_layout_and_size(authority: AuthorityKey, bob: IdentityKey, bundle: bytes) -> None:
    assert bundle.startswith(b"PTTD-RK\x01")
    body = split(bundle)
    assert body["room"] == "ops" and body["epoch"] == 3 and body["suite"] == 1
    assert body["roster"] == [[0, "alice"], [1, "bob"], [4, "radio-7"]]
    assert body["recipient"] == "bob"
    assert body["recipient_fingerprint"] == (bob.public.fingerprint.digest or b"").hex()
    assert body["authority"] == authority.public.to_text()
    assert body["hpke"] == "MLKEM768_X25519/HKDF_SHA256/AES_128_GCM"
    wrapped = keys.b64url_decode(str(body["wrapped"]))
    assert len(wrapped) == 1120 + 32 + 16  # X-Wing-style enc, the secret, the GCM tag
    assert SECRET.hex() not in bundle.hex() and keys.b64url_encode(SECRET) not in bundle.decode(
        "utf-8", "replace"
    )
    assert 1900 < len(bundle) < 2100
    assert bundle_from_text(bundle_to_text(bundle)) == bundle
    assert len(bundle_to_text(bundle)) == (len(bundle) * 4 + 2) // 3


def test_room_key_repr_hides_the_secret() -> None:
    key = room_key()
    assert SECRET.hex() not in repr(key) and str(SECRET) not in repr(key)
    assert repr(key) == (
        "RoomKey(room='ops', epoch=3, suite=1, sender_index=1, "
        "roster=((0, 'alice'), (1, 'bob'), (4, 'radio-7')))"
    )


def test_a_bundle_signed_by_another_authority_is_refused(
    authority: AuthorityKey, bob: IdentityKey
) -> None:
    """A hostile server wraps an epoch secret of its own for the device, correctly for the
    device's key, and signs it with a key of its own: the device, holding the authority key from
    its pairing link, refuses it."""
    server_key = AuthorityKey.generate()
    forged = seal_bundle(server_key, room_key(secret=bytes(32)), "bob", bob.public)
    assert refusal(forged, authority, bob) == REFUSED_SIGNATURE
    # claiming to come from the real authority does not help either
    body = split(forged)
    body["authority"] = authority.public.to_text()
    assert refusal(resign(server_key, body), authority, bob) == REFUSED_SIGNATURE
    # the forged bundle does open with the server's key: it is the signature that stops it
    assert open_bundle(forged, server_key.public, bob).epoch_secret == bytes(32)


def test_a_bundle_naming_another_authority_key_is_refused(
    authority: AuthorityKey, bob: IdentityKey, bundle: bytes
) -> None:
    body = split(bundle)
    body["authority"] = AuthorityKey.generate().public.to_text()
    assert refusal(resign(authority, body), authority, bob) == REFUSED_SIGNATURE


def test_a_bundle_for_another_device_is_refused(
    authority: AuthorityKey, bob: IdentityKey, bundle: bytes
) -> None:
    mallory = IdentityKey.generate()
    assert refusal(bundle, authority, mallory) == REFUSED_OTHER_DEVICE
    assert refusal(bundle, authority, bob, "alice") == REFUSED_OTHER_NAME
    # retargeting the fingerprint (re-signed) still cannot open: HPKE is to bob's key
    body = split(bundle)
    body["recipient_fingerprint"] = (mallory.public.fingerprint.digest or b"").hex()
    assert refusal(resign(authority, body), authority, mallory) == REFUSED_UNOPENABLE


def _flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


def test_tampered_bundles_are_refused(
    authority: AuthorityKey, bob: IdentityKey, bundle: bytes
) -> None:
    text = bundle.decode("utf-8", "surrogateescape")
    wrapped_at = text.index('"wrapped":"') + len('"wrapped":"') + 100
    tampered = {
        "ciphertext": _flip(bundle, wrapped_at),
        "roster": bundle.replace(b'[4,"radio-7"]', b'[4,"radio-8"]'),
        "roster index": bundle.replace(b'[1,"bob"]', b'[2,"bob"]'),
        "epoch": bundle.replace(b'"epoch":3', b'"epoch":4'),
        "sender index": bundle.replace(b'"sender_index":1', b'"sender_index":0'),
        "suite": bundle.replace(b'"suite":1', b'"suite":2'),
        "signature": _flip(bundle, len(bundle) - 5),
        "truncated": bundle[:-1],
        "extended": bundle + b"\x00",
    }
    for what, data in tampered.items():
        assert data != bundle, what
        assert refusal(data, authority, bob) == REFUSED_SIGNATURE, what


def test_hpke_info_binds_room_epoch_suite_and_name(
    authority: AuthorityKey, bob: IdentityKey, bundle: bytes
) -> None:
    """Even the authority's own signature over a body changed after wrapping does not open it:
    the epoch secret was wrapped for one room, epoch, suite and recipient."""
    changes: list[tuple[str, object]] = [
        ("room", "other"),
        ("epoch", 4),
        ("suite", 2),
        ("recipient", "bobby"),
    ]
    for field, value in changes:
        body = split(bundle)
        body[field] = value
        if field == "recipient":
            body["roster"] = [[0, "alice"], [1, "bobby"], [4, "radio-7"]]
        assert refusal(resign(authority, body), authority, bob) == REFUSED_UNOPENABLE, field


def test_a_bundle_of_a_future_format_is_refused_as_such(
    authority: AuthorityKey, bob: IdentityKey, bundle: bytes
) -> None:
    assert refusal(b"PTTD-RK\x02" + bundle[8:], authority, bob) == REFUSED_VERSION
    body = split(bundle)
    body["v"] = 2
    assert refusal(resign(authority, body), authority, bob) == REFUSED_VERSION


@pytest.mark.parametrize(
    "change",
    [
        {"roster": [[1, "bob"], [0, "alice"]]},  # not sorted
        {"roster": [[1, "bob"], [1, "bob"]]},
        {"roster": [[0, "alice"], [4, "radio-7"]]},  # the recipient not in it
        {"roster": [[1, "alice"], [2, "bob"]]},  # the recipient's index given to another
        {"roster": [[1, "bob"], [2, "bob"]]},
        {"roster": [[1, "bob", 3]]},
        {"roster": [[True, "bob"]]},
        {"roster": [[1, "bob"]] * 1025},
        {"roster": "bob"},
        {"sender_index": 65536},
        {"sender_index": "1"},
        {"epoch": 0},
        {"room": ""},
        {"room": "a\nb"},
        {"wrapped": "!!"},
        {"recipient": None},
    ],
)
def test_signed_but_malformed_bodies_are_refused_as_malformed(
    authority: AuthorityKey, bob: IdentityKey, bundle: bytes, change: dict[str, object]
) -> None:
    body = split(bundle)
    body.update(change)
    assert refusal(resign(authority, body), authority, bob) == REFUSED_MALFORMED


def test_an_oversized_or_tiny_bundle_is_malformed(
    authority: AuthorityKey, bob: IdentityKey
) -> None:
    assert refusal(resign(authority, b"{" + b" " * MAX_BUNDLE_BYTES + b"}"), authority, bob) == (
        REFUSED_MALFORMED
    )
    for data in (b"", BUNDLE_MAGIC, b"x" * 100):
        assert refusal(data, authority, bob) == REFUSED_MALFORMED
    assert refusal(resign(authority, b'{"v":1} '), authority, bob) == REFUSED_VERSION
    assert refusal(resign(authority, b"[1,2]"), authority, bob) == REFUSED_MALFORMED
    assert refusal(resign(authority, b'{"a":1,"a":2}'), authority, bob) == REFUSED_MALFORMED
    assert refusal(resign(authority, b"\xff\xfe"), authority, bob) == REFUSED_MALFORMED
    assert refusal(resign(authority, b"[" * 100_000), authority, bob) == REFUSED_MALFORMED
    with pytest.raises(KeyRefused) as caught:
        bundle_from_text("not base64!")
    assert caught.value.reason == REFUSED_MALFORMED
    assert str(caught.value) == "room key refused: malformed room key"


GARBAGE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@GARBAGE
@given(data=st.binary(max_size=3000))
def test_garbage_only_ever_raises_key_refused(data: bytes) -> None:
    identity = IdentityKey.from_bytes(FIXED_IDENTITY)
    authority = AuthorityKey.from_bytes(bytes(range(32)))
    for candidate in (data, BUNDLE_MAGIC + data):
        with pytest.raises(KeyRefused):
            open_bundle(candidate, authority.public, identity)
    # signed by the right authority: the parsing of what follows the signature check
    with pytest.raises(KeyRefused):
        open_bundle(resign(authority, data), authority.public, identity)


@GARBAGE
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_is_refused(position: int, bit: int) -> None:
    identity = IdentityKey.from_bytes(FIXED_IDENTITY)
    authority = AuthorityKey.from_bytes(bytes(range(32)))
    good = _FIXED_BUNDLE
    position %= len(good)
    bad = good[:position] + bytes([good[position] ^ (1 << bit)]) + good[position + 1 :]
    with pytest.raises(KeyRefused):
        open_bundle(bad, authority.public, identity)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=70),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@GARBAGE
@given(
    field=st.sampled_from(
        [
            "v",
            "scheme",
            "hpke",
            "room",
            "epoch",
            "suite",
            "sender_index",
            "roster",
            "recipient",
            "recipient_fingerprint",
            "authority",
            "wrapped",
            "extra",
        ]
    ),
    value=JSON_VALUES,
)
def test_any_signed_field_value_opens_or_is_refused(field: str, value: object) -> None:
    identity = IdentityKey.from_bytes(FIXED_IDENTITY)
    authority = AuthorityKey.from_bytes(bytes(range(32)))
    body = split(_FIXED_BUNDLE)
    body[field] = value
    try:
        opened = open_bundle(resign(authority, body), authority.public, identity)
    except KeyRefused as e:
        assert e.reason in {
            REFUSED_MALFORMED,
            REFUSED_VERSION,
            REFUSED_SIGNATURE,
            REFUSED_OTHER_DEVICE,
            REFUSED_UNOPENABLE,
        }
    else:  # an extra field, or a value equal to the one there was
        assert opened.epoch_secret == SECRET


def test_seal_refuses_a_recipient_the_roster_does_not_name(
    authority: AuthorityKey, bob: IdentityKey
) -> None:
    with pytest.raises(KeyFormatError) as caught:
        seal_bundle(authority, room_key(sender_index=0), "bob", bob.public)
    assert str(caught.value) == "the roster gives sender index 0 to 'alice', not to 'bob'"


def test_seal_refuses_a_bundle_over_the_size_limit(
    authority: AuthorityKey, bob: IdentityKey
) -> None:
    roster = tuple((i, f"member-{i:04d}-" + "x" * 50) for i in range(1024))
    key = RoomKey(
        room="big", epoch=1, sender_index=5, roster=roster, epoch_secret=new_epoch_secret()
    )
    with pytest.raises(KeyFormatError, match=r"would be \d+ bytes, over the limit of 46080"):
        seal_bundle(authority, key, roster[5][1], bob.public)
    # 1024 members with 20-character names fit
    roster = tuple((i, f"member-{i:04d}-abcdefgh") for i in range(1024))
    key = RoomKey(
        room="big", epoch=1, sender_index=5, roster=roster, epoch_secret=new_epoch_secret()
    )
    big = seal_bundle(authority, key, roster[5][1], bob.public)
    assert len(big) <= MAX_BUNDLE_BYTES
    assert open_bundle(big, authority.public, bob).roster == roster


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"epoch": 0}, "epoch 0 is not between 1 and 4294967295"),
        ({"epoch": 2**32}, "epoch 4294967296 is not between 1 and 4294967295"),
        ({"suite": 0}, "SFrame suite 0 is not between 1 and 65535"),
        ({"sender_index": 2}, "sender index 2 is not in the roster"),
        ({"sender_index": True}, "sender index must be an integer, not bool"),
        ({"epoch_secret": bytes(16)}, "an epoch secret is 32 bytes"),
        ({"roster": ((1, "bob"), (0, "alice"))}, "roster must be sorted by index, each index once"),
        ({"roster": ((0, "bob"), (1, "bob"))}, "roster names 'bob' twice"),
        ({"roster": [(1, "bob")]}, "roster must be a tuple of (index, name)"),
        ({"room": " ops"}, "room ' ops' has a leading or trailing space"),
    ],
)
def test_room_key_fields_are_checked(fields: dict[str, object], message: str) -> None:
    values: dict[str, object] = {
        "room": "ops",
        "epoch": 1,
        "suite": 1,
        "sender_index": 1,
        "roster": ((0, "alice"), (1, "bob")),
        "epoch_secret": SECRET,
    }
    values.update(fields)
    with pytest.raises(KeyFormatError) as caught:
        RoomKey(**values)  # type: ignore[arg-type]
    assert str(caught.value) == message


# --- sender keys and key ids ------------------------------------------------------------------


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 written out with hmac: an independent check of the construction."""
    prk = hmac.new(salt, ikm, "sha256").digest()
    out, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), "sha256").digest()
        out += block
    return out[:length]


def test_sender_base_key_is_hkdf_of_the_epoch_secret_and_index() -> None:
    expected = _hkdf_sha256(
        bytes(32), b"pttd-e2ee-v1", b"pttd-e2ee-v1 sframe sender base key\x00\x07", 32
    )
    assert sender_base_key(bytes(32), 7) == expected
    assert expected.hex() == "c9f28d9addadc09cc59b3c16b2c892140300ccf7c461d66a51188ae92b2ea546"
    secret = new_epoch_secret()
    assert len(secret) == 32 and secret != new_epoch_secret()
    derived = {sender_base_key(secret, i) for i in range(300)}
    assert len(derived) == 300 and all(len(k) == 32 for k in derived)
    assert sender_base_key(secret, 0) != sender_base_key(new_epoch_secret(), 0)
    with pytest.raises(KeyFormatError):
        sender_base_key(secret, 65536)
    with pytest.raises(KeyFormatError):
        sender_base_key(secret[:16], 0)


def test_kid_is_epoch_and_sender_index() -> None:
    assert make_kid(1, 0) == 65536
    assert make_kid(3, 5) == 3 * 65536 + 5
    assert make_kid(2**32 - 1, 65535) == 2**48 - 1
    assert split_kid(make_kid(7, 65535)) == (7, 65535)
    assert split_kid(196613) == (3, 5)
    kids = {make_kid(e, i) for e in range(1, 20) for i in (0, 1, 2, 255, 256, 65535)}
    assert len(kids) == 19 * 6
    for epoch, index in ((2**32, 0), (1, 65536), (0, 0), (-1, 0), (1, -1), (True, 0)):
        with pytest.raises(KeyFormatError):
            make_kid(epoch, index)
    for kid in (2**48, 65535, 0, -1):
        with pytest.raises(KeyFormatError):
            split_kid(kid)


# --- the module stays sans-I/O ----------------------------------------------------------------


def _imports(module: str) -> set[str]:
    source = Path(sys.modules[module].__file__ or "").read_text(encoding="utf-8")
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module or "")
    return found


def test_keys_is_sans_io() -> None:
    allowed_stdlib = {
        "__future__",
        "base64",
        "binascii",
        "hashlib",
        "hmac",
        "json",
        "re",
        "secrets",
        "dataclasses",
        "typing",
    }
    for name in _imports("pttd.e2ee.keys"):
        assert name in allowed_stdlib or name.startswith("cryptography") or name == "pttd.errors", (
            name
        )


def test_authority_imports_only_errors_and_keys_of_pttd() -> None:
    import pttd.e2ee.authority  # noqa: F401  (loaded for sys.modules)

    ours = {n for n in _imports("pttd.e2ee.authority") if n.split(".")[0] == "pttd"}
    assert ours <= {"pttd.errors", "pttd.e2ee.keys"}, ours
