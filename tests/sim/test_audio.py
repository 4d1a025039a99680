"""The simulated clocked source and recording sink (pttd.sim.audio) and its signals.

Real time is involved, so assertions are on frame counts, lower bounds of elapsed time and the
spacing of the recorded timestamps; never on an upper bound of wall-clock time.
"""

from __future__ import annotations

import asyncio
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from waits import eventually

from pttd.errors import AudioError
from pttd.radio.audio import AudioInput, AudioOutput, Pcm
from pttd.sim.audio import (
    ClockedSource,
    RecordingSink,
    impulse,
    read_wav,
    silence,
    sine,
)

RATE = 48000
FRAME = 960
PERIOD = FRAME / RATE  # 20 ms


def capture_threads() -> set[threading.Thread]:
    """Simulated sources' clock threads that are running."""
    return {t for t in threading.enumerate() if t.name == "pttd-sim-capture" and t.is_alive()}


class Collector:
    """A FrameHandler that keeps what it gets and can wait for a number of frames."""

    def __init__(self) -> None:
        self.frames: list[Pcm] = []
        self.times: list[float] = []
        self.arrivals: list[float] = []
        self.threads: set[int] = set()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __call__(self, frame: Pcm, t: float) -> None:
        self.frames.append(frame)
        self.times.append(t)
        self.arrivals.append(time.monotonic())
        self.threads.add(threading.get_ident())
        for n, fut in self._waiters:
            if len(self.frames) >= n and not fut.done():
                fut.set_result(None)

    async def wait_for(self, n: int, timeout: float = 10.0) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        if len(self.frames) >= n:
            fut.set_result(None)
        await asyncio.wait_for(fut, timeout)

    def samples(self) -> Pcm:
        return np.concatenate(self.frames)


def ramp(n: int) -> Pcm:
    return (np.arange(n) % 30000).astype(np.int16)


# --- signals ----------------------------------------------------------------------------------


def test_signals() -> None:
    s = sine(1000, 0.01, sample_rate=RATE, amplitude=0.5)
    assert s.dtype == np.int16 and len(s) == 480
    assert s[0] == 0 and abs(int(s.max()) - 16384) <= 1
    assert not silence(0.02, sample_rate=RATE).any()
    x = impulse(0.1, 0.5, sample_rate=RATE, amplitude=0.8, width=3)
    assert len(x) == 24000
    assert np.flatnonzero(x).tolist() == [4800, 4801, 4802]
    assert x[4800] == round(0.8 * 32767)
    with pytest.raises(ValueError, match="past the end"):
        impulse(1.0, 0.5)


def write_wav(path: Path, data: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data.astype("<i2" if width == 2 else "u1").tobytes())


def test_read_wav(tmp_path: Path) -> None:
    mono = tmp_path / "mono.wav"
    write_wav(mono, ramp(4800), RATE)
    assert np.array_equal(read_wav(mono, sample_rate=RATE), ramp(4800))
    assert len(read_wav(mono, sample_rate=16000)) == 1600

    stereo = tmp_path / "stereo.wav"
    write_wav(stereo, np.array([[100, 300], [-100, -300]], dtype=np.int16), RATE, channels=2)
    assert read_wav(stereo, sample_rate=RATE).tolist() == [200, -200]

    eight = tmp_path / "eight.wav"
    write_wav(eight, np.array([1, 2, 3]), RATE, width=1)
    with pytest.raises(AudioError, match="8-bit"):
        read_wav(eight, sample_rate=RATE)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav file at all")
    with pytest.raises(AudioError, match="not a PCM WAV"):
        read_wav(junk, sample_rate=RATE)


def test_source_from_wav(tmp_path: Path) -> None:
    path = tmp_path / "speech.wav"
    write_wav(path, ramp(RATE), RATE)
    source = ClockedSource.from_wav(path, sample_rate=RATE, at_end="loop")
    assert np.array_equal(source.signal, ramp(RATE))
    assert source.at_end == "loop"


def test_implements_the_interfaces() -> None:
    source: AudioInput = ClockedSource(silence(1))
    sink: AudioOutput = RecordingSink()
    assert source.frame_samples == sink.frame_samples == FRAME


# --- clocked source ---------------------------------------------------------------------------


async def test_source_is_paced_in_real_time() -> None:
    source = ClockedSource(ramp(RATE), sample_rate=RATE, frame_samples=FRAME)
    got = Collector()
    start = time.monotonic()
    source.open(got)
    await got.wait_for(25)
    elapsed = time.monotonic() - start
    source.close()
    # Frame k is handed over when complete: (k + 1) periods after the open.
    assert elapsed >= 25 * PERIOD * 0.9
    assert got.threads == {threading.get_ident()}  # delivered on the loop thread
    spacing = np.diff(got.times)
    assert (spacing > 0).all()
    assert np.mean(spacing) == pytest.approx(PERIOD, rel=0.01)
    assert got.times[0] >= start - 0.01
    for t, arrived in zip(got.times, got.arrivals, strict=True):
        assert arrived >= t + PERIOD  # handed over once its last sample was captured


async def test_source_delivers_only_while_open() -> None:
    source = ClockedSource(ramp(RATE), sample_rate=RATE, frame_samples=FRAME)
    got = Collector()
    others = capture_threads()
    assert not source.is_open
    source.open(got)
    assert source.is_open
    with pytest.raises(RuntimeError, match="already open"):
        source.open(got)
    await got.wait_for(3)
    source.close()
    assert not source.is_open
    n = len(got.frames)
    # close() joined the clock thread: nothing posts frames any more, and those posted before
    # are dropped when the loop runs them.
    assert capture_threads() <= others
    await asyncio.sleep(0)
    assert len(got.frames) == n
    assert source.frames_delivered == n
    source.close()  # again: nothing


async def test_no_frame_after_close_even_if_already_posted() -> None:
    # Unpaced, the thread posts as fast as the loop takes frames; close() right after a frame
    # arrives, while the next one is likely posted already.
    source = ClockedSource(ramp(RATE), sample_rate=RATE, frame_samples=FRAME, paced=False)
    got = Collector()
    others = capture_threads()
    for _ in range(20):
        source.open(got)
        await got.wait_for(len(got.frames) + 1)
        source.close()
        n = len(got.frames)
        assert capture_threads() <= others  # joined: what it posted is all there is
        await asyncio.sleep(0)  # the loop runs what was posted: dropped
        assert len(got.frames) == n


async def test_consecutive_opens_continue_the_signal() -> None:
    signal = ramp(RATE)
    source = ClockedSource(signal, sample_rate=RATE, frame_samples=FRAME)
    got = Collector()
    for _ in range(3):
        source.open(got)
        await got.wait_for(len(got.frames) + 2)
        source.close()
        # Real time passes between presses (the source's clock is the real one); the signal
        # waits for the next opening.
        await asyncio.sleep(2 * PERIOD)
    captured = got.samples()
    assert np.array_equal(captured, signal[: len(captured)])
    assert source.position == len(captured)
    positions = [p for p, _ in source.capture_times]
    assert positions == list(range(0, len(captured), FRAME))


async def test_restart_on_open() -> None:
    signal = ramp(RATE)
    source = ClockedSource(signal, sample_rate=RATE, frame_samples=FRAME, restart_on_open=True)
    got = Collector()
    source.open(got)
    await got.wait_for(2)
    source.close()
    first = len(got.frames)
    source.open(got)
    await got.wait_for(first + 2)
    source.close()
    assert np.array_equal(got.frames[first], signal[:FRAME])


@pytest.mark.parametrize("at_end", ["loop", "silence"])
async def test_end_of_signal(at_end: str) -> None:
    signal = ramp(FRAME + FRAME // 2)  # one and a half frames
    source = ClockedSource(signal, frame_samples=FRAME, at_end=at_end, paced=False)  # type: ignore[arg-type]
    got = Collector()
    source.open(got)
    await got.wait_for(4)
    source.close()
    captured = got.samples()[: 4 * FRAME]
    if at_end == "loop":
        assert np.array_equal(captured, np.tile(signal, 3)[: 4 * FRAME])
    else:
        assert np.array_equal(captured[: len(signal)], signal)
        assert not captured[len(signal) :].any()


def test_source_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="1-D int16"):
        ClockedSource(np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError, match="at_end"):
        ClockedSource(silence(1), at_end="stop")  # type: ignore[arg-type]


def test_source_open_needs_a_running_loop() -> None:
    source = ClockedSource(silence(1))
    with pytest.raises(RuntimeError):
        source.open(lambda frame, t: None)
    assert not source.is_open


async def test_unpaced_source_keeps_up_with_the_consumer() -> None:
    source = ClockedSource(ramp(10 * RATE), sample_rate=RATE, frame_samples=FRAME, paced=False)
    got = Collector()
    source.open(got)
    await got.wait_for(200)  # 4 s of audio; no wall-clock assertion
    source.close()
    assert np.array_equal(got.samples()[: 200 * FRAME], ramp(10 * RATE)[: 200 * FRAME])


# --- recording sink ---------------------------------------------------------------------------


def test_sink_is_paced_and_records_what_it_pulled() -> None:
    sink = RecordingSink(sample_rate=RATE, frame_samples=FRAME)
    signal = ramp(10 * RATE)
    pos = 0
    threads: set[int] = set()
    enough = threading.Event()

    def pull(n: int) -> Pcm:
        nonlocal pos
        threads.add(threading.get_ident())
        block = signal[pos : pos + n]
        pos += n
        if pos >= 26 * n:
            enough.set()
        return block

    start = time.monotonic()
    sink.start(pull)
    assert sink.is_running
    with pytest.raises(RuntimeError, match="already started"):
        sink.start(pull)
    assert enough.wait(10)
    sink.stop()
    elapsed = time.monotonic() - start
    assert not sink.is_running
    assert threading.get_ident() not in threads and len(threads) == 1
    # Block k is pulled k periods after the start: block 25 at 0.5 s.
    assert elapsed >= 25 * PERIOD * 0.9
    played = sink.played()
    assert len(played) == sink.blocks
    recording = sink.recording()
    assert np.array_equal(recording, signal[: len(recording)])
    spacing = np.diff([b.t for b in played])
    assert (spacing > 0).all()
    assert np.mean(spacing) == pytest.approx(PERIOD, rel=0.01)
    assert [b.offset for b in played] == list(range(0, len(recording), FRAME))
    # Stopped means stopped: stop() joined the one thread that plays.
    assert not any(t.name == "pttd-sim-playback" for t in threading.enumerate())


def test_sink_plays_silence_when_pull_fails(caplog: pytest.LogCaptureFixture) -> None:
    sink = RecordingSink(sample_rate=RATE, frame_samples=FRAME, paced=False)
    calls = 0
    enough = threading.Event()

    def pull(n: int) -> Pcm:
        nonlocal calls
        calls += 1
        if calls >= 10:
            enough.set()
        if calls % 2:
            raise RuntimeError("no")
        return np.full(n, 5, dtype=np.int16)

    sink.start(pull)
    assert enough.wait(10)
    sink.stop()
    blocks = sink.played()
    assert not blocks[0].samples.any() and (blocks[1].samples == 5).all()
    assert sink.pull_errors == (sink.blocks + 1) // 2
    assert sum("pull failed" in r.getMessage() for r in caplog.records) == 1


def test_sink_keeps_only_the_last_seconds() -> None:
    sink = RecordingSink(sample_rate=RATE, frame_samples=FRAME, paced=False, keep_seconds=0.1)
    calls = 0
    enough = threading.Event()

    def pull(n: int) -> Pcm:
        nonlocal calls
        calls += 1
        if calls >= 50:
            enough.set()
        return np.ones(n, dtype=np.int16)

    sink.start(pull)
    assert enough.wait(10)
    sink.stop()
    played = sink.played()
    assert len(played) == 5  # 0.1 s of 20 ms blocks
    assert played[-1].offset == (sink.blocks - 1) * FRAME
    sink.clear()
    assert sink.played() == [] and len(sink.recording()) == 0


async def test_impulse_from_source_to_sink() -> None:
    """Latency measurement, end to end through a loopback: the source's frames go straight
    into a queue the sink pulls from."""
    at = 0.1
    source = ClockedSource(
        impulse(at, 1.0, sample_rate=RATE), sample_rate=RATE, restart_on_open=True
    )
    sink = RecordingSink(sample_rate=RATE)
    queue: list[Pcm] = []
    lock = threading.Lock()

    def pull(n: int) -> Pcm:
        with lock:
            return queue.pop(0) if queue else np.zeros(n, dtype=np.int16)

    def deliver(frame: Pcm, t: float) -> None:
        with lock:
            queue.append(frame)

    sink.start(pull)
    source.open(deliver)
    opened = time.monotonic()
    await eventually(lambda: sink.first_above(16000) is not None, what="the impulse played")
    played = sink.first_above(16000)
    source.close()
    sink.stop()
    captured = source.time_of(round(at * RATE))
    assert captured is not None and played is not None
    assert captured >= opened - 0.01
    # Played no sooner than captured: one period to complete the frame, at most one more to be
    # pulled. No upper bound asserted (the machine may be loaded).
    assert played - captured >= PERIOD * 0.9
    assert sink.first_above(16000, since=played + 0.001) is None
    assert sink.first_above(16000, since=played) == pytest.approx(played)
    assert source.time_of(10 * RATE) is None  # never captured
