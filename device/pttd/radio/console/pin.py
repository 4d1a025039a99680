"""The installer PIN: what makes a PIN, its hash, and the back-off after wrong PINs.

Only the hash is kept (:mod:`pttd.kdf`: scrypt, a fresh random salt per PIN, the parameters in
the hash string); checking compares in constant time. Hashing and checking are slow on purpose:
the interpreter never calls them but asks for them (the ``HashPin`` and ``CheckPin`` effects),
and the console's back-end runs them in a worker thread. Wrong PINs in a row make the next try
wait 1 s, 2 s, 4 s … up to :data:`MAX_DELAY_S`; they are counted (in a row, and in all) in the
:class:`PinRecord` the store saves, so that a restart does not reset them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace
from typing import Any, Final

from pttd import kdf

MIN_LENGTH: Final = 4
MAX_LENGTH: Final = 64
MAX_DELAY_S: Final = 60.0
SCRYPT_N: Final = kdf.DEFAULT.n  # 16 MiB with r=8: a fraction of a second on a Pi, once per try


@dataclass(frozen=True, slots=True)
class PinRecord:
    """The installer PIN as saved: its hash (a :mod:`pttd.kdf` string: scrypt, a salt of its own)
    and the wrong tries, so that a restart does not reset the back-off."""

    hash: str = field(repr=False)
    failures: int = 0  # wrong PINs in a row (they set the back-off)
    wrong_total: int = 0  # wrong PINs since this PIN was set

    def wrong(self) -> PinRecord:
        return replace(self, failures=self.failures + 1, wrong_total=self.wrong_total + 1)

    def right(self) -> PinRecord:
        return replace(self, failures=0)

    def to_json(self) -> dict[str, Any]:
        return {"hash": self.hash, "failures": self.failures, "wrong_total": self.wrong_total}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PinRecord:
        """The record :meth:`to_json` wrote, or the one versions before :mod:`pttd.kdf` wrote
        (``scheme``, base64 ``salt`` and ``hash``, ``n``, ``r``, ``p``: carried over to the hash
        string, and saved so at the next change); ValueError for anything else."""
        try:
            stored = data["hash"]
            if data.get("scheme") == "scrypt":  # the first format
                stored = kdf.encode(
                    int(data["n"]),
                    int(data["r"]),
                    int(data["p"]),
                    base64.b64decode(data["salt"], validate=True),
                    base64.b64decode(stored, validate=True),
                )
            if not isinstance(stored, str):
                raise TypeError("the hash is not a string")
            kdf.parse(stored)
            record = cls(
                stored,
                failures=int(data.get("failures", 0)),
                wrong_total=int(data.get("wrong_total", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"damaged PIN record: {exc}") from None
        if record.failures < 0 or record.wrong_total < 0:
            raise ValueError("damaged PIN record: negative counts")
        return record


def pin_problem(pin: str) -> str | None:
    """What is wrong with ``pin`` as a new PIN, or None."""
    if not MIN_LENGTH <= len(pin) <= MAX_LENGTH:
        return f"a PIN has {MIN_LENGTH} to {MAX_LENGTH} characters"
    if pin != pin.strip() or any(not c.isprintable() for c in pin):
        return "a PIN has no spaces at its ends and no control characters"
    return None


def hash_pin(pin: str, *, n: int = SCRYPT_N) -> PinRecord:
    """A new record for ``pin`` (no wrong tries yet). Slow: off the event loop."""
    return PinRecord(kdf.hash_secret(pin, kdf.Params(n=n)))


def pin_matches(record: PinRecord, pin: str) -> bool:
    """Whether ``pin`` is the one ``record`` holds. Slow: off the event loop."""
    return kdf.verify(pin, record.hash)


def retry_delay(failures: int) -> float:
    """Seconds the next try must wait after ``failures`` wrong PINs in a row."""
    if failures <= 0:
        return 0.0
    return min(2.0 ** (failures - 1), MAX_DELAY_S)
