"""The console's locks and secrets against whoever comes to the cable next, over a real pty: a real
room server on 127.0.0.1, a real device, the console in the daemon on the pty's slave.

The console's clock is the one thing moved by hand (the transport reads it for every line), so that
a quarter of an hour of idleness or a back-off that has not run out are facts, not sleeps.
"""

from __future__ import annotations

import time
from pathlib import Path

from console_harness import ConsoleRig, console_rig, secrets_absent

from pttd.radio.console.interpreter import IDLE_LOCK_S
from pttd.radio.console.pin import pin_matches
from pttd.radio.store import CREDENTIAL_FILE, PIN_FILE, Store

DROPPED = (
    "no answer for 15 minutes: the question was dropped and nothing done; that line was ignored"
)


class Clock:
    """The console's clock: the real one, moved on by hand, or stopped."""

    def __init__(self) -> None:
        self.shift = 0.0
        self.stopped: float | None = None

    def __call__(self) -> float:
        return self.stopped if self.stopped is not None else time.monotonic() + self.shift

    def stop(self) -> None:
        self.stopped = self()

    def advance(self, seconds: float) -> None:
        if self.stopped is not None:
            self.stopped += seconds
        self.shift += seconds


def clock_of(rig: ConsoleRig) -> Clock:
    clock = Clock()
    rig.console.clock = clock
    return clock


async def set_pin(rig: ConsoleRig, pin: str) -> None:
    t = rig.terminal
    assert await t.answer("pin set") == ""
    await t.answer(pin)
    assert (await t.command(pin)).startswith("PIN set")


async def test_idle_lock_drops_a_pending_factory_reset_and_pin_set(tmp_path: Path) -> None:
    """The installer typed factory-reset (or began 'pin set') and walked away: whoever answers
    after the idle lock wipes nothing and sets nothing, and finds the console locked."""
    async with console_rig(tmp_path, scrypt_n=2**10) as rig:
        clock = clock_of(rig)
        t = rig.terminal
        await rig.pair()
        await set_pin(rig, "1357")
        assert "wipes the pairing" in await t.answer("factory-reset")
        assert t.transcript.endswith(b"type 'yes' to wipe it all: ")
        clock.advance(IDLE_LOCK_S + 1)
        assert await t.command("yes") == DROPPED
        assert t.transcript.endswith(b"pttd[online ops locked]> ")
        assert await t.command("factory-reset") == "locked: type 'pin unlock' first"
        for name in (CREDENTIAL_FILE, PIN_FILE):
            assert (rig.state / name).exists(), name
        assert [d.name for d in rig.bench.registry.list_devices()] == ["gate-1"]
        assert rig.sim.device.credential is not None

        await t.answer("pin unlock")
        assert await t.command("1357") == "unlocked"
        await t.answer("pin set")
        await t.answer("2468")
        assert t.transcript.endswith(b"the new PIN again: ")
        clock.advance(IDLE_LOCK_S + 1)
        assert await t.command("2468") == DROPPED  # typed as stars, and not repeated
        assert t.transcript.endswith(b"pttd[online ops locked]> ")
        pin = Store(rig.state).pin()
        assert pin is not None and pin_matches(pin, "1357")
        secrets_absent(t.transcript, "2468", "1357")


async def test_a_pin_typed_after_the_wait_reply_is_never_echoed(tmp_path: Path) -> None:
    """After a wrong PIN the next try waits; a PIN typed then — after 'pin unlock' answered
    'wait 1 s', or typed ahead with it in one go — is echoed as stars and never run as a command,
    never repeated."""
    async with console_rig(tmp_path, scrypt_n=2**10) as rig:
        clock = clock_of(rig)
        t = rig.terminal
        await set_pin(rig, "97531")
        assert await t.command("pin lock") == "locked"
        clock.stop()  # the back-off runs out only when the test says so
        await t.answer("pin unlock")
        wrong = await t.answer("11111")
        assert wrong == "wrong PIN (1 in a row): wait 1 s before the next try"
        assert t.transcript.endswith(b"PIN: ")  # asked again
        assert await t.command("") == "no PIN typed: still locked"

        assert await t.answer("pin unlock") == "wait 1 s before the next try"
        assert t.transcript.endswith(b"PIN: ")
        mark = t.mark()
        assert await t.answer("97531") == "too soon, that PIN was not checked: wait 1 s"
        assert t.since(mark).startswith(b"*****\r\n") and t.transcript.endswith(b"PIN: ")
        assert await t.command("") == "no PIN typed: still locked"

        mark = t.mark()
        t.write(b"pin unlock\r97531\r")  # typed ahead: one read
        out = await t.wait_for(b"too soon, that PIN was not checked: wait 1 s\r\nPIN: ", mark)
        assert out.startswith(b"pin unlock\r\nwait 1 s before the next try\r\nPIN: *****\r\n")

        clock.advance(1.0)
        assert await t.command("97531") == "unlocked"
        pin = Store(rig.state).pin()
        assert pin is not None and pin.failures == 0 and pin.wrong_total == 1  # one real try
        assert b"unknown command" not in t.transcript
        secrets_absent(t.transcript, "97531", "11111")
        secrets_absent("\n".join(rig.logs.lines()), "97531", "11111")
