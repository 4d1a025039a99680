"""Each kind of PTT input keys a real device up against the real room server.

The serial PTT accessory is read over a real pty (its slave is the configured port; the test
writes the accessory's lines to the master), the evdev adapter is fed real
:class:`evdev.InputEvent` objects through a stand-in for the open input device (there is no
/dev/input here), and the simulated button is pressed from code, as the demo does.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
from device_harness import RATE, Rig, RunningDevice
from evdev import InputEvent, ecodes
from waits import eventually

from pttd.radio.config import PttConfig, TalkConfig
from pttd.radio.inputs import Button
from pttd.radio.inputs.evdev_input import EvdevButton
from pttd.radio.inputs.serial_ptt import SerialPtt
from pttd.radio.machine import InputLost, Talk, Tone
from pttd.server.registry import Registry
from pttd.sim.inputs import SimulatedButton
from pttd.wire import messages as p


class Pty:
    """A pty whose slave is the accessory's port; the test writes the accessory's lines to the
    master. The slave stays open here too, so that the port sees no hang-up until unplug()."""

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        self.port = os.ttyname(self._slave)
        self.plugged = True

    def send(self, data: bytes) -> None:
        os.write(self._master, data)

    def unplug(self) -> None:
        if self.plugged:
            self.plugged = False
            os.close(self._master)

    def close(self) -> None:
        self.unplug()
        os.close(self._slave)


@pytest.fixture
def pty() -> Iterator[Pty]:
    accessory = Pty()
    try:
        yield accessory
    finally:
        accessory.close()


def serial_input(device: RunningDevice) -> SerialPtt:
    return next(i for i in device.device.inputs if isinstance(i, SerialPtt))


async def grant_emergency(rig: Rig, name: str) -> None:
    """Grant the device emergency priority as an admin does (another registry connection), and
    wait until the running server has it on the device's connection."""
    with Registry(rig.db_path) as admin:
        admin.set_emergency("device", name, True)
    server = rig.server
    assert server is not None

    def granted() -> bool:
        sessions = server.core.sessions.values()
        return any(s.principal and s.principal.emergency for s in sessions if s.name == name)

    await eventually(granted)


TOGGLE = TalkConfig(mode="toggle")  # and the talk time-out of a minute: not what ends talks here


async def serial_device(
    rig: Rig, port: str, name: str = "device-a", talk: TalkConfig | None = None
) -> RunningDevice:
    device = await rig.device(
        name, ptt=[PttConfig(kind="serial", port=port)], observe=True, talk=talk
    )
    accessory = serial_input(device)
    await eventually(lambda: accessory.connected)  # open, and in raw mode: no echo
    return device


async def test_serial_accessory_over_a_pty_keys_the_device_up(rig: Rig, pty: Pty) -> None:
    a = await serial_device(rig, pty.port)
    b = await rig.device("device-b")
    listener = await rig.listener()

    pty.send(b"+PTT=P\r\n")
    await a.transmitting()
    assert a.mic.is_open
    start = await listener.wait_for(p.OnStreamStart, lambda e: e.from_ == a.name)
    await eventually(lambda: b.device.counters.packets_received >= 5)
    pty.send(b"+PTT=P\r\n")  # a repeated press is not a second talk
    pty.send(b"noise\r\n\x00+PTT=R\r\n")  # line noise around the release
    await a.idle()
    assert not a.mic.is_open
    await listener.wait_for(p.OnStreamStop, lambda e: e.stream_id == start.stream_id)
    assert a.device.counters.talks == 1

    # Line endings of every kind, split writes.
    pty.send(b"+PT")
    pty.send(b"T=P\n")
    await a.transmitting()
    pty.send(b"+PTT=R\r")
    await a.idle()
    assert a.device.counters.talks == 2
    assert all(s.mic_open == s.capture_open == s.transmit_lit for s in a.snaps)


async def test_serial_sos_pre_empts_a_normal_talker(rig: Rig, pty: Pty) -> None:
    a = await serial_device(rig, pty.port)
    await grant_emergency(rig, a.name)
    b = await rig.device("device-b")
    listener = await rig.listener()
    b.button.press()
    await b.transmitting()
    b_start = await listener.wait_for(p.OnStreamStart, lambda e: e.from_ == b.name)

    pty.send(b"+SOS=P\r\n")
    await a.transmitting()
    emergency = await listener.wait_for(p.OnStreamStart, lambda e: e.from_ == a.name)
    assert emergency.priority == "emergency"
    preempted = await listener.wait_for(p.OnStreamStop, lambda e: e.stream_id == b_start.stream_id)
    assert preempted.reason == p.REASON_PREEMPTED
    # B was cut: its microphone closed, it heard why, and it is not reopened while held.
    await b.until(lambda m: m.talk is Talk.IDLE)
    assert not b.mic.is_open and b.machine.blocked
    assert Tone.BUSY in b.device.counters.tones
    await b.until(lambda m: emergency.stream_id in m.incoming)
    await eventually(lambda: b.device.counters.packets_received >= 5)

    pty.send(b"+SOS=R\r\n")
    await a.idle()
    await listener.wait_for(p.OnStreamStop, lambda e: e.stream_id == emergency.stream_id)
    b.button.release()
    await b.until(lambda m: not m.blocked)


async def test_serial_accessory_unplugged_mid_talk_releases_ptt(rig: Rig, pty: Pty) -> None:
    a = await rig.device("device-a", inputs=[SerialPtt(pty.port, retry_s=0.05)], observe=True)
    accessory = next(i for i in a.device.inputs if isinstance(i, SerialPtt))
    await eventually(lambda: accessory.connected)
    pty.send(b"+PTT=P\r\n")
    await a.transmitting()
    pty.unplug()  # the accessory's end goes away: the port hangs up
    await a.idle()
    assert not a.mic.is_open and not a.machine.held_buttons


def closed_by(device: RunningDevice, source: str) -> None:
    """The microphone closed in the very event that said ``source`` was gone (not at a time-out,
    not later): capture, the audio input and the transmit LED together, and no warning tone."""
    talking = [i for i, s in enumerate(device.snaps) if s.talk is Talk.TRANSMITTING]
    after = device.snaps[talking[-1] + 1]
    assert isinstance(after.event, InputLost) and after.event.source == source
    assert not after.capture_open and not after.mic_open and not after.transmit_lit
    assert after.talk is Talk.IDLE
    assert Tone.TIMEOUT_WARNING not in device.device.counters.tones


async def test_toggle_mode_serial_accessory_unplugged_ends_the_latched_talk(
    rig: Rig, pty: Pty
) -> None:
    """Toggle mode: a press latches the talk on, its release means nothing; the accessory then
    goes away (the port hangs up): the microphone closes at once, the stream stops."""
    a = await serial_device(rig, pty.port, talk=TOGGLE)
    listener = await rig.listener()
    pty.send(b"+PTT=P\r\n+PTT=R\r\n")
    await a.transmitting()
    start = await listener.wait_for(p.OnStreamStart, lambda e: e.from_ == a.name)
    await eventually(lambda: len(listener.packets(start.stream_id)) >= 5)
    await a.until(lambda m: not m.held_buttons)  # the release read: it means nothing
    assert a.machine.latched_by == f"serial:{pty.port}" and a.machine.talk is Talk.TRANSMITTING

    pty.unplug()
    await a.idle()
    closed_by(a, f"serial:{pty.port}")
    stop = await listener.wait_for(p.OnStreamStop, lambda e: e.stream_id == start.stream_id)
    assert stop.reason is None  # the device's own stop
    assert len(listener.packets(start.stream_id)) == a.device.counters.packets_sent
    assert all(s.mic_open == s.capture_open == s.transmit_lit for s in a.snaps)


async def test_toggle_mode_another_input_unplugged_leaves_the_latched_talk(
    rig: Rig, pty: Pty
) -> None:
    """Decided: the talk the device's own button latched on goes on when the serial accessory
    is unplugged; the button switches it off."""
    a = await serial_device(rig, pty.port, talk=TOGGLE)
    a.button.press()
    a.button.release()
    await a.transmitting()
    assert a.machine.latched_by == a.button.name
    stream = a.machine.stream_id

    pty.unplug()
    await eventually(lambda: any(isinstance(s.event, InputLost) for s in a.snaps))
    assert a.machine.talk is Talk.TRANSMITTING and a.mic.is_open  # handled, and still on
    assert a.machine.stream_id == stream
    a.button.press()  # switched off by the input that switched it on
    await a.idle()
    assert not a.mic.is_open


# --------------------------------------------------------------------------- evdev


class PedalDevice:
    """Stands in for an open /dev/input device: yields the real evdev events the test pushes."""

    def __init__(self) -> None:
        self.path = "/dev/input/event-pedal"
        self.queue: asyncio.Queue[InputEvent | OSError] = asyncio.Queue()
        self.closed = False

    async def events(self) -> AsyncIterator[InputEvent]:
        while True:
            item = await self.queue.get()
            if isinstance(item, OSError):
                raise item
            yield item

    def unplug(self) -> None:
        """Reading fails as it does when the device is unplugged (ENODEV)."""
        self.queue.put_nowait(OSError(errno.ENODEV, "No such device"))

    def key_down(self, code: int) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    def key(self, code: int, value: int) -> None:
        now = time.time()
        sec, usec = int(now), int(now % 1 * 1_000_000)
        self.queue.put_nowait(InputEvent(sec, usec, ecodes.EV_KEY, code, value))
        self.queue.put_nowait(InputEvent(sec, usec, ecodes.EV_SYN, ecodes.SYN_REPORT, 0))


async def test_evdev_pedal_keys_the_device_up(rig: Rig) -> None:
    pedal = PedalDevice()
    button = EvdevButton("pedal", "KEY_F13", opener=lambda: pedal)
    a = await rig.device("device-a", inputs=[button], observe=True)
    b = await rig.device("device-b")
    async with asyncio.timeout(10):
        await button.wait_connected()

    pedal.key(ecodes.KEY_F13, 1)
    await a.transmitting()
    pedal.key(ecodes.KEY_F13, 2)  # autorepeat while held: not an edge
    pedal.key(ecodes.KEY_A, 0)  # another key
    await eventually(lambda: b.device.counters.packets_received >= 5)
    assert a.machine.talk is Talk.TRANSMITTING
    pedal.key(ecodes.KEY_F13, 0)
    await a.idle()
    await b.until(lambda m: not m.incoming)
    assert a.device.counters.talks == 1
    await a.stop()
    assert pedal.closed


async def test_evdev_emergency_key_asks_for_emergency_priority(rig: Rig) -> None:
    pedal = PedalDevice()
    button = EvdevButton("headset", "BTN_0", Button.EMERGENCY, opener=lambda: pedal)
    a = await rig.device("device-a", inputs=[button])
    await grant_emergency(rig, a.name)
    listener = await rig.listener()
    async with asyncio.timeout(10):
        await button.wait_connected()
    pedal.key(ecodes.BTN_0, 1)
    await a.transmitting()
    start = await listener.wait_for(p.OnStreamStart, lambda e: e.from_ == a.name)
    assert start.priority == "emergency"
    pedal.key(ecodes.BTN_0, 0)
    await a.idle()


async def test_toggle_mode_evdev_pedal_unplugged_ends_the_latched_talk(rig: Rig) -> None:
    pedal = PedalDevice()
    button = EvdevButton("pedal", "KEY_F13", opener=lambda: pedal, retry_s=60)
    a = await rig.device("device-a", inputs=[button], observe=True, talk=TOGGLE)
    listener = await rig.listener()
    async with asyncio.timeout(10):
        await button.wait_connected()
    pedal.key(ecodes.KEY_F13, 1)
    pedal.key(ecodes.KEY_F13, 0)
    await a.transmitting()
    start = await listener.wait_for(p.OnStreamStart, lambda e: e.from_ == a.name)
    await eventually(lambda: len(listener.packets(start.stream_id)) >= 5)

    pedal.unplug()
    await a.idle()
    closed_by(a, f"evdev:{pedal.path}")
    assert pedal.closed
    stop = await listener.wait_for(p.OnStreamStop, lambda e: e.stream_id == start.stream_id)
    assert stop.reason is None


# --------------------------------------------------------------------------- simulated


async def test_simulated_button_talks_and_the_other_device_plays_it(rig: Rig) -> None:
    a = await rig.device("device-a", observe=True)
    b = await rig.device("device-b")
    a.button.press()
    await a.transmitting()
    await eventually(lambda: b.device.mixer.stats.played >= 3)
    since = time.monotonic()
    await eventually(lambda: b.device.mixer.stats.played >= 30)
    a.button.release()
    await a.idle()
    await b.until(lambda m: not m.incoming)
    assert a.device.counters.packets_sent == b.device.counters.packets_received
    assert b.device.mixer.stats.decode_errors == 0
    # B's speaker played A's 440 Hz 'voice', decoded through its jitter buffer and mixer.
    heard = np.concatenate([blk.samples for blk in b.speaker.played() if blk.t >= since])
    assert heard.size >= RATE // 4
    spectrum = np.abs(np.fft.rfft(heard.astype(np.float64)))
    peak_hz = float(np.argmax(spectrum)) * RATE / heard.size
    assert 400 < peak_hz < 480, peak_hz


async def test_two_ptt_inputs_the_talk_lasts_until_the_last_is_released(rig: Rig) -> None:
    """Two PTT inputs (as a GPIO button and a serial accessory would be): releasing one while the
    other is held does not end the talk; releasing the last one does."""
    pedal = SimulatedButton("sim:pedal")
    a = await rig.device("device-a", inputs=[pedal], observe=True)
    listener = await rig.listener()
    hand = ("ptt", a.button.name)
    foot = ("ptt", pedal.name)

    a.button.press()
    await a.transmitting()
    start = await listener.wait_for(p.OnStreamStart, lambda e: e.from_ == a.name)
    pedal.press()
    await a.until(lambda m: m.held_buttons == {hand, foot})
    a.button.release()
    await a.until(lambda m: m.held_buttons == {foot})
    # The release has been handled, and the pedal holds the talk: same stream, mic open.
    assert a.machine.talk is Talk.TRANSMITTING and a.mic.is_open
    assert a.machine.stream_id == start.stream_id
    sent = a.device.counters.packets_sent
    await eventually(lambda: len(listener.packets(start.stream_id)) >= sent + 5)

    pedal.release()
    await a.idle()
    assert not a.mic.is_open and not a.machine.held_buttons
    stop = await listener.wait_for(p.OnStreamStop, lambda e: e.stream_id == start.stream_id)
    assert stop.reason is None  # the device's own stop, at the last release
    assert len(listener.of(p.OnStreamStart)) == 1 and a.device.counters.talks == 1
    assert len(listener.packets(start.stream_id)) == a.device.counters.packets_sent
    assert all(s.mic_open == s.capture_open == s.transmit_lit for s in a.snaps)
