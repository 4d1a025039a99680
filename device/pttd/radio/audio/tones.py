"""The device's signalling tones, generated in code.

Field users hear these instead of reading a screen, so each kind has its own pattern, all under
600 ms, at a set peak level (-12 dBFS unless told otherwise), every beep faded in and out over
5 ms so that none clicks:

=================  ====================================================
talk_permit        rising two-tone, 700 → 1050 Hz (the floor is yours)
busy               three low 400 Hz beeps (floor denied)
roger              one short 1500 Hz beep (end of transmission)
connected          three rising notes C-E-G (link up)
disconnected       three falling notes G-D-G (link down)
timeout_warning    four fast high 1800 Hz beeps (talk time over)
error              two long low 300 Hz beeps (press while offline or unpaired)
room               two short 1000 Hz beeps (room selection changed)
=================  ====================================================
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Final

import numpy as np
import numpy.typing as npt

from pttd.errors import AudioConfigError
from pttd.radio.audio import Pcm
from pttd.radio.machine import Tone

__all__ = ["DEFAULT_LEVEL_DBFS", "FADE_MS", "PATTERNS", "ToneKind", "tone"]

DEFAULT_LEVEL_DBFS: Final = -12.0
FADE_MS: Final = 5.0
MIN_SAMPLE_RATE: Final = 8000


ToneKind = Tone  # the state machine names the tones; this module gives them a sound


Step = tuple[float, float]
"""(frequency in Hz, duration in ms); frequency 0 is a gap. Consecutive tones form one beep."""

PATTERNS: Final[Mapping[ToneKind, tuple[Step, ...]]] = {
    ToneKind.TALK_PERMIT: ((700, 80), (1050, 100)),
    ToneKind.BUSY: ((400, 100), (0, 60), (400, 100), (0, 60), (400, 100)),
    ToneKind.ROGER: ((1500, 90),),
    ToneKind.CONNECTED: ((523.25, 70), (0, 25), (659.25, 70), (0, 25), (783.99, 90)),
    ToneKind.DISCONNECTED: ((783.99, 90), (0, 25), (587.33, 90), (0, 25), (392.0, 140)),
    ToneKind.TIMEOUT_WARNING: (
        (1800, 50),
        (0, 50),
        (1800, 50),
        (0, 50),
        (1800, 50),
        (0, 50),
        (1800, 50),
    ),
    ToneKind.ERROR: ((300, 150), (0, 60), (300, 150)),
    ToneKind.ROOM: ((1000, 60), (0, 40), (1000, 60)),
}


def tone(kind: str | ToneKind, sample_rate: int, level_dbfs: float = DEFAULT_LEVEL_DBFS) -> Pcm:
    """The tone ``kind`` at ``sample_rate``, peaking at ``level_dbfs``; a read-only array."""
    try:
        which = ToneKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in ToneKind)
        raise AudioConfigError(f"tone: {kind!r} is not one of {known}") from None
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int):
        raise AudioConfigError(f"sample_rate: {sample_rate!r} is not a whole number")
    if sample_rate < MIN_SAMPLE_RATE:
        raise AudioConfigError(f"sample_rate: {sample_rate} is below {MIN_SAMPLE_RATE}")
    if not -60.0 <= level_dbfs <= 0.0:
        raise AudioConfigError(f"tone level: {level_dbfs} dBFS is not from -60 to 0")
    return _render(which, sample_rate, float(level_dbfs))


@functools.lru_cache(maxsize=64)
def _render(kind: ToneKind, sample_rate: int, level_dbfs: float) -> Pcm:
    parts: list[npt.NDArray[np.float64]] = []
    beep: list[Step] = []
    for freq, ms in PATTERNS[kind]:
        if freq > 0:
            beep.append((freq, ms))
            continue
        parts.append(_beep(beep, sample_rate))
        beep = []
        parts.append(np.zeros(_samples(ms, sample_rate)))
    parts.append(_beep(beep, sample_rate))
    wave = np.concatenate(parts)
    peak = 10.0 ** (level_dbfs / 20.0) * 32767.0
    wave *= peak / np.max(np.abs(wave))
    out: Pcm = np.rint(wave).astype(np.int16)
    out.flags.writeable = False
    return out


def _samples(ms: float, sample_rate: int) -> int:
    return round(ms * sample_rate / 1000.0)


def _beep(steps: list[Step], sample_rate: int) -> npt.NDArray[np.float64]:
    """Phase-continuous tones one after another, faded in and out."""
    if not steps:
        return np.zeros(0)
    freq = np.concatenate([np.full(_samples(ms, sample_rate), f) for f, ms in steps])
    phase = 2.0 * np.pi * np.cumsum(freq) / sample_rate
    wave: npt.NDArray[np.float64] = np.sin(phase - phase[0])
    fade = min(_samples(FADE_MS, sample_rate), wave.shape[0] // 2)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
    wave[:fade] *= ramp
    wave[wave.shape[0] - fade :] *= ramp[::-1]
    return wave
