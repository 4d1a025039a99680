"""Opus encoding and decoding of mono int16 frames, over opuslib and the system libopus.

* :class:`OpusSettings` — what the device encodes with, built from the ``[audio]`` configuration
  by :meth:`~OpusSettings.from_config` (the daemon, ``pttd doctor`` and the benchmarks all build
  it there); its :meth:`~OpusSettings.codec_header` is what ``start_stream`` announces.
* :class:`Encoder` — one frame of ``frame_samples`` samples in, one Opus packet out.
* :class:`Decoder` — any Opus packet in (mono or stereo, any encoded rate), mono int16 out at the
  output device's rate, plus in-band FEC recovery and packet-loss concealment.

opuslib 3.0.1's ``Encoder.inband_fec`` setter drops its value (TypeError) and it has no ``dtx``
property at all, so every encoder setting goes through opuslib's low-level ``encoder_ctl``;
:meth:`Encoder.applied_settings` reads each one back, and :meth:`Encoder.mismatches` compares
them with what was set (``pttd doctor`` reports it). Encoding and decoding call opuslib's
ctypes bindings of ``opus_encode`` and ``opus_decode`` with numpy buffers, which spares building
a Python list per frame.

Complexity 5 by default: the encoder shares a small ARM board with the decoder, the websocket and
asyncio. One 20 ms frame at 48 kHz measured 0.13 / 0.26 / 0.47 ms of one x86 core at complexity
0 / 5 / 10, and a Pi's cores are several times slower: 10 costs nearly twice 5 for little
audible gain on speech at 24 kbit/s, while 0 gives up SILK's better pitch and noise-shaping
analysis.

FEC caveat (libopus 1.3.1): the encoder only adds in-band FEC data when the bitrate leaves room
for it at the expected loss. At 48 kHz and 24 kbit/s that takes ``expected_loss_percent`` of about
8 or more (it then drops from hybrid full-band to SILK wide-band); at the default 5 the packets
carry no FEC data and a recovery falls back to concealment. It also skips FEC on quiet frames.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import opuslib  # type: ignore[import-untyped]
import opuslib.api.ctl  # type: ignore[import-untyped]
import opuslib.api.decoder  # type: ignore[import-untyped]
import opuslib.api.encoder  # type: ignore[import-untyped]
import opuslib.api.info  # type: ignore[import-untyped]

from pttd.errors import AudioConfigError, CodecError
from pttd.radio.audio import Pcm, to_pcm
from pttd.radio.audio.resample import StreamResampler
from pttd.wire.messages import OPUS_SAMPLE_RATES, CodecHeader

if TYPE_CHECKING:
    from pttd.radio.config import AudioConfig

__all__ = ["FRAME_MS_CHOICES", "Decoder", "Encoder", "OpusSettings", "decode_rate_for"]

FRAME_MS_CHOICES: Final = (10, 20, 40, 60)
"""Frame sizes the device encodes with (Opus also has 2.5 and 5 ms; too costly per byte)."""

MAX_PACKET_BYTES: Final = 4000  # libopus's recommended output buffer for one packet
MAX_PACKET_MS: Final = 120  # the longest an Opus packet can last
_PLC_QUANTUM_DIVISOR: Final = 400  # Opus frames are multiples of 2.5 ms = rate / 400 samples

APPLICATION: Final = opuslib.APPLICATION_VOIP  # the encoder's application (speech)

_CTL: Final[Any] = opuslib.api.ctl
_ENCODER_CTLS: Final[dict[str, tuple[Any, Any]]] = {
    # name (as OpusSettings.ctl_values has it): (its OPUS_SET_* ctl, or None when fixed at
    # creation; its OPUS_GET_* ctl)
    "sample_rate": (None, _CTL.get_sample_rate),
    "application": (None, _CTL.get_application),
    "bitrate": (_CTL.set_bitrate, _CTL.get_bitrate),
    "complexity": (_CTL.set_complexity, _CTL.get_complexity),
    "inband_fec": (_CTL.set_inband_fec, _CTL.get_inband_fec),
    "packet_loss_perc": (_CTL.set_packet_loss_perc, _CTL.get_packet_loss_perc),
    "dtx": (_CTL.set_dtx, _CTL.get_dtx),
}

_Int16Ptr = ctypes.POINTER(ctypes.c_int16)


@dataclass(frozen=True, slots=True)
class OpusSettings:
    """How the device encodes its microphone: mono Opus, VOIP application.

    Every field is the ``[audio]`` key of the same name: :meth:`from_config` builds it.
    """

    sample_rate: int = 48000
    frame_ms: int = 20
    bitrate: int = 24000
    complexity: int = 5
    fec: bool = True
    expected_loss_percent: int = 5
    dtx: bool = False

    def __post_init__(self) -> None:
        _check_choice("sample_rate", self.sample_rate, OPUS_SAMPLE_RATES)
        _check_choice("frame_ms", self.frame_ms, FRAME_MS_CHOICES)
        _check_range("bitrate", self.bitrate, 6000, 510000)
        _check_range("complexity", self.complexity, 0, 10)
        _check_range("expected_loss_percent", self.expected_loss_percent, 0, 100)
        for name in ("fec", "dtx"):
            if not isinstance(getattr(self, name), bool):
                raise AudioConfigError(f"{name}: {getattr(self, name)!r} is not true or false")

    @classmethod
    def from_config(cls, audio: AudioConfig) -> OpusSettings:
        """The settings a device with this ``[audio]`` configuration encodes with."""
        return cls(**{f.name: getattr(audio, f.name) for f in fields(cls)})

    def ctl_values(self) -> dict[str, int]:
        """What each encoder ctl is set to, by the names :meth:`Encoder.applied_settings` uses."""
        return {
            "sample_rate": self.sample_rate,
            "application": APPLICATION,
            "bitrate": self.bitrate,
            "complexity": self.complexity,
            "inband_fec": int(self.fec),
            "packet_loss_perc": self.expected_loss_percent,
            "dtx": int(self.dtx),
        }

    @property
    def frame_samples(self) -> int:
        """Samples in one frame (and one packet: one frame per packet)."""
        return self.sample_rate * self.frame_ms // 1000

    @property
    def packet_duration(self) -> int:
        """Milliseconds per packet, as ``start_stream`` announces it."""
        return self.frame_ms

    def codec_header(self) -> CodecHeader:
        """The ``codec_header`` announcing this encoding: rate, one frame per packet, frame ms."""
        return CodecHeader(self.sample_rate, 1, self.frame_ms)


def _check_choice(name: str, value: object, choices: tuple[int, ...]) -> None:
    if isinstance(value, bool) or value not in choices:
        allowed = ", ".join(str(c) for c in choices)
        raise AudioConfigError(f"{name}: {value!r} is not one of {allowed}")


def _check_range(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AudioConfigError(f"{name}: {value!r} is not a whole number from {low} to {high}")


def _ctl(call: Any, state: Any, request: Any, value: int | None = None) -> int:
    """One ``opus_*_ctl`` through opuslib's low-level API; a libopus error becomes CodecError."""
    try:
        result = call(state, request) if value is None else call(state, request, value)
    except opuslib.OpusError as exc:
        raise CodecError(f"Opus ctl failed: {exc}") from exc
    return int(result) if result is not None else 0


def _strerror(code: int) -> str:
    text = opuslib.api.info.strerror(code)
    return text.decode("ascii", "replace") if isinstance(text, bytes) else str(text)


class Encoder:
    """Encodes mono int16 frames of ``settings.frame_samples`` samples into Opus packets."""

    def __init__(self, settings: OpusSettings | None = None) -> None:
        self.settings = settings if settings is not None else OpusSettings()
        s = self.settings
        try:
            self._opus: Any = opuslib.Encoder(s.sample_rate, 1, APPLICATION)
        except opuslib.OpusError as exc:
            raise CodecError(f"cannot create an Opus encoder: {exc}") from exc
        self._out = ctypes.create_string_buffer(MAX_PACKET_BYTES)
        for name, value in s.ctl_values().items():
            setter = _ENCODER_CTLS[name][0]
            if setter is not None:
                self._encoder_ctl(setter, value)

    @property
    def state(self) -> Any:
        """libopus's encoder state, for a bare ``opus_encode`` call (the audio benchmark's).

        It is freed with this encoder: keep the encoder referenced while the state is used.
        """
        return self._opus.encoder_state

    def _encoder_ctl(self, request: Any, value: int | None = None) -> int:
        return _ctl(opuslib.api.encoder.encoder_ctl, self._opus.encoder_state, request, value)

    def applied_settings(self) -> dict[str, int]:
        """The settings as libopus reports them (its ``OPUS_GET_*`` ctls), by ctl name."""
        return {name: self._encoder_ctl(ctls[1]) for name, ctls in _ENCODER_CTLS.items()}

    def mismatches(self) -> dict[str, tuple[int, int]]:
        """Each setting libopus reports differently from what was set: ``(set, reported)``."""
        applied = self.applied_settings()
        return {
            name: (value, applied[name])
            for name, value in self.settings.ctl_values().items()
            if applied[name] != value
        }

    def reset(self) -> None:
        """Forget the previous frames (start of a new transmission); settings are kept."""
        self._encoder_ctl(opuslib.api.ctl.reset_state)

    def encode(self, frame: Pcm) -> bytes:
        """One Opus packet for one frame of exactly ``frame_samples`` int16 samples."""
        n = self.settings.frame_samples
        if frame.dtype != np.int16 or frame.ndim != 1 or frame.shape[0] != n:
            raise CodecError(
                f"frame of {frame.shape} {frame.dtype} samples; expected {n} int16 samples"
            )
        pcm = np.ascontiguousarray(frame)
        size = int(
            opuslib.api.encoder.libopus_encode(
                self._opus.encoder_state,
                pcm.ctypes.data_as(_Int16Ptr),
                n,
                self._out,
                MAX_PACKET_BYTES,
            )
        )
        if size < 0:
            raise CodecError(f"Opus encoder failed: {_strerror(size)}")
        return self._out.raw[:size]


def decode_rate_for(output_rate: int) -> int:
    """The rate libopus decodes at for an output device running at ``output_rate``.

    The output rate itself when it is an Opus rate; otherwise the smallest Opus rate above it
    (48000 for 44100, 24000 for 22050), so that libopus band-limits and the
    :class:`~pttd.radio.audio.resample.StreamResampler` only has to bridge a small ratio; 48000
    for outputs faster than 48000.
    """
    if output_rate <= 0:
        raise AudioConfigError(f"output_rate: {output_rate} is not a sample rate")
    for rate in OPUS_SAMPLE_RATES:
        if rate >= output_rate:
            return rate
    return OPUS_SAMPLE_RATES[-1]


class Decoder:
    """Decodes Opus packets of one stream to mono int16 at ``output_rate``.

    Any Opus packet decodes (mono or stereo, any encoded rate): libopus decodes at
    :func:`decode_rate_for` ``(output_rate)`` with ``channels`` channels (stereo is then averaged
    to mono); when that is not ``output_rate`` a
    :class:`~pttd.radio.audio.resample.StreamResampler` bridges the gap. Sample
    counts given to :meth:`decode_fec` and :meth:`conceal` are at ``output_rate``; they are
    rounded to whole 2.5 ms Opus frames, and with resampling the result can differ from the
    request by a sample as the resampler's phase moves.

    A malformed packet raises :class:`CodecError` and leaves the decoder usable.

    Each call returns a new array by default. With ``copy=False`` it may return a view of the
    decoder's own buffer instead (mono at the decode rate: libopus's output as it is), valid
    until the next call on this decoder: for a caller that consumes the samples at once, like
    the mixer, which then copies nothing between libopus and its gain stage.
    """

    def __init__(self, output_rate: int, channels: int = 1) -> None:
        if channels not in (1, 2):
            raise AudioConfigError(f"channels: {channels} is not 1 or 2")
        self.output_rate = output_rate
        self.channels = channels
        self.decode_rate = decode_rate_for(output_rate)
        try:
            self._opus: Any = opuslib.Decoder(self.decode_rate, channels)
        except opuslib.OpusError as exc:
            raise CodecError(f"cannot create an Opus decoder: {exc}") from exc
        self._max = self.decode_rate * MAX_PACKET_MS // 1000
        self._pcm = np.zeros(self._max * channels, np.int16)
        self._pcm_ptr = self._pcm.ctypes.data_as(_Int16Ptr)
        self._state = self._opus.decoder_state
        self._libopus_decode = opuslib.api.decoder.libopus_decode
        self._resampler = (
            StreamResampler(self.decode_rate, output_rate)
            if self.decode_rate != output_rate
            else None
        )
        self._direct = channels == 1 and self._resampler is None  # libopus's output as it is
        self._view = self._pcm[:0]  # the last direct result's view of _pcm, kept for reuse

    def decode(self, packet: bytes, *, copy: bool = True) -> Pcm:
        """The audio of one packet."""
        if not packet:
            raise CodecError("empty Opus packet")
        return self._run(packet, self._max, 0, copy)

    def decode_fec(self, next_packet: bytes, samples: int, *, copy: bool = True) -> Pcm:
        """``samples`` of the lost packet before ``next_packet``, from its in-band FEC data.

        Falls back to concealment when ``next_packet`` carries no FEC data. Decode
        ``next_packet`` itself afterwards, as usual.
        """
        if not next_packet:
            raise CodecError("empty Opus packet")
        return self._run(next_packet, self._frames(samples), 1, copy)

    def conceal(self, samples: int, *, copy: bool = True) -> Pcm:
        """``samples`` of packet-loss concealment, continuing what was decoded last."""
        return self._run(None, self._frames(samples), 0, copy)

    def _frames(self, samples: int) -> int:
        """Decode-rate samples for ``samples`` output samples, in whole 2.5 ms frames."""
        quantum = self.decode_rate // _PLC_QUANTUM_DIVISOR
        wanted = samples * self.decode_rate / self.output_rate
        frames = max(1, round(wanted / quantum))
        if samples <= 0 or frames * quantum > self._max:
            raise CodecError(f"cannot conceal {samples} samples (over {MAX_PACKET_MS} ms)")
        return frames * quantum

    def _run(self, packet: bytes | None, frame_size: int, fec: int, copy: bool) -> Pcm:
        got: int = self._libopus_decode(
            self._state,
            packet,
            len(packet) if packet is not None else 0,
            self._pcm_ptr,
            frame_size,
            fec,
        )
        if got < 0:
            raise CodecError(f"Opus packet not decoded: {_strerror(got)}")
        if self._direct:
            view = self._view
            if view.shape[0] != got:
                self._view = view = self._pcm[:got]
            return view.copy() if copy else view
        pcm = self._pcm[: got * self.channels]
        if self.channels == 2:
            mono = pcm.reshape(-1, 2).astype(np.float32).mean(axis=1)
        else:
            mono = pcm.astype(np.float32)
        if self._resampler is not None:
            mono = self._resampler.process(mono)
        return to_pcm(mono)
