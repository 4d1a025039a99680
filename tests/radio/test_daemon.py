"""The daemon's hygiene: counters bounded however long it runs, and a part that fails to close is
logged while the others still close."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from pttd.radio.daemon import Recent, Tally
from pttd.radio.machine import Tone
from pttd.sim.device import SimDevice, sim_config
from pttd.sim.inputs import SimulatedButton


def test_recent_keeps_the_last_values_and_counts_them_all() -> None:
    recent: Recent[float] = Recent(keep=3)
    assert len(recent) == 0 and recent.total == 0 and not recent and recent.since(0) == []
    for i in range(10):
        recent.append(float(i))
    assert list(recent) == [7.0, 8.0, 9.0] and len(recent) == 3 and recent.total == 10
    assert recent[0] == 7.0 and recent[-1] == 9.0
    mark = recent.total
    recent.append(10.0)
    assert recent.since(mark) == [10.0]
    assert recent.since(0) == [8.0, 9.0, 10.0]  # as many as are kept
    assert recent.since(recent.total) == []


def test_tally_counts_each_value_over_the_whole_run() -> None:
    tones: Tally[Tone] = Tally(keep=2)
    for _ in range(500):
        tones.append(Tone.ERROR)
    tones.append(Tone.ROOM)
    tones.append(Tone.BUSY)
    assert list(tones) == [Tone.ROOM, Tone.BUSY]
    assert tones.count(Tone.ERROR) == 500 and Tone.ERROR in tones  # gone from the kept ones
    assert tones.count(Tone.TALK_PERMIT) == 0 and Tone.TALK_PERMIT not in tones
    assert tones.total == 502


class StuckInput(SimulatedButton):
    """A button whose adapter fails as it closes (a GPIO chip gone, say)."""

    async def close(self) -> None:
        await super().close()
        raise OSError(5, "Input/output error")


async def test_a_part_that_fails_to_close_is_logged_and_the_rest_closes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = sim_config("gate-1", "", tmp_path / "state")
    sim = SimDevice.build(config, np.zeros(480, np.int16))
    stuck, other = StuckInput("stuck"), SimulatedButton("other")
    sim.device.inputs[:] = [stuck, other]
    await sim.start()
    other.press()
    with caplog.at_level(logging.ERROR, logger="pttd.radio.daemon"):
        await sim.stop()
    failures = [r for r in caplog.records if r.getMessage() == "closing input stuck failed"]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert "Input/output error" in caplog.text
    assert not other.is_held()  # the next input was closed all the same (it released its button)
    assert all(led.state.mode == "off" for led in sim.device.leds.all().values())
    assert not sim.mic.is_open
