"""The device's audio path: capture → Opus → packets, packets → jitter buffer → Opus → playback.

Frames are mono int16 numpy arrays of ``frame_samples`` samples. Two small interfaces keep the
hardware swappable (real sounddevice streams, or the simulated clocked source and sink):

* :class:`AudioInput` — opened only while talking (the device state machine says when). Each
  captured frame is handed to the asyncio loop once, with the monotonic time of its first sample.
* :class:`AudioOutput` — runs while the daemon runs and *pulls* samples from the mixer on its own
  thread (PortAudio's callback thread, or the simulated sink's clock thread).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.int16]
"""Mono 16-bit samples."""


def to_pcm(x: npt.NDArray[np.floating]) -> Pcm:
    """Samples on the int16 scale (floats), rounded and clipped to int16."""
    out: Pcm = np.clip(np.rint(x), -32768, 32767).astype(np.int16)
    return out


FrameHandler = Callable[[Pcm, float], None]
"""Receives (frame, capture time of its first sample on time.monotonic()) on the loop thread."""

PullFn = Callable[[int], Pcm]
"""Called on the output's thread for ``n`` samples; returns exactly ``n`` (silence if idle)."""


class AudioInput(Protocol):
    sample_rate: int
    frame_samples: int

    @property
    def is_open(self) -> bool: ...

    def open(self, deliver: FrameHandler) -> None:
        """Start capturing; ``deliver`` runs on the asyncio loop thread, once per frame."""

    def close(self) -> None:
        """Stop capturing at once; no frame is delivered after this returns."""


class AudioOutput(Protocol):
    sample_rate: int
    frame_samples: int

    def start(self, pull: PullFn) -> None:
        """Start playing whatever ``pull`` returns."""

    def stop(self) -> None: ...
