"""An adaptive jitter buffer for one incoming stream, sans-I/O.

Packets arrive with :meth:`JitterBuffer.push` (with their arrival time); the playback side calls
:meth:`JitterBuffer.pop` once per packet duration and gets a :class:`Playout` saying what to play:
a packet, a recovery of a lost packet from the next one's in-band FEC data, a concealment frame,
or silence. Time is passed in as float seconds; there are no threads and no clocks here.

How it decides (kept simple on purpose):

* Order. Packets are kept by ``packet_id`` (u32, wrapping at 2**32, unwrapped against the newest
  id seen). A packet whose slot has been played is *late* and dropped; a second copy of one that is
  buffered or was just played is a *duplicate* and dropped. A packet more than ``max_depth`` ahead
  of playout moves playout forward, dropping what falls behind.
* Jitter. Each arrival's relative transit time ``now - id × packet duration`` goes into a window of
  the last ``jitter_window`` arrivals; the jitter estimate is the window's 95th percentile minus its
  minimum: how much later than the earliest packets a packet can come. The target depth is one
  frame plus enough frames to cover that, within ``[min_depth, max_depth]``. The window is also
  kept sorted, updated per arrival (the oldest value taken out by bisection, the new one put in
  by :func:`bisect.insort`): the estimate is exactly that of sorting the window at every arrival,
  for O(log n) comparisons and a short memmove instead of a sort of ``jitter_window`` floats.
* Start. Playout starts (and restarts after an underrun) once ``target_depth`` frames are spanned,
  or the oldest packet has waited ``target_depth`` packet durations, or the stream was stopped.
* Loss. When the packet due is missing but later ones are buffered, it is lost: recover it from
  the next packet's FEC data when that one is buffered, else conceal; either way playout moves on.
* Growth. When nothing at all is buffered the packet due is probably only late: play a concealment
  frame and *hold* (do not advance), which deepens the buffer by one frame per held frame. After
  ``max_conceal`` held frames in a row the stream has underrun: play silence and buffer afresh.
* Shrink. Every ``shrink_window`` pops, if the depth never fell to the target during the window,
  the buffer is deeper than the network needs: skip one frame. Push-to-talk streams are speech
  without pauses, so there is no silence to hide the skip in; doing it at most once per window
  keeps the cost to one short glitch every half second while catching up after a burst.
* Stop. After :meth:`JitterBuffer.stop` what is buffered plays out (gaps still recovered or
  concealed, no holding, no skipping); :attr:`JitterBuffer.finished` turns true with the pop that
  hands out the last packet.

The packet-id clock assumes one packet per packet duration, which holds for pttd's streams (no
DTX by default). A DTX sender's pauses would look like late packets: the buffer would deepen, then
shrink back.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Final, TypeAlias

from pttd.errors import AudioConfigError

__all__ = ["Action", "JitterBuffer", "JitterConfig", "JitterStats", "Playout", "StatsValues"]

_U32: Final = 1 << 32
_HALF: Final = 1 << 31
JITTER_QUANTILE: Final = 0.95
_RECENT_PLAYED: Final = 64  # how many played slots to remember for duplicate detection


class Action(Enum):
    """What the playback side should do for one packet duration."""

    PLAY = "play"  # decode ``payload``
    RECOVER_FEC = "recover_fec"  # decode the lost packet from ``payload``'s (the next one's) FEC
    CONCEAL = "conceal"  # packet-loss concealment
    SILENCE = "silence"  # nothing to play: before playout starts, after an underrun, when drained


@dataclass(frozen=True, slots=True)
class Playout:
    """One pop's answer; ``packet_id`` is the slot's id (u32), ``None`` with silence."""

    action: Action
    payload: bytes = b""
    packet_id: int | None = None


SILENCE: Final = Playout(Action.SILENCE)
_SILENCE: Final = (Action.SILENCE, b"")
_CONCEAL: Final = (Action.CONCEAL, b"")


@dataclass(frozen=True, slots=True)
class JitterConfig:
    """Limits of a jitter buffer; depths count packets (frames), ``max_depth_ms`` is time."""

    min_depth: int = 1
    max_depth_ms: int = 200
    max_conceal: int = 5
    jitter_window: int = 100
    shrink_window: int = 25

    def __post_init__(self) -> None:
        for name, low in (
            ("min_depth", 1),
            ("max_depth_ms", 1),
            ("max_conceal", 0),
            ("jitter_window", 2),
            ("shrink_window", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise AudioConfigError(f"{name}: {value!r} is not a whole number >= {low}")

    def max_depth(self, frame_ms: int) -> int:
        """The deepest the buffer gets, in frames of ``frame_ms``."""
        return max(self.min_depth, self.max_depth_ms // frame_ms)


StatsValues: TypeAlias = tuple[int, int, int, int, int, int, int, int, int, int, float]
"""The fields of :class:`JitterStats`, in order (see :meth:`JitterBuffer.counts`)."""


@dataclass(frozen=True, slots=True)
class JitterStats:
    """Counters of one jitter buffer (``jitter`` in seconds, depths in frames)."""

    received: int = 0
    played: int = 0
    late: int = 0
    duplicates: int = 0
    concealed: int = 0
    recovered_fec: int = 0
    underruns: int = 0
    dropped: int = 0
    depth: int = 0
    target_depth: int = 0
    jitter: float = 0.0


class JitterBuffer:
    """Reorders one stream's packets and says, once per packet duration, what to play."""

    def __init__(self, frame_ms: int, config: JitterConfig | None = None) -> None:
        if isinstance(frame_ms, bool) or not isinstance(frame_ms, int) or frame_ms <= 0:
            raise AudioConfigError(f"frame_ms: {frame_ms!r} is not a packet duration")
        self.config = config if config is not None else JitterConfig()
        self.frame_ms = frame_ms
        self._frame_s = frame_ms / 1000
        self._max_depth = self.config.max_depth(frame_ms)
        self._window_size = self.config.jitter_window
        self._high = round(JITTER_QUANTILE * (self._window_size - 1))  # the full window's p95
        self._shrink_window = self.config.shrink_window
        self._packets: dict[int, tuple[bytes, float]] = {}  # unwrapped id → (payload, arrival)
        self._newest: int | None = None  # newest unwrapped id seen
        self._next: int | None = None  # unwrapped id of the next slot to play
        self._last_slot: int | None = None  # unwrapped id of the slot the last pop was for
        self._playing = False
        self._stopped = False
        self._finished = False
        self._held = 0  # concealment frames played in a row while holding
        self._recent: deque[int] = deque()  # ids played lately, oldest first
        self._recent_set: set[int] = set()  # the same ids, for O(1) membership
        self._transits: deque[float] = deque()  # the jitter window, in arrival order
        self._ordered: list[float] = []  # the same values, ascending
        self._jitter = 0.0
        self._target = self._target_for(0.0)
        self._window_pops = 0
        self._window_min = math.inf
        self._received = self._played = self._late = self._duplicates = 0
        self._concealed = self._recovered = self._underruns = self._dropped = 0

    # ------------------------------------------------------------------ state

    @property
    def finished(self) -> bool:
        """True once the stream was stopped and everything buffered has been handed out.

        It turns true with the pop that hands out the last packet: play that one, then drop
        the stream.
        """
        return self._finished

    @property
    def playing(self) -> bool:
        """True while playout runs (not before it starts, not while re-buffering)."""
        return self._playing

    @property
    def depth(self) -> int:
        """Frames buffered ahead of playout, counting gaps (0 when empty)."""
        if not self._packets or self._newest is None:
            return 0
        start = self._next if self._next is not None else min(self._packets)
        return max(0, self._newest - start + 1)

    @property
    def jitter(self) -> float:
        """The current jitter estimate, in seconds."""
        return self._jitter

    @property
    def target_depth(self) -> int:
        """Frames the buffer aims to hold: one plus enough to cover the jitter estimate."""
        return self._target

    def _target_for(self, jitter: float) -> int:
        extra = math.ceil(jitter / self._frame_s - 1e-9)
        return min(self._max_depth, max(self.config.min_depth, 1 + extra))

    def stats(self) -> JitterStats:
        """A snapshot of the counters."""
        return JitterStats(*self.counts())

    def counts(self) -> StatsValues:
        """The values of :meth:`stats`, in :class:`JitterStats`' field order, as a plain tuple:
        cheaper to take on every playout block (the mixer does) than the dataclass."""
        return (
            self._received,
            self._played,
            self._late,
            self._duplicates,
            self._concealed,
            self._recovered,
            self._underruns,
            self._dropped,
            self.depth,
            self._target,
            self._jitter,
        )

    # ------------------------------------------------------------------ input

    def push(self, packet_id: int, payload: bytes, now: float) -> bool:
        """Take one arriving packet; return whether it was kept for playout."""
        if not 0 <= packet_id < _U32:
            raise ValueError(f"packet_id {packet_id} is not a u32")
        self._received += 1
        if self._finished:
            self._late += 1
            return False
        newest = self._newest
        # Unwrapped against the newest id seen: at most 2**31 behind or ahead of it.
        ext = packet_id if newest is None else newest + (packet_id - newest + _HALF) % _U32 - _HALF
        packets = self._packets
        if ext in packets or ext in self._recent_set:
            self._duplicates += 1
            return False
        self._measure(ext, now)
        if self._next is not None and ext < self._next:
            self._late += 1
            return False
        packets[ext] = (payload, now)
        if newest is None or ext > newest:
            self._newest = newest = ext
        start = self._next if self._next is not None else min(packets)
        if start < newest - self._max_depth + 1:
            self._limit_depth(newest - self._max_depth + 1)
        return True

    def stop(self) -> None:
        """The stream ended: play out what is buffered, then report :attr:`finished`."""
        self._stopped = True
        if not self._packets:
            self._finish()

    def _measure(self, ext: int, now: float) -> None:
        transit = now - ext * self._frame_s
        window, ordered = self._transits, self._ordered
        if len(window) >= self._window_size:
            oldest = window.popleft()
            i = bisect_left(ordered, oldest)
            if i < len(ordered) and ordered[i] == oldest:
                del ordered[i]
            else:  # only a NaN can be missed: sort afresh, as the estimate always did
                ordered[:] = sorted(window)
        window.append(transit)
        insort(ordered, transit)
        count = len(ordered)
        if count < 2:
            return
        high = self._high if count == self._window_size else round(JITTER_QUANTILE * (count - 1))
        jitter = ordered[high] - ordered[0]
        if jitter != self._jitter:
            self._jitter = jitter
            self._target = self._target_for(jitter)

    def _limit_depth(self, floor: int) -> None:
        """Drop what falls before ``floor``: more than ``max_depth`` frames behind the newest."""
        for ext in [e for e in self._packets if e < floor]:
            del self._packets[ext]
            self._dropped += 1
        if self._next is not None:
            self._next = floor
            self._held = 0

    # ------------------------------------------------------------------ output

    def pop(self, now: float) -> Playout:
        """What to play for the next packet duration."""
        action, payload = self.pop_action(now)
        if action is Action.SILENCE:
            return SILENCE
        assert self._last_slot is not None
        return Playout(action, payload, self._last_slot % _U32)

    def pop_action(self, now: float) -> tuple[Action, bytes]:
        """:meth:`pop`'s action and payload as a plain pair: for the mixer, which calls it for
        every packet and needs no :class:`Playout` object."""
        if self._finished:
            return _SILENCE
        if not self._playing and not self._start(now):
            return _SILENCE
        assert self._next is not None and self._newest is not None
        # Shrink (see _shrink): the depth's lowest over the window, taken before each pop.
        depth = self._newest - self._next + 1 if self._packets else 0
        if depth < self._window_min:
            self._window_min = max(depth, 0)
        self._window_pops += 1
        if self._window_pops >= self._shrink_window:
            self._shrink()
        slot = self._last_slot = self._next
        entry = self._packets.pop(slot, None)
        if entry is not None:
            # Remember it as played (for duplicates), forgetting the oldest beyond
            # _RECENT_PLAYED; then advance (as _advance, inline: this is every packet's way).
            recent = self._recent
            recent.append(slot)
            self._recent_set.add(slot)
            if len(recent) > _RECENT_PLAYED:
                self._recent_set.discard(recent.popleft())
            self._next = slot + 1
            self._held = 0
            if self._stopped and not self._packets:
                self._finish()
            self._played += 1
            return Action.PLAY, entry[0]
        if self._packets:  # later packets are here: this one is lost
            self._advance()
            following = self._packets.get(slot + 1)
            if following is not None:
                self._recovered += 1
                return Action.RECOVER_FEC, following[0]
            self._concealed += 1
            return _CONCEAL
        if self._held >= self.config.max_conceal:
            self._playing = False
            self._held = 0
            self._underruns += 1
            return _SILENCE
        self._held += 1  # hold: the packet is probably late, not lost
        self._concealed += 1
        return _CONCEAL

    def _start(self, now: float) -> bool:
        if not self._packets:
            return False
        first = min(self._packets)
        assert self._newest is not None
        target = self.target_depth
        waited = now - self._packets[first][1]
        if (
            self._stopped
            or self._newest - first + 1 >= target
            or waited >= target * self._frame_s - 1e-9
        ):
            self._next = first
            self._playing = True
            self._held = 0
            self._window_pops = 0
            self._window_min = math.inf
            return True
        return False

    def _advance(self) -> None:
        assert self._next is not None
        self._next += 1
        self._held = 0
        if self._stopped and not self._packets:
            self._finish()

    def _finish(self) -> None:
        self._finished = True
        self._playing = False
        self._held = 0

    def _shrink(self) -> None:
        """At the end of a window of pops: skip one frame when the buffer stayed deeper than
        the target all through it."""
        if self._window_min > self._target and not self._stopped:
            assert self._next is not None
            if self._packets.pop(self._next, None) is not None:
                self._dropped += 1
            self._advance()
        self._window_pops = 0
        self._window_min = math.inf
