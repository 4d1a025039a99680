"""PortAudio devices: list them, and pick the capture or playback device the config names.

A device is named in the config by its index (``2``, or the string ``"2"``), by a case-insensitive
substring of its name (``"usb"`` for ``"USB PnP Sound Device: Audio (hw:1,0)"``) or of
``"<name>, <host API>"``, or not at all (``None`` or ``""``: the system default). A name that
matches no device, or several, or only devices without channels in the wanted direction, is an
:class:`~pttd.errors.AudioDeviceError` whose message lists the devices there are; so is a device
that cannot run mono int16 at the configured sample rate.

PortAudio reads the device list once, when :mod:`sounddevice` is first imported (it initialises
PortAudio then); a device plugged in later is seen after the process restarts. :mod:`sounddevice`
is imported only by :func:`portaudio`, so that the rest of the package (the room server, the
simulated audio) runs without PortAudio installed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from pttd.errors import AudioDeviceError, AudioError, AudioStreamError

log = logging.getLogger(__name__)

Kind = Literal["input", "output"]
"""Direction: ``input`` for capture (microphone), ``output`` for playback (speaker)."""

DeviceSpec = int | str | None
"""How the config names a device: index, name substring, or ``None`` for the system default."""


def portaudio() -> ModuleType:
    """Return the :mod:`sounddevice` module, importing it (and initialising PortAudio) once.

    :raises AudioError: when PortAudio's shared library is missing.
    """
    try:
        import sounddevice  # type: ignore[import-untyped]  # noqa: PLC0415
    except OSError as exc:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise AudioError(
            f"PortAudio is not available ({exc}); install the libportaudio2 package"
        ) from exc
    module: ModuleType = sounddevice
    return module


@dataclass(frozen=True, slots=True)
class AudioDevice:
    """One PortAudio device as :func:`list_devices` found it."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    default_input: bool = False
    """This is the system default capture device."""
    default_output: bool = False
    """This is the system default playback device."""

    def channels(self, kind: Kind) -> int:
        """Maximum channels in direction ``kind``."""
        return self.max_input_channels if kind == "input" else self.max_output_channels

    def is_default(self, kind: Kind) -> bool:
        return self.default_input if kind == "input" else self.default_output

    def describe(self) -> str:
        """One line for messages: ``#0 'USB Audio (hw:1,0)' (ALSA, 1 in, 2 out, 48000 Hz)``."""
        return (
            f"#{self.index} {self.name!r} ({self.hostapi}, {self.max_input_channels} in, "
            f"{self.max_output_channels} out, {self.default_samplerate:g} Hz)"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "name": self.name,
            "hostapi": self.hostapi,
            "max_input_channels": self.max_input_channels,
            "max_output_channels": self.max_output_channels,
            "default_samplerate": self.default_samplerate,
            "default_input": self.default_input,
            "default_output": self.default_output,
        }


def list_devices() -> list[AudioDevice]:
    """Every device PortAudio sees, in index order, with the system defaults marked.

    :raises AudioError: when PortAudio is not available.
    """
    sd = portaudio()
    hostapis = [str(h["name"]) for h in sd.query_hostapis()]
    default_in, default_out = (int(i) for i in sd.default.device)
    devices = []
    for d in sd.query_devices():
        index = int(d["index"])
        hostapi = int(d["hostapi"])
        devices.append(
            AudioDevice(
                index=index,
                name=str(d["name"]),
                hostapi=hostapis[hostapi] if 0 <= hostapi < len(hostapis) else f"#{hostapi}",
                max_input_channels=int(d["max_input_channels"]),
                max_output_channels=int(d["max_output_channels"]),
                default_samplerate=float(d["default_samplerate"]),
                default_input=index == default_in,
                default_output=index == default_out,
            )
        )
    return devices


def _listing(devices: Sequence[AudioDevice], kind: Kind) -> str:
    usable = [d for d in devices if d.channels(kind) > 0]
    if not usable:
        return f"there are no {kind} devices (PortAudio sees {len(devices)} device(s) in all)"
    return f"{kind} devices: " + "; ".join(d.describe() for d in usable)


def find_device(spec: DeviceSpec, kind: Kind, devices: Sequence[AudioDevice]) -> AudioDevice:
    """The device of ``devices`` that ``spec`` names for direction ``kind`` (pure: no PortAudio).

    * ``None``, ``""``: the system default ``kind`` device;
    * an ``int``, or a string of digits: the device with that index;
    * any other string: the one device whose name (or ``"<name>, <host API>"``) contains it,
      case-insensitively, among those with ``kind`` channels. If several do, one whose name is
      exactly ``spec`` (case-insensitively) wins; otherwise the name is ambiguous.

    :raises AudioDeviceError: naming what was wrong and listing the ``kind`` devices there are.
    """
    if isinstance(spec, str):
        spec = spec.strip()
        if not spec:
            spec = None
        elif spec.isdecimal():
            spec = int(spec)

    if spec is None:
        for d in devices:
            if d.is_default(kind) and d.channels(kind) > 0:
                return d
        raise AudioDeviceError(f"there is no default {kind} device; {_listing(devices, kind)}")

    if isinstance(spec, int):
        for d in devices:
            if d.index == spec:
                if d.channels(kind) == 0:
                    raise AudioDeviceError(
                        f"audio device {d.describe()} has no {kind} channels; "
                        f"{_listing(devices, kind)}"
                    )
                return d
        raise AudioDeviceError(f"there is no audio device #{spec}; {_listing(devices, kind)}")

    needle = spec.casefold()
    matches = [d for d in devices if needle in f"{d.name}, {d.hostapi}".casefold()]
    if not matches:
        raise AudioDeviceError(f"no audio device matches {spec!r}; {_listing(devices, kind)}")
    usable = [d for d in matches if d.channels(kind) > 0]
    if not usable:
        names = ", ".join(d.describe() for d in matches)
        raise AudioDeviceError(
            f"{spec!r} matches only devices with no {kind} channels ({names}); "
            f"{_listing(devices, kind)}"
        )
    if len(usable) == 1:
        return usable[0]
    exact = [d for d in usable if d.name.casefold() == needle]
    if len(exact) == 1:
        return exact[0]
    raise AudioDeviceError(
        f"{spec!r} matches several {kind} devices: "
        + "; ".join(d.describe() for d in usable)
        + " (give more of the name, or the index)"
    )


def check_settings(device: AudioDevice, kind: Kind, *, sample_rate: int, channels: int = 1) -> None:
    """Check that ``device`` can run ``channels`` int16 channels at ``sample_rate`` in ``kind``.

    :raises AudioDeviceError: when PortAudio says it cannot.
    """
    sd = portaudio()
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        check(device=device.index, channels=channels, dtype="int16", samplerate=sample_rate)
    except (sd.PortAudioError, ValueError) as exc:
        raise AudioDeviceError(
            f"{kind} device {device.describe()} cannot run {channels} int16 channel(s) at "
            f"{sample_rate} Hz ({exc}); its default rate is {device.default_samplerate:g} Hz"
        ) from exc


def select_device(spec: DeviceSpec, kind: Kind, *, sample_rate: int) -> AudioDevice:
    """Find the device ``spec`` names (see :func:`find_device`) and check it runs mono int16 at
    ``sample_rate`` (see :func:`check_settings`).

    :raises AudioDeviceError: naming what was wrong and listing the devices there are.
    :raises AudioError: when PortAudio is not available.
    """
    device = find_device(spec, kind, list_devices())
    check_settings(device, kind, sample_rate=sample_rate)
    log.debug("%s device: %s", kind, device.describe())
    return device


def select_input_device(spec: DeviceSpec, *, sample_rate: int) -> AudioDevice:
    """The capture device ``spec`` names, checked for mono int16 at ``sample_rate``."""
    return select_device(spec, "input", sample_rate=sample_rate)


def select_output_device(spec: DeviceSpec, *, sample_rate: int) -> AudioDevice:
    """The playback device ``spec`` names, checked for mono int16 at ``sample_rate``."""
    return select_device(spec, "output", sample_rate=sample_rate)


class PortAudioStream:
    """What capture and playback share: the device, chosen and checked for mono int16 at
    ``sample_rate`` when the object is built (so a wrong config fails at start-up, not at the
    first press), the block size, and the opening of a started PortAudio stream."""

    direction: str = "input"  # or "output": which kind of device and stream

    def __init__(
        self,
        device: DeviceSpec | AudioDevice = None,
        *,
        sample_rate: int = 48000,
        frame_samples: int = 960,
        latency: float | str = "low",
    ) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples
        self.latency = latency
        select = select_input_device if self.direction == "input" else select_output_device
        self.device: AudioDevice = (
            device if isinstance(device, AudioDevice) else select(device, sample_rate=sample_rate)
        )
        self.stream_latency: float | None = None
        """The latency PortAudio reported for the open stream, in seconds."""
        self._stream: Any = None
        self._reset()

    def _reset(self) -> None:
        """Set the subclass's counters (called once, at the end of construction)."""

    def _open_stream(self, callback: Any) -> Any:
        """A started mono int16 PortAudio stream running ``callback``; :class:`AudioStreamError`
        naming the device when PortAudio cannot open or start it."""
        sd = portaudio()
        kind = sd.InputStream if self.direction == "input" else sd.OutputStream
        stream: Any = None
        try:
            stream = kind(
                device=self.device.index,
                samplerate=self.sample_rate,
                channels=1,
                dtype="int16",
                blocksize=self.frame_samples,
                latency=self.latency,
                callback=callback,
            )
            stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            if stream is not None:
                stream.close(ignore_errors=True)
            raise AudioStreamError(
                f"cannot open {self.direction} device {self.device.describe()}: {exc}"
            ) from exc
        self.stream_latency = float(stream.latency)
        return stream
