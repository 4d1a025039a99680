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
  frame plus enough frames to cover that, within ``[min_depth, max_depth]``.
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
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Final

from pttd.errors import AudioConfigError

__all__ = ["Action", "JitterBuffer", "JitterConfig", "JitterStats", "Playout"]

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
        self._packets: dict[int, tuple[bytes, float]] = {}  # unwrapped id → (payload, arrival)
        self._newest: int | None = None  # newest unwrapped id seen
        self._next: int | None = None  # unwrapped id of the next slot to play
        self._playing = False
        self._stopped = False
        self._finished = False
        self._held = 0  # concealment frames played in a row while holding
        self._recent: deque[int] = deque(maxlen=_RECENT_PLAYED)  # ids played lately
        self._transits: deque[float] = deque(maxlen=self.config.jitter_window)
        self._jitter = 0.0
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
        extra = math.ceil(self._jitter / self._frame_s - 1e-9)
        return min(self._max_depth, max(self.config.min_depth, 1 + extra))

    def stats(self) -> JitterStats:
        """A snapshot of the counters."""
        return JitterStats(
            received=self._received,
            played=self._played,
            late=self._late,
            duplicates=self._duplicates,
            concealed=self._concealed,
            recovered_fec=self._recovered,
            underruns=self._underruns,
            dropped=self._dropped,
            depth=self.depth,
            target_depth=self.target_depth,
            jitter=self._jitter,
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
        ext = self._unwrap(packet_id)
        if ext in self._packets or ext in self._recent:
            self._duplicates += 1
            return False
        self._measure(ext, now)
        if self._next is not None and ext < self._next:
            self._late += 1
            return False
        self._packets[ext] = (payload, now)
        if self._newest is None or ext > self._newest:
            self._newest = ext
        self._limit_depth()
        return True

    def stop(self) -> None:
        """The stream ended: play out what is buffered, then report :attr:`finished`."""
        self._stopped = True
        if not self._packets:
            self._finish()

    def _unwrap(self, packet_id: int) -> int:
        if self._newest is None:
            return packet_id
        delta = (packet_id - self._newest + _HALF) % _U32 - _HALF
        return self._newest + delta

    def _measure(self, ext: int, now: float) -> None:
        self._transits.append(now - ext * self._frame_s)
        if len(self._transits) < 2:
            return
        ordered = sorted(self._transits)
        high = ordered[round(JITTER_QUANTILE * (len(ordered) - 1))]
        self._jitter = high - ordered[0]

    def _limit_depth(self) -> None:
        """Drop what falls more than ``max_depth`` frames behind the newest packet."""
        assert self._newest is not None
        floor = self._newest - self._max_depth + 1
        start = self._next if self._next is not None else min(self._packets)
        if start >= floor:
            return
        for ext in [e for e in self._packets if e < floor]:
            del self._packets[ext]
            self._dropped += 1
        if self._next is not None:
            self._next = floor
            self._held = 0

    # ------------------------------------------------------------------ output

    def pop(self, now: float) -> Playout:
        """What to play for the next packet duration."""
        if self._finished:
            return SILENCE
        if not self._playing and not self._start(now):
            return SILENCE
        assert self._next is not None
        self._adapt()
        slot = self._next
        entry = self._packets.pop(slot, None)
        if entry is not None:
            self._recent.append(slot)
            self._advance()
            self._played += 1
            return Playout(Action.PLAY, entry[0], slot % _U32)
        if self._packets:  # later packets are here: this one is lost
            self._advance()
            following = self._packets.get(slot + 1)
            if following is not None:
                self._recovered += 1
                return Playout(Action.RECOVER_FEC, following[0], slot % _U32)
            self._concealed += 1
            return Playout(Action.CONCEAL, b"", slot % _U32)
        if self._held >= self.config.max_conceal:
            self._playing = False
            self._held = 0
            self._underruns += 1
            return SILENCE
        self._held += 1  # hold: the packet is probably late, not lost
        self._concealed += 1
        return Playout(Action.CONCEAL, b"", slot % _U32)

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

    def _adapt(self) -> None:
        """Skip one frame when the buffer stayed deeper than the target for a whole window."""
        depth = self.depth
        self._window_min = min(self._window_min, depth)
        self._window_pops += 1
        if self._window_pops < self.config.shrink_window:
            return
        if self._window_min > self.target_depth and not self._stopped:
            assert self._next is not None
            if self._packets.pop(self._next, None) is not None:
                self._dropped += 1
            self._advance()
        self._window_pops = 0
        self._window_min = math.inf
