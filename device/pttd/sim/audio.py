"""Simulated audio hardware: a clocked source (a microphone playing a known signal) and a recording
sink (a speaker that remembers what it played). Shipped in the package for ``pttd demo``, the
benchmarks and the tests; they need no sound card and no PortAudio.

Both keep time the way a sound card does, on a thread of their own: deadlines are computed from
the start time and the frame count (``t0 + k * period``), never by adding sleeps, so the pacing
does not drift. If the thread falls behind (a loaded machine), it catches up by producing the late
frames back to back, as a device's buffer would; more than :data:`MAX_LAG` behind, it gives up on
the lost time and starts counting again from now (counted in ``clock_resets``).

With ``paced=False`` both run as fast as their consumer allows, for CPU measurements: the source
posts the next frame only once the loop has taken the previous one, the sink pulls back to back.

Signals (mono int16 numpy arrays) come from :func:`sine`, :func:`silence`, :func:`impulse` or
:func:`read_wav`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import wave
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from pttd.errors import AudioError
from pttd.radio.audio import FrameHandler, Pcm, PullFn, to_pcm
from pttd.radio.audio.resample import resample

log = logging.getLogger(__name__)

AtEnd = Literal["loop", "silence"]
"""What a :class:`ClockedSource` captures past the end of its signal."""

MAX_LAG = 0.5
"""Seconds a clock thread may fall behind before it stops catching up and restarts its count."""

FULL_SCALE = 32767


# --- signals --------------------------------------------------------------------------------


def _to_pcm(x: npt.NDArray[np.float64]) -> Pcm:
    """Floats in [-1, 1] to int16 (rounded, clipped)."""
    return np.clip(np.rint(x * FULL_SCALE), -FULL_SCALE, FULL_SCALE).astype(np.int16)


def _count(seconds: float, sample_rate: int) -> int:
    if seconds < 0:
        raise ValueError(f"a signal cannot last {seconds} s")
    return round(seconds * sample_rate)


def sine(
    freq_hz: float, seconds: float, *, sample_rate: int = 48000, amplitude: float = 0.5
) -> Pcm:
    """A sine of ``freq_hz`` at ``amplitude`` (1.0 = full scale), starting at phase 0."""
    n = np.arange(_count(seconds, sample_rate))
    return _to_pcm(amplitude * np.sin(2.0 * np.pi * freq_hz * n / sample_rate))


def silence(seconds: float, *, sample_rate: int = 48000) -> Pcm:
    return np.zeros(_count(seconds, sample_rate), dtype=np.int16)


def impulse(
    at: float,
    seconds: float,
    *,
    sample_rate: int = 48000,
    amplitude: float = 1.0,
    width: int = 1,
) -> Pcm:
    """Silence with one click of ``width`` samples at ``amplitude`` starting ``at`` seconds in
    (sample ``round(at * sample_rate)``), for latency measurements: find when the click was
    captured with :meth:`ClockedSource.time_of` and when it was played with
    :meth:`RecordingSink.first_above`. A codec smears a one-sample click; give it some ``width``
    (a few milliseconds) when the signal goes through Opus.
    """
    x = silence(seconds, sample_rate=sample_rate)
    start = _count(at, sample_rate)
    if start >= len(x):
        raise ValueError(f"the impulse at {at} s is past the end of the {seconds} s signal")
    x[start : start + width] = _to_pcm(np.array([amplitude]))[0]
    return x


def read_wav(path: str | Path, *, sample_rate: int) -> Pcm:
    """A 16-bit PCM WAV file as mono int16 at ``sample_rate``.

    Several channels are averaged into one; another rate is converted with
    :func:`pttd.radio.audio.resample.resample`.

    :raises AudioError: if the file is not 16-bit PCM WAV.
    """
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            if width != 2:
                raise AudioError(f"{path}: {8 * width}-bit samples; only 16-bit WAV is supported")
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioError(f"{path}: not a PCM WAV file ({exc})") from exc
    x = np.frombuffer(raw, dtype="<i2").astype(np.int16)
    if channels > 1:
        x = to_pcm(x.reshape(-1, channels).mean(axis=1))
    return x if rate == sample_rate else to_pcm(resample(x, rate, sample_rate))


# --- source ---------------------------------------------------------------------------------


class ClockedSource:
    """A simulated microphone, implementing :class:`~pttd.radio.audio.AudioInput`.

    While open, a thread of its own captures ``signal`` in real time: it posts one frame per
    frame period to the asyncio loop (``call_soon_threadsafe``), each with the time of its first
    sample. As with a sound card, a frame is handed over when its last sample has been captured,
    one period after its first.

    ``position`` is the index in ``signal`` of the next sample to capture. It counts on past the
    end of the signal, where the source captures silence or, with ``at_end="loop"``, the signal
    again. Each :meth:`open` continues from ``position``, the sample after the last frame
    delivered (consecutive presses hear one continuous signal), or starts again at 0 with
    ``restart_on_open=True`` (what a latency measurement wants: the impulse comes a known time
    after the open).

    ``capture_times`` records, for each delivered frame, the position of its first sample and
    the monotonic time it was captured (the last ``keep_times`` frames). :meth:`open` and
    :meth:`close` must be called on the loop's thread.
    """

    def __init__(
        self,
        signal: Pcm,
        *,
        sample_rate: int = 48000,
        frame_samples: int = 960,
        at_end: AtEnd = "silence",
        restart_on_open: bool = False,
        paced: bool = True,
        keep_times: int = 100_000,
    ) -> None:
        if signal.ndim != 1 or signal.dtype != np.int16:
            raise ValueError("the signal must be a 1-D int16 array (mono)")
        if at_end not in ("loop", "silence"):
            raise ValueError(f"at_end must be 'loop' or 'silence', not {at_end!r}")
        self.signal = signal
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples
        self.at_end: AtEnd = at_end
        self.restart_on_open = restart_on_open
        self.paced = paced
        self.position = 0
        self.frames_delivered = 0
        self.clock_resets = 0
        self.capture_times: deque[tuple[int, float]] = deque(maxlen=keep_times)
        self._deliver: FrameHandler | None = None
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def from_wav(
        cls,
        path: str | Path,
        *,
        sample_rate: int = 48000,
        frame_samples: int = 960,
        at_end: AtEnd = "silence",
        restart_on_open: bool = False,
        paced: bool = True,
    ) -> ClockedSource:
        """A source playing a WAV file, converted by :func:`read_wav` to mono at ``sample_rate``."""
        return cls(
            read_wav(path, sample_rate=sample_rate),
            sample_rate=sample_rate,
            frame_samples=frame_samples,
            at_end=at_end,
            restart_on_open=restart_on_open,
            paced=paced,
        )

    @property
    def is_open(self) -> bool:
        return self._thread is not None

    @property
    def period(self) -> float:
        """Seconds per frame."""
        return self.frame_samples / self.sample_rate

    def frame_at(self, position: int) -> Pcm:
        """The ``frame_samples`` samples the source captures from ``position`` on."""
        n, length = self.frame_samples, len(self.signal)
        if self.at_end == "loop" and length:
            return self.signal[(position + np.arange(n)) % length]
        frame = np.zeros(n, dtype=np.int16)
        part = self.signal[position : position + n]
        frame[: len(part)] = part
        return frame

    def time_of(self, position: int) -> float | None:
        """When sample ``position`` of the signal was captured (monotonic), from the most recent
        delivered frame that held it; ``None`` if no kept frame did."""
        for start, t in reversed(self.capture_times):
            if start <= position < start + self.frame_samples:
                return t + (position - start) / self.sample_rate
        return None

    def open(self, deliver: FrameHandler) -> None:
        """Start capturing; ``deliver(frame, t)`` runs on this loop, once per frame.

        :raises RuntimeError: if already open, or if not called on a running asyncio loop.
        """
        if self._thread is not None:
            raise RuntimeError("audio input is already open")
        loop = asyncio.get_running_loop()
        if self.restart_on_open:
            self.position = 0
        self._generation += 1
        self._deliver = deliver
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(loop, self._generation, self._stop, threading.Event(), self.position),
            name="pttd-sim-capture",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop capturing and join the thread; no frame is delivered after this returns."""
        thread, self._thread = self._thread, None
        self._generation += 1
        self._deliver = None
        if thread is None:
            return
        self._stop.set()
        thread.join()

    def _run(
        self,
        loop: asyncio.AbstractEventLoop,
        generation: int,
        stop: threading.Event,
        taken: threading.Event,
        position: int,
    ) -> None:
        """The clock thread of one open. Unpaced, ``taken`` is set when the loop has taken the
        last frame posted (or dropped it), and the next is posted only then."""
        period = self.period
        t0 = time.monotonic()
        k = 0
        while True:
            if self.paced:
                deadline = t0 + (k + 1) * period  # frame k is complete one period after it began
                delay = deadline - time.monotonic()
                if delay > 0:
                    if stop.wait(delay):
                        return
                elif stop.is_set():
                    return
                elif -delay > MAX_LAG:
                    self.clock_resets += 1
                    t0, k = time.monotonic() - period, 0
                t = t0 + k * period
            else:
                if k > 0:
                    while not taken.wait(0.05):
                        if stop.is_set():
                            return
                    taken.clear()
                if stop.is_set():
                    return
                t = time.monotonic()
            frame = self.frame_at(position)
            try:
                loop.call_soon_threadsafe(self._on_loop, generation, taken, position, frame, t)
            except RuntimeError:  # the loop is closed
                return
            position += self.frame_samples
            k += 1

    def _on_loop(
        self, generation: int, taken: threading.Event, position: int, frame: Pcm, t: float
    ) -> None:
        try:
            deliver = self._deliver
            if generation != self._generation or deliver is None:
                return  # posted before close(): never deliver it
            self.position = position + self.frame_samples
            self.frames_delivered += 1
            self.capture_times.append((position, t))
            deliver(frame, t)
        finally:
            taken.set()


# --- sink -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlayedBlock:
    """One block the sink played: its first sample's index in the whole recording (counting from
    the first start, across stops), the monotonic time that sample was played, the samples."""

    offset: int
    t: float
    samples: Pcm


class RecordingSink:
    """A simulated speaker, implementing :class:`~pttd.radio.audio.AudioOutput`.

    While started, a thread of its own calls ``pull(frame_samples)`` once per frame period and
    records the block in memory with the time it was played: the moment it was pulled, as by a
    device with no output buffer. Only the last ``keep_seconds`` are kept (``None``: everything;
    a long demo would grow without bound). Like the real output it never lets ``pull`` stop it: a
    failing pull is played as silence, counted in ``pull_errors`` and logged once per start.
    """

    def __init__(
        self,
        *,
        sample_rate: int = 48000,
        frame_samples: int = 960,
        paced: bool = True,
        keep_seconds: float | None = 60.0,
    ) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples
        self.paced = paced
        self.keep_seconds = keep_seconds
        self.blocks = 0
        self.pull_errors = 0
        self.clock_resets = 0
        self._played: deque[PlayedBlock] = deque()
        self._kept_samples = 0
        self._offset = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def is_running(self) -> bool:
        return self._thread is not None

    @property
    def period(self) -> float:
        """Seconds per block."""
        return self.frame_samples / self.sample_rate

    def start(self, pull: PullFn) -> None:
        """Start the clock thread, playing whatever ``pull`` returns.

        :raises RuntimeError: if already started.
        """
        if self._thread is not None:
            raise RuntimeError("audio output is already started")
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(pull, self._stop), name="pttd-sim-playback", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the clock thread and join it. Stopping a stopped sink does nothing."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join()

    def played(self) -> list[PlayedBlock]:
        """The kept blocks, oldest first."""
        with self._lock:
            return list(self._played)

    def recording(self) -> Pcm:
        """The kept samples, in order, as one array (starting at ``played()[0].offset``)."""
        blocks = self.played()
        if not blocks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([b.samples for b in blocks])

    def clear(self) -> None:
        """Forget what was played so far (offsets go on counting)."""
        with self._lock:
            self._played.clear()
            self._kept_samples = 0

    def first_above(self, threshold: int, *, since: float | None = None) -> float | None:
        """The monotonic time the first kept sample with ``abs(sample) >= threshold`` was played
        (at or after ``since``, if given); ``None`` if there is none: when an impulse left the
        speaker."""
        rate = self.sample_rate
        for b in self.played():
            if since is not None and b.t + len(b.samples) / rate <= since:
                continue
            loud = np.abs(b.samples.astype(np.int32)) >= threshold
            if since is not None:
                loud &= b.t + np.arange(len(b.samples)) / rate >= since
            hits = np.flatnonzero(loud)
            if hits.size:
                return b.t + int(hits[0]) / rate
        return None

    def _run(self, pull: PullFn, stop: threading.Event) -> None:
        period = self.period
        t0 = time.monotonic()
        k = 0
        logged = False
        while True:
            if self.paced:
                deadline = t0 + k * period
                delay = deadline - time.monotonic()
                if delay > 0:
                    if stop.wait(delay):
                        return
                elif stop.is_set():
                    return
                elif -delay > MAX_LAG:
                    self.clock_resets += 1
                    t0, k = time.monotonic(), 0
                    deadline = t0
                t = deadline
            else:
                if stop.is_set():
                    return
                t = time.monotonic()
            try:
                block = pull(self.frame_samples)
                if block.shape != (self.frame_samples,) or block.dtype != np.int16:
                    raise ValueError(
                        f"pull({self.frame_samples}) returned {block.dtype} samples of shape "
                        f"{block.shape}"
                    )
                block = block.copy()
            except Exception:
                block = np.zeros(self.frame_samples, dtype=np.int16)
                self.pull_errors += 1
                if not logged:
                    logged = True
                    log.exception("simulated playback: pull failed; playing silence (logged once)")
            self._record(t, block)
            k += 1

    def _record(self, t: float, block: Pcm) -> None:
        with self._lock:
            self._played.append(PlayedBlock(self._offset, t, block))
            self._offset += len(block)
            self._kept_samples += len(block)
            self.blocks += 1
            if self.keep_seconds is not None:
                keep = self.keep_seconds * self.sample_rate
                while self._played and self._kept_samples - len(self._played[0].samples) >= keep:
                    self._kept_samples -= len(self._played.popleft().samples)
