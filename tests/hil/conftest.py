"""Hardware-in-loop fixtures: each test runs on the mock rig (always: CI keeps the suite alive)
and on the real rig (only with PTTD_HIL=1 on a bench Pi whose pin factory loads; hw/hil.md).

Around the device under test: a real room server on 127.0.0.1, the device paired with it through
the real pairing flow, and a listener logged on to the same room.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from channel_client import Client
from hil_bench import ROOM, TIMEOUT, Bench
from hil_ble import MOCK_ADDRESS, MOCK_BATTERY, BleRig, seconds
from hil_rig import (
    Rig,
    RigBusy,
    Terminal,
    env_pins,
    lock_path,
    mock_rig,
    real_factory,
    rig_lock,
)

from pttd.radio.config import Config, ConsoleConfig, LedsConfig, PttConfig, load_config
from pttd.radio.link import LinkSettings, pair
from pttd.radio.machine import Link
from pttd.radio.store import Store
from pttd.server.app import RoomServer, ServerSettings
from pttd.server.registry import Registry
from pttd.sim.device import assemble_device, sim_config


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.hil)


@pytest.fixture(scope="session")
def real_rig_lock() -> Iterator[None]:
    """The real bench is held for the whole session: one run at a time."""
    try:
        with rig_lock(lock_path(), wait=float(os.environ.get("PTTD_HIL_LOCK_WAIT", "0"))):
            yield
    except RigBusy as exc:
        pytest.fail(str(exc))


def _real_rig(request: pytest.FixtureRequest) -> Rig:
    if os.environ.get("PTTD_HIL") != "1":
        pytest.skip("real rig: set PTTD_HIL=1 on a bench Pi wired as in hw/hil.md")
    try:
        factory = real_factory()
    except Exception as exc:
        pytest.skip(f"real rig: no real GPIO pin factory loads here ({exc})")
    request.getfixturevalue("real_rig_lock")
    audio_config = None
    config_path = os.environ.get("PTTD_HIL_CONFIG", "")
    if config_path:
        audio_config = load_config(config_path)
    console_port = os.environ.get("PTTD_HIL_CONSOLE_PORT", "")
    if not console_port and audio_config is not None:
        console_port = audio_config.console.port
    return Rig(
        "real",
        factory,
        env_pins(),
        console_port=console_port,
        terminal_port=os.environ.get("PTTD_HIL_TERMINAL_PORT", ""),
        audio_config=audio_config,
    )


@pytest.fixture(params=["mock", "real"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    bench = mock_rig() if request.param == "mock" else _real_rig(request)
    bench.connect()
    try:
        yield bench
    finally:
        bench.close()


@pytest.fixture
def console_cable(rig: Rig) -> Iterator[Terminal]:
    """The console cable; ask for it before ``bench``, which configures the device's end.
    Mock: a pty, whose far end the device opens by name as it would /dev/serial0. Real: the
    USB-serial adapter (PTTD_HIL_TERMINAL_PORT) wired to the Pi's console UART or gadget port."""
    if rig.kind == "mock":
        master, slave = os.openpty()
        rig.console_port = os.ttyname(slave)
        terminal = Terminal(fd=master)
        try:
            yield terminal
        finally:
            terminal.close()
            os.close(slave)
        return
    if not rig.console_port or not rig.terminal_port:
        pytest.skip(
            "real rig: set PTTD_HIL_CONSOLE_PORT (the device's end, e.g. /dev/serial0) and "
            "PTTD_HIL_TERMINAL_PORT (the USB-serial adapter wired to it, e.g. /dev/ttyUSB0)"
        )
    import serial  # type: ignore[import-untyped]

    terminal = Terminal(port=serial.Serial(rig.terminal_port, 115200, timeout=0.05))
    try:
        yield terminal
    finally:
        terminal.close()


def device_config(rig: Rig, state: Path, server_url: str) -> Config:
    """The simulated device's config on the rig's pins; the real rig's own audio config, if any."""
    base = rig.audio_config or Config()
    config = sim_config(
        "hil-device",
        server_url,
        state,
        base.audio,
        ptt=(PttConfig(kind="gpio", pin=rig.pins["ptt"]),),
        leds=LedsConfig(transmit=rig.pins["led"]),
        console=ConsoleConfig(port=rig.console_port),
    )
    return replace(config, audio=base.audio) if rig.kind == "real" else config


@pytest.fixture
async def bench(rig: Rig, tmp_path: Path) -> AsyncIterator[Bench]:
    with Registry(tmp_path / "server.db") as registry:
        registry.add_room(ROOM)
        registry.add_user("listener", "listener-secret", [ROOM])
        settings = ServerSettings(host="127.0.0.1", port=0, registry_poll=0.05)
        async with RoomServer(registry, settings) as server:
            code = await asyncio.to_thread(registry.create_pair_code, [ROOM])
            credential = await pair(server.url, code.code, "hil-device", LinkSettings())
            state = tmp_path / "state"
            Store(state).save_credential(credential)
            config = device_config(rig, state, server.url)
            device = assemble_device(config, *rig.make_audio(config), pin_factory=rig.factory)
            ready = asyncio.Event()
            task = asyncio.create_task(device.run(ready.set))
            listener = await Client.connect(server.url, TIMEOUT, close_timeout=1)
            try:
                await asyncio.wait_for(ready.wait(), TIMEOUT)
                answer = await listener.logon(
                    (ROOM,), username="listener", password="listener-secret"
                )
                assert answer.success, answer
                b = Bench(rig, server, device, listener, task)
                await b.until(lambda m: m.link is Link.ONLINE)
                yield b
            finally:
                rig.release()
                await listener.close()
                device.stop()
                await asyncio.wait_for(task, TIMEOUT)


@pytest.fixture(params=["mock", "real"])
async def ble_rig(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> AsyncIterator[BleRig]:
    """A BLE PTT button. Mock: the BlueZ stand-in on a private bus (needs dbus-daemon), pressed
    by the test. Real: the button PTTD_HIL_BLE names, through the Pi's BlueZ, pressed by the
    operator when the test says so (hw/hil.md)."""
    pytest.importorskip("bleak", reason="no bleak: pip install bleak (Linux)")

    def say(text: str) -> None:
        with capsys.disabled():
            print(f"\n>>> {text}", flush=True)

    if request.param == "mock":
        from pttd.sim.bluez import dbus_daemon, running_bluez

        if dbus_daemon() is None:
            pytest.skip("mock BLE button: no dbus-daemon for the BlueZ stand-in")
        async with running_bluez(tmp_path / "bus") as bluez:
            monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bluez.bus_address)
            button = await bluez.ptt_button(MOCK_ADDRESS, known=True, battery=MOCK_BATTERY)

            async def press() -> None:
                await button.press()

            async def release() -> None:
                await button.release()

            async def wake() -> None:
                await button.wake()

            yield BleRig(
                "mock",
                MOCK_ADDRESS,
                press,
                release,
                wake,
                lambda text: None,
                connect_s=TIMEOUT,
                wait_s=TIMEOUT,
                settle_s=0.05,
                battery=MOCK_BATTERY,
            )
        return
    if os.environ.get("PTTD_HIL") != "1":
        pytest.skip("real BLE button: set PTTD_HIL=1 on a bench Pi (hw/hil.md)")
    address = os.environ.get("PTTD_HIL_BLE", "")
    if not address:
        pytest.skip("real BLE button: set PTTD_HIL_BLE=AA:BB:CC:DD:EE:FF, the button's address")
    from pttd.radio.config import normal_address

    address = normal_address(address)
    request.getfixturevalue("real_rig_lock")
    wait_s = seconds("PTTD_HIL_BLE_WAIT", 30.0)

    async def ask_press() -> None:
        say(f"BLE button {address}: press and HOLD its PTT button (within {wait_s:.0f} s)")

    async def ask_release() -> None:
        say(f"BLE button {address}: now RELEASE it (within {wait_s:.0f} s)")

    async def ask_wake() -> None:
        say(
            f"BLE button {address}: if it sleeps, press and release it once to wake it "
            "(keep it near the Pi)"
        )

    yield BleRig(
        "real",
        address,
        ask_press,
        ask_release,
        ask_wake,
        say,
        connect_s=seconds("PTTD_HIL_BLE_CONNECT", 60.0),
        wait_s=wait_s,
        settle_s=1.0,
        battery=None,
        check_battery=os.environ.get("PTTD_HIL_BLE_BATTERY", "") != "none",
    )
