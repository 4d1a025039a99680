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


def doubling(count: int) -> bool:
    """Whether the ``count``-th occurrence of something is worth a log line: the 1st, 2nd, 4th,
    8th …, so that a condition that keeps recurring is told ever less often, never in a flood."""
    return count > 0 and count & (count - 1) == 0


class LogThrottle:
    """At most ``burst`` log lines per cause in any ``window`` seconds; what is held back is
    counted and told with the next line of that cause ("… and 312 more like this").

    The causes are the code's own fixed strings, never outside input, so the table stays small.
    What a client can make the server or the device log is bounded by it: a flood of junk costs
    a few lines a window, not one line a frame."""

    def __init__(self, burst: int = 10, window: float = 10.0) -> None:
        self.burst = burst
        self.window = window
        self._causes: dict[str, list[float]] = {}  # cause -> [window start, lines, held back]

    def allow(self, cause: str, now: float) -> int | None:
        """None: hold this line back. Otherwise the number of lines of this cause held back
        since the last one let through (to say so)."""
        state = self._causes.get(cause)
        if state is None or now - state[0] >= self.window:
            held = int(state[2]) if state is not None else 0
            self._causes[cause] = [now, 1, 0]
            return held
        if state[1] < self.burst:
            state[1] += 1
            held, state[2] = int(state[2]), 0
            return held
        state[2] += 1
        return None
