"""The PortAudio callbacks of the real input and output, called directly (no PortAudio, no stream):
what PortAudio cannot be made to do on demand — overflows, underflows, odd clocks — made up here.
The streams themselves are tested through ALSA in test_sounddevice_io.py."""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from pttd.radio.audio import Pcm
from pttd.radio.audio.capture import SoundDeviceInput, first_sample_time
from pttd.radio.audio.devices import AudioDevice
from pttd.radio.audio.playback import SoundDeviceOutput

RATE = 48000
FRAME = 960
BLOCK = FRAME / RATE
DEVICE = AudioDevice(0, "made up", "ALSA", 1, 1, 48000.0, True, True)


def status(**flags: bool) -> SimpleNamespace:
    return SimpleNamespace(
        input_overflow=flags.get("input_overflow", False),
        output_underflow=flags.get("output_underflow", False),
    )


def times(adc: float, current: float) -> SimpleNamespace:
    return SimpleNamespace(inputBufferAdcTime=adc, currentTime=current, outputBufferDacTime=0.0)


# --- capture time -----------------------------------------------------------------------------


def test_first_sample_time_from_portaudio_clock() -> None:
    # PortAudio says the first sample is 50 ms old; its clock's epoch does not matter.
    t, from_pa = first_sample_time(100.0, FRAME, RATE, adc_time=7.95, current_time=8.0)
    assert from_pa
    assert t == pytest.approx(100.0 - 0.05)


def test_first_sample_is_at_least_a_block_old() -> None:
    # ALSA plugins with no delay (file over null) report adc == current.
    t, from_pa = first_sample_time(100.0, FRAME, RATE, adc_time=8.0, current_time=8.0)
    assert from_pa
    assert t == pytest.approx(100.0 - BLOCK)


@pytest.mark.parametrize(
    ("adc", "current"),
    [(0.0, 0.0), (0.0, 5.0), (5.0, 0.0), (5.0, 4.0), (1.0, 9.0)],
    ids=["no clock", "no adc", "no current", "adc in the future", "absurd lag"],
)
def test_first_sample_time_falls_back_to_block_duration(adc: float, current: float) -> None:
    t, from_pa = first_sample_time(100.0, FRAME, RATE, adc_time=adc, current_time=current)
    assert not from_pa
    assert t == pytest.approx(100.0 - BLOCK)


# --- input callback ---------------------------------------------------------------------------


async def test_input_callback_copies_counts_and_times() -> None:
    source = SoundDeviceInput(DEVICE, sample_rate=RATE, frame_samples=FRAME)
    loop = asyncio.get_running_loop()
    got: list[tuple[Pcm, float]] = []
    # What open() does, minus the stream: a handler and this open's generation.
    source._deliver = lambda frame, t: got.append((frame, t))
    callback = source._make_callback(loop, source._generation)

    indata = np.arange(FRAME, dtype=np.int16).reshape(-1, 1)
    before = time.monotonic()
    callback(indata, FRAME, times(0.0, 0.0), status(input_overflow=True))
    callback(indata, FRAME, times(3.0, 3.04), status())
    indata[:] = 0  # PortAudio reuses its buffer: the frames must be copies
    await asyncio.sleep(0)
    assert source.overflows == 1
    assert source.clock_fallbacks == 1
    assert len(got) == 2 and source.frames_delivered == 2
    (f0, t0), (_, t1) = got
    assert f0.dtype == np.int16 and f0.shape == (FRAME,)
    assert np.array_equal(f0, np.arange(FRAME))
    assert before - BLOCK - 0.5 < t0 <= time.monotonic() - BLOCK
    assert t1 <= time.monotonic() - 0.04


async def test_input_frames_posted_before_close_are_dropped() -> None:
    source = SoundDeviceInput(DEVICE, sample_rate=RATE, frame_samples=FRAME)
    got: list[float] = []
    source._deliver = lambda frame, t: got.append(t)
    callback = source._make_callback(asyncio.get_running_loop(), source._generation)
    callback(np.zeros((FRAME, 1), np.int16), FRAME, times(0, 0), status())  # queued on the loop
    source.close()  # no stream: only the guard
    await asyncio.sleep(0)  # the loop runs what the callback queued: dropped
    assert got == []
    assert not source.is_open


def test_input_callback_survives_a_closed_loop() -> None:
    source = SoundDeviceInput(DEVICE, sample_rate=RATE, frame_samples=FRAME)
    loop = asyncio.new_event_loop()
    callback = source._make_callback(loop, source._generation)
    loop.close()
    callback(np.zeros((FRAME, 1), np.int16), FRAME, times(0, 0), status())  # must not raise


def test_input_open_needs_a_running_loop() -> None:
    source = SoundDeviceInput(DEVICE, sample_rate=RATE, frame_samples=FRAME)
    with pytest.raises(RuntimeError):
        source.open(lambda frame, t: None)
    assert not source.is_open


# --- output callback --------------------------------------------------------------------------


def test_output_callback_copies_pulled_samples() -> None:
    sink = SoundDeviceOutput(DEVICE, sample_rate=RATE, frame_samples=FRAME)
    callback = sink._make_callback(lambda n: np.full(n, 7, dtype=np.int16))
    out = np.ones((FRAME, 1), dtype=np.int16)
    callback(out, FRAME, times(0, 0), status(output_underflow=True))
    callback(out, FRAME, times(0, 0), status())
    assert (out == 7).all()
    assert sink.underflows == 1 and sink.blocks == 2 and sink.pull_errors == 0


@pytest.mark.parametrize(
    "bad_pull",
    [
        lambda n: 1 / 0,
        lambda n: np.zeros(n - 1, dtype=np.int16),
        lambda n: np.zeros(n, dtype=np.float32),
        lambda n: np.zeros((n, 1), dtype=np.int16),
    ],
    ids=["raises", "short", "float", "2-D"],
)
def test_output_callback_plays_silence_when_pull_fails(
    bad_pull: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sink = SoundDeviceOutput(DEVICE, sample_rate=RATE, frame_samples=FRAME)
    callback = sink._make_callback(bad_pull)
    out = np.ones((FRAME, 1), dtype=np.int16)
    with caplog.at_level(logging.ERROR, logger="pttd.radio.audio.playback"):
        for _ in range(3):
            callback(out, FRAME, times(0, 0), status())
    assert not out.any()
    assert sink.pull_errors == 3 and sink.blocks == 3
    assert len(caplog.records) == 1  # logged once, not once per block
    assert "pull failed" in caplog.records[0].getMessage()
    assert caplog.records[0].exc_info is not None


def test_output_stop_when_not_started_does_nothing() -> None:
    sink = SoundDeviceOutput(DEVICE, sample_rate=RATE, frame_samples=FRAME)
    sink.stop()
    assert not sink.is_running
