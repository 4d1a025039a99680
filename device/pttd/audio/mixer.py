"""The receive side's mixer: what the audio output plays.

The asyncio thread tells the mixer about streams and packets (:meth:`Mixer.start_stream`,
:meth:`Mixer.push_packet`, :meth:`Mixer.stop_stream`) and tones (:meth:`Mixer.play`); the output's
thread calls :meth:`Mixer.pull` for blocks of samples. Each stream is a :class:`JitterBuffer` and a
:class:`Decoder`; ``pull`` pops each stream once per packet duration, decodes, recovers or conceals,
mixes the streams (unless muted: simplex, the device is transmitting), applies the volume, adds any
queued tone (tones play even while muted) and saturates to int16.

Threads: calls from the asyncio thread only append to an inbox under a lock (no decoding, no
waiting); ``pull`` swaps the inbox out under the same lock and does all the work on the audio
thread, so the jitter buffers and decoders are touched by one thread only and the lock is never
held for more than a few assignments. Counters are published as an immutable :class:`MixerStats`
snapshot after every ``pull``.

Volume: 0 is silent; 1…100 map linearly in decibels from :data:`MIN_GAIN_DB` to
:data:`MAX_GAIN_DB` (87 is about unity). Tones follow the volume but are held between
:data:`TONE_MIN_GAIN_DB` and 0 dB, so a busy tone is heard even with the volume turned right down.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeAlias

import numpy as np

from pttd.audio import Pcm
from pttd.audio.codec import Decoder
from pttd.audio.jitter import Action, JitterBuffer, JitterConfig, JitterStats
from pttd.errors import AudioConfigError, CodecError
from pttd.protocol import MAX_U32, CodecHeader

__all__ = [
    "DEFAULT_VOLUME",
    "MAX_GAIN_DB",
    "MIN_GAIN_DB",
    "TONE_MIN_GAIN_DB",
    "Mixer",
    "MixerStats",
    "volume_to_db",
]

MIN_GAIN_DB: Final = -40.0  # volume 1
MAX_GAIN_DB: Final = 6.0  # volume 100
TONE_MIN_GAIN_DB: Final = -20.0
DEFAULT_VOLUME: Final = 80
MAX_INBOX: Final = 2000  # packets waiting for pull(); beyond this (no output running) drop
IDLE_TIMEOUT: Final = 10.0  # seconds without a packet before a stream is treated as stopped


def volume_to_db(volume: int) -> float:
    """The gain in dB for ``volume`` 1…100 (``-inf`` for 0)."""
    if volume <= 0:
        return float("-inf")
    v = min(volume, 100)
    return MIN_GAIN_DB + (MAX_GAIN_DB - MIN_GAIN_DB) * (v - 1) / 99


def _db_to_linear(db: float) -> float:
    return 0.0 if db == float("-inf") else float(10.0 ** (db / 20.0))


@dataclass(frozen=True, slots=True)
class MixerStats:
    """Counters over every stream the mixer has played, active or gone."""

    streams: int = 0
    received: int = 0
    played: int = 0
    late: int = 0
    duplicates: int = 0
    concealed: int = 0
    recovered: int = 0
    underruns: int = 0
    dropped: int = 0
    decode_errors: int = 0
    per_stream: Mapping[int, JitterStats] = field(default_factory=dict)


class _Fifo:
    """A growable int16 sample queue (audio thread only)."""

    def __init__(self, capacity: int) -> None:
        self._buf = np.zeros(max(capacity, 1), np.int16)
        self._start = 0
        self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    def write(self, samples: Pcm) -> None:
        n = samples.shape[0]
        if self._end + n > self._buf.shape[0]:
            live = self._end - self._start
            if live + n > self._buf.shape[0]:
                bigger = np.zeros(max(2 * self._buf.shape[0], live + n), np.int16)
                bigger[:live] = self._buf[self._start : self._end]
                self._buf = bigger
            else:
                self._buf[:live] = self._buf[self._start : self._end]
            self._start, self._end = 0, live
        self._buf[self._end : self._end + n] = samples
        self._end += n

    def write_zeros(self, n: int) -> None:
        self.write(np.zeros(n, np.int16))

    def read(self, n: int) -> Pcm:
        """Up to ``n`` samples (fewer when fewer are queued)."""
        k = min(n, len(self))
        out = self._buf[self._start : self._start + k].copy()
        self._start += k
        if self._start == self._end:
            self._start = self._end = 0
        return out


class _Stream:
    """One incoming stream's state (audio thread only)."""

    def __init__(self, jitter: JitterBuffer, decoder: Decoder, packet_samples: int) -> None:
        self.jitter = jitter
        self.decoder = decoder
        self.packet_samples = packet_samples
        self.fifo = _Fifo(4 * packet_samples)
        self.decode_errors = 0
        self.last_arrival: float | None = None


@dataclass(frozen=True, slots=True)
class _Start:
    stream_id: int
    stream: _Stream
    now: float


@dataclass(frozen=True, slots=True)
class _Packet:
    stream_id: int
    packet_id: int
    payload: bytes
    now: float


@dataclass(frozen=True, slots=True)
class _Stop:
    stream_id: int


@dataclass(frozen=True, slots=True)
class _Tone:
    samples: Pcm


_Command: TypeAlias = _Start | _Packet | _Stop | _Tone


class Mixer:
    """Mixes the incoming streams and the tones into the output's blocks (see module doc).

    ``frame_samples`` is the output's usual block size, which sizes the buffers; :meth:`pull`
    takes any ``n``. ``clock`` gives the time for the jitter buffers' decisions inside
    :meth:`pull` (and for ``idle_timeout``: a stream with no packet for that long is treated as
    stopped, in case its ``on_stream_stop`` never comes); arrival times come with the packets.
    """

    def __init__(
        self,
        output_rate: int,
        frame_samples: int,
        *,
        jitter: JitterConfig | None = None,
        volume: int = DEFAULT_VOLUME,
        clock: Callable[[], float] = time.monotonic,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        if output_rate <= 0:
            raise AudioConfigError(f"output_rate: {output_rate} is not a sample rate")
        if frame_samples <= 0:
            raise AudioConfigError(f"frame_samples: {frame_samples} is not a block size")
        self.output_rate = output_rate
        self.frame_samples = frame_samples
        self.jitter_config = jitter if jitter is not None else JitterConfig()
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._lock = threading.Lock()
        # Shared with the asyncio thread, under _lock:
        self._inbox: list[_Command] = []
        self._inbox_packets = 0
        self._overflow = 0
        self._volume = 0
        self._gain = 0.0
        self._tone_gain = 0.0
        self._muted = False
        self._stats = MixerStats()
        # The audio thread's own:
        self._streams: dict[int, _Stream] = {}
        self._tones = _Fifo(frame_samples)
        self._gone: Counter[str] = Counter()  # totals of the streams already dropped
        self.set_volume(volume)

    # ------------------------------------------------------------------ asyncio thread

    def start_stream(self, stream_id: int, codec_header: CodecHeader, now: float) -> None:
        """A stream starts (``on_stream_start``); replaces any stream with the same id."""
        packet_ms = codec_header.packet_duration_ms
        stream = _Stream(
            JitterBuffer(packet_ms, self.jitter_config),
            Decoder(self.output_rate),
            self.output_rate * packet_ms // 1000,
        )
        with self._lock:
            self._inbox.append(_Start(stream_id, stream, now))

    def push_packet(self, stream_id: int, packet_id: int, payload: bytes, now: float) -> None:
        """A packet of a stream arrived at ``now`` (monotonic seconds)."""
        if not 0 <= packet_id <= MAX_U32:
            raise ValueError(f"packet_id {packet_id} is not a u32")
        with self._lock:
            if self._inbox_packets >= MAX_INBOX:
                self._overflow += 1
                return
            self._inbox_packets += 1
            self._inbox.append(_Packet(stream_id, packet_id, payload, now))

    def stop_stream(self, stream_id: int) -> None:
        """A stream ended (``on_stream_stop``): what is buffered plays out, then it is dropped."""
        with self._lock:
            self._inbox.append(_Stop(stream_id))

    def play(self, tone: Pcm) -> None:
        """Queue a tone (mono int16 at ``output_rate``) after any tone already queued."""
        if tone.dtype != np.int16 or tone.ndim != 1:
            raise ValueError(f"a tone must be mono int16 samples, not {tone.shape} {tone.dtype}")
        with self._lock:
            self._inbox.append(_Tone(tone))

    def set_muted(self, muted: bool) -> None:
        """Mute received audio (while transmitting); tones still play."""
        with self._lock:
            self._muted = bool(muted)

    @property
    def muted(self) -> bool:
        return self._muted

    def set_volume(self, volume: int) -> None:
        """Set the volume, 0 (silent) to 100; values outside are clamped."""
        v = max(0, min(100, int(volume)))
        db = volume_to_db(v)
        tone_db = min(0.0, max(TONE_MIN_GAIN_DB, db))
        with self._lock:
            self._volume = v
            self._gain = _db_to_linear(db)
            self._tone_gain = _db_to_linear(tone_db)

    @property
    def volume(self) -> int:
        return self._volume

    @property
    def stats(self) -> MixerStats:
        """The counters as of the last :meth:`pull`."""
        with self._lock:
            return self._stats

    # ------------------------------------------------------------------ audio thread

    def pull(self, n: int) -> Pcm:
        """Exactly ``n`` samples of output (silence when idle); never blocks on the asyncio side."""
        now = self._clock()
        with self._lock:
            inbox, self._inbox = self._inbox, []
            self._inbox_packets = 0
            overflow = self._overflow
            gain, tone_gain, muted = self._gain, self._tone_gain, self._muted
        for command in inbox:
            self._apply(command)
        mix = np.zeros(n, np.float32)
        for stream_id, stream in list(self._streams.items()):
            block = self._fill(stream, n, now)
            if not muted:
                mix += block
            if stream.jitter.finished and len(stream.fifo) == 0:
                self._retire(stream_id)
        mix *= np.float32(gain)
        if len(self._tones):
            tone = self._tones.read(n)
            mix[: tone.shape[0]] += tone.astype(np.float32) * np.float32(tone_gain)
        out: Pcm = np.clip(np.rint(mix), -32768, 32767).astype(np.int16)
        stats = self._snapshot(overflow)
        with self._lock:
            self._stats = stats
        return out

    def _apply(self, command: _Command) -> None:
        if isinstance(command, _Packet):
            stream = self._streams.get(command.stream_id)
            if stream is None:
                self._gone["dropped"] += 1
                return
            stream.jitter.push(command.packet_id, command.payload, command.now)
            stream.last_arrival = command.now
        elif isinstance(command, _Start):
            if command.stream_id in self._streams:
                self._retire(command.stream_id)
            command.stream.last_arrival = command.now
            self._streams[command.stream_id] = command.stream
        elif isinstance(command, _Stop):
            stopping = self._streams.get(command.stream_id)
            if stopping is not None:
                stopping.jitter.stop()
        else:
            self._tones.write(command.samples)

    def _fill(self, stream: _Stream, n: int, now: float) -> Pcm:
        """The stream's next ``n`` samples, popping and decoding whole packets as needed."""
        if (
            stream.last_arrival is not None
            and now - stream.last_arrival > self.idle_timeout
            and not stream.jitter.finished
        ):
            stream.jitter.stop()
        while len(stream.fifo) < n:
            playout = stream.jitter.pop(now)
            if playout.action is Action.SILENCE:
                stream.fifo.write_zeros(n - len(stream.fifo))
                break
            pcm = self._decode(stream, playout.action, playout.payload)
            if pcm.shape[0] == 0:
                pcm = np.zeros(stream.packet_samples, np.int16)
            stream.fifo.write(pcm)
        return stream.fifo.read(n)

    @staticmethod
    def _decode(stream: _Stream, action: Action, payload: bytes) -> Pcm:
        decoder = stream.decoder
        try:
            if action is Action.PLAY:
                return decoder.decode(payload)
            if action is Action.RECOVER_FEC:
                return decoder.decode_fec(payload, stream.packet_samples)
            return decoder.conceal(stream.packet_samples)
        except CodecError:
            stream.decode_errors += 1
        try:
            return decoder.conceal(stream.packet_samples)
        except CodecError:
            return np.zeros(stream.packet_samples, np.int16)

    def _retire(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id)
        self._gone.update(_counters(stream.jitter.stats(), stream.decode_errors))

    def _snapshot(self, overflow: int) -> MixerStats:
        per: dict[int, JitterStats] = {}
        total = Counter(self._gone)
        for stream_id, stream in self._streams.items():
            per[stream_id] = stats = stream.jitter.stats()
            total.update(_counters(stats, stream.decode_errors))
        return MixerStats(
            streams=len(per),
            received=total["received"],
            played=total["played"],
            late=total["late"],
            duplicates=total["duplicates"],
            concealed=total["concealed"],
            recovered=total["recovered"],
            underruns=total["underruns"],
            dropped=total["dropped"] + overflow,
            decode_errors=total["decode_errors"],
            per_stream=MappingProxyType(per),
        )


def _counters(s: JitterStats, decode_errors: int) -> dict[str, int]:
    return {
        "received": s.received,
        "played": s.played,
        "late": s.late,
        "duplicates": s.duplicates,
        "concealed": s.concealed,
        "recovered": s.recovered_fec,
        "underruns": s.underruns,
        "dropped": s.dropped,
        "decode_errors": decode_errors,
    }
