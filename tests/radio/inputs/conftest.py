"""Helpers for input adapter tests: an edge recorder that checks where and when edges arrive."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pttd.radio.inputs import Button, ButtonEdge

TIMEOUT = 5.0


class EdgeRecorder:
    """The handler given to ``Input.start``; records each edge and the thread it arrived on."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self.edges: list[ButtonEdge] = []
        self.threads: list[int] = []
        self.arrived = asyncio.Event()

    def __call__(self, edge: ButtonEdge) -> None:
        self.threads.append(threading.get_ident())
        self.edges.append(edge)
        self.arrived.set()

    async def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[ButtonEdge]:
        """Wait until ``count`` edges in all have arrived; return them."""
        async with asyncio.timeout(timeout):
            while len(self.edges) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.edges

    async def settle(self) -> None:
        """Let anything already scheduled on the loop run (edges are call_soon callbacks)."""
        for _ in range(5):
            await asyncio.sleep(0)

    def summary(self) -> list[tuple[Button, bool]]:
        return [(edge.button, edge.pressed) for edge in self.edges]

    def check_delivery(self) -> None:
        """Every edge arrived on the loop thread, stamped with a past monotonic time, in order."""
        assert self.threads == [self.loop_thread] * len(self.edges)
        times = [edge.t for edge in self.edges]
        assert times == sorted(times)
        assert all(t <= time.monotonic() for t in times)


@pytest.fixture
async def recorder() -> EdgeRecorder:
    return EdgeRecorder()
