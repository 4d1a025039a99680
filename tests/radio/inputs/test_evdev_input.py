"""The evdev adapter, fed real evdev.InputEvent objects through its own processing path.

There is no /dev/input here: a FakeDevice stands in for the open device (the EventSource
the real loop gets from open_device), everything from consume() on is the production code,
including the reopen loop and the notice that the device is gone when it vanishes.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import AsyncIterator

import pytest
from evdev import InputEvent, ecodes
from waits import eventually

from pttd.errors import ConfigError, InputError
from pttd.radio.inputs import Button, InputGone
from pttd.radio.inputs.evdev_input import DeviceSource, EvdevButton, key_code, open_device

TIMEOUT = 5.0


def key(code: int, value: int) -> InputEvent:
    now = time.time()
    return InputEvent(int(now), int(now % 1 * 1e6), ecodes.EV_KEY, code, value)


def syn(code: int = ecodes.SYN_REPORT) -> InputEvent:
    return InputEvent(0, 0, ecodes.EV_SYN, code, 0)


class FakeDevice:
    """An open input device whose events the test pushes; ``vanish()`` unplugs it."""

    def __init__(self, path: str = "/dev/input/event7") -> None:
        self._path = path
        self.queue: asyncio.Queue[InputEvent | OSError] = asyncio.Queue()
        self.down: set[int] = set()  # what active_keys() would say
        self.closed = False

    @property
    def path(self) -> str:
        return self._path

    async def events(self) -> AsyncIterator[InputEvent]:
        while True:
            item = await self.queue.get()
            if isinstance(item, OSError):
                raise item
            yield item

    def key_down(self, code: int) -> bool:
        return code in self.down

    def close(self) -> None:
        self.closed = True

    def send(self, *events: InputEvent) -> None:
        for event in events:
            self.queue.put_nowait(event)

    def vanish(self) -> None:
        self.queue.put_nowait(OSError(errno.ENODEV, "No such device"))


class Plug:
    """The opener: hands out the devices in ``devices`` one at a time; unplugged when empty."""

    def __init__(self, *devices: FakeDevice) -> None:
        self.devices = list(devices)
        self.opened: list[FakeDevice] = []
        self.attempts = 0

    def __call__(self) -> FakeDevice:
        self.attempts += 1
        if not self.devices:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/dev/input/x")
        device = self.devices.pop(0)
        self.opened.append(device)
        return device


def f13(value: int) -> InputEvent:
    return key(ecodes.KEY_F13, value)


async def test_press_release_autorepeat_and_other_events(recorder):
    device = FakeDevice()
    ptt = EvdevButton("pedal", "KEY_F13", opener=Plug(device), retry_s=0.01)
    await ptt.start(recorder)
    device.send(
        f13(1),
        syn(),
        f13(2),  # autorepeat while held
        f13(2),
        key(ecodes.KEY_A, 1),  # another key
        key(ecodes.KEY_A, 0),
        InputEvent(0, 0, ecodes.EV_MSC, ecodes.MSC_SCAN, 0x70068),  # scan code report
        InputEvent(0, 0, ecodes.EV_REL, ecodes.REL_X, 3),
        syn(),
        f13(0),
        syn(),
        f13(1),
        f13(0),
    )
    edges = await recorder.wait_for(4)
    await recorder.settle()
    assert recorder.summary() == [(Button.PTT, True), (Button.PTT, False)] * 2
    assert {edge.source for edge in edges} == {"evdev:/dev/input/event7"}
    recorder.check_delivery()
    await ptt.close()
    assert device.closed


async def test_other_key_and_button_mapping(recorder):
    device = FakeDevice()
    sos = EvdevButton("headset", "BTN_0", Button.EMERGENCY, opener=Plug(device))
    await sos.start(recorder)
    device.send(f13(1), key(ecodes.BTN_0, 1), key(ecodes.BTN_0, 0))
    await recorder.wait_for(2)
    assert recorder.summary() == [(Button.EMERGENCY, True), (Button.EMERGENCY, False)]
    await sos.close()


async def test_vanishing_mid_press_says_gone_and_reopens(recorder, caplog):
    """Unplugged while held: one notice that the device is gone (it stands for the release: no
    release edge), then the device is reopened and its key is a fresh press."""
    first, second = FakeDevice("/dev/input/event7"), FakeDevice("/dev/input/event9")
    plug = Plug(first)
    ptt = EvdevButton("pedal", opener=plug, retry_s=0.01)
    await ptt.start(recorder)
    first.send(f13(1))
    await recorder.wait_for(1)
    with caplog.at_level(logging.WARNING, logger="pttd.radio.inputs.evdev_input"):
        first.vanish()
        gone = await recorder.wait_gone(1)
        assert [g.source for g in gone] == ["evdev:/dev/input/event7"]
        assert first.closed
        await eventually(lambda: plug.attempts >= 3)  # retrying, device absent
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1  # one warning per outage, not one per attempt
    assert "lost" in warnings[0]
    assert not ptt.connected
    assert not ptt._sink.is_held(Button.PTT, "evdev:/dev/input/event7")
    plug.devices.append(second)  # plugged back in
    await asyncio.wait_for(ptt.wait_connected(), TIMEOUT)
    second.send(f13(1), f13(0))
    await recorder.wait_for(3)
    assert recorder.summary() == [(Button.PTT, True)] * 2 + [(Button.PTT, False)]
    assert isinstance(recorder.items[1], InputGone)
    assert recorder.edges[1].source == "evdev:/dev/input/event9"
    recorder.check_delivery()
    await ptt.close()
    assert len(recorder.gone) == 1  # closing is not vanishing


async def test_vanishing_with_nothing_held_still_says_gone(recorder):
    """In toggle mode the key was pressed and released before the pedal went: nothing is held,
    yet the talk it latched on must end, so the notice comes all the same."""
    device = FakeDevice()
    ptt = EvdevButton("pedal", opener=Plug(device), retry_s=10)
    await ptt.start(recorder)
    device.send(f13(1), syn(), f13(0), syn())
    await recorder.wait_for(2)
    device.vanish()
    gone = await recorder.wait_gone(1)
    assert gone[0].source == "evdev:/dev/input/event7"
    assert recorder.items[-1] is gone[0]
    recorder.check_delivery()
    await ptt.close()


async def test_key_already_down_when_opened(recorder):
    device = FakeDevice()
    device.down.add(ecodes.KEY_F13)
    ptt = EvdevButton("pedal", opener=Plug(device))
    await ptt.start(recorder)
    await recorder.wait_for(1)
    assert recorder.summary() == [(Button.PTT, True)]
    device.send(f13(0))
    await recorder.wait_for(2)
    await ptt.close()


async def test_lost_events_resynchronise_from_the_device(recorder):
    device = FakeDevice()
    ptt = EvdevButton("pedal", opener=Plug(device))
    await ptt.start(recorder)
    device.send(f13(1))
    await recorder.wait_for(1)
    # The kernel's buffer overflowed: the release was lost; what follows up to SYN_REPORT
    # is incomplete and skipped; then the key's state is read from the device (now up).
    device.send(syn(ecodes.SYN_DROPPED), f13(1), syn())
    edges = await recorder.wait_for(2)
    assert edges[1].pressed is False
    device.down.add(ecodes.KEY_F13)
    device.send(syn(ecodes.SYN_DROPPED), syn())
    await recorder.wait_for(3)
    assert recorder.summary() == [(Button.PTT, True), (Button.PTT, False), (Button.PTT, True)]
    await ptt.close()


async def test_close_while_held_releases(recorder):
    device = FakeDevice()
    ptt = EvdevButton("pedal", opener=Plug(device))
    await ptt.start(recorder)
    device.send(f13(1))
    await recorder.wait_for(1)
    await ptt.close()
    await recorder.wait_for(2)
    assert recorder.summary() == [(Button.PTT, True), (Button.PTT, False)]
    assert device.closed


async def test_consume_is_the_processing_path(recorder):
    """consume() on its own: what the real device loop runs on an opened device."""
    device = FakeDevice()
    ptt = EvdevButton("pedal", "KEY_SPACE")
    ptt._sink.connect(recorder)  # start() without the opening loop
    device.send(key(ecodes.KEY_SPACE, 1), key(ecodes.KEY_SPACE, 2), key(ecodes.KEY_SPACE, 0))
    device.vanish()
    with pytest.raises(OSError, match="No such device"):
        await asyncio.wait_for(ptt.consume(device, "evdev:test"), TIMEOUT)
    await recorder.wait_for(2)
    assert recorder.summary() == [(Button.PTT, True), (Button.PTT, False)]


def test_key_names():
    assert key_code("KEY_F13") == ecodes.KEY_F13
    assert key_code("BTN_0") == ecodes.BTN_0
    for bad in ("KEY_NOPE", "F13", "ABS_X", ""):
        with pytest.raises(ConfigError, match="not a Linux key code name"):
            EvdevButton("pedal", bad)


def test_opening_what_is_not_an_input_device_fails_cleanly():
    with pytest.raises(FileNotFoundError):
        open_device("/dev/input/no-such-event99")
    with pytest.raises(OSError):  # not an evdev device: the ioctls fail
        open_device("/dev/null")
    with pytest.raises(InputError, match="no input device named like 'Footswitch-xyz'"):
        open_device("Footswitch-xyz")


async def test_real_opener_keeps_retrying_until_closed(recorder, caplog):
    """The default opener on this machine (no such device): warns once, retries, closes."""
    ptt = EvdevButton("/dev/input/no-such-event99", retry_s=0.01)
    with caplog.at_level(logging.DEBUG, logger="pttd.radio.inputs.evdev_input"):
        await ptt.start(recorder)
        await eventually(lambda: caplog.text.count("still cannot open") >= 2)
        await asyncio.wait_for(ptt.close(), TIMEOUT)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "cannot open" in warnings[0]
    assert recorder.edges == []


class PipeDevice:
    """Stands in for evdev.InputDevice inside DeviceSource: a real pollable, non-blocking fd.

    Each byte written to the pipe is one F13 event (b"1" press, b"0" release, b"2" repeat);
    b"?" is a wake-up with nothing to read (evdev's read() raises BlockingIOError then);
    b"!" makes the read fail as it does when the device is unplugged (ENODEV).
    """

    def __init__(self) -> None:
        self.fd, self.writer = os.pipe()
        os.set_blocking(self.fd, False)
        self.path = "/dev/input/event42"
        self.closed = False

    def read(self) -> list[InputEvent]:
        data = os.read(self.fd, 1)
        if data == b"?":
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        if data == b"!":
            raise OSError(errno.ENODEV, "No such device")
        return [f13(int(data))]

    def active_keys(self) -> list[int]:
        return []

    def close(self) -> None:
        self.closed = True
        os.close(self.fd)
        os.close(self.writer)


async def test_device_source_reads_the_fd_on_the_loop(recorder):
    pipe = PipeDevice()
    source = DeviceSource(pipe)  # type: ignore[arg-type]
    ptt = EvdevButton("pedal", opener=lambda: source, retry_s=10)
    await ptt.start(recorder)
    await asyncio.wait_for(ptt.wait_connected(), TIMEOUT)
    os.write(pipe.writer, b"1?22?0")  # a spurious wake-up is not a lost device
    await recorder.wait_for(2)
    os.write(pipe.writer, b"1")
    await recorder.wait_for(3)
    os.write(pipe.writer, b"!")
    gone = await recorder.wait_gone(1)
    assert recorder.summary() == [(Button.PTT, True), (Button.PTT, False), (Button.PTT, True)]
    assert gone[0].source == "evdev:/dev/input/event42"
    assert pipe.closed
    recorder.check_delivery()
    await ptt.close()
