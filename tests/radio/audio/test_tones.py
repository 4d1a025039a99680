"""Tests of pttd.radio.audio.tones: every tone short, distinct, at its level, without clicks."""

from __future__ import annotations

import numpy as np
import pytest

from pttd.errors import AudioConfigError
from pttd.radio.audio import Pcm
from pttd.radio.audio.tones import DEFAULT_LEVEL_DBFS, PATTERNS, ToneKind, tone

RATES = [8000, 16000, 44100, 48000]


def peak_for(level_dbfs: float) -> int:
    return round(10 ** (level_dbfs / 20) * 32767)


def dominant_frequency(x: Pcm | np.ndarray, rate: int) -> float:
    """The strongest frequency, from a Hann-windowed, zero-padded FFT."""
    windowed = x.astype(np.float64) * np.hanning(x.shape[0])
    size = 1 << 17
    spectrum = np.abs(np.fft.rfft(windowed, size))
    return float(np.argmax(spectrum) * rate / size)


def beeps(x: Pcm, rate: int) -> list[Pcm]:
    """The tone split at its gaps (runs of at least 10 ms of exact zeros)."""
    sound = np.flatnonzero(x != 0)
    breaks = np.flatnonzero(np.diff(sound) > rate // 100)
    starts = [sound[0], *sound[breaks + 1]]
    ends = [*sound[breaks], sound[-1]]
    return [x[a : b + 1] for a, b in zip(starts, ends, strict=True)]


def signature(x: Pcm, rate: int) -> tuple[tuple[int, ...], ...]:
    """Per beep, the dominant frequencies of its 20 ms slices, merged when within 3 %."""
    sig = []
    slice_ = rate // 50
    for beep in beeps(x, rate):
        freqs: list[int] = []
        for i in range(0, beep.shape[0] - slice_ // 2, slice_):
            f = round(dominant_frequency(beep[i : i + slice_], rate))
            if not freqs or abs(f - freqs[-1]) > 0.03 * freqs[-1]:
                freqs.append(f)
        sig.append(tuple(freqs))
    return tuple(sig)


def expected_signature(kind: ToneKind) -> tuple[tuple[float, ...], ...]:
    out: list[tuple[float, ...]] = []
    current: list[float] = []
    for freq, _ in PATTERNS[kind]:
        if freq == 0:
            out.append(tuple(current))
            current = []
        else:
            current.append(freq)
    out.append(tuple(current))
    return tuple(out)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("kind", list(ToneKind))
def test_shape_duration_and_level(kind: ToneKind, rate: int) -> None:
    x = tone(kind, rate)
    assert x.dtype == np.int16
    assert x.ndim == 1
    assert 0.05 * rate < x.shape[0] < 0.6 * rate
    assert int(np.max(np.abs(x.astype(np.int32)))) == peak_for(DEFAULT_LEVEL_DBFS)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("kind", list(ToneKind))
def test_no_clicks(kind: ToneKind, rate: int) -> None:
    x = tone(kind, rate).astype(np.float64)
    peak = peak_for(DEFAULT_LEVEL_DBFS)
    assert abs(x[0]) <= 0.01 * peak
    assert abs(x[-1]) <= 0.01 * peak
    fade = int(0.005 * rate)
    assert np.max(np.abs(x[: fade // 4])) < 0.25 * peak  # fading in
    assert np.max(np.abs(x[-(fade // 4) :])) < 0.25 * peak  # fading out
    # No step bigger than the fastest sine in the tone can make: no discontinuity anywhere.
    top = max(f for f, _ in PATTERNS[kind])
    assert np.max(np.abs(np.diff(x))) <= 2 * np.pi * top / rate * peak * 1.05 + 1


@pytest.mark.parametrize("rate", [16000, 48000])
@pytest.mark.parametrize("kind", list(ToneKind))
def test_pattern_is_what_it_sounds_like(kind: ToneKind, rate: int) -> None:
    measured = signature(tone(kind, rate), rate)
    expected = expected_signature(kind)
    assert len(measured) == len(expected)
    for got, want in zip(measured, expected, strict=True):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g == pytest.approx(w, rel=0.02)


def test_every_kind_is_distinct() -> None:
    rate = 16000
    signatures = {kind: signature(tone(kind, rate), rate) for kind in ToneKind}
    assert len(set(signatures.values())) == len(ToneKind)
    # Most differ already by their dominant frequency; the rest by their pattern.
    dominant = {kind: round(dominant_frequency(tone(kind, rate), rate), -1) for kind in ToneKind}
    assert len(set(dominant.values())) >= 4


@pytest.mark.parametrize("level", [-6.0, -20.0, 0.0])
def test_level_is_configurable(level: float) -> None:
    x = tone("busy", 48000, level)
    assert int(np.max(np.abs(x.astype(np.int32)))) == peak_for(level)


def test_kind_by_name_or_enum() -> None:
    assert np.array_equal(tone("talk_permit", 48000), tone(ToneKind.TALK_PERMIT, 48000))


def test_tones_are_read_only() -> None:
    x = tone(ToneKind.ROGER, 48000)
    with pytest.raises(ValueError, match="read-only"):
        x[0] = 1


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("beep", 48000), "tone"),
        (("busy", 4000), "sample_rate"),
        (("busy", 48000.0), "sample_rate"),
        (("busy", 48000, 3.0), "level"),
        (("busy", 48000, -100.0), "level"),
    ],
)
def test_bad_arguments(args: tuple[object, ...], match: str) -> None:
    with pytest.raises(AudioConfigError, match=match):
        tone(*args)  # type: ignore[arg-type]
