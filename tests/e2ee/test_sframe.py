"""SFrame (:mod:`pttd.e2ee.sframe`): every RFC 9605 Appendix C test vector, then replay,
tampering, malformed input, unknown keys and counter exhaustion."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pttd.e2ee import sframe
from pttd.e2ee.sframe import (
    DEFAULT_SUITE,
    MAX_COUNTER,
    AuthenticationFailed,
    CipherSuite,
    CounterExhausted,
    Decrypted,
    MalformedPacket,
    Receiver,
    ReplayedPacket,
    Sender,
    SFrameError,
    UnknownKey,
    decode_header,
    derive_key_salt,
    encode_header,
    seal,
    unseal,
)
from pttd.errors import PttdError

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "rfc9605_vectors.json").read_text(encoding="utf-8")
)
HEADER_VECTORS: list[dict[str, str]] = VECTORS["header"]
CTR_HMAC_VECTORS: list[dict[str, str]] = VECTORS["aes_ctr_hmac"]
SFRAME_VECTORS: list[dict[str, str]] = VECTORS["sframe"]

KEY = bytes(range(16))
OTHER_KEY = bytes(range(1, 17))
U64 = st.integers(min_value=0, max_value=2**64 - 1)
SUITES = list(CipherSuite)


def num(text: str) -> int:
    assert text.startswith("0x")
    return int(text, 16)


def suite_of(vector: dict[str, str]) -> CipherSuite:
    return CipherSuite(num(vector["cipher_suite"]))


def pair(
    suite: CipherSuite = DEFAULT_SUITE, kid: int = 3, window: int = 256, first: int = 0
) -> tuple[Sender, Receiver]:
    receiver = Receiver(suite, replay_window=window)
    receiver.add_key(kid, KEY)
    return Sender(suite, kid, KEY, first_counter=first), receiver


# --- RFC 9605 Appendix C ----------------------------------------------------------------------


def test_the_data_file_holds_every_appendix_c_vector() -> None:
    assert len(HEADER_VECTORS) == 289  # 17 KIDs x 17 CTRs
    kids = {num(v["kid"]) for v in HEADER_VECTORS}
    ctrs = {num(v["ctr"]) for v in HEADER_VECTORS}
    assert len(kids) == len(ctrs) == 17
    assert {(num(v["kid"]), num(v["ctr"])) for v in HEADER_VECTORS} == {
        (k, c) for k in kids for c in ctrs
    }
    assert [suite_of(v) for v in CTR_HMAC_VECTORS] == [
        CipherSuite.AES_128_CTR_HMAC_SHA256_80,
        CipherSuite.AES_128_CTR_HMAC_SHA256_64,
        CipherSuite.AES_128_CTR_HMAC_SHA256_32,
    ]
    assert [suite_of(v) for v in SFRAME_VECTORS] == SUITES


@pytest.mark.parametrize(
    "vector", HEADER_VECTORS, ids=[f"kid={v['kid']}-ctr={v['ctr']}" for v in HEADER_VECTORS]
)
def test_header_vector(vector: dict[str, str]) -> None:
    kid, ctr, header = num(vector["kid"]), num(vector["ctr"]), bytes.fromhex(vector["header"])
    assert encode_header(kid, ctr) == header
    assert decode_header(header) == (kid, ctr, len(header))
    assert decode_header(header + b"\xff\x00payload") == (kid, ctr, len(header))


@pytest.mark.parametrize("vector", CTR_HMAC_VECTORS, ids=lambda v: v["cipher_suite"])
def test_aes_ctr_hmac_vector(vector: dict[str, str]) -> None:
    suite = suite_of(vector)
    key, nonce, aad, pt, ct = (
        bytes.fromhex(vector[name]) for name in ("key", "nonce", "aad", "pt", "ct")
    )
    # derive_subkeys: the first Nka bytes encrypt, the other Nh authenticate
    assert len(key) == suite.key_size == suite.enc_key_size + suite.hash_size
    assert key[: suite.enc_key_size].hex() == vector["enc_key"]
    assert key[suite.enc_key_size :].hex() == vector["auth_key"]
    assert len(ct) == len(pt) + suite.tag_size

    aead = sframe._Keyed(suite, key, bytes(suite.nonce_size))
    assert aead.aead_encrypt(nonce, aad, pt) == ct
    assert aead.aead_decrypt(nonce, aad, ct) == pt
    with pytest.raises(AuthenticationFailed):
        aead.aead_decrypt(nonce, aad + b"!", ct)
    with pytest.raises(AuthenticationFailed):
        aead.aead_decrypt(nonce, aad, ct[:-1] + bytes([ct[-1] ^ 1]))


@pytest.mark.parametrize("vector", SFRAME_VECTORS, ids=lambda v: v["cipher_suite"])
def test_sframe_vector(vector: dict[str, str]) -> None:
    suite = suite_of(vector)
    kid, ctr = num(vector["kid"]), num(vector["ctr"])
    base_key, metadata, pt, ct = (
        bytes.fromhex(vector[name]) for name in ("base_key", "metadata", "pt", "ct")
    )

    # derive_key_salt, step by step
    assert sframe._extract(suite, base_key).hex() == vector["sframe_secret"]
    key_label, salt_label = sframe._labels(suite, kid)
    assert key_label.hex() == vector["sframe_key_label"]
    assert salt_label.hex() == vector["sframe_salt_label"]
    key, salt = derive_key_salt(suite, kid, base_key)
    assert key.hex() == vector["sframe_key"]
    assert salt.hex() == vector["sframe_salt"]
    assert (len(key), len(salt)) == (suite.key_size, suite.nonce_size)

    # nonce and AAD
    assert sframe._Keyed(suite, key, salt).nonce(ctr).hex() == vector["nonce"]
    assert (encode_header(kid, ctr) + metadata).hex() == vector["aad"]

    # encrypt and decrypt: the one-shot functions, then a Sender and a Receiver
    assert seal(suite, key, salt, kid, ctr, metadata, pt) == ct
    assert unseal(suite, key, salt, ct, metadata) == (kid, ctr, pt)
    sender = Sender(suite, kid, base_key, first_counter=ctr)
    assert sender.encrypt(pt, metadata) == ct
    assert sender.next_counter == ctr + 1
    receiver = Receiver(suite)
    receiver.add_key(kid, base_key)
    assert receiver.decrypt(ct, metadata) == Decrypted(kid=kid, counter=ctr, plaintext=pt)


def test_vectors_without_cryptographys_nonce_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback for cryptography < 43 (a CTR context per packet) gives the same bytes."""
    monkeypatch.setattr(sframe, "_RESETTABLE", False)
    for vector in SFRAME_VECTORS:
        suite, kid, ctr = suite_of(vector), num(vector["kid"]), num(vector["ctr"])
        base_key, metadata = bytes.fromhex(vector["base_key"]), bytes.fromhex(vector["metadata"])
        sender = Sender(suite, kid, base_key, first_counter=ctr)
        assert sender.encrypt(bytes.fromhex(vector["pt"]), metadata).hex() == vector["ct"]
        receiver = Receiver(suite)
        receiver.add_key(kid, base_key)
        assert (
            receiver.decrypt(bytes.fromhex(vector["ct"]), metadata).plaintext.hex()
            == (vector["pt"])
        )


# Table 1 of RFC 9605: Nh, Nka, Nk, Nn, Nt
@pytest.mark.parametrize(
    ("suite", "sizes"),
    [
        (CipherSuite.AES_128_CTR_HMAC_SHA256_80, (32, 16, 48, 12, 10)),
        (CipherSuite.AES_128_CTR_HMAC_SHA256_64, (32, 16, 48, 12, 8)),
        (CipherSuite.AES_128_CTR_HMAC_SHA256_32, (32, 16, 48, 12, 4)),
        (CipherSuite.AES_128_GCM_SHA256_128, (32, 0, 16, 12, 16)),
        (CipherSuite.AES_256_GCM_SHA512_128, (64, 0, 32, 12, 16)),
    ],
)
def test_suite_constants(suite: CipherSuite, sizes: tuple[int, ...]) -> None:
    got = (suite.hash_size, suite.enc_key_size, suite.key_size, suite.nonce_size, suite.tag_size)
    assert got == sizes
    assert suite.is_ctr_hmac == (sizes[1] != 0)
    assert suite.hash_algorithm.digest_size == sizes[0]


def test_iana_values_and_defaults() -> None:
    assert [int(s) for s in CipherSuite] == [1, 2, 3, 4, 5]
    assert DEFAULT_SUITE is CipherSuite.AES_128_CTR_HMAC_SHA256_80
    assert MAX_COUNTER == 18446744073709551615


# --- header -----------------------------------------------------------------------------------


@given(kid=U64, ctr=U64, tail=st.binary(max_size=8))
def test_any_header_round_trips_minimally(kid: int, ctr: int, tail: bytes) -> None:
    header = encode_header(kid, ctr)

    def extra(value: int) -> int:
        return 0 if value < 8 else (value.bit_length() + 7) // 8

    assert len(header) == 1 + extra(kid) + extra(ctr)
    assert decode_header(header + tail) == (kid, ctr, len(header))


@pytest.mark.parametrize(
    "header",
    [
        "8005",  # KID 5 in an extra byte
        "900005",  # KID 5 in two bytes
        "9000ff",  # KID 255 in two bytes
        "0807",  # CTR 7 in an extra byte
        "090010",  # CTR 16 in two bytes
        "8f00ff" + "00" * 7,  # KID 0 in a byte, CTR 255 in eight bytes
    ],
)
def test_a_non_minimal_header_is_malformed(header: str) -> None:
    with pytest.raises(MalformedPacket, match="not minimally encoded"):
        decode_header(bytes.fromhex(header))


@pytest.mark.parametrize("data", ["", "08", "8f", "ff" + "ff" * 15, "99012345"])
def test_a_truncated_header_is_malformed(data: str) -> None:
    with pytest.raises(MalformedPacket):
        decode_header(bytes.fromhex(data))


@pytest.mark.parametrize(("kid", "ctr"), [(-1, 0), (0, -1), (2**64, 0), (0, 2**64)])
def test_out_of_range_header_values_are_refused(kid: int, ctr: int) -> None:
    with pytest.raises(SFrameError, match="out of range"):
        encode_header(kid, ctr)


# --- sealing and opening ----------------------------------------------------------------------


@settings(deadline=None)
@given(
    suite=st.sampled_from(SUITES),
    kid=U64,
    ctr=U64,
    metadata=st.binary(max_size=40),
    plaintext=st.binary(max_size=300),
)
def test_any_packet_round_trips(
    suite: CipherSuite, kid: int, ctr: int, metadata: bytes, plaintext: bytes
) -> None:
    key, salt = derive_key_salt(suite, kid, KEY)
    packet = seal(suite, key, salt, kid, ctr, metadata, plaintext)
    header = encode_header(kid, ctr)
    assert packet.startswith(header)
    assert len(packet) == len(header) + len(plaintext) + suite.tag_size
    assert len(plaintext) < 16 or plaintext not in packet  # encrypted
    assert unseal(suite, key, salt, packet, metadata) == (kid, ctr, plaintext)
    # the flat per-packet path equals the plain composition of RFC 9605 §4.4.3
    aead = sframe._Keyed(suite, key, salt)
    assert packet == header + aead.aead_encrypt(aead.nonce(ctr), header + metadata, plaintext)


@pytest.mark.parametrize("suite", SUITES)
def test_sender_to_receiver_in_every_suite(suite: CipherSuite) -> None:
    sender, receiver = pair(suite, kid=300)
    frames = [bytes([n]) * n for n in range(0, 120, 7)]
    for n, frame in enumerate(frames):
        packet = sender.encrypt(frame, b"room:7")
        assert receiver.decrypt(packet, b"room:7") == (300, n, frame)
    assert sender.next_counter == len(frames)


def test_distinct_kids_distinct_keys() -> None:
    a = derive_key_salt(DEFAULT_SUITE, 1, KEY)
    b = derive_key_salt(DEFAULT_SUITE, 2, KEY)
    c = derive_key_salt(CipherSuite.AES_128_CTR_HMAC_SHA256_64, 1, KEY)
    assert len({a[0], b[0], c[0]}) == 3 and len({a[1], b[1], c[1]}) == 3


# --- replay -----------------------------------------------------------------------------------


def test_the_same_packet_twice_is_a_replay() -> None:
    sender, receiver = pair()
    packet = sender.encrypt(b"hello")
    assert receiver.decrypt(packet).plaintext == b"hello"
    with pytest.raises(ReplayedPacket, match="already received") as caught:
        receiver.decrypt(packet)
    assert (caught.value.kid, caught.value.counter) == (3, 0)


def test_out_of_order_within_the_window_is_accepted_once() -> None:
    sender, receiver = pair()
    packets = [sender.encrypt(f"frame {n}".encode()) for n in range(12)]
    order = [5, 3, 11, 0, 7, 1, 2, 10, 4, 9, 6, 8]
    for n in order:
        assert receiver.decrypt(packets[n]) == (3, n, f"frame {n}".encode())
    for n in order:
        with pytest.raises(ReplayedPacket):
            receiver.decrypt(packets[n])


def test_a_packet_older_than_the_window_is_refused() -> None:
    sender, receiver = pair(window=256)
    packets = [sender.encrypt(b"%d" % n) for n in range(301)]
    assert receiver.decrypt(packets[300]).counter == 300
    assert receiver.decrypt(packets[44]).counter == 44  # 256 below the highest: still in
    with pytest.raises(ReplayedPacket, match="older than the replay window") as caught:
        receiver.decrypt(packets[43])
    assert caught.value.counter == 43
    assert receiver.decrypt(packets[299]).counter == 299


def test_a_jump_past_the_window_forgets_everything_below_it() -> None:
    sender, receiver = pair(window=16)
    packets = [sender.encrypt(b"x") for n in range(1000)]
    receiver.decrypt(packets[10])
    receiver.decrypt(packets[999])
    with pytest.raises(ReplayedPacket, match="older"):
        receiver.decrypt(packets[10])
    with pytest.raises(ReplayedPacket, match="older"):
        receiver.decrypt(packets[982])
    assert receiver.decrypt(packets[983]).counter == 983
    assert receiver.decrypt(packets[998]).counter == 998


def test_window_zero_accepts_only_rising_counters() -> None:
    sender, receiver = pair(window=0)
    packets = [sender.encrypt(b"x") for _ in range(4)]
    receiver.decrypt(packets[0])
    receiver.decrypt(packets[2])
    with pytest.raises(ReplayedPacket):
        receiver.decrypt(packets[1])
    receiver.decrypt(packets[3])


def test_the_window_is_per_kid() -> None:
    receiver = Receiver(DEFAULT_SUITE)
    receiver.add_key(1, KEY)
    receiver.add_key(2, OTHER_KEY)
    one, two = Sender(DEFAULT_SUITE, 1, KEY), Sender(DEFAULT_SUITE, 2, OTHER_KEY)
    assert receiver.decrypt(one.encrypt(b"a")) == (1, 0, b"a")
    assert receiver.decrypt(two.encrypt(b"b")) == (2, 0, b"b")


def test_the_first_packet_may_carry_the_last_counter() -> None:
    """A window that starts at 2**64 - 1 must not try to shift by 2**64 bits."""
    sender, receiver = pair(first=MAX_COUNTER - 5)
    packets = [sender.encrypt(b"%d" % n) for n in range(6)]
    assert receiver.decrypt(packets[5]).counter == MAX_COUNTER
    assert receiver.decrypt(packets[0]).counter == MAX_COUNTER - 5
    with pytest.raises(ReplayedPacket):
        receiver.decrypt(packets[5])


def test_a_forged_packet_does_not_poison_the_window() -> None:
    sender, receiver = pair(window=64)
    packets = [sender.encrypt(b"%d" % n) for n in range(20)]
    receiver.decrypt(packets[10])
    # forgeries with a valid header for KID 3: far ahead (would push 11 out), and on 12
    for ctr in (10_000, 12, 2**64 - 1):
        with pytest.raises(AuthenticationFailed):
            receiver.decrypt(encode_header(3, ctr) + b"\x00" * 30)
    assert receiver.decrypt(packets[11]).counter == 11
    assert receiver.decrypt(packets[12]).counter == 12
    assert receiver.decrypt(packets[9]).counter == 9


def test_adding_the_same_key_again_keeps_the_window() -> None:
    sender, receiver = pair()
    packet = sender.encrypt(b"once")
    receiver.decrypt(packet)
    receiver.add_key(3, KEY)
    with pytest.raises(ReplayedPacket):
        receiver.decrypt(packet)
    receiver.add_key(3, OTHER_KEY)  # another key for the KID: a fresh start
    with pytest.raises(AuthenticationFailed):
        receiver.decrypt(packet)
    fresh = Sender(DEFAULT_SUITE, 3, OTHER_KEY)
    assert receiver.decrypt(fresh.encrypt(b"new")) == (3, 0, b"new")


# --- tampering --------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
def test_every_flipped_bit_is_refused(suite: CipherSuite) -> None:
    sender, receiver = pair(suite, kid=0x123, first=0x4567)
    packet = sender.encrypt(b"draft-ietf-sframe-enc", b"IETF SFrame WG")
    _, _, header_length = decode_header(packet)
    for bit in range(len(packet) * 8):
        bad = bytearray(packet)
        bad[bit // 8] ^= 1 << (bit % 8)
        if bit // 8 < header_length:
            with pytest.raises(SFrameError):  # another layout, KID or counter
                receiver.decrypt(bytes(bad), b"IETF SFrame WG")
        else:  # ciphertext and tag
            with pytest.raises(AuthenticationFailed, match="tag mismatch"):
                receiver.decrypt(bytes(bad), b"IETF SFrame WG")
    counter_flip = bytearray(packet)
    counter_flip[header_length - 1] ^= 1  # counter 0x4566: a valid header, a wrong nonce
    assert decode_header(bytes(counter_flip))[:2] == (0x123, 0x4566)
    with pytest.raises(AuthenticationFailed):
        receiver.decrypt(bytes(counter_flip), b"IETF SFrame WG")
    # none of it moved the window: the genuine packet still goes through, once
    assert receiver.decrypt(packet, b"IETF SFrame WG").plaintext == b"draft-ietf-sframe-enc"


@pytest.mark.parametrize("suite", SUITES)
def test_wrong_metadata_is_refused(suite: CipherSuite) -> None:
    sender, receiver = pair(suite)
    packet = sender.encrypt(b"voice", b"room 1")
    for metadata in (b"", b"room 2", b"room 1\x00", b"room"):
        with pytest.raises(AuthenticationFailed):
            receiver.decrypt(packet, metadata)
    assert receiver.decrypt(packet, b"room 1").plaintext == b"voice"
    bare = sender.encrypt(b"voice")
    with pytest.raises(AuthenticationFailed):
        receiver.decrypt(bare, b"room 1")


@pytest.mark.parametrize("suite", SUITES)
def test_a_wrong_key_is_refused(suite: CipherSuite) -> None:
    packet = Sender(suite, 3, OTHER_KEY).encrypt(b"voice")
    _, receiver = pair(suite)
    with pytest.raises(AuthenticationFailed) as caught:
        receiver.decrypt(packet)
    assert (caught.value.kid, caught.value.counter) == (3, 0)
    key, salt = derive_key_salt(suite, 3, KEY)
    with pytest.raises(AuthenticationFailed):
        unseal(suite, key, salt, packet, b"")


def test_another_suite_is_refused() -> None:
    packet = Sender(CipherSuite.AES_128_CTR_HMAC_SHA256_80, 3, KEY).encrypt(b"voice")
    for suite in SUITES[1:]:
        _, receiver = pair(suite)
        with pytest.raises(SFrameError):
            receiver.decrypt(packet)


# --- malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
def test_every_truncation_is_refused(suite: CipherSuite) -> None:
    sender, receiver = pair(suite, kid=0x123, first=0x4567)
    packet = sender.encrypt(b"twenty bytes of opus")
    header_length = decode_header(packet)[2]
    for cut in range(len(packet)):
        if cut < header_length + suite.tag_size:
            with pytest.raises(MalformedPacket):
                receiver.decrypt(packet[:cut])
        else:
            with pytest.raises(AuthenticationFailed):
                receiver.decrypt(packet[:cut])
    assert receiver.decrypt(packet).plaintext == b"twenty bytes of opus"


def test_an_empty_plaintext_is_a_packet_of_header_and_tag() -> None:
    sender, receiver = pair()
    packet = sender.encrypt(b"")
    assert len(packet) == 1 + DEFAULT_SUITE.tag_size
    assert receiver.decrypt(packet) == (3, 0, b"")


def _receiver_for_small_kids(suite: CipherSuite) -> Receiver:
    receiver = Receiver(suite)
    for kid in (0, 1, 2, 3, 7, 8, 255, 256):
        receiver.add_key(kid, KEY)
    return receiver


RECEIVERS = {suite: _receiver_for_small_kids(suite) for suite in SUITES}


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=64), suite=st.sampled_from(SUITES))
def test_any_bytes_raise_nothing_but_sframe_errors(data: bytes, suite: CipherSuite) -> None:
    key, salt = derive_key_salt(suite, 0, KEY)
    with contextlib.suppress(SFrameError):
        decode_header(data)
    with contextlib.suppress(SFrameError):
        unseal(suite, key, salt, data, b"")
    with pytest.raises(SFrameError):  # a forgery passing a 32-bit tag: 2**-32 per example
        RECEIVERS[suite].decrypt(data)


@settings(deadline=None)
@given(
    kid=st.sampled_from([0, 1, 7, 8, 255, 256]),
    ctr=U64,
    body=st.binary(max_size=40),
    suite=st.sampled_from(SUITES),
)
def test_a_valid_header_on_junk_is_malformed_or_unauthentic(
    kid: int, ctr: int, body: bytes, suite: CipherSuite
) -> None:
    receiver = Receiver(suite)
    receiver.add_key(kid, KEY)
    packet = encode_header(kid, ctr) + body
    expected = MalformedPacket if len(body) < suite.tag_size else AuthenticationFailed
    with pytest.raises(expected):
        receiver.decrypt(packet)


# --- keys -------------------------------------------------------------------------------------


def test_an_unknown_kid_can_be_retried_once_its_key_comes() -> None:
    receiver = Receiver(DEFAULT_SUITE)
    receiver.add_key(1, KEY)
    packet = Sender(DEFAULT_SUITE, 2, OTHER_KEY).encrypt(b"early")
    with pytest.raises(UnknownKey, match="no SFrame key for KID 2") as caught:
        receiver.decrypt(packet)
    assert (caught.value.kid, caught.value.counter) == (2, 0)
    receiver.add_key(2, OTHER_KEY)
    assert receiver.kids() == frozenset({1, 2})
    assert receiver.decrypt(packet) == (2, 0, b"early")


def test_a_removed_key_is_unknown() -> None:
    sender, receiver = pair()
    packet = sender.encrypt(b"x")
    receiver.remove_key(3)
    receiver.remove_key(99)  # not there: nothing happens
    assert receiver.kids() == frozenset()
    with pytest.raises(UnknownKey):
        receiver.decrypt(packet)


# --- counters ---------------------------------------------------------------------------------


def test_the_last_counter_is_used_once_then_the_sender_is_exhausted() -> None:
    sender, receiver = pair(first=MAX_COUNTER)
    assert sender.next_counter == MAX_COUNTER
    packet = sender.encrypt(b"last")
    assert decode_header(packet)[:2] == (3, MAX_COUNTER)
    assert sender.next_counter == MAX_COUNTER + 1
    for _ in range(2):
        with pytest.raises(CounterExhausted, match="last counter") as caught:
            sender.encrypt(b"one more")
        assert caught.value.kid == 3
    assert sender.next_counter == MAX_COUNTER + 1
    assert receiver.decrypt(packet) == (3, MAX_COUNTER, b"last")


def test_a_restored_exhausted_sender_stays_exhausted() -> None:
    sender = Sender(DEFAULT_SUITE, 3, KEY, first_counter=MAX_COUNTER + 1)
    with pytest.raises(CounterExhausted):
        sender.encrypt(b"x")


@pytest.mark.parametrize("first", [-1, MAX_COUNTER + 2])
def test_an_impossible_first_counter_is_refused(first: int) -> None:
    with pytest.raises(SFrameError, match="first counter"):
        Sender(DEFAULT_SUITE, 3, KEY, first_counter=first)


def test_counters_are_consecutive_and_never_reused() -> None:
    sender = Sender(DEFAULT_SUITE, 9, KEY, first_counter=1000)
    packets = [sender.encrypt(b"same frame") for _ in range(500)]
    assert [decode_header(p)[1] for p in packets] == list(range(1000, 1500))
    assert len(set(packets)) == 500
    assert sender.next_counter == 1500
    restarted = Sender(DEFAULT_SUITE, 9, KEY, first_counter=sender.next_counter)
    assert decode_header(restarted.encrypt(b"same frame"))[1] == 1500


# --- arguments and errors ---------------------------------------------------------------------


def test_bad_arguments_are_sframe_errors() -> None:
    key, salt = derive_key_salt(DEFAULT_SUITE, 1, KEY)
    with pytest.raises(SFrameError, match="base_key is empty"):
        derive_key_salt(DEFAULT_SUITE, 1, b"")
    with pytest.raises(SFrameError, match="out of range"):
        derive_key_salt(DEFAULT_SUITE, 2**64, KEY)
    with pytest.raises(SFrameError, match="48-byte key"):
        seal(DEFAULT_SUITE, key[:16], salt, 1, 0, b"", b"x")
    with pytest.raises(SFrameError, match="12-byte salt"):
        seal(DEFAULT_SUITE, key, salt[:8], 1, 0, b"", b"x")
    with pytest.raises(SFrameError, match="out of range"):
        seal(DEFAULT_SUITE, key, salt, 1, -1, b"", b"x")
    with pytest.raises(SFrameError, match="replay window"):
        Receiver(DEFAULT_SUITE, replay_window=-1)
    with pytest.raises(SFrameError, match="replay window"):
        Receiver(DEFAULT_SUITE, replay_window=2**16 + 1)
    with pytest.raises(SFrameError, match="unknown SFrame cipher suite"):
        Receiver(0x0006)  # type: ignore[arg-type]
    with pytest.raises(SFrameError, match="out of range"):
        Sender(DEFAULT_SUITE, -1, KEY)


def test_the_errors_belong_to_pttds_tree_and_speak_one_line() -> None:
    for error in (MalformedPacket, UnknownKey, AuthenticationFailed, ReplayedPacket):
        assert issubclass(error, SFrameError)
    assert issubclass(CounterExhausted, SFrameError)
    assert issubclass(SFrameError, PttdError) and issubclass(SFrameError, ValueError)
    sender, receiver = pair()
    packet, fresh = sender.encrypt(b"x"), sender.encrypt(b"y")
    receiver.decrypt(packet)
    tampered = fresh[:-1] + bytes([fresh[-1] ^ 0x80])
    messages = []
    for bad in (packet, fresh[:2], b"", encode_header(5, 0) + bytes(10), tampered):
        with pytest.raises(SFrameError) as caught:
            receiver.decrypt(bad)
        messages.append(str(caught.value))
    assert all(m and "\n" not in m for m in messages)
    assert len(set(messages)) == len(messages)


def test_reprs_name_no_key() -> None:
    sender, receiver = pair(kid=42)
    assert repr(sender) == "Sender(AES_128_CTR_HMAC_SHA256_80, kid=42, next_counter=0)"
    assert repr(receiver) == "Receiver(AES_128_CTR_HMAC_SHA256_80, kids=[42])"
    key, _ = derive_key_salt(DEFAULT_SUITE, 42, KEY)
    for text in (repr(sender), repr(receiver)):
        assert KEY.hex() not in text and key.hex()[:8] not in text
