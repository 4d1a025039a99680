"""The installer PIN: what makes a PIN, its hash, and the back-off after wrong PINs.

Only the hash is kept (:mod:`pttd.kdf`: scrypt, a fresh random salt per PIN, the parameters in
the hash string); checking compares in constant time. Hashing and checking are slow on purpose:
the interpreter never calls them but asks for them (the ``HashPin`` and ``CheckPin`` effects),
and the console's back-end runs them in a worker thread. Wrong PINs in a row make the next try
wait 1 s, 2 s, 4 s … up to :data:`MAX_DELAY_S`; they are counted (in a row, and in all) in the
:class:`PinRecord` the store saves, so that a restart does not reset them.
"""

from __future__ import annotations

from typing import Final

from pttd import kdf
from pttd.radio.status import PinRecord

MIN_LENGTH: Final = 4
MAX_LENGTH: Final = 64
MAX_DELAY_S: Final = 60.0
SCRYPT_N: Final = kdf.DEFAULT.n  # 16 MiB with r=8: a fraction of a second on a Pi, once per try


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
