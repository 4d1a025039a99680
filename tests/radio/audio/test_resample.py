"""Tests of pttd.radio.audio.resample: the one resampler (soxr), streaming and one-shot."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from pttd.demo import speech_sample
from pttd.errors import AudioConfigError
from pttd.radio.audio.resample import PRIME_SAMPLES, StreamResampler, resample

RATIOS = [(48000, 44100), (24000, 22050), (48000, 32000), (48000, 96000), (8000, 11025)]


def sine(rate: int, seconds: float, freq: float = 440.0) -> npt.NDArray[np.float32]:
    return np.sin(2 * np.pi * freq * np.arange(round(rate * seconds)) / rate).astype(np.float32)


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize(("src", "dst"), RATIOS)
def test_stream_gives_every_output_sample_as_soon_as_it_is_due(src: int, dst: int) -> None:
    rng = np.random.default_rng(3)
    r = StreamResampler(src, dst)
    taken = given = 0
    for size in [*rng.integers(1, src // 25, 80), src // 50, 1, 2, 3]:
        given += r.process(rng.normal(0, 1000, size).astype(np.float32)).shape[0]
        taken += int(size)
        assert given == taken * dst // src


def test_stream_gives_882_samples_for_each_960() -> None:
    r = StreamResampler(48000, 44100)
    assert [r.process(b).shape[0] for b in np.split(sine(48000, 0.2), 10)] == [882] * 10


def test_stream_is_seamless_across_blocks() -> None:
    rng = np.random.default_rng(7)
    signal = rng.normal(0, 1000, 48000).astype(np.float32)
    whole = StreamResampler(48000, 44100).process(signal)
    blockwise = StreamResampler(48000, 44100)
    cuts = np.cumsum(rng.integers(1, 2000, 60))
    joined = np.concatenate([blockwise.process(p) for p in np.split(signal, cuts[cuts < 48000])])
    assert joined.shape == whole.shape == (44100,)
    np.testing.assert_allclose(joined, whole, atol=1e-2)


@pytest.mark.parametrize(("src", "dst"), RATIOS)
def test_stream_keeps_a_sine_a_few_samples_late(src: int, dst: int) -> None:
    f = 440.0
    r = StreamResampler(src, dst)
    y = np.concatenate([r.process(b) for b in np.split(sine(src, 1.0, f), 50)])
    assert y.shape[0] == dst
    t = np.arange(dst) / dst - PRIME_SAMPLES / src
    expected = np.sin(2 * np.pi * f * t)
    assert np.max(np.abs(y[dst // 10 :] - expected[dst // 10 :])) < 0.005


def test_stream_of_an_empty_block() -> None:
    r = StreamResampler(48000, 44100)
    assert r.process(np.zeros(0, np.float32)).shape == (0,)
    assert r.process(np.zeros(960, np.float32)).shape == (882,)


@pytest.mark.parametrize(("src", "dst"), [(0, 48000), (48000, -1)])
def test_bad_rates(src: int, dst: int) -> None:
    with pytest.raises(AudioConfigError):
        StreamResampler(src, dst)
    with pytest.raises(AudioConfigError):
        resample(np.zeros(10), src, dst)


# --------------------------------------------------------------------------- one-shot


def test_one_shot_at_the_same_rate_is_a_float_copy() -> None:
    x = np.array([0, 100, -200, 300], np.int16)
    y = resample(x, 16000, 16000)
    assert y.dtype == np.float64 and y.tolist() == [0, 100, -200, 300]
    assert resample(np.zeros(0, np.int16), 16000, 48000).shape == (0,)


@pytest.mark.parametrize(("src", "dst", "n"), [(16000, 48000, 1000), (48000, 16000, 14402)])
def test_one_shot_length_is_rounded(src: int, dst: int, n: int) -> None:
    assert resample(np.zeros(n, np.int16), src, dst).shape == (round(n * dst / src),)


def test_one_shot_keeps_a_sine_in_time() -> None:
    y = resample(sine(16000, 0.5, 1000.0) * 10000, 16000, 44100)
    expected = 10000 * np.sin(2 * np.pi * 1000.0 * np.arange(y.shape[0]) / 44100)
    middle = slice(2000, -2000)  # the ends fade in and out of the silence around the signal
    assert np.max(np.abs(y[middle] - expected[middle])) < 1.0


def test_one_shot_removes_what_the_new_rate_cannot_carry() -> None:
    y = resample(sine(48000, 0.5, 23000.0) * 10000, 48000, 44100)  # above 22050 Hz
    assert np.max(np.abs(y[2000:-2000])) < 1.0  # (its abrupt start and end are heard)


def test_speech_survives_a_round_trip_to_48_khz() -> None:
    x = speech_sample(16000)
    back = resample(resample(x, 16000, 48000), 48000, 16000)
    error = np.sqrt(np.mean((back - x) ** 2))
    assert error < 0.02 * np.sqrt(np.mean(x.astype(np.float64) ** 2))
