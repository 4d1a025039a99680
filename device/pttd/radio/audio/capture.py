"""Microphone capture through PortAudio (sounddevice): the real
:class:`~pttd.radio.audio.AudioInput`.

The stream exists only between :meth:`SoundDeviceInput.open` and :meth:`SoundDeviceInput.close`
(the device state machine opens it only while transmitting), so the microphone is really closed
the rest of the time.

Threads: PortAudio calls the stream callback on its own thread. The callback never blocks: it
copies the block and posts it to the asyncio loop once with ``loop.call_soon_threadsafe``. The loop
side checks a generation number before delivering, because posted calls may still be queued when
:meth:`~SoundDeviceInput.close` returns; a frame of an earlier open is dropped, never delivered.

Capture time of a frame (the monotonic time of its first sample): the callback reads
``time.monotonic()`` on entry and subtracts how long ago PortAudio says the block's first sample
was captured (``currentTime - inputBufferAdcTime``, both on PortAudio's stream clock, so the
clocks need not share an epoch). When PortAudio gives no usable times (0, as some host APIs do,
or a negative or absurd lag) the block duration is used instead; and the lag is never taken as
less than the block duration, since a block's first sample is at least that old when the block is
complete (ALSA plugins with no delay, such as ``file`` over ``null``, report a lag of 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import numpy as np

from pttd.errors import AudioStreamError
from pttd.radio.audio import FrameHandler, Pcm
from pttd.radio.audio.devices import PortAudioStream, portaudio

log = logging.getLogger(__name__)

MAX_PLAUSIBLE_LAG = 1.0
"""Seconds: a larger ``currentTime - inputBufferAdcTime`` is taken as a broken clock."""


def first_sample_time(
    now: float, frames: int, sample_rate: int, adc_time: float, current_time: float
) -> tuple[float, bool]:
    """Monotonic time of a captured block's first sample, and whether PortAudio's clock gave it.

    ``now`` is ``time.monotonic()`` on entering the callback; ``adc_time`` and ``current_time``
    are the callback's ``inputBufferAdcTime`` and ``currentTime`` (PortAudio's stream clock).
    The block's age is ``current_time - adc_time`` when both are set (non-zero) and the age is
    plausible (0 to :data:`MAX_PLAUSIBLE_LAG`), else the block's duration; and never less than
    the block's duration.
    """
    block = frames / sample_rate
    lag = current_time - adc_time
    from_portaudio = adc_time > 0.0 and current_time > 0.0 and 0.0 <= lag < MAX_PLAUSIBLE_LAG
    return now - (max(lag, block) if from_portaudio else block), from_portaudio


class SoundDeviceInput(PortAudioStream):
    """Mono int16 capture at ``sample_rate``, ``frame_samples`` per frame, from ``device``.

    ``device``: an index, a name substring or ``None`` (see :mod:`pttd.radio.audio.devices`), or
    an :class:`AudioDevice` used as it is. :meth:`open` and :meth:`close` must be called on the
    asyncio loop's thread.

    Counters (read them on the loop thread; the callback only increments): ``overflows`` (blocks
    PortAudio flagged with an input overflow: samples were lost before this block),
    ``clock_fallbacks`` (blocks timed from the block duration rather than PortAudio's clock),
    ``frames_delivered``.
    """

    direction = "input"

    def _reset(self) -> None:
        self.overflows = 0
        self.clock_fallbacks = 0
        self.frames_delivered = 0
        self._deliver: FrameHandler | None = None
        self._generation = 0

    @property
    def is_open(self) -> bool:
        return self._stream is not None

    def open(self, deliver: FrameHandler) -> None:
        """Open and start the stream; ``deliver(frame, t)`` runs on this loop, once per frame.

        :raises RuntimeError: if already open, or if not called on a running asyncio loop.
        :raises AudioStreamError: if PortAudio cannot open or start the stream.
        """
        if self._stream is not None:
            raise RuntimeError("audio input is already open")
        loop = asyncio.get_running_loop()
        self._generation += 1
        self._deliver = deliver
        try:
            stream = self._open_stream(self._make_callback(loop, self._generation))
        except AudioStreamError:
            self._generation += 1
            self._deliver = None
            raise
        self._stream = stream
        log.debug("capture open: %s, latency %.1f ms", self.device.name, stream.latency * 1e3)

    def close(self) -> None:
        """Stop capturing at once (pending blocks are dropped). No frame is delivered after this
        returns. Closing a closed input does nothing."""
        stream, self._stream = self._stream, None
        self._generation += 1
        self._deliver = None
        if stream is None:
            return
        sd = portaudio()
        try:
            stream.abort()
        except sd.PortAudioError as exc:
            log.warning("capture: stopping the stream failed: %s", exc)
        finally:
            stream.close(ignore_errors=True)
        log.debug("capture closed")

    def _make_callback(self, loop: asyncio.AbstractEventLoop, generation: int) -> Any:
        """The PortAudio callback ``(indata, frames, time_info, status) -> None`` for one open."""
        rate = self.sample_rate
        on_loop = self._on_loop

        def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
            now = time.monotonic()
            if status.input_overflow:
                self.overflows += 1
            t, from_portaudio = first_sample_time(
                now, frames, rate, time_info.inputBufferAdcTime, time_info.currentTime
            )
            if not from_portaudio:
                self.clock_fallbacks += 1
            frame: Pcm = np.array(indata[:, 0], dtype=np.int16)  # a copy: PortAudio reuses indata
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to deliver to
                loop.call_soon_threadsafe(on_loop, generation, frame, t)

        return callback

    def _on_loop(self, generation: int, frame: Pcm, t: float) -> None:
        deliver = self._deliver
        if generation != self._generation or deliver is None:
            return  # posted before close(): never deliver it
        self.frames_delivered += 1
        deliver(frame, t)
