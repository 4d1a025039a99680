"""Helpers for input adapter tests: a recorder that checks where and when edges (and the notices
that a device is gone) arrive."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from pttd.radio.inputs import Button, ButtonEdge, InputGone
from pttd.sim.bluez import FakeBluez, running_bluez

TIMEOUT = 5.0


class EdgeRecorder:
    """The handler given to ``Input.start``; records each edge and each notice that a device is
    gone, in order, and the thread each arrived on."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self.edges: list[ButtonEdge] = []
        self.gone: list[InputGone] = []
        self.items: list[ButtonEdge | InputGone] = []  # both, as they came
        self.threads: list[int] = []
        self.arrived = asyncio.Event()

    def __call__(self, item: ButtonEdge | InputGone) -> None:
        self.threads.append(threading.get_ident())
        self.items.append(item)
        if isinstance(item, InputGone):
            self.gone.append(item)
        else:
            self.edges.append(item)
        self.arrived.set()

    async def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[ButtonEdge]:
        """Wait until ``count`` edges in all have arrived; return them."""
        await self._wait(lambda: len(self.edges) >= count, timeout)
        return self.edges

    async def wait_gone(self, count: int = 1, timeout: float = TIMEOUT) -> list[InputGone]:
        """Wait until ``count`` notices that a device is gone have arrived; return them."""
        await self._wait(lambda: len(self.gone) >= count, timeout)
        return self.gone

    async def _wait(self, done: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self.arrived.clear()
                await self.arrived.wait()

    async def settle(self) -> None:
        """Let anything already scheduled on the loop run (edges are call_soon callbacks)."""
        for _ in range(5):
            await asyncio.sleep(0)

    def summary(self) -> list[tuple[Button, bool]]:
        return [(edge.button, edge.pressed) for edge in self.edges]

    def check_delivery(self) -> None:
        """Everything arrived on the loop thread, stamped with a past monotonic time, in order."""
        assert self.threads == [self.loop_thread] * len(self.items)
        times = [item.t for item in self.items]
        assert times == sorted(times)
        assert all(t <= time.monotonic() for t in times)


@pytest.fixture
async def recorder() -> EdgeRecorder:
    return EdgeRecorder()


@pytest.fixture
async def other_recorder() -> EdgeRecorder:
    """A second recorder, for a second input in the same test."""
    return EdgeRecorder()


@pytest.fixture
async def bluez(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeBluez]:
    """A BlueZ stand-in on a private D-Bus system bus that bleak (through
    ``DBUS_SYSTEM_BUS_ADDRESS``) talks to: add devices with ``bluez.ptt_button(...)``."""
    async with running_bluez(tmp_path / "bus") as fake:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", fake.bus_address)
        yield fake
