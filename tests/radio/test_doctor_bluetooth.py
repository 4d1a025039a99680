"""``pttd doctor``'s Bluetooth check against the BlueZ stand-in on a private D-Bus bus: the
adapter, each configured accessory (connected with its battery, known but asleep, never seen),
BlueZ absent from the bus, no bus at all, and nothing to check without a BLE accessory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bleak import BleakClient

from pttd.radio.config import Config, parse_config
from pttd.radio.doctor import Check, ble_addresses, check_bluetooth
from pttd.sim.bluez import FakeBluez, private_bus, running_bluez

ADDRESS = "AA:BB:CC:DD:EE:FF"
OTHER = "11:22:33:44:55:66"
ADAPTER = "00:1A:7D:DA:71:13"  # the stand-in's
TIMEOUT = 5.0


@pytest.fixture
async def bluez(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeBluez]:
    async with running_bluez(tmp_path / "bus") as fake:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", fake.bus_address)
        yield fake


def buttons(*addresses: str) -> Config:
    return parse_config(f'[bluetooth]\nbuttons = "{", ".join(addresses)}"\n')


def lines(checks: list[Check]) -> list[str]:
    return [c.line() for c in checks]


async def doctor(config: Config) -> list[Check]:
    async with asyncio.timeout(TIMEOUT):
        return await check_bluetooth(config, wait_s=2.0)


async def test_a_connected_accessory_with_its_battery_passes(bluez: FakeBluez) -> None:
    button = await bluez.ptt_button(ADDRESS, battery=87)
    async with asyncio.timeout(TIMEOUT), BleakClient(ADDRESS, timeout=TIMEOUT):
        assert button.connected
        checks = await doctor(buttons(ADDRESS))
    assert lines(checks) == [
        f"PASS  bluetooth: adapter {ADAPTER} powered",
        f"PASS  ble {ADDRESS}: PTT-Z connected, battery 87%",
    ]


async def test_known_but_not_connected_fails_saying_how_to_wake_it(bluez: FakeBluez) -> None:
    button = await bluez.ptt_button(ADDRESS, known=True)
    await button.sleep()
    checks = await doctor(buttons(ADDRESS.lower()))  # spelt as the config may
    assert [c.status for c in checks] == ["pass", "fail"]
    assert checks[1].name == f"ble {ADDRESS}"
    assert checks[1].message == "PTT-Z is known but not connected (asleep, or off)"
    assert checks[1].fix == "press its button to wake it; the daemon reconnects by itself"


async def test_an_accessory_bluez_never_saw_fails(bluez: FakeBluez) -> None:
    await bluez.ptt_button(OTHER, known=True)  # another one is known: not the configured one
    checks = await doctor(buttons(ADDRESS))
    assert [c.status for c in checks] == ["pass", "fail"]
    assert checks[1].line() == (
        f"FAIL  ble {ADDRESS}: not seen by BlueZ -> fix: wake it (press its button) near the "
        "Pi; 'bt scan' at the console finds it"
    )


async def test_each_accessory_of_the_config_is_checked_once(bluez: FakeBluez) -> None:
    await bluez.ptt_button(ADDRESS, known=True)
    config = parse_config(
        f'[bluetooth]\nbuttons = "{OTHER}, {ADDRESS.lower()}"\n'
        f'[[ptt]]\nkind = "ble"\naddress = "{ADDRESS.replace(":", "-")}"\n'
    )
    assert ble_addresses(config) == [ADDRESS, OTHER]
    checks = await doctor(config)
    assert [c.name for c in checks] == ["bluetooth", f"ble {ADDRESS}", f"ble {OTHER}"]


async def test_an_adapter_that_is_off_fails(bluez: FakeBluez) -> None:
    await bluez.ptt_button(ADDRESS, known=True)
    bluez._adapter.written("Powered", False)  # as `bluetoothctl power off` would
    checks = await doctor(buttons(ADDRESS))
    assert lines(checks) == [
        f"FAIL  bluetooth: adapter {ADAPTER} is off -> fix: bluetoothctl power on"
    ]


async def test_no_bluez_on_the_bus_is_one_clear_failing_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with private_bus(tmp_path / "bus") as address:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        checks = await doctor(buttons(ADDRESS))
    assert len(checks) == 1
    check = checks[0]
    assert (check.name, check.status) == ("bluetooth", "fail")
    assert check.message.startswith("BlueZ is not running on the system bus (")
    assert "org.bluez" in check.message
    assert "apt install bluez" in check.fix and "systemctl enable --now bluetooth" in check.fix
    assert "\n" not in check.line()


async def test_no_system_bus_is_one_clear_failing_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    checks = await doctor(buttons(ADDRESS))
    assert len(checks) == 1
    assert (checks[0].name, checks[0].status) == ("bluetooth", "fail")
    assert checks[0].message.startswith("cannot reach the system bus: ")
    assert "\n" not in checks[0].line()


async def test_without_a_ble_accessory_there_is_nothing_to_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/never-asked")
    checks = await doctor(parse_config('[[ptt]]\nkind = "gpio"\npin = 17\n'))
    assert lines(checks) == ["SKIP  bluetooth: no BLE accessory configured"]
