"""build_inputs: one input per configured PTT; all GPIO pins (PTT and extra buttons) in one."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from pttd.errors import ConfigError, InputError
from pttd.radio.config import ButtonsConfig, PttConfig
from pttd.radio.inputs import Button, build_inputs
from pttd.radio.inputs.evdev_input import EvdevButton
from pttd.radio.inputs.gpio import GpioButtons
from pttd.radio.inputs.serial_ptt import SerialPtt
from pttd.sim.inputs import SimulatedButton


async def test_every_kind(recorder):
    factory = MockFactory()
    ptt = [
        PttConfig(kind="sim"),
        PttConfig(kind="gpio", pin=17),
        PttConfig(kind="evdev", device="FootSwitch", key="KEY_B"),
        PttConfig(kind="serial", port="loop://", baudrate=115200),
        PttConfig(kind="gpio", pin=27, pull_up=False),
    ]
    inputs = build_inputs(ptt, ButtonsConfig(emergency=26), pin_factory=factory)
    assert [type(i) for i in inputs] == [
        GpioButtons,
        SimulatedButton,
        EvdevButton,
        SerialPtt,
    ]
    assert [i.name for i in inputs] == ["gpio", "sim", "evdev:FootSwitch", "serial:loop://"]
    gpio = inputs[0]
    assert isinstance(gpio, GpioButtons)
    assert [(s.button, s.pin, s.pull_up) for s in gpio.specs] == [
        (Button.PTT, 17, True),
        (Button.PTT, 27, False),
        (Button.EMERGENCY, 26, True),
    ]
    for each in inputs:
        await each.start(recorder)
    factory.pin(27).drive_high()  # the pull-down PTT
    await recorder.wait_for(1)
    assert recorder.edges[0].source == "gpio:27"
    for each in inputs:
        await each.close()


def test_nothing_configured():
    assert build_inputs([], ButtonsConfig()) == []


def test_only_extra_buttons():
    factory = MockFactory()
    inputs = build_inputs([], ButtonsConfig(volume_up=5), pin_factory=factory)
    assert len(inputs) == 1
    assert isinstance(inputs[0], GpioButtons)


def test_bad_key_name_fails_at_build():
    with pytest.raises(ConfigError, match="KEY_PTT_PLEASE"):
        build_inputs([PttConfig(kind="evdev", device="x", key="KEY_PTT_PLEASE")], ButtonsConfig())


def test_a_pin_conflict_fails_at_build():
    factory = MockFactory()
    with pytest.raises(InputError, match="room down button on GPIO 17"):
        build_inputs(
            [PttConfig(kind="gpio", pin=17)], ButtonsConfig(room_down=17), pin_factory=factory
        )
