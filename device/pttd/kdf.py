"""One way to keep a secret someone types (a user's password on the server, the installer PIN on
the device): scrypt with a random salt, the parameters kept in the hash string.

The string is ``scrypt$N$r$p$<salt hex>$<hash hex>``, the format the server's registry has stored
since its first version, so every hash stored before verifies unchanged; the parameters can be
raised later without breaking the old hashes. Only the standard library is used: the device and
the server both import this.

scrypt is slow on purpose (16 MiB and a fraction of a second on a Pi with the defaults): call
:func:`hash_secret` and :func:`verify` off an event loop (a worker thread).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

SCHEME: Final = "scrypt"
MAXMEM: Final = 256 * 2**20
"""The most memory one hash may take: room for parameters raised later, and a bound for a damaged
or hostile stored string (scrypt refuses before it allocates)."""


@dataclass(frozen=True, slots=True)
class Params:
    """scrypt's cost (``n``, ``r``, ``p``), the hash length and the salt length."""

    n: int = 2**14  # with r=8: 2**14 * 8 * 128 bytes = 16 MiB of memory
    r: int = 8
    p: int = 1
    dklen: int = 32
    salt_bytes: int = 16


DEFAULT: Final = Params()


@dataclass(frozen=True, slots=True)
class Parsed:
    """A stored hash string, read."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes = b""

    def __repr__(self) -> str:
        return f"Parsed(n={self.n}, r={self.r}, p={self.p})"


def _derive(secret: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=MAXMEM
    )


def encode(n: int, r: int, p: int, salt: bytes, digest: bytes) -> str:
    """The hash string for a hash made elsewhere (to carry an older record over)."""
    return f"{SCHEME}${n}${r}${p}${salt.hex()}${digest.hex()}"


def parse(stored: str) -> Parsed:
    """The parts of ``stored``; ValueError (naming no part of it) when it is not a hash string."""
    try:
        scheme, n, r, p, salt_hex, hash_hex = stored.split("$")
        parsed = Parsed(int(n), int(r), int(p), bytes.fromhex(salt_hex), bytes.fromhex(hash_hex))
    except ValueError:
        raise ValueError("not a scrypt hash string") from None
    if scheme != SCHEME:
        raise ValueError(f"not a scrypt hash string (scheme {scheme[:16]!r})")
    n_ok = parsed.n > 1 and parsed.n & (parsed.n - 1) == 0
    if not (n_ok and parsed.r > 0 and parsed.p > 0 and parsed.salt and parsed.digest):
        raise ValueError("scrypt hash string with bad parameters")
    return parsed


def hash_secret(secret: str, params: Params = DEFAULT) -> str:
    """``scrypt$N$r$p$<salt hex>$<hash hex>`` for ``secret`` with a new random salt."""
    salt = secrets.token_bytes(params.salt_bytes)
    digest = _derive(secret, salt, params.n, params.r, params.p, params.dklen)
    return encode(params.n, params.r, params.p, salt, digest)


def verify(secret: str, stored: str) -> bool:
    """Whether ``secret`` is the one ``stored`` was made from (compared in constant time).
    ValueError when ``stored`` is damaged or asks for more than :data:`MAXMEM`."""
    parsed = parse(stored)
    digest = _derive(secret, parsed.salt, parsed.n, parsed.r, parsed.p, len(parsed.digest))
    return hmac.compare_digest(digest, parsed.digest)
