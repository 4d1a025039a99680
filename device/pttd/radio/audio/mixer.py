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
held for more than a few assignments. Counters are not published after each ``pull``:
:attr:`Mixer.stats` builds the immutable :class:`MixerStats` snapshot from the streams' counters
when it is read (rarely: the console, the demo, the benchmarks), under a second lock that ``pull``
holds while it works, so the snapshot is always that of the state between two pulls. The audio
thread pays one uncontended lock per pull for that, instead of building snapshot objects every
pull (about a fifth of the mixer's own cost); it waits only if a snapshot is being built.

Cost (the receive path runs for every packet): ``pull`` allocates only the block it returns. A
block that is exactly one packet (the usual case: the output's period is the packet duration)
goes from libopus's output buffer straight into the gain stage, a float32 scratch buffer, with no
copy through the stream's sample FIFO. One stream with no tone and not muted (one talker: the
usual case again) takes a short path: its block is gained in one pass (``0 + x`` is ``x``, so the
result is bit for bit that of summing into zeros first) and saturated only when the gain is
above 1, since below that it cannot leave the int16 range.

Volume: 0 is silent; 1…100 map linearly in decibels from :data:`MIN_GAIN_DB` to
:data:`MAX_GAIN_DB` (87 is about unity). Tones follow the volume but are held between
:data:`TONE_MIN_GAIN_DB` and 0 dB, so a busy tone is heard even with the volume turned right down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeAlias

import numpy as np

from pttd.errors import AudioConfigError, CodecError
from pttd.radio.audio import Pcm
from pttd.radio.audio.codec import Decoder
from pttd.radio.audio.jitter import Action, JitterBuffer, JitterConfig, JitterStats, StatsValues
from pttd.wire.messages import MAX_U32, CodecHeader

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
    """A growable int16 sample queue (audio thread only): samples ``start:end`` of a buffer.

    ``start`` and ``end`` are for reading only (``end - start`` is ``len()`` without a call).
    """

    __slots__ = ("_buf", "end", "start")

    def __init__(self, capacity: int) -> None:
        self._buf = np.zeros(max(capacity, 1), np.int16)
        self.start = 0
        self.end = 0

    def __len__(self) -> int:
        return self.end - self.start

    def _reserve(self, n: int) -> None:
        """Room for ``n`` more samples after ``end``."""
        if self.end + n > self._buf.shape[0]:
            live = self.end - self.start
            if live + n > self._buf.shape[0]:
                bigger = np.zeros(max(2 * self._buf.shape[0], live + n), np.int16)
                bigger[:live] = self._buf[self.start : self.end]
                self._buf = bigger
            else:
                self._buf[:live] = self._buf[self.start : self.end]
            self.start, self.end = 0, live

    def write(self, samples: Pcm) -> None:
        n = samples.shape[0]
        self._reserve(n)
        self._buf[self.end : self.end + n] = samples
        self.end += n

    def write_zeros(self, n: int) -> None:
        self._reserve(n)
        self._buf[self.end : self.end + n] = 0
        self.end += n

    def read(self, n: int) -> Pcm:
        """Up to ``n`` samples (fewer when fewer are queued): a view of the queue's buffer,
        valid until the next write."""
        k = min(n, self.end - self.start)
        out = self._buf[self.start : self.start + k]
        self.start += k
        if self.start == self.end:
            self.start = self.end = 0
        return out


class _Stream:
    """One incoming stream's state (audio thread only)."""

    __slots__ = ("decode_errors", "decoder", "fifo", "jitter", "last_arrival", "packet_samples")

    def __init__(self, jitter: JitterBuffer, decoder: Decoder, packet_samples: int) -> None:
        self.jitter = jitter
        self.decoder = decoder
        self.packet_samples = packet_samples
        self.fifo = _Fifo(4 * packet_samples)
        self.decode_errors = 0
        self.last_arrival: float | None = None


# Commands from the asyncio thread. A packet, the frequent one, is a plain tuple
# (stream_id, packet_id, payload, arrival time): cheaper to build than an object.
_Packet: TypeAlias = tuple[int, int, bytes, float]


@dataclass(frozen=True, slots=True)
class _Start:
    stream_id: int
    stream: _Stream
    now: float


@dataclass(frozen=True, slots=True)
class _Stop:
    stream_id: int


@dataclass(frozen=True, slots=True)
class _Tone:
    samples: Pcm


_Command: TypeAlias = _Packet | _Start | _Stop | _Tone

# The mixer's counters as a tuple, in MixerStats' order: received, played, late, duplicates,
# concealed, recovered, underruns, dropped (the first eight of JitterStats, in its order too),
# then decode_errors.
_Totals: TypeAlias = tuple[int, int, int, int, int, int, int, int, int]
_NO_TOTALS: Final[_Totals] = (0, 0, 0, 0, 0, 0, 0, 0, 0)
_DROPPED: Final = 7
_FLOOR: Final = np.float32(-32768.0)
_CEILING: Final = np.float32(32767.0)


def _add_totals(a: _Totals, b: _Totals) -> _Totals:
    return (
        a[0] + b[0],
        a[1] + b[1],
        a[2] + b[2],
        a[3] + b[3],
        a[4] + b[4],
        a[5] + b[5],
        a[6] + b[6],
        a[7] + b[7],
        a[8] + b[8],
    )


def _stream_totals(counts: StatsValues, decode_errors: int) -> _Totals:
    return (*counts[:8], decode_errors)


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
        self._gain = np.float32(0.0)
        self._boost = False  # _gain > 1: a lone stream can then leave the int16 range
        self._tone_gain = np.float32(0.0)
        self._muted = False
        # Held by pull() while it works, and by the stats property while it reads the streams:
        self._work = threading.Lock()
        self._pulls = 0  # pulls done
        self._overflow_seen = 0  # the inbox overflow as of the last pull
        self._stats_cache = (0, MixerStats())  # (pulls, the snapshot after that many)
        # The audio thread's own:
        self._streams: dict[int, _Stream] = {}
        self._tones = _Fifo(frame_samples)
        self._gone: _Totals = _NO_TOTALS  # totals of the streams already dropped
        self._mix = np.zeros(frame_samples, np.float32)  # scratch: the sum, gained, rounded
        self._tone_mix = np.zeros(frame_samples, np.float32)  # scratch: the tone, gained
        self._zeros = np.zeros(frame_samples, np.int16)  # silence (never written to)
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
            self._inbox.append((stream_id, packet_id, payload, now))

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
        gain = np.float32(_db_to_linear(db))
        tone_gain = np.float32(_db_to_linear(tone_db))
        with self._lock:
            self._volume = v
            self._gain, self._boost = gain, float(gain) > 1.0
            self._tone_gain = tone_gain

    @property
    def volume(self) -> int:
        return self._volume

    @property
    def stats(self) -> MixerStats:
        """The counters as of the last :meth:`pull`.

        Built here, on the reader's thread, from the streams' counters, and kept until the next
        pull. It waits for a pull under way to finish (and a pull waits for it): tens of
        microseconds, and only when read.
        """
        with self._work:
            pulls, stats = self._stats_cache
            if pulls != self._pulls:
                stats = self._snapshot()
                self._stats_cache = (self._pulls, stats)
            return stats

    def _snapshot(self) -> MixerStats:
        """The counters now (with ``_work`` held)."""
        totals = self._gone
        per: dict[int, JitterStats] = {}
        for stream_id, stream in self._streams.items():
            counts = stream.jitter.counts()
            per[stream_id] = JitterStats(*counts)
            totals = _add_totals(totals, _stream_totals(counts, stream.decode_errors))
        return MixerStats(
            streams=len(per),
            received=totals[0],
            played=totals[1],
            late=totals[2],
            duplicates=totals[3],
            concealed=totals[4],
            recovered=totals[5],
            underruns=totals[6],
            dropped=totals[_DROPPED] + self._overflow_seen,
            decode_errors=totals[8],
            per_stream=MappingProxyType(per),
        )

    # ------------------------------------------------------------------ audio thread

    def pull(self, n: int) -> Pcm:
        """Exactly ``n`` samples of output (silence when idle). It never waits for the asyncio
        side's calls, only for a :attr:`stats` snapshot being built, if one is."""
        with self._work:
            self._pulls += 1
            return self._pull(n)

    def _pull(self, n: int) -> Pcm:
        now = self._clock()
        with self._lock:
            inbox, self._inbox = self._inbox, []
            self._inbox_packets = 0
            self._overflow_seen = self._overflow
            gain, boost, tone_gain, muted = self._gain, self._boost, self._tone_gain, self._muted
        streams = self._streams
        for command in inbox:
            if isinstance(command, tuple):  # a packet: the usual command, handled here
                stream_id, packet_id, payload, arrival = command
                stream = streams.get(stream_id)
                if stream is not None:
                    stream.jitter.push(packet_id, payload, arrival)
                    stream.last_arrival = arrival
                    continue
            self._apply(command)
        mix = self._mix
        if mix.shape[0] != n:
            if mix.shape[0] < n:
                self._mix = mix = np.zeros(n, np.float32)
            mix = mix[:n]
        tones = self._tones
        if len(streams) == 1 and not muted and tones.end == tones.start:
            # The usual case, one talker: its block is gained straight into the scratch buffer
            # (no zeroing, no sum: 0 + x is x), rounded, and saturated only if it can overflow.
            ((stream_id, stream),) = streams.items()
            np.multiply(self._fill(stream, n, now), gain, out=mix)
            if stream.jitter.finished and stream.fifo.end == stream.fifo.start:
                self._retire(stream_id)
            np.rint(mix, out=mix)
            if boost:
                np.maximum(mix, _FLOOR, out=mix)
                np.minimum(mix, _CEILING, out=mix)
            one: Pcm = mix.astype(np.int16)
            return one
        # Sum the streams' blocks, then the gain: a lone block is gained straight into the
        # scratch buffer, as above.
        lone: Pcm | None = None
        blocks = 0
        finished: list[int] = []
        for stream_id, stream in streams.items():
            block = self._fill(stream, n, now)  # valid until this stream's next fill
            if not muted:
                if blocks == 0:
                    lone = block
                elif blocks == 1:
                    assert lone is not None
                    np.add(lone, block, out=mix, dtype=np.float32)
                else:
                    np.add(mix, block, out=mix)
                blocks += 1
            if stream.jitter.finished and stream.fifo.end == stream.fifo.start:
                finished.append(stream_id)
        for stream_id in finished:
            self._retire(stream_id)
        # One contribution at a gain <= 1 (a lone stream at up to unity volume, or a tone alone:
        # tones are never boosted) cannot leave the int16 range: no saturation needed.
        saturate = blocks > 1 or (blocks == 1 and boost)
        if blocks == 1:
            assert lone is not None
            np.multiply(lone, gain, out=mix)
        elif blocks:
            np.multiply(mix, gain, out=mix)
        if tones.end != tones.start:
            tone = tones.read(n)
            k = tone.shape[0]
            if self._tone_mix.shape[0] < k:
                self._tone_mix = np.zeros(k, np.float32)
            gained = self._tone_mix[:k]
            np.multiply(tone, tone_gain, out=gained)
            if not blocks:
                mix[k:] = 0
                mix[:k] = gained
            else:
                mix[:k] += gained
                saturate = True
        elif not blocks:
            return np.zeros(n, np.int16)
        np.rint(mix, out=mix)
        if saturate:
            np.maximum(mix, _FLOOR, out=mix)
            np.minimum(mix, _CEILING, out=mix)
        out: Pcm = mix.astype(np.int16)
        return out

    def _apply(self, command: _Command) -> None:
        """A command other than a packet for a live stream (pull handles those)."""
        if isinstance(command, tuple):  # for no live stream: dropped
            gone = self._gone
            self._gone = (*gone[:_DROPPED], gone[_DROPPED] + 1, gone[8])
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

    def _silence(self, n: int) -> Pcm:
        if self._zeros.shape[0] < n:
            self._zeros = np.zeros(n, np.int16)
        return self._zeros[:n]

    def _fill(self, stream: _Stream, n: int, now: float) -> Pcm:
        """The stream's next ``n`` samples, popping and decoding whole packets as needed.

        The block may be a view of the decoder's or the FIFO's buffer, or of shared silence:
        read it before the stream's next fill, never write to it.
        """
        if (
            stream.last_arrival is not None
            and now - stream.last_arrival > self.idle_timeout
            and not stream.jitter.finished
        ):
            stream.jitter.stop()
        fifo = stream.fifo
        queued = fifo.end - fifo.start
        while queued < n:
            action, payload = stream.jitter.pop_action(now)
            if action is Action.SILENCE:
                if not queued:
                    return self._silence(n)
                fifo.write_zeros(n - queued)
                break
            if action is Action.PLAY:  # the usual action: decoded here, one call fewer
                try:
                    pcm = stream.decoder.decode(payload, copy=False)
                except CodecError:
                    pcm = self._decode(stream, Action.CONCEAL, b"", failed=True)
            else:
                pcm = self._decode(stream, action, payload)
            got = pcm.shape[0]
            if got == n and not queued:
                return pcm  # one packet per block: straight from the decoder's buffer
            if not got:
                got = stream.packet_samples
                pcm = np.zeros(got, np.int16)
            fifo.write(pcm)
            queued += got
        return fifo.read(n)

    @staticmethod
    def _decode(stream: _Stream, action: Action, payload: bytes, *, failed: bool = False) -> Pcm:
        """The packet's samples, as a view of the decoder's buffer where it can (see _fill).

        ``failed``: decoding the packet already failed; count it and conceal instead.
        """
        decoder = stream.decoder
        if not failed:
            try:
                if action is Action.PLAY:
                    return decoder.decode(payload, copy=False)
                if action is Action.RECOVER_FEC:
                    return decoder.decode_fec(payload, stream.packet_samples, copy=False)
                return decoder.conceal(stream.packet_samples, copy=False)
            except CodecError:
                pass
        stream.decode_errors += 1
        try:
            return decoder.conceal(stream.packet_samples, copy=False)
        except CodecError:
            return np.zeros(stream.packet_samples, np.int16)

    def _retire(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id)
        counts = _stream_totals(stream.jitter.counts(), stream.decode_errors)
        self._gone = _add_totals(self._gone, counts)
