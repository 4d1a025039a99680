"""Indicator LEDs: GPIO through gpiozero, a do-nothing one for an absent LED, an in-memory one.

An absent LED is a :class:`NullLed`, so callers never check whether an LED exists. The LEDs
decide nothing: the device state machine says which is on, off or blinking. Calls are
idempotent (``blink(0.5, 0.5)`` on an LED already blinking so does not restart its rhythm).

gpiozero is imported by the first :class:`GpioLed`: a device with no LED pin configured never
loads it (about 2.5 MB of the daemon's memory).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pttd.errors import LedError
from pttd.radio.config import LedsConfig

log = logging.getLogger(__name__)

Mode = Literal["on", "off", "blink"]


class Led(Protocol):
    def on(self) -> None: ...

    def off(self) -> None: ...

    def blink(self, on_s: float, off_s: float) -> None:
        """Blink until told otherwise: lit ``on_s`` seconds, dark ``off_s``, starting lit."""
        ...

    @property
    def is_lit(self) -> bool:
        """Whether the LED is lit now (while blinking: in this instant)."""
        ...

    def close(self) -> None: ...


class NullLed:
    """An LED that is not there: every call does nothing; never lit."""

    def on(self) -> None:
        pass

    def off(self) -> None:
        pass

    def blink(self, on_s: float, off_s: float) -> None:
        pass

    @property
    def is_lit(self) -> bool:
        return False

    def close(self) -> None:
        pass


class GpioLed:
    """An LED on a GPIO pin; blinking runs on gpiozero's own background thread."""

    def __init__(
        self,
        pin: int | str,
        *,
        active_high: bool = True,
        function: str = "",
        pin_factory: object | None = None,
    ) -> None:
        import gpiozero  # type: ignore[import-untyped]  # noqa: PLC0415 (only with an LED pin)

        self.description = f"{function + ' ' if function else ''}LED on GPIO {pin}"
        self._mode: tuple[Mode, float, float] = ("off", 0.0, 0.0)
        try:
            self._led: Any = gpiozero.LED(
                pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
            )
        except gpiozero.GPIOPinInUse as exc:
            raise LedError(f"{self.description}: pin in use ({exc})") from exc
        except gpiozero.BadPinFactory as exc:
            raise LedError(f"{self.description}: no GPIO on this machine ({exc})") from exc
        except Exception as exc:  # the pin factories raise their own (lgpio.error, OSError…)
            raise LedError(f"{self.description}: cannot claim the pin: {exc}") from exc

    def on(self) -> None:
        if self._mode[0] != "on":
            self._mode = ("on", 0.0, 0.0)
            self._led.on()

    def off(self) -> None:
        if self._mode[0] != "off":
            self._mode = ("off", 0.0, 0.0)
            self._led.off()

    def blink(self, on_s: float, off_s: float) -> None:
        if self._mode != ("blink", on_s, off_s):
            self._mode = ("blink", on_s, off_s)
            self._led.blink(on_time=on_s, off_time=off_s, n=None, background=True)

    @property
    def is_lit(self) -> bool:
        return bool(self._led.is_lit)

    def close(self) -> None:
        self._led.close()  # stops blinking and releases the pin


@dataclass(frozen=True, slots=True)
class LedChange:
    """One entry of :attr:`MemoryLed.history`."""

    t: float  # the clock's time of the call (time.monotonic() by default)
    mode: Mode
    on_s: float = 0.0  # blink only
    off_s: float = 0.0


class MemoryLed:
    """An LED that remembers what it was told, with times: for tests and the demo."""

    def __init__(self, name: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self.history: list[LedChange] = [LedChange(clock(), "off")]

    @property
    def state(self) -> LedChange:
        with self._lock:
            return self.history[-1]

    def _set(self, change: LedChange) -> None:
        with self._lock:
            last = self.history[-1]
            if (last.mode, last.on_s, last.off_s) != (change.mode, change.on_s, change.off_s):
                self.history.append(change)

    def on(self) -> None:
        self._set(LedChange(self._clock(), "on"))

    def off(self) -> None:
        self._set(LedChange(self._clock(), "off"))

    def blink(self, on_s: float, off_s: float) -> None:
        self._set(LedChange(self._clock(), "blink", on_s, off_s))

    @property
    def is_lit(self) -> bool:
        state = self.state
        if state.mode != "blink":
            return state.mode == "on"
        period = state.on_s + state.off_s
        if period <= 0:
            return state.on_s > 0
        return (self._clock() - state.t) % period < state.on_s

    def close(self) -> None:
        self.off()


@dataclass(slots=True)
class Leds:
    """The device's four indicators; each is a real, null or memory LED."""

    online: Led = field(default_factory=NullLed)
    transmit: Led = field(default_factory=NullLed)  # lit exactly while the microphone is live
    receive: Led = field(default_factory=NullLed)
    error: Led = field(default_factory=NullLed)

    def all(self) -> dict[str, Led]:
        return {
            "online": self.online,
            "transmit": self.transmit,
            "receive": self.receive,
            "error": self.error,
        }

    def close(self) -> None:
        for name, led in self.all().items():
            try:
                led.close()
            except Exception:
                log.exception("%s LED: closing failed", name)


def build_leds(
    config: LedsConfig, *, pin_factory: object | None = None, fake: bool = False
) -> Leds:
    """The LEDs ``config`` asks for: a GpioLed per configured pin, a NullLed where none is.

    ``fake``: a MemoryLed for each of the four, pins or not (the demo shows them all).
    A pin that cannot be claimed raises :class:`LedError`, after releasing those claimed.
    """
    names = ("online", "transmit", "receive", "error")
    if fake:
        return Leds(**{name: MemoryLed(name) for name in names})
    built: dict[str, Led] = {}
    try:
        for name in names:
            pin = getattr(config, name)
            built[name] = (
                NullLed()
                if pin is None
                else GpioLed(
                    pin, active_high=config.active_high, function=name, pin_factory=pin_factory
                )
            )
    except BaseException:
        Leds(**built).close()
        raise
    return Leds(**built)
