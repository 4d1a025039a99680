"""Speaker playback through PortAudio (sounddevice): the real
:class:`~pttd.radio.audio.AudioOutput`.

The stream runs from :meth:`SoundDeviceOutput.start` to :meth:`SoundDeviceOutput.stop` (the whole
life of the daemon) and *pulls*: PortAudio's callback thread calls ``pull(frames)`` for every
block and copies the result into the device buffer. The callback never raises: if ``pull`` raises
or returns something that is not ``frames`` int16 samples, the block is silence, the error is
counted in ``pull_errors`` and logged once per start (with its traceback), and playback goes on.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pttd.radio.audio import PullFn
from pttd.radio.audio.devices import PortAudioStream, portaudio

log = logging.getLogger(__name__)


class SoundDeviceOutput(PortAudioStream):
    """Mono int16 playback at ``sample_rate`` in blocks of ``frame_samples`` to ``device``
    (as :class:`SoundDeviceInput` takes it).

    Counters, incremented by the callback: ``blocks`` (blocks played), ``underflows`` (callbacks
    PortAudio flagged with an output underflow: the device ran dry and played a gap),
    ``pull_errors`` (blocks replaced by silence because ``pull`` failed).
    """

    direction = "output"

    def _reset(self) -> None:
        self.blocks = 0
        self.underflows = 0
        self.pull_errors = 0

    @property
    def is_running(self) -> bool:
        return self._stream is not None

    def start(self, pull: PullFn) -> None:
        """Open and start the stream, playing whatever ``pull`` returns.

        :raises RuntimeError: if already started.
        :raises AudioStreamError: if PortAudio cannot open or start the stream.
        """
        if self._stream is not None:
            raise RuntimeError("audio output is already started")
        stream = self._open_stream(self._make_callback(pull))
        self._stream = stream
        log.debug("playback started: %s, latency %.1f ms", self.device.name, stream.latency * 1e3)

    def stop(self) -> None:
        """Stop after the blocks already handed to the device have played, and close the stream.
        Stopping a stopped output does nothing."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        sd = portaudio()
        try:
            stream.stop()
        except sd.PortAudioError as exc:
            log.warning("playback: stopping the stream failed: %s", exc)
        finally:
            stream.close(ignore_errors=True)
        log.debug("playback stopped")

    def _make_callback(self, pull: PullFn) -> Any:
        logged = False

        def callback(outdata: Any, frames: int, time_info: Any, status: Any) -> None:
            nonlocal logged
            if status.output_underflow:
                self.underflows += 1
            try:
                block = pull(frames)
                if block.shape != (frames,) or block.dtype != np.int16:
                    raise ValueError(
                        f"pull({frames}) returned {block.dtype} samples of shape {block.shape}"
                    )
                outdata[:, 0] = block
            except Exception:
                outdata.fill(0)
                self.pull_errors += 1
                if not logged:  # once per start: the callback must not spend its time logging
                    logged = True
                    log.exception("playback: pull failed; playing silence (logged once)")
            self.blocks += 1

        return callback
