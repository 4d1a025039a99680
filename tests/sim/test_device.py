"""The one simulated-device builder (pttd.sim.device) and the loopback world (pttd.sim.loopback)
that the demo, the benchmarks and the tests build on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gpiozero.pins.mock import MockFactory
from waits import eventually

from pttd.radio.config import AudioConfig, ButtonsConfig, LedsConfig, PttConfig, TalkConfig
from pttd.radio.inputs.gpio import GpioButtons
from pttd.radio.leds import GpioLed, MemoryLed
from pttd.radio.machine import Link, Talk
from pttd.sim.audio import silence
from pttd.sim.device import SimDevice, sim_config
from pttd.sim.inputs import SimulatedButton
from pttd.sim.loopback import ROOM, loopback


def test_sim_config_has_simulated_audio_and_what_it_is_given(tmp_path: Path) -> None:
    audio = AudioConfig(sample_rate=16000, backend="sounddevice")
    config = sim_config(
        "gate-1",
        "ws://example",
        tmp_path,
        audio,
        talk=TalkConfig(mode="toggle"),
        ptt=(PttConfig(kind="gpio", pin=17),),
        ca_file="/etc/ca.pem",
    )
    assert config.device.name == "gate-1" and config.state.dir == str(tmp_path)
    assert config.audio.backend == "sim" and config.audio.sample_rate == 16000
    assert (config.server.url, config.server.ca_file) == ("ws://example", "/etc/ca.pem")
    assert config.talk.mode == "toggle" and config.ptt[0].pin == 17


def test_the_default_microphone_loops_a_tone_a_given_signal_ends_in_silence(
    tmp_path: Path,
) -> None:
    voice = SimDevice.build(sim_config("a", "", tmp_path / "a"))
    assert voice.mic.at_end == "loop" and voice.mic.signal.any()
    quiet = SimDevice.build(sim_config("b", "", tmp_path / "b"), silence(0.1, sample_rate=48000))
    assert quiet.mic.at_end == "silence" and not quiet.mic.signal.any()
    assert quiet.mic.restart_on_open
    frame = 48000 * 20 // 1000
    assert voice.mic.frame_samples == voice.speaker.frame_samples == frame


def test_inputs_and_leds_follow_the_config(tmp_path: Path) -> None:
    plain = SimDevice.build(sim_config("a", "", tmp_path / "a"))
    assert plain.device.inputs == [plain.button]  # nothing configured: the simulated button
    assert isinstance(plain.device.leds.transmit, MemoryLed)

    factory = MockFactory()
    try:
        config = sim_config(
            "b",
            "",
            tmp_path / "b",
            ptt=(PttConfig(kind="gpio", pin=17),),
            buttons=ButtonsConfig(emergency=27),
            leds=LedsConfig(transmit=18),
        )
        extra = SimulatedButton("extra")
        wired = SimDevice.build(config, inputs=[extra], pin_factory=factory)
        gpio, *rest = wired.device.inputs
        assert isinstance(gpio, GpioButtons) and rest == [extra, wired.button]
        assert isinstance(wired.device.leds.transmit, GpioLed)
        wired.device.leds.close()
    finally:
        factory.reset()


def test_the_clock_is_the_devices(tmp_path: Path) -> None:
    sim = SimDevice.build(sim_config("a", "", tmp_path), clock=lambda: 1234.5)
    assert sim.device.clock() == 1234.5


async def test_a_device_on_the_loopback_server_talks_and_is_heard() -> None:
    async with loopback() as world:
        a = await world.add_device("a")
        b = await world.add_device("b", np.zeros(960, np.int16))
        await a.online()
        await b.online()
        assert a.machine.link is Link.ONLINE and a.machine.room == ROOM
        a.button.press()
        await a.transmitting()
        await eventually(lambda: b.device.counters.packets_received >= 5, what="b hears a")
        a.button.release()
        await a.idle()
        assert a.machine.talk is Talk.IDLE
        await b.until(lambda m: not m.incoming)
    assert a.task is None and b.task is None  # stopped with the world
