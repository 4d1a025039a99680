"""Simulated devices: the one way the demo, the benchmarks and the tests build a device.

A simulated device is the real :class:`~pttd.radio.daemon.Device` on simulated parts: a clocked
microphone (:class:`~pttd.sim.audio.ClockedSource`) playing a signal, a recording speaker
(:class:`~pttd.sim.audio.RecordingSink`), a :class:`~pttd.sim.inputs.SimulatedButton`, in-memory
LEDs, plus whatever inputs and LEDs its config asks for (GPIO ones on a gpiozero pin factory:
gpiozero's mock pins in the tests).

* :func:`sim_config`: a config with simulated audio, for a device name, a server and a state
  directory;
* :meth:`SimDevice.build`: the device and its simulated parts, not yet running; then
  :meth:`SimDevice.start`, the waits (:meth:`SimDevice.until`, :meth:`SimDevice.online`...) and
  :meth:`SimDevice.stop`;
* :func:`assemble_device`: the layer below, for a device on audio parts of the caller's (the
  hardware-in-loop rig's).

Waits are bounded by :attr:`SimDevice.timeout` and wait for a state, never for a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Self

from pttd.radio.audio import AudioInput, AudioOutput, Pcm
from pttd.radio.config import (
    AudioConfig,
    ButtonsConfig,
    Config,
    ConsoleConfig,
    DeviceConfig,
    LedsConfig,
    PttConfig,
    ServerConfig,
    StateConfig,
    TalkConfig,
)
from pttd.radio.daemon import Device
from pttd.radio.inputs import Input, build_inputs
from pttd.radio.leds import Leds, build_leds
from pttd.radio.machine import DeviceMachine, Link, Talk
from pttd.radio.store import Store
from pttd.sim.audio import AtEnd, ClockedSource, RecordingSink, sine
from pttd.sim.inputs import SimulatedButton

TIMEOUT = 10.0  # the default bound of every wait: generous, for a loaded machine
VOICE_HZ = 440.0  # the microphone's signal when none is given: a looping tone


def sim_config(
    name: str,
    url: str,
    state_dir: Path | str,
    audio: AudioConfig | None = None,
    *,
    talk: TalkConfig | None = None,
    ptt: Sequence[PttConfig] = (),
    buttons: ButtonsConfig | None = None,
    leds: LedsConfig | None = None,
    console: ConsoleConfig | None = None,
    ca_file: str = "",
) -> Config:
    """A device config with simulated audio (``audio``'s settings, ``backend="sim"``)."""
    return Config(
        device=DeviceConfig(name=name),
        server=ServerConfig(url=url, ca_file=ca_file),
        state=StateConfig(dir=str(state_dir)),
        audio=replace(audio or AudioConfig(), backend="sim"),
        talk=talk or TalkConfig(),
        ptt=tuple(ptt),
        buttons=buttons or ButtonsConfig(),
        leds=leds or LedsConfig(),
        console=console or ConsoleConfig(),
    )


def assemble_device(
    config: Config,
    audio_in: AudioInput,
    audio_out: AudioOutput,
    *,
    inputs: Sequence[Input] = (),
    pin_factory: object | None = None,
    leds: Leds | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Device:
    """A :class:`Device` on ``audio_in`` and ``audio_out``, with the inputs ``config`` asks for
    (GPIO ones on ``pin_factory``) followed by ``inputs``, and ``leds``: if not given, the
    configured GPIO LEDs on ``pin_factory``, or in-memory LEDs without one. ``clock`` is its
    monotonic clock (the machine's and the link's time)."""
    built = build_inputs(
        config.ptt, config.buttons, pin_factory=pin_factory, bluetooth=config.bluetooth
    )
    if leds is None:
        leds = (
            build_leds(config.leds, pin_factory=pin_factory)
            if pin_factory is not None
            else build_leds(config.leds, fake=True)
        )
    return Device(
        config,
        store=Store(config.state.dir),
        audio_in=audio_in,
        audio_out=audio_out,
        inputs=[*built, *inputs],
        leds=leds,
        clock=clock,
    )


@dataclass
class SimDevice:
    """A device with a simulated microphone, speaker and button, run on the caller's loop."""

    device: Device
    mic: ClockedSource
    speaker: RecordingSink
    button: SimulatedButton
    timeout: float = TIMEOUT
    task: asyncio.Task[None] | None = None

    @classmethod
    def build(
        cls,
        config: Config,
        mic_signal: Pcm | None = None,
        *,
        at_end: AtEnd | None = None,
        restart_on_open: bool = True,
        keep_seconds: float | None = 60.0,
        inputs: Sequence[Input] = (),
        pin_factory: object | None = None,
        leds: Leds | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = TIMEOUT,
    ) -> Self:
        """The device ``config`` describes (see :func:`assemble_device`), its microphone playing
        ``mic_signal`` (by default a looping 440 Hz tone; ``at_end``: what a given signal does
        when it ends, silence by default; ``restart_on_open``: each opening starts it over), its
        speaker keeping the last ``keep_seconds`` it played, and a :class:`SimulatedButton`
        after the other inputs. Not running yet: see :meth:`start`."""
        rate = config.audio.sample_rate
        frame = rate * config.audio.frame_ms // 1000
        if mic_signal is None:
            mic_signal = sine(VOICE_HZ, 1.0, sample_rate=rate, amplitude=0.3)
            at_end = at_end or "loop"
        mic = ClockedSource(
            mic_signal,
            sample_rate=rate,
            frame_samples=frame,
            at_end=at_end or "silence",
            restart_on_open=restart_on_open,
        )
        speaker = RecordingSink(sample_rate=rate, frame_samples=frame, keep_seconds=keep_seconds)
        button = SimulatedButton(f"sim:{config.device.name}")
        device = assemble_device(
            config,
            mic,
            speaker,
            inputs=[*inputs, button],
            pin_factory=pin_factory,
            leds=leds,
            clock=clock,
        )
        return cls(device, mic, speaker, button, timeout=timeout)

    @property
    def machine(self) -> DeviceMachine:
        return self.device.machine

    @property
    def name(self) -> str:
        return self.device.config.device.name

    async def start(self) -> None:
        """Run the device on this loop; return once it is up (inputs and audio started)."""
        ready = asyncio.Event()
        self.task = asyncio.create_task(self.device.run(ready.set), name=f"device {self.name}")
        async with asyncio.timeout(self.timeout):
            await ready.wait()

    async def until(self, condition: Callable[[DeviceMachine], bool]) -> None:
        """Wait until ``condition`` holds for the state machine (checked after every event)."""
        async with asyncio.timeout(self.timeout):
            await self.device.until(condition)

    async def online(self) -> None:
        await self.until(lambda m: m.link is Link.ONLINE)

    async def transmitting(self) -> None:
        await self.until(lambda m: m.talk is Talk.TRANSMITTING)

    async def idle(self) -> None:
        await self.until(lambda m: m.talk is Talk.IDLE and not m.capture_open)

    async def stop(self) -> None:
        """Stop the device and wait for it to finish (nothing to do if it is not running)."""
        if self.task is None:
            return
        self.device.stop()
        async with asyncio.timeout(self.timeout):
            await self.task
        self.task = None
