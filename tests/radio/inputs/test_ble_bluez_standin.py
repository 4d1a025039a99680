"""The BlueZ stand-in (pttd.sim.bluez) against bleak, unmodified: bleak scans,
connects, reads and subscribes over a private D-Bus bus as it would with bluetoothd."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from pttd.sim.bluez import (
    BATTERY,
    BATTERY_LEVEL,
    BATTERY_SERVICE,
    DEVICE,
    GATT_CHARACTERISTIC,
    HAND_MIC_SERVICE,
    PTT_CHARACTERISTIC,
    PTT_SERVICE,
    FakeBluez,
    FakeDevice,
    private_bus,
)

ADDRESS = "AA:BB:CC:DD:EE:FF"
TIMEOUT = 5.0  # every test step; each normally takes milliseconds
SCAN = 0.2  # seconds BleakScanner.discover listens (the fake advertises every 50 ms)


class Link:
    """A bleak client with its notifications and disconnects recorded."""

    def __init__(self, target: str | BLEDevice) -> None:
        self.values: list[bytes] = []
        self.arrived = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.client = BleakClient(
            target, disconnected_callback=lambda _: self.disconnected.set(), timeout=TIMEOUT
        )

    def on_value(self, _char: object, value: bytearray) -> None:
        self.values.append(bytes(value))
        self.arrived.set()

    async def values_at_least(self, count: int) -> list[bytes]:
        async with asyncio.timeout(TIMEOUT):
            while len(self.values) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.values

    async def subscribe(self, device: FakeDevice, characteristic: str = PTT_CHARACTERISTIC) -> None:
        await self.client.start_notify(characteristic, self.on_value)
        await device.wait_subscribed(characteristic, wait_s=TIMEOUT)

    async def wait_disconnected(self) -> None:
        async with asyncio.timeout(TIMEOUT):
            await self.disconnected.wait()
        assert not self.client.is_connected
        await self.client.disconnect()  # releases the client's D-Bus connection


async def managed_objects(bluez: FakeBluez) -> dict[str, dict[str, dict[str, Variant]]]:
    """What ``GetManagedObjects`` on ``/`` of ``org.bluez`` answers now (paths: interfaces)."""
    bus = await MessageBus(bus_address=bluez.bus_address, bus_type=BusType.SYSTEM).connect()
    try:
        reply = await bus.call(
            Message(
                destination="org.bluez",
                path="/",
                interface="org.freedesktop.DBus.ObjectManager",
                member="GetManagedObjects",
            )
        )
        assert reply is not None and reply.message_type == MessageType.METHOD_RETURN
        return dict(reply.body[0])
    finally:
        bus.disconnect()


async def test_discovery_finds_the_button_with_name_address_rssi_and_service(
    bluez: FakeBluez,
) -> None:
    button = await bluez.ptt_button(ADDRESS, rssi=-61)
    mic = await bluez.add_device(
        "11:22:33:44:55:66", "HM-1", services=[], advertised_uuids=[HAND_MIC_SERVICE]
    )
    assert not button.in_tree  # not known: BlueZ has it once a discovery sees it

    async with asyncio.timeout(TIMEOUT):
        found = await BleakScanner.discover(timeout=SCAN, return_adv=True)

    device, adv = found[ADDRESS]
    assert (device.address, device.name) == (ADDRESS, "PTT-Z")
    assert adv.local_name == "PTT-Z"
    assert adv.rssi == -61
    assert adv.service_uuids == [PTT_SERVICE]
    assert found[mic.address][1].service_uuids == [HAND_MIC_SERVICE]
    assert button.in_tree and not bluez.discovering


async def test_a_scan_for_a_service_only_finds_devices_advertising_it(bluez: FakeBluez) -> None:
    await bluez.ptt_button(ADDRESS)
    await bluez.add_device("11:22:33:44:55:66", "Other", advertised_uuids=["180d"])

    async with asyncio.timeout(TIMEOUT):
        found = await BleakScanner.discover(timeout=SCAN, service_uuids=[PTT_SERVICE])

    assert [d.address for d in found] == [ADDRESS]


async def test_a_known_button_is_in_the_tree_before_any_discovery(bluez: FakeBluez) -> None:
    await bluez.ptt_button(ADDRESS, known=True)

    objects = await managed_objects(bluez)

    device = objects["/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF"]
    assert set(device) == {DEVICE}  # Battery1 and GATT objects only while connected
    assert "org.bluez.Adapter1" in objects["/org/bluez/hci0"]


async def test_connect_resolves_the_ptt_service_and_notifies_press_and_release_in_order(
    bluez: FakeBluez,
) -> None:
    button = await bluez.ptt_button(
        ADDRESS, sos_characteristic="0000ffe2-0000-1000-8000-00805f9b34fb"
    )
    link = Link(ADDRESS)  # by address: bleak scans for it first
    async with asyncio.timeout(TIMEOUT):
        await link.client.connect()
    assert button.connected and button.connect_calls == 1

    service = link.client.services.get_service(PTT_SERVICE)
    assert service is not None
    ptt = service.get_characteristic(PTT_CHARACTERISTIC)
    assert ptt is not None and {"read", "notify"} <= set(ptt.properties)
    assert service.get_characteristic("0000ffe2-0000-1000-8000-00805f9b34fb") is not None
    assert link.client.services.get_service(BATTERY_SERVICE) is not None

    assert not await button.press()  # nobody subscribed: the button does not notify
    await link.subscribe(button)
    for _ in range(5):
        assert await button.press()
        assert await button.release()

    assert await link.values_at_least(10) == [b"\x01", b"\x00"] * 5
    assert await button.press(characteristic="0000ffe2-0000-1000-8000-00805f9b34fb") is False

    await link.client.stop_notify(PTT_CHARACTERISTIC)
    assert not button.subscribed()
    await link.client.disconnect()
    assert not button.connected


async def test_battery_level_reads_the_percentage_and_battery1_is_there_while_connected(
    bluez: FakeBluez,
) -> None:
    button = await bluez.ptt_button(ADDRESS, battery=87)
    async with asyncio.timeout(TIMEOUT):
        found = await BleakScanner.find_device_by_address(ADDRESS, timeout=TIMEOUT)
        assert found is not None
        async with BleakClient(found, timeout=TIMEOUT) as client:
            assert await client.read_gatt_char(BATTERY_LEVEL) == bytearray([87])
            await button.set_battery(42)
            assert await client.read_gatt_char(BATTERY_LEVEL) == bytearray([42])

            objects = await managed_objects(bluez)
            device = objects[button.path]
            assert device[BATTERY]["Percentage"].value == 42

    objects = await managed_objects(bluez)
    assert set(objects[button.path]) == {DEVICE}
    assert not any(GATT_CHARACTERISTIC in ifaces for ifaces in objects.values())


async def test_the_gatt_battery_service_can_be_hidden_as_real_bluez_does(bluez: FakeBluez) -> None:
    await bluez.ptt_button(ADDRESS, battery=55, battery_gatt=False)
    async with asyncio.timeout(TIMEOUT), BleakClient(ADDRESS, timeout=TIMEOUT) as client:
        assert client.services.get_service(BATTERY_SERVICE) is None
        objects = await managed_objects(bluez)
        assert objects["/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF"][BATTERY]["Percentage"].value == 55


async def test_sleep_disconnects_and_after_wake_a_new_connection_notifies_again(
    bluez: FakeBluez,
) -> None:
    button = await bluez.ptt_button(ADDRESS)
    first = Link(ADDRESS)
    async with asyncio.timeout(TIMEOUT):
        await first.client.connect()
    await first.subscribe(button)
    await button.press()
    await first.values_at_least(1)

    await button.sleep()  # mid-press: the release never comes

    await first.wait_disconnected()
    assert not button.connected and not button.subscribed()
    assert first.values == [b"\x01"]

    await button.wake()
    second = Link(ADDRESS)
    async with asyncio.timeout(TIMEOUT):
        await second.client.connect()
    await second.subscribe(button)
    await button.press()
    await button.release()
    assert await second.values_at_least(2) == [b"\x01", b"\x00"]
    assert first.values == [b"\x01"]  # the old client heard nothing more
    await second.client.disconnect()


async def test_a_connect_to_a_sleeping_button_fails(bluez: FakeBluez) -> None:
    button = await bluez.ptt_button(ADDRESS)
    async with asyncio.timeout(TIMEOUT):
        device = await BleakScanner.find_device_by_address(ADDRESS, timeout=TIMEOUT)
    assert device is not None
    await button.sleep()

    link = Link(device)  # a BLEDevice: bleak calls Connect without scanning
    with pytest.raises(BleakError, match=r"org\.bluez\.Error\.Failed"):
        async with asyncio.timeout(TIMEOUT):
            await link.client.connect()
    assert button.connect_calls == 1 and not button.connected
    assert not link.client.is_connected


async def test_a_sleeping_button_is_not_found_by_a_scan(bluez: FakeBluez) -> None:
    button = await bluez.ptt_button(ADDRESS, known=True)
    await button.sleep()
    await bluez.add_device("11:22:33:44:55:66", "Awake")

    async with asyncio.timeout(TIMEOUT):
        found = await BleakScanner.discover(timeout=SCAN, return_adv=True)

    assert list(found) == ["11:22:33:44:55:66"]  # the awake one was seen, the sleeper was not


async def test_vanish_mid_press_ends_the_connection(bluez: FakeBluez) -> None:
    button = await bluez.ptt_button(ADDRESS)
    link = Link(ADDRESS)
    async with asyncio.timeout(TIMEOUT):
        await link.client.connect()
    await link.subscribe(button)
    await button.press()
    await link.values_at_least(1)

    await button.vanish()

    await link.wait_disconnected()
    assert not button.in_tree
    assert button.path not in await managed_objects(bluez)

    await button.wake()  # it advertises again: a scan brings it back
    async with asyncio.timeout(TIMEOUT):
        found = await BleakScanner.find_device_by_address(ADDRESS, timeout=TIMEOUT)
    assert found is not None and button.in_tree


async def test_private_bus_says_clearly_when_dbus_daemon_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pttd.sim.bluez.DBUS_DAEMON", str(tmp_path / "no-dbus-daemon"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="dbus-daemon not found"):
        async with private_bus(tmp_path):
            pass


async def test_a_button_that_wakes_during_a_scan_is_found(bluez: FakeBluez) -> None:
    button = await bluez.ptt_button(ADDRESS)
    await button.sleep()
    found: asyncio.Future[BLEDevice] = asyncio.get_running_loop().create_future()

    def seen(device: BLEDevice, _adv: object) -> None:
        if device.address == ADDRESS and not found.done():
            found.set_result(device)

    async with asyncio.timeout(TIMEOUT), BleakScanner(detection_callback=seen):
        await button.wake()
        device = await found

    assert device.name == "PTT-Z"


async def test_pairing_through_bleak_marks_the_button_paired_and_trusted(bluez: FakeBluez) -> None:
    button = await bluez.ptt_button(ADDRESS)
    async with asyncio.timeout(TIMEOUT), BleakClient(ADDRESS, pair=True, timeout=TIMEOUT):
        assert button.connected

    device = (await managed_objects(bluez))[button.path][DEVICE]
    assert [device[k].value for k in ("Paired", "Bonded", "Trusted")] == [True, True, True]
