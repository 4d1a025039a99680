"""A BLE PTT button on the hardware-in-loop bench (hw/hil.md): a real button near the Pi, known
to its BlueZ and pressed by the operator, or its mock twin, the BlueZ stand-in
(:mod:`pttd.sim.bluez`) on a private bus, pressed by the test. Either way the adapter under test
is the real :class:`~pttd.radio.inputs.ble.BleButton` on bleak, unmodified."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pttd.radio.inputs import Button, ButtonEdge, InputGone

MOCK_ADDRESS = "C0:FF:EE:00:00:02"
MOCK_BATTERY = 87  # the stand-in's PTT-Z button


def seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, "") or default)


@dataclass
class BleRig:
    """How the test reaches the button: ``press``/``release`` press it (mock) or ask the
    operator to (real); waits on the operator are bounded by ``wait_s``."""

    kind: str  # "mock" or "real"
    address: str
    press: Callable[[], Awaitable[None]]
    release: Callable[[], Awaitable[None]]
    wake: Callable[[], Awaitable[None]]  # before connecting: a sleeping button is woken
    say: Callable[[str], None]  # to the operator (the terminal, whatever pytest captures)
    connect_s: float  # bound on finding, connecting and subscribing
    wait_s: float  # bound on each step the operator takes
    settle_s: float  # after connecting: a wake-up press's own edges come and go
    battery: int | None  # the level expected (mock); None: any level 0..100 (real)
    check_battery: bool = True


@dataclass
class EdgeLog:
    """The handler given to ``BleButton.start``: what came, in order, and on which thread."""

    items: list[ButtonEdge | InputGone] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, item: ButtonEdge | InputGone) -> None:
        self.items.append(item)
        self.threads.append(threading.get_ident())
        self.arrived.set()

    def ptt_since(self, mark: int) -> list[ButtonEdge | InputGone]:
        """The PTT edges and notices that the input is gone, after the first ``mark`` items."""
        return [x for x in self.items[mark:] if isinstance(x, InputGone) or x.button is Button.PTT]

    async def wait_edge(self, mark: int, pressed: bool, within: float) -> ButtonEdge:
        """The first PTT edge ``pressed`` (down or up) after item ``mark``; TimeoutError."""
        async with asyncio.timeout(within):
            while True:
                for x in self.ptt_since(mark):
                    if isinstance(x, InputGone):
                        raise AssertionError(f"the button's link was lost: {x}")
                    if x.pressed == pressed:
                        return x
                self.arrived.clear()
                await self.arrived.wait()


async def until(check: Callable[[], bool], within: float, every: float = 0.05) -> bool:
    """Whether ``check()`` came true within ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every)
    return True
