"""Rate limits, sans-I/O (the time is passed in): the server's throttling of each connection and
of failed logons, and the device console's guard against a line that echoes its output back.

Standard library only, so that the device and the server both import it.

The installer PIN's back-off (:func:`pttd.radio.console.pin.retry_delay`) is not here: it is not
a rate but a delay that doubles with each wrong PIN in a row, is saved across restarts, and is
reset by the right PIN.
"""

from __future__ import annotations

import contextlib
from collections import deque


class RateLimiter:
    """A token bucket: ``rate`` per second, bursts of ``burst``; rate 0 means unlimited."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def allow(self, now: float) -> bool:
        if self.rate <= 0:
            return True
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class FailureLog:
    """Failed logons/pairings per client address within a sliding window."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._swept = float("-inf")

    def __len__(self) -> int:
        """Addresses with failures on record."""
        return len(self._failures)

    def blocked(self, address: str, now: float) -> bool:
        times = self._failures.get(address)
        if not times:
            return False
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return False
        return len(times) >= self.limit

    def record(self, address: str, now: float) -> float:
        """Count a failure (or reserve an attempt: see :meth:`forgive`); returns its stamp."""
        if now - self._swept >= self.window:
            # Once a window, forget addresses gone quiet: one try from each of many addresses
            # (an IPv6 prefix has plenty) must not grow this without end.
            self._swept = now
            cutoff = now - self.window
            for quiet in [a for a, times in self._failures.items() if times[-1] <= cutoff]:
                del self._failures[quiet]
        self._failures.setdefault(address, deque()).append(now)
        return now

    def forgive(self, address: str, stamp: float) -> None:
        """Take back an attempt reserved by :meth:`record` that turned out right."""
        times = self._failures.get(address)
        if times is not None:
            with contextlib.suppress(ValueError):
                times.remove(stamp)
            if not times:
                del self._failures[address]
