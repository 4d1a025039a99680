"""GPIO buttons through gpiozero: edge callbacks (never polling), debounce by the pin factory.

gpiozero calls ``when_pressed``/``when_released`` on its pin factory's thread (lgpio, RPi.GPIO…)
or, with ``MockFactory``, synchronously inside ``drive_low()``/``drive_high()`` on the caller's
thread; :class:`~pttd.radio.inputs.EdgeSink` takes either to the loop.

gpiozero is imported when the first pin is claimed: :func:`gpio_specs` (which the daemon always
calls) does not need it, and a device with no GPIO button never loads it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pttd.errors import InputError
from pttd.radio.inputs import Button, EdgeHandler, EdgeSink

if TYPE_CHECKING:
    from pttd.radio.config import ButtonsConfig, PttConfig

log = logging.getLogger(__name__)

_FUNCTION_NAMES = {
    Button.PTT: "PTT",
    Button.EMERGENCY: "emergency",
    Button.ROOM_UP: "room up",
    Button.ROOM_DOWN: "room down",
    Button.VOLUME_UP: "volume up",
    Button.VOLUME_DOWN: "volume down",
}


@dataclass(frozen=True, slots=True)
class GpioButtonSpec:
    """One button wired to a GPIO pin."""

    button: Button
    pin: int | str  # BCM number or a gpiozero pin name ("GPIO17", "BOARD11")
    pull_up: bool = True  # internal pull-up, button to ground (pressed = low)
    bounce_ms: int = 20  # 0: no debounce

    @property
    def source(self) -> str:
        return f"gpio:{self.pin}"

    def describe(self) -> str:
        return f"{_FUNCTION_NAMES[self.button]} button on GPIO {self.pin}"


def gpio_specs(ptt: Sequence[PttConfig], buttons: ButtonsConfig) -> list[GpioButtonSpec]:
    """The GPIO buttons the configuration asks for: each gpio PTT, then the extra buttons."""
    specs = [
        GpioButtonSpec(Button.PTT, config.pin, config.pull_up, config.bounce_ms)
        for config in ptt
        if config.kind == "gpio" and config.pin is not None
    ]
    extras = {
        Button.EMERGENCY: buttons.emergency,
        Button.ROOM_UP: buttons.room_up,
        Button.ROOM_DOWN: buttons.room_down,
        Button.VOLUME_UP: buttons.volume_up,
        Button.VOLUME_DOWN: buttons.volume_down,
    }
    specs.extend(
        GpioButtonSpec(button, pin, buttons.pull_up, buttons.bounce_ms)
        for button, pin in extras.items()
        if pin is not None
    )
    return specs


class GpioButtons:
    """A set of GPIO buttons; the pins are claimed on construction and released by close()."""

    def __init__(
        self, specs: Sequence[GpioButtonSpec], *, pin_factory: object | None = None
    ) -> None:
        self._sink = EdgeSink("gpio")
        self._devices: list[tuple[GpioButtonSpec, Any]] = []
        try:
            for spec in specs:
                self._devices.append((spec, self._claim(spec, pin_factory)))
        except BaseException:
            self._release_pins()
            raise

    @property
    def name(self) -> str:
        return "gpio"

    @property
    def specs(self) -> list[GpioButtonSpec]:
        return [spec for spec, _ in self._devices]

    def _claim(self, spec: GpioButtonSpec, pin_factory: object | None) -> Any:
        import gpiozero  # type: ignore[import-untyped]  # noqa: PLC0415 (only with GPIO pins)

        try:
            return gpiozero.Button(
                spec.pin,
                pull_up=spec.pull_up,
                bounce_time=spec.bounce_ms / 1000 if spec.bounce_ms > 0 else None,
                pin_factory=pin_factory,
            )
        except gpiozero.GPIOPinInUse as exc:
            owner = self._owner_of(spec)
            why = f"already the {owner.describe()}'s pin" if owner else f"pin in use ({exc})"
            raise InputError(f"{spec.describe()}: {why}") from exc
        except gpiozero.BadPinFactory as exc:
            raise InputError(f"{spec.describe()}: no GPIO on this machine ({exc})") from exc
        except Exception as exc:  # the pin factories raise their own (lgpio.error, OSError…)
            raise InputError(f"{spec.describe()}: cannot claim the pin: {exc}") from exc

    def _owner_of(self, spec: GpioButtonSpec) -> GpioButtonSpec | None:
        """Which of our buttons already holds ``spec``'s pin (17, "GPIO17", "BOARD11"…)."""
        for other, device in self._devices:
            try:
                if device.pin_factory.pin(spec.pin) is device.pin:
                    return other
            except Exception:  # noqa: S112 (only for a nicer message)
                continue
        return None

    async def start(self, handler: EdgeHandler) -> None:
        self._sink.connect(handler)
        for spec, device in self._devices:
            device.when_pressed = self._callback(spec, pressed=True)
            device.when_released = self._callback(spec, pressed=False)
        # A button already down at start (held, or stuck) is reported as pressed: gpiozero
        # only reports changes. Read under the sink's lock so that a racing release cannot
        # be overtaken by this stale press.
        for spec, device in self._devices:
            if self._sink.sync(spec.button, spec.source, _reader(device)):
                log.warning("%s is down at start", spec.describe())
        log.info("GPIO buttons: %s", ", ".join(s.describe() for s, _ in self._devices) or "none")

    def _callback(self, spec: GpioButtonSpec, *, pressed: bool) -> Callable[[], None]:
        sink, button, source = self._sink, spec.button, spec.source

        def on_edge() -> None:  # gpiozero's thread, or the MockFactory caller's
            sink.edge(button, pressed, source)

        return on_edge

    async def close(self) -> None:
        # Edges that race with this are dropped by the disconnected sink.
        self._sink.release_all()
        self._sink.disconnect()
        self._release_pins()

    def _release_pins(self) -> None:
        for spec, device in self._devices:
            try:
                device.close()
            except Exception:
                log.exception("%s: closing failed", spec.describe())
        self._devices.clear()


def _reader(device: Any) -> Callable[[], bool]:
    return lambda: bool(device.is_pressed)
