"""The BLE PTT adapter (pttd.radio.inputs.ble) with bleak, unmodified, against the BlueZ stand-in
on a private D-Bus bus: edges in order, SOS, battery, sleeping and vanishing accessories, the
quiet reconnection logs, binding by address, close, and the scan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from waits import eventually

from pttd.radio.inputs import Button, InputGone

if TYPE_CHECKING:  # the fixtures' type (conftest is not imported: one name in several folders)
    from conftest import EdgeRecorder
from pttd.radio.inputs.ble import BleButton, scan
from pttd.radio.inputs.ble_protocol import BleButtonSpec
from pttd.sim.bluez import BATTERY_LEVEL, HAND_MIC_SERVICE, FakeBluez, FakeDevice

ADDRESS = "AA:BB:CC:DD:EE:FF"
OTHER = "11:22:33:44:55:66"
SOS = "0000ffe2-0000-1000-8000-00805f9b34fb"
SOURCE = f"ble:{ADDRESS}"
TIMEOUT = 5.0  # every wait; each step normally takes milliseconds
PTT_DOWN, PTT_UP = (Button.PTT, True), (Button.PTT, False)
SOS_DOWN, SOS_UP = (Button.EMERGENCY, True), (Button.EMERGENCY, False)
LOGGER = "pttd.radio.inputs.ble"


def adapter(spec: BleButtonSpec | str = ADDRESS, connect_timeout: float = 1.0) -> BleButton:
    """Tiny back-off (the longest wait between tries is 20 ms) and a full-length jitter."""
    if isinstance(spec, str):
        spec = BleButtonSpec(spec)
    return BleButton(
        spec,
        backoff_initial=0.005,
        backoff_max=0.02,
        connect_timeout=connect_timeout,
        rng=lambda: 1.0,
    )


def ble_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("ble ")]


@contextlib.asynccontextmanager
async def running(
    ble: BleButton, recorder: EdgeRecorder, device: FakeDevice
) -> AsyncIterator[BleButton]:
    """``ble`` started and connected to ``device`` (subscribed), closed at the end."""
    await ble.start(recorder)
    try:
        await connected(ble, device)
        yield ble
    finally:
        async with asyncio.timeout(TIMEOUT):
            await ble.close()
        await recorder.settle()  # what close reported reaches the handler


async def connected(ble: BleButton, device: FakeDevice) -> None:
    await device.wait_subscribed(wait_s=TIMEOUT)
    await eventually(lambda: ble.connected, TIMEOUT, "the adapter says connected")


async def test_press_and_release_reach_the_handler_in_order(
    bluez: FakeBluez, recorder: EdgeRecorder
) -> None:
    button = await bluez.ptt_button(ADDRESS)
    async with running(adapter(), recorder, button) as ble:
        assert ble.name == SOURCE and ble.connects == 1 and ble.attempts == 0
        for _ in range(3):
            assert await button.press()
            assert await button.release()
        await button.release()  # a repeated release is no edge
        await recorder.wait_for(6)
        await button.press()
        await recorder.wait_for(7)
    assert recorder.summary() == [PTT_DOWN, PTT_UP] * 3 + [PTT_DOWN, PTT_UP]  # close released
    assert {e.source for e in recorder.edges} == {SOURCE}
    assert recorder.gone == []
    recorder.check_delivery()


async def test_sos_is_the_emergency_button(bluez: FakeBluez, recorder: EdgeRecorder) -> None:
    button = await bluez.ptt_button(ADDRESS, sos_characteristic=SOS)
    ble = adapter(BleButtonSpec(ADDRESS, sos_characteristic=SOS))
    async with running(ble, recorder, button):
        await button.wait_subscribed(SOS, wait_s=TIMEOUT)
        await button.press(characteristic=SOS)
        await button.press()
        await button.release()
        await button.release(characteristic=SOS)
        await recorder.wait_for(4)
    assert recorder.summary() == [SOS_DOWN, PTT_DOWN, PTT_UP, SOS_UP]
    assert {e.source for e in recorder.edges} == {SOURCE}


async def test_ascii_values_of_a_configured_button(
    bluez: FakeBluez, recorder: EdgeRecorder
) -> None:
    button = await bluez.ptt_button(ADDRESS)
    ble = adapter(BleButtonSpec(ADDRESS, press=(b"ELET1",), release=(b"ELET2",)))
    async with running(ble, recorder, button):
        await button.notify(b"\x01")  # not this button's value: ignored
        await button.notify(b"ELET1")
        await button.notify(b"ELET2\r\n")
        await recorder.wait_for(2)
    assert recorder.summary() == [PTT_DOWN, PTT_UP]
    assert ble._decoder.unknown == 1


async def test_battery_is_read_and_followed(bluez: FakeBluez, recorder: EdgeRecorder) -> None:
    button = await bluez.ptt_button(ADDRESS, battery=87)
    async with running(adapter(), recorder, button) as ble:
        assert ble.battery == 87
        assert ble.state == "connected, battery 87%"
        await button.wait_subscribed(BATTERY_LEVEL, wait_s=TIMEOUT)  # it notifies: followed
        await button.set_battery(42)
        await eventually(lambda: ble.battery == 42, TIMEOUT, "the new battery level")
        assert ble.state == "connected, battery 42%"
        await button.press()  # the battery notification was no edge
        await recorder.wait_for(1)
    assert recorder.summary() == [PTT_DOWN, PTT_UP]


async def test_a_button_without_battery_service_is_just_connected(
    bluez: FakeBluez, recorder: EdgeRecorder
) -> None:
    button = await bluez.ptt_button(ADDRESS, battery=None)
    async with running(adapter(), recorder, button) as ble:
        assert ble.battery is None and ble.state == "connected"


async def test_a_sleeping_button_is_gone_once_then_reconnects_by_itself_after_waking(
    bluez: FakeBluez, recorder: EdgeRecorder
) -> None:
    button = await bluez.ptt_button(ADDRESS)
    async with running(adapter(connect_timeout=0.3), recorder, button) as ble:
        await button.press()
        await recorder.wait_for(1)

        await button.sleep()  # held: the release never comes

        gone = await recorder.wait_gone(1)
        assert [g.source for g in gone] == [SOURCE]
        assert not ble._sink.is_held(Button.PTT, SOURCE)  # the notice stands for the release
        await eventually(lambda: ble.attempts >= 2, TIMEOUT, "tries while it sleeps")
        assert not ble.connected
        assert ble.state.startswith("not connected (") and "attempts)" in ble.state

        await button.wake()

        await connected(ble, button)
        assert ble.connects == 2 and ble.attempts == 0 and ble.state.startswith("connected")
        await button.press()
        await button.release()
        await recorder.wait_for(3)
    assert recorder.summary() == [PTT_DOWN, PTT_DOWN, PTT_UP]
    assert [type(i).__name__ for i in recorder.items] == [
        "ButtonEdge",
        "InputGone",
        "ButtonEdge",
        "ButtonEdge",
    ]
    assert len(recorder.gone) == 1
    recorder.check_delivery()


async def test_a_link_lost_while_pressed_is_the_input_gone_and_it_reconnects(
    bluez: FakeBluez, recorder: EdgeRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    button = await bluez.ptt_button(ADDRESS)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        async with running(adapter(), recorder, button) as ble:
            await button.press()
            await recorder.wait_for(1)

            await button.drop_link()  # out of range a moment; still awake

            await recorder.wait_gone(1)
            await connected(ble, button)  # at once: it answers
            assert ble.connects == 2
            await button.release()  # the old press's release, after reconnecting: no edge
            await button.press()
            await recorder.wait_for(2)
    assert recorder.summary() == [PTT_DOWN, PTT_DOWN, PTT_UP]
    assert isinstance(recorder.items[1], InputGone)
    warnings = [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING
    ]
    assert warnings == [f"{SOURCE}: link lost"]


async def test_a_vanished_button_is_gone_and_comes_back(
    bluez: FakeBluez, recorder: EdgeRecorder
) -> None:
    button = await bluez.ptt_button(ADDRESS)
    async with running(adapter(connect_timeout=0.3), recorder, button) as ble:
        await button.press()
        await recorder.wait_for(1)

        await button.vanish()  # BlueZ forgets it, mid-press

        await recorder.wait_gone(1)
        assert not button.in_tree
        await eventually(lambda: ble.attempts >= 1, TIMEOUT, "a try while it is away")
        assert not ble.connected

        await button.wake()  # it advertises again: the adapter's next scan finds it

        await connected(ble, button)
        await button.press()
        await recorder.wait_for(2)
    assert recorder.summary() == [PTT_DOWN, PTT_DOWN, PTT_UP]
    assert len(recorder.gone) == 1


async def test_failed_attempts_log_the_1st_2nd_4th_8th_only(
    bluez: FakeBluez, recorder: EdgeRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    button = await bluez.ptt_button(ADDRESS)
    await button.sleep()  # never answers
    ble = adapter(connect_timeout=0.02)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        await ble.start(recorder)
        try:
            await eventually(lambda: ble.attempts >= 9, TIMEOUT, "nine failed attempts")
        finally:
            async with asyncio.timeout(TIMEOUT):
                await ble.close()
    attempts = ble.attempts
    warned = [
        int(m.group(1))
        for r in caplog.records
        if r.levelno == logging.WARNING
        and (m := re.search(r"cannot connect \(attempt (\d+)\)", r.getMessage()))
    ]
    assert warned == [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= attempts]
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "cannot connect" in r.msg]
    assert len(warned) + len(debug) == attempts  # every attempt is in the log, at some level
    assert "not found" in ble.last_error
    assert recorder.items == [] and not button.connected


async def test_it_is_bound_to_its_address_not_to_another_button_nearby(
    bluez: FakeBluez, recorder: EdgeRecorder, other_recorder: EdgeRecorder
) -> None:
    mine = await bluez.ptt_button(ADDRESS)
    theirs = await bluez.ptt_button(OTHER, rssi=-30)  # nearer, and pressed first
    async with (
        running(adapter(), recorder, mine),
        running(adapter(OTHER), other_recorder, theirs),
    ):
        await theirs.press()
        await other_recorder.wait_for(1)  # it was sent, to the one bound to it
        await mine.press()  # after it, on the same bus: had the other reached us, it was first
        await recorder.wait_for(1)
    assert recorder.summary() == [PTT_DOWN, PTT_UP]
    assert {e.source for e in recorder.edges} == {SOURCE}
    assert other_recorder.summary() == [PTT_DOWN, PTT_UP]
    assert {e.source for e in other_recorder.edges} == {f"ble:{OTHER}"}


async def test_close_releases_a_held_button_and_leaves_no_task(
    bluez: FakeBluez, recorder: EdgeRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    button = await bluez.ptt_button(ADDRESS)
    ble = adapter()
    await ble.start(recorder)
    await connected(ble, button)
    await button.press()
    await recorder.wait_for(1)
    assert ble_tasks() != []

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        async with asyncio.timeout(TIMEOUT):
            await ble.close()

    await recorder.settle()
    assert recorder.summary() == [PTT_DOWN, PTT_UP]  # a release: closing is not vanishing
    assert recorder.gone == []
    assert ble_tasks() == [] and not ble.connected
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == []  # no "link lost"
    await button.wait_connected(False, wait_s=TIMEOUT)  # the link was let go
    await button.press()  # after close: nothing
    await recorder.settle()
    assert len(recorder.items) == 2


async def test_close_while_trying_to_connect(bluez: FakeBluez, recorder: EdgeRecorder) -> None:
    button = await bluez.ptt_button(ADDRESS)
    await button.sleep()
    ble = adapter(connect_timeout=0.02)
    await ble.start(recorder)
    await eventually(lambda: ble.attempts >= 2, TIMEOUT, "failed attempts")
    async with asyncio.timeout(TIMEOUT):
        await ble.close()
    assert ble_tasks() == [] and recorder.items == [] and not bluez.discovering


async def test_not_a_ptt_button_is_said_and_tried_again(
    bluez: FakeBluez, recorder: EdgeRecorder
) -> None:
    device = await bluez.ptt_button(ADDRESS, service=HAND_MIC_SERVICE)  # not PTT-Z's service
    ble = adapter()
    await ble.start(recorder)
    try:
        await eventually(lambda: ble.attempts >= 2, TIMEOUT, "two attempts")
        assert "has no notifying characteristic in service 0000ffe0" in ble.state
        assert not ble.connected and recorder.items == []
    finally:
        async with asyncio.timeout(TIMEOUT):
            await ble.close()
    await device.wait_connected(False, wait_s=TIMEOUT)  # each try let the link go


async def test_a_hand_mic_configured_by_its_service(
    bluez: FakeBluez, recorder: EdgeRecorder
) -> None:
    mic = await bluez.ptt_button(ADDRESS, "HM-1", service=HAND_MIC_SERVICE)
    ble = adapter(BleButtonSpec(ADDRESS, service=HAND_MIC_SERVICE))
    async with running(ble, recorder, mic):
        await mic.press()
        await mic.release()
        await recorder.wait_for(2)
    assert recorder.summary() == [PTT_DOWN, PTT_UP]


async def test_scan_lists_nearby_accessories_ptt_looking_first(bluez: FakeBluez) -> None:
    await bluez.add_device("00:00:00:00:00:01", "Heart", rssi=-20, advertised_uuids=["180d"])
    await bluez.ptt_button(ADDRESS, "PTT-Z", rssi=-70)
    await bluez.add_device(
        "00:00:00:00:00:02", "HM-1", rssi=-60, advertised_uuids=[HAND_MIC_SERVICE]
    )
    await bluez.add_device("00:00:00:00:00:03", "B01 PTT", rssi=-80)  # its name says PTT
    await bluez.add_device("00:00:00:00:00:04", None, rssi=-40)
    asleep = await bluez.ptt_button(OTHER)
    await asleep.sleep()

    async with asyncio.timeout(TIMEOUT):
        found = await scan(0.3)

    assert [(n.address, n.name, n.rssi, n.ptt) for n in found] == [
        ("00:00:00:00:00:02", "HM-1", -60, True),
        (ADDRESS, "PTT-Z", -70, True),
        ("00:00:00:00:00:03", "B01 PTT", -80, True),
        ("00:00:00:00:00:01", "Heart", -20, False),
        ("00:00:00:00:00:04", "", -40, False),
    ]


async def test_a_press_before_the_session_failed_is_the_input_gone(
    bluez: FakeBluez, recorder: EdgeRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Edges flow from the first subscription: a press delivered while a later subscription
    (the SOS one) fails, as the link drops, is released by the input-gone notice, never left
    held (the microphone would stay open)."""
    button = await bluez.ptt_button(ADDRESS, sos_characteristic=SOS, battery=None)
    from bleak import BleakClient

    real_start = BleakClient.start_notify
    calls = 0

    async def start_notify(self: BleakClient, uuid: str, callback: object, **kw: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # PTT subscribed (its call returned): the user presses, the link drops
            assert await button.press()
            await recorder.wait_for(1)
            await button.sleep()
        await real_start(self, uuid, callback, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(BleakClient, "start_notify", start_notify)
    ble = adapter(BleButtonSpec(ADDRESS, sos_characteristic=SOS))
    await ble.start(recorder)
    try:
        await eventually(lambda: len(recorder.gone) >= 1, TIMEOUT, "the input gone")
        await recorder.settle()
        # Whatever was pressed before the set-up failed is released by the notice after it.
        assert not ble._sink.is_held(Button.PTT, SOURCE)
        assert recorder.summary() in ([], [PTT_DOWN])
        assert isinstance(recorder.items[-1], InputGone)
    finally:
        await ble.close()
