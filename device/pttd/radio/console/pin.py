"""The installer PIN: a salted scrypt hash, and the back-off after wrong PINs.

Only the hash is kept (``scrypt``, a fresh random salt per PIN); checking compares in constant
time. Wrong PINs in a row make the next try wait 1 s, 2 s, 4 s … up to :data:`MAX_DELAY_S`;
they are counted (in a row, and in all) and the counts are saved with the hash, so that a
restart does not reset them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from typing import Any, Final

MIN_LENGTH: Final = 4
MAX_LENGTH: Final = 64
MAX_DELAY_S: Final = 60.0
SCRYPT_N: Final = 2**14  # 16 MiB with r=8: a fraction of a second on a Pi, once per try
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1


def pin_problem(pin: str) -> str | None:
    """What is wrong with ``pin`` as a new PIN, or None."""
    if not MIN_LENGTH <= len(pin) <= MAX_LENGTH:
        return f"a PIN has {MIN_LENGTH} to {MAX_LENGTH} characters"
    if pin != pin.strip() or any(not c.isprintable() for c in pin):
        return "a PIN has no spaces at its ends and no control characters"
    return None


def _hash(pin: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=64 * 2**20)


@dataclass(frozen=True, slots=True)
class PinRecord:
    """A PIN's hash and its wrong-try counts, as saved (0600, atomically) in the state dir."""

    salt: bytes
    digest: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P
    failures: int = 0  # wrong PINs in a row (sets the back-off)
    wrong_total: int = 0  # wrong PINs since this PIN was set

    def __repr__(self) -> str:
        return f"PinRecord(failures={self.failures}, wrong_total={self.wrong_total})"

    @classmethod
    def new(cls, pin: str, *, n: int = SCRYPT_N) -> PinRecord:
        salt = secrets.token_bytes(16)
        return cls(salt, _hash(pin, salt, n, SCRYPT_R, SCRYPT_P), n, SCRYPT_R, SCRYPT_P)

    def matches(self, pin: str) -> bool:
        return hmac.compare_digest(self.digest, _hash(pin, self.salt, self.n, self.r, self.p))

    def wrong(self) -> PinRecord:
        return replace(self, failures=self.failures + 1, wrong_total=self.wrong_total + 1)

    def right(self) -> PinRecord:
        return replace(self, failures=0)

    @property
    def delay(self) -> float:
        """Seconds the next try must wait after the last wrong one."""
        if self.failures <= 0:
            return 0.0
        return min(2.0 ** (self.failures - 1), MAX_DELAY_S)

    def to_json(self) -> dict[str, Any]:
        return {
            "scheme": "scrypt",
            "salt": base64.b64encode(self.salt).decode(),
            "hash": base64.b64encode(self.digest).decode(),
            "n": self.n,
            "r": self.r,
            "p": self.p,
            "failures": self.failures,
            "wrong_total": self.wrong_total,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PinRecord:
        """ValueError for anything but a record :meth:`to_json` wrote."""
        try:
            if data.get("scheme") != "scrypt":
                raise ValueError("not a scrypt PIN record")
            record = cls(
                salt=base64.b64decode(data["salt"], validate=True),
                digest=base64.b64decode(data["hash"], validate=True),
                n=int(data["n"]),
                r=int(data["r"]),
                p=int(data["p"]),
                failures=int(data.get("failures", 0)),
                wrong_total=int(data.get("wrong_total", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"damaged PIN record: {exc}") from exc
        if not (record.salt and len(record.digest) == 32 and record.n > 1):
            raise ValueError("damaged PIN record")
        return record
