"""LEDs: GPIO ones over gpiozero's MockFactory, null ones for absent pins, memory ones."""

from __future__ import annotations

import threading

import pytest
from gpiozero.pins.mock import MockFactory
from gpiozero.threads import GPIOThread
from waits import eventually

from pttd.errors import HardwareError, LedError
from pttd.radio.config import LedsConfig
from pttd.radio.leds import GpioLed, LedChange, Leds, MemoryLed, NullLed, build_leds


@pytest.fixture
def factory() -> MockFactory:
    return MockFactory()


def gpio_threads() -> set[threading.Thread]:
    """gpiozero's background threads that are running (an LED's blinking runs on one)."""
    return {t for t in threading.enumerate() if isinstance(t, GPIOThread) and t.is_alive()}


def test_pin_follows_on_and_off(factory):
    leds = build_leds(LedsConfig(transmit=18), pin_factory=factory)
    pin = factory.pin(18)
    assert pin.state is False
    assert not leds.transmit.is_lit
    leds.transmit.on()
    assert pin.state is True
    assert leds.transmit.is_lit
    leds.transmit.off()
    assert pin.state is False
    assert not leds.transmit.is_lit
    leds.close()


def test_active_low_inverts(factory):
    leds = build_leds(LedsConfig(error=23, active_high=False), pin_factory=factory)
    pin = factory.pin(23)
    assert pin.state is True  # off = high
    leds.error.on()
    assert pin.state is False
    assert leds.error.is_lit
    leds.error.off()
    assert pin.state is True
    leds.close()


async def test_blink_toggles_in_the_background(factory):
    led = GpioLed(24, pin_factory=factory)
    pin = factory.pin(24)
    pin.clear_states()
    before = gpio_threads()
    led.blink(0.01, 0.01)
    (blinker,) = gpio_threads() - before
    await eventually(lambda: len(pin.states) >= 7)  # off, then on/off/on/off/on/off…
    seen = [state.state for state in pin.states[1:7]]
    assert seen == [True, False] * 3
    led.blink(0.01, 0.01)  # the same blink again does not restart it
    assert gpio_threads() - before == {blinker}
    led.off()
    assert pin.state is False
    assert not led.is_lit
    # Blinking stopped: the thread that toggled the pin is gone (off() joins it), and nothing
    # else changes a pin by itself.
    assert gpio_threads() - before == set()
    led.close()


def test_absent_pins_are_null_leds(factory):
    leds = build_leds(LedsConfig(online=5), pin_factory=factory)
    assert isinstance(leds.online, GpioLed)
    for led in (leds.transmit, leds.receive, leds.error):
        assert isinstance(led, NullLed)
        led.on()
        led.blink(0.5, 0.5)
        assert not led.is_lit
        led.off()
        led.close()
    leds.close()


def test_all_absent_needs_no_gpio():
    leds = build_leds(LedsConfig())  # no pin factory on this machine: never touched
    assert all(isinstance(led, NullLed) for led in leds.all().values())
    assert list(leds.all()) == ["online", "transmit", "receive", "error"]
    assert isinstance(Leds().receive, NullLed)


def test_close_releases_the_pins(factory):
    config = LedsConfig(online=5, receive=6)
    build_leds(config, pin_factory=factory).close()
    build_leds(config, pin_factory=factory).close()  # free again


def test_pin_conflict_names_the_led_and_releases_the_others(factory):
    with pytest.raises(LedError, match="receive LED on GPIO 5: pin in use") as caught:
        build_leds(LedsConfig(online=5, receive=5), pin_factory=factory)
    assert isinstance(caught.value, HardwareError)
    assert isinstance(caught.value, OSError)
    build_leds(LedsConfig(online=5), pin_factory=factory).close()  # online's pin was released


def test_invalid_pin(factory):
    with pytest.raises(LedError, match="transmit LED on GPIO GPIO99: cannot claim the pin"):
        build_leds(LedsConfig(transmit="GPIO99"), pin_factory=factory)


def test_fake_leds_record_history():
    leds = build_leds(LedsConfig(transmit=18), fake=True)
    assert all(isinstance(led, MemoryLed) for led in leds.all().values())
    tx = leds.transmit
    assert isinstance(tx, MemoryLed)
    assert tx.name == "transmit"
    tx.on()
    tx.on()  # no change, no entry
    tx.blink(0.2, 0.8)
    tx.off()
    assert [(c.mode, c.on_s, c.off_s) for c in tx.history] == [
        ("off", 0.0, 0.0),
        ("on", 0.0, 0.0),
        ("blink", 0.2, 0.8),
        ("off", 0.0, 0.0),
    ]
    times = [c.t for c in tx.history]
    assert times == sorted(times)


def test_memory_led_blink_state_follows_its_clock():
    now = [100.0]
    led = MemoryLed("error", clock=lambda: now[0])
    led.blink(0.25, 0.75)
    assert led.state == LedChange(100.0, "blink", 0.25, 0.75)
    for offset, lit in [(0.0, True), (0.2, True), (0.3, False), (0.99, False), (1.1, True)]:
        now[0] = 100.0 + offset
        assert led.is_lit is lit, offset
    led.on()
    assert led.is_lit
    led.close()
    assert not led.is_lit
