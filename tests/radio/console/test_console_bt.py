"""The console's ``bt`` commands end to end, over a real pty: a real device (simulated audio)
paired with a real room server, bleak (unmodified) talking to the BlueZ stand-in on a private
D-Bus bus. The installer scans, adds a button (which works at once, up to the device's state
machine), lists it, reads it in ``status --json`` and forgets it; the PIN lock guards both."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from console_harness import ConsoleRig, console_rig
from waits import eventually

from pttd.radio.machine import DeviceMachine, Talk
from pttd.radio.store import Store
from pttd.sim.bluez import FakeBluez, running_bluez

ADDRESS = "AA:BB:CC:DD:EE:FF"
OTHER = "11:22:33:44:55:66"
SOURCE = f"ble:{ADDRESS}"
TIMEOUT = 5.0
JSON_LINE = re.compile(rb"\r\n(\{\"[a-z_]+\":.*\})\r\n")


@pytest.fixture
async def bluez(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeBluez]:
    async with running_bluez(tmp_path / "bus") as fake:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", fake.bus_address)
        yield fake


def accessories(rig: ConsoleRig) -> dict[str, str]:
    return dict(rig.sim.device.status().accessories)


def saved_buttons(rig: ConsoleRig) -> object:
    return Store(rig.state).settings().values.get("bluetooth.buttons")


def holds(m: DeviceMachine) -> bool:
    return ("ptt", SOURCE) in m.held_buttons


async def status_json(rig: ConsoleRig) -> dict[str, object]:
    mark = rig.terminal.mark()
    rig.terminal.write(b"status --json\r")
    out = await rig.terminal.wait_for(JSON_LINE, mark)
    match = JSON_LINE.search(out)
    assert match is not None
    data: dict[str, object] = json.loads(match.group(1))
    return data


async def test_scan_add_use_list_status_and_forget(tmp_path: Path, bluez: FakeBluez) -> None:
    button = await bluez.ptt_button(ADDRESS, battery=87)
    await bluez.add_device(OTHER, "Heart", rssi=-20, advertised_uuids=["180d"])
    async with console_rig(tmp_path) as rig:
        t = rig.terminal
        await rig.pair()
        assert await t.command("bt list") == (
            "no Bluetooth accessory: 'bt scan' finds them, 'bt add ADDRESS' adds one"
        )

        scanned = (await t.command("bt scan 1")).splitlines()
        assert scanned[0] == "scanning for 1 s ..."
        assert re.fullmatch(rf"{ADDRESS}\s+-50 dBm\s+PTT-Z  PTT", scanned[1]), scanned
        assert re.fullmatch(rf"{OTHER}\s+-20 dBm\s+Heart", scanned[2]), scanned
        assert scanned[3:] == ["'bt add ADDRESS' binds this device to one"]
        assert not bluez.discovering

        assert await t.command(f"bt add {ADDRESS.lower().replace(':', '-')}") == (
            f"adding {ADDRESS} ...\n{ADDRESS} added and saved: connecting (see 'bt list')"
        )
        assert saved_buttons(rig) == ADDRESS
        await button.wait_subscribed(wait_s=TIMEOUT)  # started at once, no restart
        await eventually(
            lambda: accessories(rig).get(SOURCE) == "connected, battery 87%",
            TIMEOUT,
            "the button connected",
        )
        assert re.fullmatch(rf"{SOURCE}\s+connected, battery 87%", await t.command("bt list"))
        assert (await status_json(rig))["accessories"] == {SOURCE: "connected, battery 87%"}
        assert await t.command(f"bt add {ADDRESS}") == f"{ADDRESS} is already added ('bt list')"

        # its press reaches the state machine: the microphone opens, the talk is asked for
        await button.press()
        await rig.sim.until(lambda m: holds(m) and m.capture_open)
        await rig.sim.transmitting()
        await button.release()
        await rig.sim.until(lambda m: not m.held_buttons and m.talk is Talk.IDLE)

        # the link lost while pressed: the input is gone, the microphone closes
        await button.press()
        await rig.sim.until(lambda m: holds(m) and m.capture_open)
        await button.drop_link()
        await rig.sim.until(lambda m: not m.held_buttons and not m.capture_open)
        await button.wait_subscribed(wait_s=TIMEOUT)  # and it comes back by itself
        await eventually(
            lambda: accessories(rig).get(SOURCE, "").startswith("connected"),
            TIMEOUT,
            "reconnected",
        )
        await button.press()
        await rig.sim.until(lambda m: holds(m) and m.capture_open)
        await button.release()
        await rig.sim.until(lambda m: not m.held_buttons)

        assert await t.command(f"bt forget {ADDRESS}") == (
            f"forgetting {ADDRESS} ...\n{ADDRESS} forgotten"
        )
        assert saved_buttons(rig) == ""
        assert accessories(rig) == {}
        await button.wait_connected(False, wait_s=TIMEOUT)  # the link was let go
        assert (await t.command("bt list")).startswith("no Bluetooth accessory")
        assert (await status_json(rig))["accessories"] == {}
        assert await t.command(f"bt forget {ADDRESS}") == f"{ADDRESS} is not added ('bt list')"


async def test_forgetting_a_held_button_releases_it(tmp_path: Path, bluez: FakeBluez) -> None:
    button = await bluez.ptt_button(ADDRESS)
    async with console_rig(tmp_path) as rig:
        t = rig.terminal
        await rig.pair()
        await t.command(f"bt add {ADDRESS}")
        await button.wait_subscribed(wait_s=TIMEOUT)
        await button.press()
        await rig.sim.until(lambda m: holds(m) and m.capture_open)
        await t.command(f"bt forget {ADDRESS}")
        await rig.sim.until(lambda m: not m.held_buttons and not m.capture_open)


async def test_pair_bonds_with_an_accessory_that_needs_it(tmp_path: Path, bluez: FakeBluez) -> None:
    button = await bluez.ptt_button(ADDRESS)
    async with console_rig(tmp_path) as rig:
        assert not button.bonded
        reply = await rig.terminal.command(f"bt pair {ADDRESS.lower()}")
        assert reply.splitlines()[-1] == f"{ADDRESS} paired and trusted"
        assert button.bonded
        assert saved_buttons(rig) is None  # pairing binds nothing: 'bt add' does


async def test_a_bad_address_is_one_line(tmp_path: Path, bluez: FakeBluez) -> None:
    async with console_rig(tmp_path) as rig:
        t = rig.terminal
        for command in ("bt add AA:BB:CC", "bt forget nonsense"):
            reply = await t.command(command)
            assert "\n" not in reply and "is not a Bluetooth address (AA:BB:CC:DD:EE:FF)" in reply
        assert await t.command("bt scan 0") == "scan for 1 to 60 seconds"
        assert await t.command("bt scan soon") == "not a number of seconds: 'soon'"
        assert saved_buttons(rig) is None
        assert accessories(rig) == {}


async def test_the_pin_lock_guards_add_and_forget(tmp_path: Path, bluez: FakeBluez) -> None:
    button = await bluez.ptt_button(ADDRESS)
    async with console_rig(tmp_path, scrypt_n=2**10) as rig:
        t = rig.terminal
        assert await t.answer("pin set") == ""
        await t.answer("1357")
        assert (await t.command("1357")).startswith("PIN set")
        assert (await t.command(f"bt add {ADDRESS}")).endswith("connecting (see 'bt list')")
        await button.wait_subscribed(wait_s=TIMEOUT)
        assert await t.command("pin lock") == "locked"

        locked = "locked: type 'pin unlock' first"
        assert await t.command(f"bt forget {ADDRESS}") == locked
        assert await t.command(f"bt add {OTHER}") == locked
        assert saved_buttons(rig) == ADDRESS
        assert list(accessories(rig)) == [SOURCE]
        assert (await t.command("bt list")).startswith(SOURCE)  # reading is not guarded

        await t.answer("pin unlock")
        assert await t.command("1357") == "unlocked"
        assert (await t.command(f"bt forget {ADDRESS}")).endswith(f"{ADDRESS} forgotten")
        assert saved_buttons(rig) == ""
