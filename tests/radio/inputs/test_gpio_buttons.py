"""GPIO buttons over gpiozero's own MockFactory (an explicit instance, not the global default)."""

from __future__ import annotations

import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory

from pttd.errors import HardwareError, InputError
from pttd.radio.config import ButtonsConfig, PttConfig
from pttd.radio.inputs import Button
from pttd.radio.inputs.gpio import GpioButtons, GpioButtonSpec, gpio_specs


@pytest.fixture
def factory() -> MockFactory:
    return MockFactory()


async def test_press_and_release_arrive_on_the_loop_in_order(factory, recorder):
    buttons = GpioButtons([GpioButtonSpec(Button.PTT, 17)], pin_factory=factory)
    await buttons.start(recorder)
    before = time.monotonic()
    pin = factory.pin(17)
    pin.drive_low()  # MockFactory: the callback runs right here, on this (the loop) thread
    pin.drive_high()
    pin.drive_low()
    pin.drive_high()
    edges = await recorder.wait_for(4)
    assert recorder.summary() == [(Button.PTT, True), (Button.PTT, False)] * 2
    assert {edge.source for edge in edges} == {"gpio:17"}
    assert edges[0].t >= before
    recorder.check_delivery()
    await buttons.close()


async def test_edges_from_another_thread_cross_into_the_loop(factory, recorder):
    """Real pin factories call back on their own thread: simulate that with drive_low there."""
    buttons = GpioButtons([GpioButtonSpec(Button.PTT, 17)], pin_factory=factory)
    await buttons.start(recorder)
    seen_on: list[int] = []

    def wiring() -> None:
        seen_on.append(threading.get_ident())
        factory.pin(17).drive_low()
        factory.pin(17).drive_high()

    worker = threading.Thread(target=wiring)
    worker.start()
    worker.join(timeout=5)
    await recorder.wait_for(2)
    assert recorder.summary() == [(Button.PTT, True), (Button.PTT, False)]
    assert seen_on[0] != recorder.loop_thread
    recorder.check_delivery()
    await buttons.close()


async def test_pull_down_button_is_pressed_when_high(factory, recorder):
    buttons = GpioButtons(
        [GpioButtonSpec(Button.PTT, 22, pull_up=False, bounce_ms=0)], pin_factory=factory
    )
    await buttons.start(recorder)
    factory.pin(22).drive_high()
    factory.pin(22).drive_low()
    await recorder.wait_for(2)
    assert recorder.summary() == [(Button.PTT, True), (Button.PTT, False)]
    assert factory.pin(22).bounce is None
    await buttons.close()


async def test_debounce_is_handed_to_the_pin(factory):
    buttons = GpioButtons([GpioButtonSpec(Button.PTT, 17, bounce_ms=30)], pin_factory=factory)
    assert factory.pin(17).bounce == pytest.approx(0.030)
    await buttons.close()


async def test_extra_buttons_from_config(factory, recorder):
    ptt = [PttConfig(kind="gpio", pin=17), PttConfig(kind="sim")]
    extras = ButtonsConfig(room_up=5, room_down=6, volume_up="GPIO13", emergency=26, bounce_ms=0)
    specs = gpio_specs(ptt, extras)
    assert [(s.button, s.pin) for s in specs] == [
        (Button.PTT, 17),
        (Button.EMERGENCY, 26),
        (Button.ROOM_UP, 5),
        (Button.ROOM_DOWN, 6),
        (Button.VOLUME_UP, "GPIO13"),
    ]
    buttons = GpioButtons(specs, pin_factory=factory)
    await buttons.start(recorder)
    for pin in (26, 5, 6, 13):
        factory.pin(pin).drive_low()
        factory.pin(pin).drive_high()
    await recorder.wait_for(8)
    assert recorder.summary() == [
        (Button.EMERGENCY, True),
        (Button.EMERGENCY, False),
        (Button.ROOM_UP, True),
        (Button.ROOM_UP, False),
        (Button.ROOM_DOWN, True),
        (Button.ROOM_DOWN, False),
        (Button.VOLUME_UP, True),
        (Button.VOLUME_UP, False),
    ]
    assert recorder.edges[6].source == "gpio:GPIO13"
    recorder.check_delivery()
    await buttons.close()


async def test_a_button_down_at_start_is_reported(factory, recorder):
    buttons = GpioButtons([GpioButtonSpec(Button.PTT, 17)], pin_factory=factory)
    factory.pin(17).drive_low()  # before start: no handler yet
    await buttons.start(recorder)
    await recorder.wait_for(1)
    assert recorder.summary() == [(Button.PTT, True)]
    factory.pin(17).drive_high()
    await recorder.wait_for(2)
    assert recorder.summary() == [(Button.PTT, True), (Button.PTT, False)]
    await buttons.close()


async def test_close_releases_a_held_button_and_the_pins(factory, recorder):
    buttons = GpioButtons([GpioButtonSpec(Button.PTT, 17)], pin_factory=factory)
    await buttons.start(recorder)
    factory.pin(17).drive_low()
    await recorder.wait_for(1)
    await buttons.close()
    await recorder.wait_for(2)
    assert recorder.summary() == [(Button.PTT, True), (Button.PTT, False)]
    factory.pin(17).drive_high()  # after close: nothing
    await recorder.settle()
    assert len(recorder.edges) == 2
    again = GpioButtons([GpioButtonSpec(Button.PTT, 17)], pin_factory=factory)  # pin is free
    await again.close()


async def test_a_pin_used_twice_names_both_functions(factory):
    specs = [GpioButtonSpec(Button.PTT, 17), GpioButtonSpec(Button.ROOM_UP, "BOARD11")]
    with pytest.raises(InputError) as caught:
        GpioButtons(specs, pin_factory=factory)
    message = str(caught.value)
    assert "room up button on GPIO BOARD11" in message
    assert "PTT button on GPIO 17" in message
    assert isinstance(caught.value, HardwareError)
    assert isinstance(caught.value, OSError)
    # the PTT pin claimed before the failure was released again
    GpioButtons([GpioButtonSpec(Button.PTT, 17)], pin_factory=factory)


async def test_a_pin_in_use_elsewhere_is_a_clear_error(factory):
    from gpiozero import LED

    led = LED(18, pin_factory=factory)
    with pytest.raises(InputError, match=r"emergency button on GPIO 18: pin in use"):
        GpioButtons([GpioButtonSpec(Button.EMERGENCY, 18)], pin_factory=factory)
    led.close()


async def test_an_invalid_pin_is_a_clear_error(factory):
    with pytest.raises(InputError, match=r"volume down button on GPIO GPIO99: cannot claim"):
        GpioButtons([GpioButtonSpec(Button.VOLUME_DOWN, "GPIO99")], pin_factory=factory)
