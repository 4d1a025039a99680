"""Linux input devices through evdev: USB foot pedals, Bluetooth headset and PTT buttons.

One key of one device is one button. The device is read on the asyncio loop itself, not on
a thread: an evdev file descriptor is non-blocking and pollable, so ``loop.add_reader`` wakes
us when events are queued and reading them never blocks. (We do not use evdev's own
``async_read_loop()``: a spurious wake-up makes it raise ``BlockingIOError``, which would look
like an unplugged pedal and cut a transmission; our reader just waits again.)

Events go through :meth:`EvdevButton.consume`, which takes any :class:`EventSource`: the real
one wraps an :class:`evdev.InputDevice`, tests pass their own that yields real
:class:`evdev.InputEvent` objects. When the device vanishes (reading fails with ``ENODEV``),
the adapter reports it gone (:class:`~pttd.radio.inputs.InputGone`: a held key is up, a talk it
latched on ends) and reopens the device every ``retry_s`` seconds until close().
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import evdev
from evdev import InputEvent, ecodes

from pttd.errors import ConfigError, InputError
from pttd.radio.inputs import Button, EdgeHandler, EdgeSink

log = logging.getLogger(__name__)


def key_code(name: str) -> int:
    """The Linux key code named ``name`` ("KEY_F13", "BTN_0"…); ConfigError if there is none."""
    code = ecodes.ecodes.get(name) if name.startswith(("KEY_", "BTN_")) else None
    if code is None:
        raise ConfigError(
            f"ptt.key: {name!r} is not a Linux key code name (such as KEY_F13, KEY_SPACE, BTN_0)"
        )
    return code


class EventSource(Protocol):
    """An open input device, as :meth:`EvdevButton.consume` sees it."""

    @property
    def path(self) -> str: ...

    def events(self) -> AsyncIterator[InputEvent]:
        """The device's events, as they come; raises OSError when the device vanishes."""
        ...

    def key_down(self, code: int) -> bool:
        """Whether key ``code`` is down now (for the state at open and after lost events)."""
        ...

    def close(self) -> None: ...


class DeviceSource:
    """An :class:`evdev.InputDevice` read on the running asyncio loop."""

    def __init__(self, device: evdev.InputDevice[str]) -> None:
        self._device = device
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = device.fd

    @property
    def path(self) -> str:
        return str(self._device.path)

    @property
    def device_name(self) -> str:
        return self._device.name

    async def events(self) -> AsyncIterator[InputEvent]:
        self._loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        self._loop.add_reader(self._fd, readable.set)  # removed by close()
        while True:
            await readable.wait()
            readable.clear()
            try:
                batch = list(self._device.read())
            except BlockingIOError:
                continue  # woken with nothing to read
            for event in batch:
                yield event

    def key_down(self, code: int) -> bool:
        return code in self._device.active_keys()

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._loop = None
        self._device.close()


def open_device(device: str, code: int | None = None) -> DeviceSource:
    """Open ``device``: a path ("/dev/input/event3", "/dev/input/by-id/…"), or else a name
    substring (case-insensitive) of a device in /dev/input, preferring one that has key
    ``code``. Raises OSError (InputError when nothing matches)."""
    if device.startswith("/"):
        return _checked(evdev.InputDevice(device, readonly=True), code)
    candidates: list[evdev.InputDevice[str]] = []
    for path in sorted(evdev.list_devices(writable=False)):
        try:
            found = evdev.InputDevice(path, readonly=True)
        except OSError as exc:
            log.debug("evdev: skipping %s: %s", path, exc)
            continue
        if device.lower() in found.name.lower():
            candidates.append(found)
        else:
            found.close()
    if not candidates:
        unreadable = len(evdev.list_devices(writable=False)) < len(glob.glob("/dev/input/event*"))
        raise InputError(
            f"evdev: no input device named like {device!r} in /dev/input"
            + (
                " (some there are unreadable: is the user in the 'input' group?)"
                if unreadable
                else ""
            )
        )
    chosen = next((d for d in candidates if code is not None and _has_key(d, code)), candidates[0])
    for other in candidates:
        if other is not chosen:
            other.close()
    return _checked(chosen, code)


def _checked(device: evdev.InputDevice[str], code: int | None) -> DeviceSource:
    if code is not None and not _has_key(device, code):
        log.warning(
            "evdev: %s (%r) reports no key %s: check ptt.key", device.path, device.name, code
        )
    return DeviceSource(device)


def _has_key(device: evdev.InputDevice[str], code: int) -> bool:
    return code in device.capabilities().get(ecodes.EV_KEY, [])


Opener = Callable[[], EventSource]


class EvdevButton:
    """One key of a Linux input device as one button (by default, the PTT)."""

    def __init__(
        self,
        device: str,
        key: str = "KEY_F13",
        button: Button = Button.PTT,
        *,
        retry_s: float = 1.0,
        opener: Opener | None = None,
    ) -> None:
        self._device = device
        self._key = key
        self._code = key_code(key)
        self._button = button
        self._retry_s = retry_s
        self._opener: Opener = opener or (lambda: open_device(device, self._code))
        self._sink = EdgeSink(self.name)
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    @property
    def name(self) -> str:
        return f"evdev:{self._device}"

    @property
    def connected(self) -> bool:
        """True while the device is open."""
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def start(self, handler: EdgeHandler) -> None:
        if self._task is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._sink.connect(handler)
        self._task = asyncio.create_task(self._run(), name=f"pttd {self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._sink.release_all()
        self._sink.disconnect()

    async def _run(self) -> None:
        outage_logged = False
        while True:
            try:
                source = self._opener()
            except OSError as exc:
                hint = " (is the user in the 'input' group?)" if _denied(exc) else ""
                if not outage_logged:
                    log.warning("%s: cannot open: %s%s; retrying", self.name, exc, hint)
                    outage_logged = True
                else:
                    log.debug("%s: still cannot open: %s", self.name, exc)
                await asyncio.sleep(self._retry_s)
                continue
            outage_logged = False
            self._connected.set()
            source_name = f"evdev:{source.path}"
            log.info("%s: reading %s of %s", self.name, self._key, source.path)
            vanished = True  # however reading ends, but for close() cancelling it
            try:
                await self.consume(source, source_name)
                log.warning("%s: %s: no more events; reopening", self.name, source.path)
            except OSError as exc:
                log.warning("%s: %s lost (%s); reopening", self.name, source.path, exc)
                outage_logged = True
            except asyncio.CancelledError:
                vanished = False  # close(): it releases what is held
                raise
            except Exception:
                log.exception("%s: %s: reading failed; reopening", self.name, source.path)
            finally:
                self._connected.clear()
                try:
                    source.close()
                except OSError as exc:
                    log.debug("%s: close: %s", self.name, exc)
                if vanished:
                    self._sink.lost(source_name)
            await asyncio.sleep(self._retry_s)

    async def consume(self, source: EventSource, source_name: str) -> None:
        """Turn ``source``'s events into edges until it ends; raise OSError if it vanishes.

        EV_KEY of our key: value 1 is a press, 0 a release, 2 (autorepeat) is ignored; other
        keys and event types are ignored. After SYN_DROPPED (the kernel's buffer overflowed,
        events were lost) events are skipped up to the next SYN_REPORT and the key's state is
        read from the device, so that a lost release cannot leave the button held.
        """
        sink, button, code = self._sink, self._button, self._code
        sink.sync(button, source_name, lambda: source.key_down(code))  # down already?
        dropping = False
        async for event in source.events():
            if event.type == ecodes.EV_SYN:
                if event.code == ecodes.SYN_DROPPED:
                    log.info("%s: events dropped by the kernel; resynchronising", self.name)
                    dropping = True
                elif event.code == ecodes.SYN_REPORT and dropping:
                    dropping = False
                    sink.sync(button, source_name, lambda: source.key_down(code))
            elif dropping or event.type != ecodes.EV_KEY or event.code != code:
                continue
            elif event.value == 1:
                sink.edge(button, True, source_name)
            elif event.value == 0:
                sink.edge(button, False, source_name)
            # value 2: autorepeat while held, not an edge


def _denied(exc: OSError) -> bool:
    return isinstance(exc, PermissionError)
