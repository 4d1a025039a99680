"""Fuzz: arbitrary bytes on the console's line never crash it, and ``status`` still answers.

One running device and console take every example (a noisy line does not restart the daemon
either); after each, the line is cleared with Ctrl-C and ``status --json`` must answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from console_harness import ConsoleRig, console_rig, secrets_absent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FRAGMENTS = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\x03",
    b"\x7f",
    b"\x08",
    b"\x15",
    b"\t",
    b"\x00",
    b"\x1b",
    b"\x1b[",
    b"\x1b[A",
    b"\x1b[1;5C",
    b"\x1bO",
    b"\xff",
    b"\xc3",
    "é東".encode(),
    b"status",
    b"status --json",
    b"help",
    b"rooms",
    b"room ops",
    b"config show",
    b"config set talk.mode",
    b"log 3",
    b"pin unlock",
    b"pair ws://127.0.0.1:9",
    b"pair pttd://pair?code=",
    b'"',
    b"exit",
    b"x" * 300,
]

chunks = st.lists(
    st.one_of(st.binary(max_size=64), st.sampled_from(FRAGMENTS)), min_size=1, max_size=12
)

PIN = "4711"
JSON_LINE = re.compile(rb"\r\n(\{\"[a-z_]+\":.*\"audio_devices\".*\})\r\n")


@pytest.fixture
async def locked_rig(tmp_path: Path) -> AsyncIterator[ConsoleRig]:
    """One running device and console for every example, locked with a PIN: whatever the noise
    spells, nothing that changes something runs."""
    # Examples come faster than anyone types: the echo-storm guard (tested on its own) is off.
    async with console_rig(tmp_path, scrypt_n=2**4, max_lines_per_s=10**9) as rig:
        t = rig.terminal
        await t.answer("pin set")
        await t.answer(PIN)
        await t.command(PIN)
        await t.command("pin lock")
        yield rig
        assert rig.sim.device.store.credential() is None
        assert rig.sim.device.store.settings().values == {}
        secrets_absent(rig.terminal.transcript, PIN)


@settings(
    max_examples=150,
    deadline=None,
    # The rig is meant to be shared: the same daemon takes every example.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=chunks)
async def test_arbitrary_bytes_never_break_the_console(locked_rig: ConsoleRig, data) -> None:
    t = locked_rig.terminal
    for chunk in data:
        t.write(chunk)
    t.write(b"\x03\x03\r")  # drop a half line, cancel a question or a running command
    mark = t.mark()
    t.write(b"status --json\r")
    out = await t.wait_for(JSON_LINE, mark, timeout=10)
    match = JSON_LINE.search(out)
    assert match is not None
    status = json.loads(match.group(1))
    assert status["link"] == "unpaired" and status["lock"]["locked"] is True
    assert locked_rig.console.connected
