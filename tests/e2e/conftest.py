"""Fixtures for the device integration tests (helpers live in device_harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from device_harness import Rig
from gpiozero.pins.mock import MockFactory


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """A room server on 127.0.0.1 with rooms 'demo' and 'ops', and a user 'listener'."""
    rig = Rig(tmp_path)
    await rig.start_server()
    try:
        yield rig
    finally:
        await rig.close()


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    """gpiozero's own mock pins, one set per test."""
    factory = MockFactory()
    yield factory
    factory.reset()
