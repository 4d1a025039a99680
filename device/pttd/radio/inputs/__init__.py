"""Button inputs: adapters that turn hardware edges into :class:`ButtonEdge` values on the loop.

Adapters decide nothing (hold or toggle, which source wins, stuck-button handling: all the
device state machine's). They report edges, each stamped with :func:`time.monotonic` at the
moment the adapter saw it, and deliver them to one handler on the asyncio loop thread.

gpiozero calls back on its own thread (or, with ``MockFactory``, synchronously inside
``drive_low()`` on the caller's thread), the serial adapter reads on a thread, ``SimulatedButton``
is pressed from any thread. They all cross into the loop in exactly one place:
:meth:`EdgeSink.edge`, which takes the timestamp and calls ``loop.call_soon_threadsafe``.

An adapter that loses its device (USB pedal unplugged, serial link dropped) says so with one
:class:`InputGone` notice for its source, on the same path as its edges and after them, and
reopens the device until closed. The notice stands for a release of everything the source held
(no release edges are sent for them) and more: in toggle mode, where releases mean nothing, a
talk that source latched on ends (the state machine's :class:`~pttd.radio.machine.InputLost`).
A vanished device never leaves PTT held nor a talk latched. GPIO pins do not vanish; ``close()``
is not a vanishing: it reports a release for every button still held.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pttd.radio.config import BluetoothConfig, ButtonsConfig, PttConfig
    from pttd.radio.inputs.ble_protocol import BleButtonSpec

log = logging.getLogger(__name__)

__all__ = [
    "Button",
    "ButtonEdge",
    "EdgeHandler",
    "EdgeSink",
    "Input",
    "InputGone",
    "build_inputs",
]


class Button(enum.Enum):
    PTT = "ptt"
    EMERGENCY = "emergency"
    ROOM_UP = "room_up"
    ROOM_DOWN = "room_down"
    VOLUME_UP = "volume_up"
    VOLUME_DOWN = "volume_down"


@dataclass(frozen=True, slots=True)
class ButtonEdge:
    button: Button
    pressed: bool
    t: float  # time.monotonic() taken at the edge, on whatever thread saw it
    source: str  # e.g. "gpio:17", "serial:/dev/pts/3", "evdev:/dev/input/event3", "sim"


@dataclass(frozen=True, slots=True)
class InputGone:
    """The device behind ``source`` vanished: every button it held is up, and a talk it latched
    on must end."""

    t: float  # time.monotonic() when the adapter saw it go
    source: str


EdgeHandler = Callable[[ButtonEdge | InputGone], None]
"""Receives every edge and every :class:`InputGone`; always invoked on the asyncio loop thread."""


class Input(Protocol):
    """One source of button edges (a set of GPIO pins, an input device, a serial accessory…)."""

    @property
    def name(self) -> str: ...

    async def start(self, handler: EdgeHandler) -> None:
        """Begin delivering edges to ``handler``; call on the loop (captures the running loop)."""
        ...

    async def close(self) -> None:
        """Stop, release the hardware, and report a release for every button still held."""
        ...


class EdgeSink:
    """The one place where edges cross from any thread into the asyncio loop.

    Thread-safe. It keeps which (button, source) pairs are held, so that it passes on only
    real changes (a repeated ``+PTT=P`` is not a second press) and so that an adapter can
    release everything it holds when it is closed (:meth:`release_all`), or forget it when its
    device vanishes (:meth:`lost`). Edges seen while not connected (before ``start``, after
    ``close``) are dropped and change nothing.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._held: set[tuple[Button, str]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handler: EdgeHandler | None = None

    def connect(self, handler: EdgeHandler) -> None:
        """Deliver edges to ``handler`` on the running loop; call from the loop thread."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._loop = loop
            self._handler = handler

    def disconnect(self) -> None:
        with self._lock:
            self._loop = None
            self._handler = None
            self._held.clear()

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._handler is not None

    def is_held(self, button: Button, source: str) -> bool:
        with self._lock:
            return (button, source) in self._held

    def edge(self, button: Button, pressed: bool, source: str) -> bool:
        """Report that ``button`` went down or up; from any thread. True if passed on."""
        return self._report(button, source, lambda: pressed)

    def sync(self, button: Button, source: str, read: Callable[[], bool]) -> bool:
        """Report the button's current state as read by ``read()`` (under the lock, so that
        a callback racing with it cannot be reordered around it). True if an edge resulted."""
        return self._report(button, source, read)

    def release_all(self, source: str | None = None) -> None:
        """Report a release for every button held (from ``source`` only, if given)."""
        with self._lock:
            held = [key for key in self._held if source is None or key[1] == source]
        for button, src in sorted(held, key=lambda key: (key[0].value, key[1])):
            if self.edge(button, False, src):
                log.info("%s: released %s (%s)", self._name, button.value, src)

    def lost(self, source: str) -> bool:
        """Report that ``source``'s device vanished; from any thread. Its held buttons are
        forgotten without release edges: the :class:`InputGone` notice stands for them. Sent
        whether or not anything is held (a talk latched on in toggle mode holds no button).
        True if passed on."""
        with self._lock:
            notice = InputGone(time.monotonic(), source)
            if not self._schedule(notice):
                return False
            self._held = {key for key in self._held if key[1] != source}
            return True

    def _report(self, button: Button, source: str, read: Callable[[], bool]) -> bool:
        with self._lock:
            t = time.monotonic()
            if self._handler is None:
                log.debug("%s: %s %s while not started: dropped", self._name, button.value, source)
                return False
            pressed = read()
            key = (button, source)
            if (key in self._held) == pressed:
                return False  # not a change
            if not self._schedule(ButtonEdge(button, pressed, t, source)):
                return False
            if pressed:
                self._held.add(key)
            else:
                self._held.discard(key)
            return True

    def _schedule(self, item: ButtonEdge | InputGone) -> bool:
        """Hand ``item`` to the handler on the loop; call under the lock, so that everything
        reaches the loop in the order it was stamped. False if not connected or the loop is
        closed."""
        loop, handler = self._loop, self._handler
        if loop is None or handler is None:
            log.debug("%s: not started: dropped: %s", self._name, item)
            return False
        try:
            loop.call_soon_threadsafe(handler, item)
        except RuntimeError:  # the loop is closed: we are shutting down
            log.debug("%s: loop closed, dropped: %s", self._name, item)
            return False
        return True


def _ble(spec: BleButtonSpec) -> Input:
    from pttd.radio.inputs.ble import BleButton  # noqa: PLC0415 (loads bleak only when used)

    return BleButton(spec)


def build_inputs(
    ptt: Sequence[PttConfig],
    buttons: ButtonsConfig,
    *,
    pin_factory: object | None = None,
    bluetooth: BluetoothConfig | None = None,
) -> list[Input]:
    """One input per configured PTT (all GPIO pins, PTT and extra buttons, share one), and one
    per BLE button of ``bluetooth.buttons`` (the PTT-Z convention, added at the console).

    GPIO pins are claimed here, so a pin that cannot be used fails now (:class:`InputError`);
    an evdev device or serial port that is absent is not an error: its adapter keeps trying.
    ``pin_factory`` (a gpiozero pin factory) is passed to gpiozero; None means its default.
    """
    from pttd.radio.config import normal_address, split_list  # noqa: PLC0415 (no cycle at import)
    from pttd.radio.inputs.ble_protocol import BleButtonSpec  # noqa: PLC0415

    inputs: list[Input] = []
    for config in ptt:
        if config.kind == "evdev":
            from pttd.radio.inputs.evdev_input import EvdevButton  # noqa: PLC0415 (Linux only)

            inputs.append(EvdevButton(config.device, config.key))
        elif config.kind == "serial":
            from pttd.radio.inputs.serial_ptt import SerialPtt  # noqa: PLC0415

            inputs.append(SerialPtt(config.port, config.baudrate))
        elif config.kind == "ble":
            inputs.append(_ble(BleButtonSpec.from_config(config)))
        elif config.kind == "sim":
            from pttd.sim.inputs import SimulatedButton  # noqa: PLC0415

            inputs.append(SimulatedButton())
    bound = {normal_address(c.address) for c in ptt if c.kind == "ble"}
    for address in split_list(bluetooth.buttons) if bluetooth is not None else ():
        if normal_address(address) not in bound:  # a [[ptt]] of its own says more: that one
            bound.add(normal_address(address))
            inputs.append(_ble(BleButtonSpec(normal_address(address), service="")))
    from pttd.radio.inputs.gpio import GpioButtons, gpio_specs  # noqa: PLC0415

    specs = gpio_specs(ptt, buttons)
    if specs:  # last: nothing built before it holds a resource that would need releasing
        inputs.insert(0, GpioButtons(specs, pin_factory=pin_factory))
    return inputs
