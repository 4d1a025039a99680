"""The hardware-in-loop rig (hw/hil.md), real or simulated, and what the tests need around it.

The real rig is a bench Pi with two jumpers and an audio cable:

* drive pin -> PTT pin: the test "presses" the button by pulling the PTT pin low;
* transmit-LED pin -> sense pin: the test reads what the LED is told;
* speaker output -> microphone input: what the device plays, it hears.

The mock rig is the same wiring on gpiozero's ``MockFactory``: the drive and LED pins are
``MockConnectedPin``s wired to the PTT and sense pins, and the audio cable is a :class:`WireInput`
that captures what the simulated speaker (a ``RecordingSink``) plays. The tests cannot tell them
apart, so the suite runs in CI and cannot rot.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gpiozero
import numpy as np
from gpiozero.pins.mock import MockConnectedPin, MockFactory

from pttd.radio.audio import AudioInput, AudioOutput, FrameHandler, Pcm
from pttd.radio.config import Config
from pttd.sim.audio import RecordingSink

DEFAULT_PINS = {"ptt": 17, "drive": 16, "led": 6, "sense": 12}
ENV_PINS = {
    "ptt": "PTTD_HIL_PTT_PIN",
    "drive": "PTTD_HIL_DRIVE_PIN",
    "led": "PTTD_HIL_LED_PIN",
    "sense": "PTTD_HIL_SENSE_PIN",
}


def env_pins() -> dict[str, int]:
    pins = {name: int(os.environ.get(var, DEFAULT_PINS[name])) for name, var in ENV_PINS.items()}
    if len(set(pins.values())) != len(pins):
        raise ValueError(f"the rig's four pins must differ: {pins}")
    return pins


# --------------------------------------------------------------------------- the lock


def lock_path() -> Path:
    configured = os.environ.get("PTTD_HIL_LOCK")
    if configured:
        return Path(configured)
    run_lock = Path("/run/lock")
    base = run_lock if os.access(run_lock, os.W_OK) else Path(tempfile.gettempdir())
    return base / "pttd-hil.lock"


class RigBusy(RuntimeError):
    """Another hardware-in-loop run holds the rig."""


@contextlib.contextmanager
def rig_lock(path: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold the bench: an exclusive ``flock`` on ``path`` (released when the process dies, so a
    killed run never leaves the bench locked). :class:`RigBusy` names the holder after ``wait``
    seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "?"
                    raise RigBusy(f"the HIL rig is in use ({path}: {holder})") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------------- audio cable


class WireInput:
    """A microphone at the end of a cable from ``speaker``: while open, it captures each block the
    speaker plays, one frame per block, on a thread of its own (an :class:`AudioInput`)."""

    def __init__(self, speaker: RecordingSink) -> None:
        self.speaker = speaker
        self.sample_rate = speaker.sample_rate
        self.frame_samples = speaker.frame_samples
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._generation = 0
        self._deliver: FrameHandler | None = None

    @property
    def is_open(self) -> bool:
        return self._thread is not None

    def open(self, deliver: FrameHandler) -> None:
        if self._thread is not None:
            raise RuntimeError("audio input is already open")
        loop = asyncio.get_running_loop()
        self._generation += 1
        self._deliver = deliver
        self._stop = threading.Event()
        played = self.speaker.played()
        start = played[-1].offset + len(played[-1].samples) if played else 0
        self._thread = threading.Thread(
            target=self._run,
            args=(loop, self._generation, self._stop, start),
            name="hil-wire",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        thread, self._thread = self._thread, None
        self._generation += 1
        self._deliver = None
        if thread is not None:
            self._stop.set()
            thread.join()

    def _run(
        self, loop: asyncio.AbstractEventLoop, generation: int, stop: threading.Event, at: int
    ) -> None:
        period = self.frame_samples / self.sample_rate
        while not stop.wait(period / 2):
            for block in self.speaker.played():
                if block.offset < at:
                    continue
                at = block.offset + len(block.samples)
                try:
                    loop.call_soon_threadsafe(self._post, generation, block.samples, block.t)
                except RuntimeError:  # loop closed
                    return

    def _post(self, generation: int, frame: Pcm, t: float) -> None:
        deliver = self._deliver
        if generation == self._generation and deliver is not None:
            deliver(frame, t)


# --------------------------------------------------------------------------- the rig


@dataclass
class Rig:
    kind: str  # "mock" or "real"
    factory: Any  # the gpiozero pin factory the device and the rig share
    pins: dict[str, int]
    console_port: str = ""  # the device's end of the console cable ("" : none)
    terminal_port: str = ""  # the laptop's end
    audio_config: Config | None = None  # real rig: the devices to use (from PTTD_HIL_CONFIG)
    _drive: Any = field(default=None, repr=False)
    _sense: Any = field(default=None, repr=False)

    def connect(self) -> None:
        """Claim the drive pin (high: released) and the sense pin."""
        self._drive = gpiozero.DigitalOutputDevice(
            self.pins["drive"], initial_value=True, pin_factory=self.factory
        )
        self._sense = gpiozero.DigitalInputDevice(
            self.pins["sense"], pull_up=False, pin_factory=self.factory
        )

    def press(self) -> None:
        self._drive.off()  # PTT pin pulled low: pressed (button to ground, pull-up)

    def release(self) -> None:
        self._drive.on()

    def led_lit(self) -> bool:
        return bool(self._sense.value)

    def make_audio(self, config: Config) -> tuple[AudioInput, AudioOutput]:
        if self.kind == "mock":
            rate = config.audio.sample_rate
            frame = rate * config.audio.frame_ms // 1000
            speaker = RecordingSink(sample_rate=rate, frame_samples=frame, keep_seconds=5.0)
            return WireInput(speaker), speaker
        from pttd.radio.run import build_audio

        return build_audio(config)

    def close(self) -> None:
        for device in (self._drive, self._sense):
            if device is not None:
                device.close()
        self._drive = self._sense = None
        if self.kind == "mock":
            self.factory.close()


def mock_rig(pins: dict[str, int] | None = None) -> Rig:
    pins = pins or dict(DEFAULT_PINS)
    factory = MockFactory()
    # the jumpers: drive -> PTT, transmit LED -> sense
    factory.pin(pins["drive"], pin_class=MockConnectedPin, input_pin=factory.pin(pins["ptt"]))
    factory.pin(pins["led"], pin_class=MockConnectedPin, input_pin=factory.pin(pins["sense"]))
    return Rig("mock", factory, pins)


def real_factory() -> Any:
    """The pin factory gpiozero would use on this machine, if it is a real one (lgpio by
    default, as on current Pi OS and the Pi 5); raises with the reason otherwise."""
    from importlib.metadata import entry_points

    name = os.environ.get("GPIOZERO_PIN_FACTORY", "lgpio").lower()
    if name == "mock":
        raise RuntimeError("GPIOZERO_PIN_FACTORY=mock is not a real pin factory")
    (entry,) = entry_points(group="gpiozero_pin_factories", name=name)
    return entry.load()()


# --------------------------------------------------------------------------- console cable


class Terminal:
    """The laptop's end of the console cable: a pty master (mock) or a serial port (real)."""

    def __init__(self, fd: int | None = None, port: Any = None) -> None:
        self._fd = fd
        self._port = port
        if fd is not None:
            os.set_blocking(fd, False)

    def write(self, data: bytes) -> None:
        if self._fd is not None:
            os.write(self._fd, data)
        else:
            self._port.write(data)

    def read(self) -> bytes:
        """What has arrived (nothing if nothing has)."""
        if self._fd is not None:
            try:
                return os.read(self._fd, 4096)
            except (BlockingIOError, OSError):
                return b""
        return bytes(self._port.read(self._port.in_waiting or 1))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        else:
            self._port.close()


# --------------------------------------------------------------------------- signals


def dominant_frequency(x: Pcm, sample_rate: int) -> tuple[float, float]:
    """(frequency of the strongest component, its level over the median bin in dB)."""
    samples = x.astype(np.float64)
    samples -= samples.mean()
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    peak = int(np.argmax(spectrum[1:])) + 1
    # parabolic interpolation between bins
    if 1 <= peak < len(spectrum) - 1:
        a, b, c = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        shift = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c != 0 else 0.0
    else:
        shift = 0.0
    freq = (peak + shift) * sample_rate / len(samples)
    snr = 20 * np.log10(spectrum[peak] / (np.median(spectrum) + 1e-12))
    return float(freq), float(snr)
