"""Hardware-in-loop: the device on the bench rig (hw/hil.md), or on its mock twin in CI.

Each test is parametrised over the rig: ``[mock]`` always runs, ``[real]`` only with PTTD_HIL=1
on a bench Pi. ``scripts/hil-run`` runs this suite on the Pi and writes a short report.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hil_bench import ROOM, Bench
from hil_ble import BleRig, EdgeLog
from hil_ble import until as ble_until
from hil_rig import (
    RigBusy,
    Terminal,
    dominant_frequency,
    mock_rig,
    rig_lock,
)
from waits import eventually

from pttd.radio.audio import Pcm
from pttd.radio.inputs import Button
from pttd.sim.audio import sine

TONE_HZ = float(os.environ.get("PTTD_HIL_TONE_HZ", "1000"))


async def test_driving_the_ptt_pin_opens_capture_and_sends_the_first_packet(bench: Bench) -> None:
    device = bench.device
    assert not device.audio_in.is_open
    t0 = time.monotonic()
    bench.rig.press()
    packet = await bench.next_audio()
    elapsed = time.monotonic() - t0
    # A figure to read (pttd bench measures it properly), never a pass mark.
    print(f"[{bench.rig.kind}] PTT edge to first packet at the listener: {elapsed * 1000:.0f} ms")
    assert device.audio_in.is_open and device.machine.capture_open
    assert packet.payload  # an Opus packet
    bench.rig.release()
    await bench.until(lambda m: not m.capture_open)
    await eventually(lambda: not device.audio_in.is_open)


async def test_the_sensed_led_follows_the_microphone(bench: Bench) -> None:
    device, rig = bench.device, bench.rig
    assert not rig.led_lit()
    # The LED and the microphone change only as the device handles an event: they agree after
    # every one (a captured frame is one too: 50 looks a second while talking), so they agree
    # at all times, not only at the moments a test happens to look.
    looks: list[tuple[bool, bool, bool]] = []
    feed = device.feed

    def looked_at(event: object) -> None:
        feed(event)  # type: ignore[arg-type]
        looks.append((rig.led_lit(), device.audio_in.is_open, device.machine.capture_open))

    device.feed = looked_at  # type: ignore[method-assign]
    try:
        for _ in range(3):
            rig.press()
            await bench.until(lambda m: m.capture_open)
            await eventually(rig.led_lit, timeout=1.0)
            seen = len(looks)
            await eventually(lambda: len(looks) >= seen + 10)  # noqa: B023 - talking: 10 frames
            rig.release()
            await bench.until(lambda m: not m.capture_open)
            await eventually(lambda: not rig.led_lit(), timeout=1.0)
            assert not device.audio_in.is_open
    finally:
        device.feed = feed  # type: ignore[method-assign]
    assert any(lit for lit, _, _ in looks) and not looks[-1][0]
    assert [look for look in looks if len(set(look)) > 1] == []


async def test_a_tone_played_by_the_device_comes_back_through_its_microphone(
    bench: Bench,
) -> None:
    device = bench.device
    rate = device.audio_in.sample_rate
    captured: list[Pcm] = []
    # The device plays through its own mixer and output; the rig's cable (or its mock twin)
    # carries it to the device's own capture. Capture is opened here directly, not by PTT, so
    # that the simplex mute does not silence the speaker.
    device.mixer.play(sine(TONE_HZ, 1.5, sample_rate=device.audio_out.sample_rate, amplitude=0.5))
    device.audio_in.open(lambda frame, t: captured.append(frame.copy()))
    try:
        await eventually(lambda: sum(len(f) for f in captured) >= rate, timeout=5.0)
    finally:
        device.audio_in.close()
    recording = np.concatenate(captured)
    # skip the first 200 ms: the cable's and the sound card's start-up
    freq, snr = dominant_frequency(recording[rate // 5 :], rate)
    print(f"[{bench.rig.kind}] tone {TONE_HZ:.0f} Hz came back at {freq:.1f} Hz, {snr:.0f} dB")
    assert abs(freq - TONE_HZ) <= TONE_HZ * 0.02, f"{TONE_HZ:.0f} Hz came back at {freq:.1f} Hz"
    assert snr >= 20, f"the {TONE_HZ:.0f} Hz tone is only {snr:.0f} dB over the noise"


async def test_the_serial_console_answers_on_the_configured_port(
    console_cable: Terminal, bench: Bench
) -> None:
    try:
        from pttd.radio.console.device_backend import build_console
    except ImportError as exc:  # pragma: no cover - the console is part of the package
        pytest.skip(f"no installer console in this build ({exc})")
    # the daemon's own console (pttd run starts the same), on the port the config names
    assert bench.device.config.console.port == bench.rig.console_port
    console = build_console(bench.device, retry_s=0.1)
    assert console is not None
    await console.start()
    try:
        received = b""
        async with asyncio.timeout(10):
            while b"installer console" not in received:  # the greeting
                console_cable.write(b"\r")
                await asyncio.sleep(0.1)
                received += console_cable.read()
            console_cable.write(b"status --json\r")
            status: list[str] = []
            while not status:
                await asyncio.sleep(0.05)
                received += console_cable.read()
                lines = [ln.strip() for ln in received.decode(errors="replace").splitlines()]
                status = [ln for ln in lines if ln.startswith("{") and ln.endswith("}")]
        answer = json.loads(status[-1])
        assert answer["device"] == "hil-device"
        assert answer["link"] == "online" and ROOM in answer["rooms"]
    finally:
        await console.close()


@pytest.mark.timeout(600)  # the real variant waits on the operator (bounded, each step)
async def test_a_ble_button_reports_press_and_release_and_its_battery(ble_rig: BleRig) -> None:
    from pttd.radio.inputs.ble import BleButton
    from pttd.radio.inputs.ble_protocol import BleButtonSpec

    rig = ble_rig
    edges = EdgeLog()
    button = BleButton(BleButtonSpec(rig.address), backoff_initial=0.2, backoff_max=2.0)
    began = time.monotonic()
    await button.start(edges)
    try:
        await rig.wake()
        connected = await ble_until(lambda: button.connected, rig.connect_s)
        assert connected, f"{rig.address} not connected within {rig.connect_s:g} s: {button.state}"
        connect_s = time.monotonic() - began
        await asyncio.sleep(rig.settle_s)  # a wake-up press's own edges come and go
        mark = len(edges.items)

        await rig.press()
        try:
            pressed = await edges.wait_edge(mark, True, rig.wait_s)
        except TimeoutError:
            pytest.fail(f"no press from {rig.address} within {rig.wait_s:g} s ({button.state})")
        await rig.release()
        try:
            released = await edges.wait_edge(mark, False, rig.wait_s)
        except TimeoutError:
            pytest.fail(f"no release from {rig.address} within {rig.wait_s:g} s ({button.state})")
        await asyncio.sleep(rig.settle_s)  # nothing more comes

        assert edges.ptt_since(mark) == [pressed, released]  # one press, one release: no more
        assert pressed.button is released.button is Button.PTT
        assert pressed.source == released.source == f"ble:{rig.address}"
        assert pressed.t < released.t <= time.monotonic()
        assert set(edges.threads) == {threading.get_ident()}  # on the loop, as every input
        assert button.connected, button.state
        if rig.battery is not None:
            assert button.battery == rig.battery, button.state
        elif rig.check_battery:
            assert button.battery is not None and 0 <= button.battery <= 100, (
                f"no battery level from {rig.address} ({button.state}): does it have a Battery "
                "Service? PTTD_HIL_BLE_BATTERY=none skips this check"
            )
        print(
            f"[{rig.kind}] BLE button {rig.address}: connected in {connect_s:.1f} s, battery "
            f"{button.battery}%, PTT held {released.t - pressed.t:.2f} s"
        )
        rig.say("thank you: BLE button test done")
    finally:
        await button.close()


# --- the rig itself --------------------------------------------------------------------------


def test_the_lock_keeps_two_runs_apart(tmp_path: Path) -> None:
    path = tmp_path / "hil.lock"
    busy = rf"in use \({path}: pid {os.getpid()} since "
    with rig_lock(path), pytest.raises(RigBusy, match=busy), rig_lock(path):
        pass
    with rig_lock(path):  # released
        pass


def test_the_mock_jumpers_connect_the_pins() -> None:
    rig = mock_rig()
    rig.connect()
    try:
        ptt = rig.factory.pin(rig.pins["ptt"])
        assert ptt.state is True  # released: high
        rig.press()
        assert ptt.state is False
        rig.release()
        assert ptt.state is True
        led = rig.factory.pin(rig.pins["led"])
        led.function = "output"
        led.state = True
        assert rig.led_lit()
        led.state = False
        assert not rig.led_lit()
    finally:
        rig.close()
