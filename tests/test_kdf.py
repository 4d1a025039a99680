"""pttd.kdf: the one scrypt helper of the server's passwords and the device's installer PIN."""

from __future__ import annotations

import hashlib

import pytest

from pttd import kdf

FAST = kdf.Params(n=16)  # the tests' cost: the format and the checks, not the slowness


def test_hash_then_verify() -> None:
    stored = kdf.hash_secret("correct horse", FAST)
    assert kdf.verify("correct horse", stored)
    assert not kdf.verify("correct hors", stored)
    assert not kdf.verify("", stored)
    assert "correct horse" not in stored


def test_the_parameters_travel_with_the_hash() -> None:
    stored = kdf.hash_secret("pw", kdf.Params(n=32, r=2, p=1, dklen=24, salt_bytes=8))
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "32", "2", "1")
    assert len(bytes.fromhex(salt)) == 8 and len(bytes.fromhex(digest)) == 24
    assert kdf.verify("pw", stored)
    assert kdf.parse(stored).n == 32 and "pw" not in repr(kdf.parse(stored))


def test_default_parameters_are_the_registrys_since_its_first_version() -> None:
    assert kdf.Params(n=2**14, r=8, p=1, dklen=32, salt_bytes=16) == kdf.DEFAULT


def test_a_salt_per_hash() -> None:
    assert kdf.hash_secret("same", FAST) != kdf.hash_secret("same", FAST)


def test_a_hash_stored_by_the_old_registry_code_verifies() -> None:
    """What pttd.server.registry.hash_password wrote before this module existed."""
    salt = bytes(range(16))
    digest = hashlib.scrypt(b"hunter2", salt=salt, n=2**14, r=8, p=1, dklen=32)
    stored = f"scrypt${2**14}$8$1${salt.hex()}${digest.hex()}"
    assert kdf.verify("hunter2", stored)
    assert not kdf.verify("hunter3", stored)
    assert kdf.encode(2**14, 8, 1, salt, digest) == stored


def test_non_ascii_secrets() -> None:
    stored = kdf.hash_secret("pässwörd-ß", FAST)
    assert kdf.verify("pässwörd-ß", stored)
    assert not kdf.verify("passwort-ss", stored)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "scrypt$16$8$1$00",
        "bcrypt$16$8$1$0011$0011",
        "scrypt$15$8$1$0011$0011",  # n not a power of two
        "scrypt$16$0$1$0011$0011",
        "scrypt$16$8$1$$0011",  # no salt
        "scrypt$16$8$1$0011$",  # no hash
        "scrypt$16$8$1$zz$0011",
        "scrypt$x$8$1$0011$0011",
    ],
)
def test_a_damaged_hash_string_is_a_value_error(stored: str) -> None:
    with pytest.raises(ValueError, match="scrypt hash string"):
        kdf.verify("pw", stored)


def test_a_hash_asking_for_too_much_memory_is_refused_before_allocating() -> None:
    greedy = kdf.encode(2**30, 8, 1, b"salt", b"\0" * 32)  # 1 TiB
    with pytest.raises(ValueError):
        kdf.verify("pw", greedy)
