"""Latency of push-to-talk on loopback, with the clocked simulated audio and the real room server.

Two simulated devices (``pttd.sim.loopback``), A talking, B listening, 48 kHz, 20 ms
frames. A's microphone restarts its signal at every open of the capture (the press), so every
press speaks the same thing, timed from the press:

* from sample 0, a marker: 60 ms of a 1 kHz tone at -20 dBFS, speech that begins at the press;
* at 100 ms, an impulse: 1 ms at -1 dBFS;
* from 400 ms on, a 440 Hz tone at -20 dBFS (what A says during the late entries).

Per press (N presses, one at a time; A releases once B has played the impulse):

* ``access_time_ms``: press edge → talk permit, as the daemon counts it
  (``Device.counters.access_times``): the start_stream round trip to the server;
* ``mouth_to_ear_ms``: the impulse's capture time at A (``ClockedSource.time_of``) → the time the
  first sample of it above -10 dBFS left B's speaker (``RecordingSink.first_above``). Both are the
  simulated sound cards' clocks, so it includes the 20 ms frame being filled, Opus's look-ahead,
  the network, B's jitter buffer and B's output period;
* ``clipped_ms``: how much of the marker B did not play, against the same frames encoded and
  decoded by the codec alone: B's recording is aligned to that by cross-correlation and the first
  sample at half the marker's level is compared. Worst case over the presses;
* ``capture_start_ms`` (for information): press edge → the first captured sample, i.e. the
  simulated microphone's thread start; the signal is timed from there, not from the edge.

``encrypted``: the same presses, as many, in an end-to-end encrypted room (a server of its own
on loopback, after the clear run; a key authority made on the fly approves A and B, the server
pushes them the room key, every packet goes SFrame-sealed): access and mouth-to-ear, and
``e2ee_delta_p95_ms``, each p95 in the encrypted room less the clear one.

``ble``: a BLE PTT button against a GPIO one, on a device of its own (a server of its own on
loopback, after the encrypted run): its PTT inputs are a real
:class:`~pttd.radio.inputs.ble.BleButton` (bleak, unmodified) linked to a PTT-Z button of the
BlueZ stand-in
(:mod:`pttd.sim.bluez`, on a private D-Bus bus the bench starts: ``DBUS_SYSTEM_BUS_ADDRESS`` is
set for the run only) and a GPIO button on gpiozero's ``MockFactory``. As many presses of each,
alternating: the BLE access time runs from the notification being sent (a monotonic timestamp
right before ``press()``) to the talk permit, the GPIO one from ``pin.drive_low()`` to the talk
permit; ``ble_delta_p95_ms`` is the BLE p95 less the GPIO p95. (``edge_ms``, for information:
from the same instant to the edge's stamp, i.e. what the D-Bus hop costs.)

``web_console``: the web console in Debian's chromium (headless, Playwright) against a radio of
its own (a server of its own on loopback, after the BLE run), as many presses each way:
``browser_to_radio_ms`` and ``radio_to_browser_ms`` mouth-to-ear (how they are taken:
:mod:`pttd.bench.browser`); skipped, with the reason, without Playwright or chromium.

``late_entry_ms``: while A holds the PTT (the 440 Hz tone), device after device (C) pairs with the
server and starts; each is measured from its link coming up (logged on, rooms joined:
``Device.counters.online_times``) to the first sample above -40 dBFS leaving its speaker. C's own
tones are set to -60 dBFS so that its 'connected' tone does not count; it plays at 0 dB gain.

``device_rss_mb``: a real device process, ``pttd run --config`` with the sim audio backend and a
serial PTT on a pty, paired with the same server: once it is online and has transmitted for a
second (``+PTT=P`` on the pty), VmRSS from ``/proc/PID/status``; ``device_peak_rss_mb`` is VmHWM.
Most of that is not pttd's: the interpreter and the modules it imports (asyncio, ssl, numpy,
websockets, opuslib, …) take about 40 MB before pttd does anything. So the same run measures the
floor, ``import_floor_rss_mb``: a bare interpreter (same Python, same environment) that imports
every module the device process imported (``-X importtime`` lists them) except pttd's own, then
reads its VmRSS. ``device_own_rss_mb`` is the difference: pttd's code, state and buffers.
(Modules the device only tried, such as ``sitecustomize`` or Windows-only ones, fail in the floor
too: ``rss_probe.floor_import_failures``.)

Figures are nearest-rank p50 and p95 over the presses or entries.
Targets at 20 ms frames: access p95 <= 15 ms, mouth-to-ear p95 <= 60 ms, late entry p95 <= 100 ms,
clipped 0 ms, pttd's own RSS <= 4 MB above the import floor; in the encrypted room, access and
mouth-to-ear p95 within 2 ms of the clear ones (|delta| <= 2 ms); a BLE button's access p95 within
2 ms of a GPIO button's (|delta| <= 2 ms); web console ↔ radio mouth-to-ear p95 <= 80 ms each
way. (3GPP asks for <= 300 ms for
mission-critical PTT access and mouth-to-ear.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from pttd.bench.audio import E2EE_ROOM, UNITY_VOLUME, best_lag, frames_of, ready_in_encrypted_room
from pttd.bench.browser import browser_presses
from pttd.bench.common import (
    add_output_arguments,
    child_env,
    distribution,
    emit,
    finish,
    load_average,
    machine,
    mark,
    poll,
    proc_status_kb,
    start_logging,
)
from pttd.bench.server import BenchError
from pttd.radio.audio import Pcm
from pttd.radio.audio.codec import Decoder, Encoder, OpusSettings
from pttd.radio.config import AudioConfig
from pttd.radio.inputs import Button, ButtonEdge, EdgeHandler, Input, InputGone
from pttd.radio.link import LinkSettings, pair
from pttd.radio.machine import Link, Talk
from pttd.radio.store import Store
from pttd.sim.audio import FULL_SCALE, sine
from pttd.sim.device import SimDevice
from pttd.sim.loopback import ROOM, Loopback, loopback

log = logging.getLogger(__name__)

RATE: Final = 48000
FRAME_MS: Final = 20
MARKER_HZ: Final = 1000.0
MARKER_LEVEL: Final = 0.1  # -20 dBFS
MARKER_S: Final = 0.06
IMPULSE_AT_S: Final = 0.1
IMPULSE_LEVEL: Final = 0.9
IMPULSE_WIDTH: Final = 48  # 1 ms: Opus smears a one-sample click
IMPULSE_THRESHOLD: Final = round(0.3 * FULL_SCALE)  # -10 dBFS: well above the marker and tone
TONE_AT_S: Final = 0.4
TONE_HZ: Final = 440.0
TONE_LEVEL: Final = 0.1
HEARD_THRESHOLD: Final = round(0.01 * FULL_SCALE)  # -40 dBFS: late entry, something is heard
QUIET_TONES_DB: Final = -60.0

TARGET_ACCESS_P95_MS: Final = 15.0
TARGET_MOUTH_TO_EAR_P95_MS: Final = 60.0
TARGET_LATE_ENTRY_P95_MS: Final = 100.0
TARGET_CLIPPED_MS: Final = 0.0
TARGET_OWN_RSS_MB: Final = 4.0  # the device process's RSS above the import floor
TARGET_E2EE_DELTA_P95_MS: Final = 2.0  # |encrypted p95 - clear p95|, access and mouth-to-ear
TARGET_BLE_DELTA_P95_MS: Final = 2.0  # |BLE access p95 - GPIO access p95|
TARGET_BROWSER_P95_MS: Final = 80.0  # mouth-to-ear, web console to radio and back

# Defaults: full run, then --quick.
PRESSES: Final = (20, 5)
LATE_ENTRIES: Final = (20, 5)

ONLINE_TIMEOUT: Final = 10.0
HEAR_TIMEOUT: Final = 2.0
DRAIN_TIMEOUT: Final = 2.0
PAUSE_S: Final = 0.05  # between presses
PROCESS_START_TIMEOUT: Final = 30.0
TRANSMIT_S: Final = 1.0  # the RSS probe talks this long before it is measured
STOP_TIMEOUT: Final = 5.0
FLOOR_TIMEOUT: Final = 30.0
BLE_ADDRESS: Final = "C0:FF:EE:00:00:01"  # the stand-in's PTT-Z button
GPIO_PIN: Final = 17  # the GPIO button's (mock) pin
BLE_CONNECT_TIMEOUT: Final = 10.0  # bleak finds the button (a scan), connects and subscribes
PERMIT_TIMEOUT: Final = 2.0
SYSTEM_BUS: Final = "DBUS_SYSTEM_BUS_ADDRESS"  # where bleak (dbus-fast) finds BlueZ

# The import floor: a bare interpreter imports the module names on stdin, then prints its VmRSS
# and VmHWM (kB) and the names it could not import. Nothing else, so that it loads nothing more.
FLOOR_PROBE: Final = """
import importlib, sys
failed = []
for name in sys.stdin.read().split():
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name)
with open("/proc/self/status") as status:
    field = dict(line.split(":", 1) for line in status)
print(field["VmRSS"].split()[0], field["VmHWM"].split()[0], *failed)
"""


def mic_signal(seconds: float) -> Pcm:
    """A's microphone: marker from sample 0, impulse at 100 ms, tone from 400 ms on."""
    x = np.zeros(round(seconds * RATE), np.int16)
    marker = sine(MARKER_HZ, MARKER_S, sample_rate=RATE, amplitude=MARKER_LEVEL)
    x[: marker.shape[0]] = marker
    at = round(IMPULSE_AT_S * RATE)
    x[at : at + IMPULSE_WIDTH] = round(IMPULSE_LEVEL * FULL_SCALE)
    start = round(TONE_AT_S * RATE)
    x[start:] = sine(TONE_HZ, seconds - TONE_AT_S, sample_rate=RATE, amplitude=TONE_LEVEL)[
        : x.shape[0] - start
    ]
    return x


def codec_reference(signal: Pcm, audio: AudioConfig, seconds: float) -> Pcm:
    """The first ``seconds`` of ``signal`` through the codec alone, as B would play them."""
    settings = OpusSettings.from_config(audio)
    encoder, decoder = Encoder(settings), Decoder(RATE)
    head = signal[: round(seconds * RATE)]
    return np.concatenate([decoder.decode(encoder.encode(f)) for f in frames_of(head, 960)])


def clipped_ms(recording: Pcm, reference: Pcm) -> float:
    """Milliseconds of the marker's start missing from ``recording``, against ``reference``."""
    rec = np.abs(recording.astype(np.float64))
    ref = np.abs(reference.astype(np.float64))
    lag = best_lag(recording.astype(np.float64), reference.astype(np.float64))
    marker_end = round((MARKER_S + 0.01) * RATE)
    level = 0.5 * float(ref[:marker_end].max())
    onset_ref = int(np.flatnonzero(ref >= level)[0])
    loud = np.flatnonzero(rec[lag:] >= level)
    if not loud.size:
        return MARKER_S * 1000
    return max(0.0, (int(loud[0]) - onset_ref) / RATE * 1000)


# --------------------------------------------------------------------------- presses


@dataclass(slots=True)
class Press:
    access_ms: float
    mouth_to_ear_ms: float
    clipped_ms: float
    capture_start_ms: float


async def one_press(a: SimDevice, b: SimDevice, reference: Pcm) -> Press:
    impulse_at = round(IMPULSE_AT_S * RATE)
    b.speaker.clear()
    accesses = a.device.counters.access_times.total
    t_press = time.monotonic()
    a.button.press()
    heard = await poll(
        lambda: b.speaker.first_above(IMPULSE_THRESHOLD, since=t_press) is not None,
        HEAR_TIMEOUT,
    )
    a.button.release()
    if not heard:
        raise BenchError(f"B did not play the impulse within {HEAR_TIMEOUT:g} s of the press")
    drained = await poll(
        lambda: not b.device.machine.incoming and not b.device.mixer.stats.streams, DRAIN_TIMEOUT
    )
    if not drained:
        raise BenchError("B's stream did not end after the release")
    t_ear = b.speaker.first_above(IMPULSE_THRESHOLD, since=t_press)
    t_mouth = a.mic.time_of(impulse_at)
    t_first = a.mic.time_of(0)
    access = a.device.counters.access_times.since(accesses)
    if t_ear is None or t_mouth is None or t_first is None or not access:
        raise BenchError("a press left no impulse, capture time or talk permit to measure")
    return Press(
        access_ms=access[0] * 1000,
        mouth_to_ear_ms=(t_ear - t_mouth) * 1000,
        clipped_ms=clipped_ms(b.speaker.recording(), reference),
        capture_start_ms=(t_first - t_press) * 1000,
    )


async def run_presses(
    a: SimDevice, b: SimDevice, reference: Pcm, count: int, label: str = ""
) -> tuple[list[Press], int]:
    """``count`` presses, one at a time; with the packets A sent that B did not receive."""
    presses: list[Press] = []
    sent, received = a.device.counters.packets_sent, b.device.counters.packets_received
    for i in range(count):
        press = await one_press(a, b, reference)
        presses.append(press)
        log.info(
            "%spress %d/%d: access %.1f ms, mouth-to-ear %.1f ms, clipped %.1f ms",
            label,
            i + 1,
            count,
            press.access_ms,
            press.mouth_to_ear_ms,
            press.clipped_ms,
        )
        await asyncio.sleep(PAUSE_S)
    lost = (a.device.counters.packets_sent - sent) - (b.device.counters.packets_received - received)
    return presses, lost


async def encrypted_presses(
    signal: Pcm, reference: Pcm, audio: AudioConfig, count: int
) -> dict[str, Any]:
    """The presses in an end-to-end encrypted room, A and B approved and holding its key."""
    async with loopback() as bench_:
        bench_.add_encrypted_room(E2EE_ROOM)
        rooms = (E2EE_ROOM,)
        a = await bench_.add_device("talker", signal, audio, rooms=rooms)
        b = await bench_.add_device(
            "listener",
            np.zeros(RATE // 10, np.int16),
            replace(audio, volume=UNITY_VOLUME),
            rooms=rooms,
        )
        async with asyncio.timeout(ONLINE_TIMEOUT):
            await a.device.until(lambda m: m.link is Link.ONLINE)
            await b.device.until(lambda m: m.link is Link.ONLINE)
            await ready_in_encrypted_room(bench_, (a, b), E2EE_ROOM)
        await asyncio.sleep(0.4)  # the 'connected' tones play out
        presses, lost = await run_presses(a, b, reference, count, "encrypted ")
        unopened = b.device.counters.packets_unopened
    if unopened:
        raise BenchError(f"encrypted room: B could not open {unopened} packets")
    return {
        "room": E2EE_ROOM,
        "access_time_ms": distribution([p.access_ms for p in presses]),
        "mouth_to_ear_ms": distribution([p.mouth_to_ear_ms for p in presses]),
        "clipped_ms": round(max(p.clipped_ms for p in presses), 2),
        "lost": lost,
        "packets_unopened": unopened,
    }


# --------------------------------------------------------------------------- BLE and GPIO


@dataclass
class Stamped:
    """An input as it is, whose PTT presses' stamps (the instant the adapter saw each edge,
    :attr:`ButtonEdge.t`) are kept: the talk permit came ``access`` after that stamp."""

    inner: Input
    presses: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    async def start(self, handler: EdgeHandler) -> None:
        def on_item(item: ButtonEdge | InputGone) -> None:
            if isinstance(item, ButtonEdge) and item.button is Button.PTT and item.pressed:
                self.presses.append(item.t)
            handler(item)

        await self.inner.start(on_item)

    async def close(self) -> None:
        await self.inner.close()


@contextlib.contextmanager
def system_bus(address: str) -> Iterator[None]:
    """``DBUS_SYSTEM_BUS_ADDRESS`` is ``address`` for the block (this process's environment),
    as it was after it."""
    before = os.environ.get(SYSTEM_BUS)
    os.environ[SYSTEM_BUS] = address
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SYSTEM_BUS, None)
        else:
            os.environ[SYSTEM_BUS] = before


@contextlib.contextmanager
def quiet(logger: str, level: int = logging.ERROR) -> Iterator[None]:
    """``logger`` logs only from ``level`` up for the block."""
    target = logging.getLogger(logger)
    before = target.level
    target.setLevel(level)
    try:
        yield
    finally:
        target.setLevel(before)


@dataclass(slots=True)
class InputPress:
    access_ms: float  # the instant before the press was sent → the talk permit
    edge_ms: float  # the same instant → the edge's stamp (what the input's path took)


async def input_press(
    sim: SimDevice,
    stamped: Stamped,
    press: Callable[[], Awaitable[object]],
    release: Callable[[], Awaitable[object]],
) -> InputPress:
    """One press of ``stamped``'s button (``press`` sends it), held until the talk permit, then
    released (``release``) and the talk ended."""
    counters, machine_ = sim.device.counters, sim.device.machine
    accesses, stamps = counters.access_times.total, len(stamped.presses)
    t_sent = time.monotonic()
    await press()
    permitted = await poll(lambda: counters.access_times.total > accesses, PERMIT_TIMEOUT)
    await release()
    if not permitted:
        raise BenchError(f"{stamped.name}: no talk permit within {PERMIT_TIMEOUT:g} s of a press")
    ended = await poll(
        lambda: machine_.talk is Talk.IDLE and not machine_.capture_open, DRAIN_TIMEOUT
    )
    if not ended:
        raise BenchError(f"{stamped.name}: the talk did not end after the release")
    access = counters.access_times.since(accesses)
    if len(stamped.presses) <= stamps or not access:
        raise BenchError(f"{stamped.name}: a press left no edge or talk permit to measure")
    t_edge = stamped.presses[stamps]
    return InputPress(
        access_ms=(t_edge - t_sent + access[0]) * 1000, edge_ms=(t_edge - t_sent) * 1000
    )


async def ble_presses(audio: AudioConfig, count: int) -> dict[str, Any]:
    """A BLE button (bleak and the BlueZ stand-in on a private bus) against a GPIO button
    (gpiozero's MockFactory) on one device: ``count`` presses of each, alternating."""
    from pttd.sim.bluez import NO_DBUS_DAEMON, dbus_daemon, running_bluez  # noqa: PLC0415

    if dbus_daemon() is None:
        raise BenchError(f"BLE run: {NO_DBUS_DAEMON}")
    try:
        import bleak  # noqa: F401, PLC0415
        from gpiozero.pins.mock import MockFactory  # type: ignore[import-untyped]  # noqa: PLC0415

        from pttd.radio.inputs.ble import BleButton  # noqa: PLC0415
        from pttd.radio.inputs.ble_protocol import BleButtonSpec  # noqa: PLC0415
        from pttd.radio.inputs.gpio import GpioButtons, GpioButtonSpec  # noqa: PLC0415
    except ImportError as exc:
        raise BenchError(f"BLE run: {exc.name} is not installed: {exc}") from None

    factory = MockFactory()
    gpio = Stamped(GpioButtons([GpioButtonSpec(Button.PTT, GPIO_PIN)], pin_factory=factory))
    pin = factory.pin(GPIO_PIN)
    ble_input = BleButton(BleButtonSpec(BLE_ADDRESS), backoff_initial=0.05, backoff_max=0.5)
    ble = Stamped(ble_input)

    async def gpio_press() -> None:
        pin.drive_low()  # gpiozero calls back inside, on this thread: the edge is stamped here

    async def gpio_release() -> None:
        pin.drive_high()

    ble_runs: list[InputPress] = []
    gpio_runs: list[InputPress] = []
    async with loopback() as bench_, contextlib.AsyncExitStack() as stack:
        try:
            bluez = await stack.enter_async_context(running_bluez(bench_.directory / "bus"))
        except RuntimeError as exc:  # dbus-daemon did not start
            raise BenchError(f"BLE run: {exc}") from None
        stack.enter_context(system_bus(bluez.bus_address))
        # bleak asks bluetoothctl for BlueZ's version, and warns that there is none to ask
        stack.enter_context(quiet("bleak.backends.bluezdbus.version"))
        button = await bluez.ptt_button(BLE_ADDRESS, known=True)
        sim = await bench_.add_device("ble-talker", None, audio, inputs=[gpio, ble])
        bench_.devices.remove(sim)
        stack.push_async_callback(sim.stop)  # first: the BLE link closes while the bus is up
        try:
            async with asyncio.timeout(BLE_CONNECT_TIMEOUT):
                await sim.device.until(lambda m: m.link is Link.ONLINE)
                await button.wait_subscribed(wait_s=BLE_CONNECT_TIMEOUT)
            # the adapter is up once it has also read the battery
            if not await poll(lambda: ble_input.connected, BLE_CONNECT_TIMEOUT):
                raise TimeoutError
        except TimeoutError:
            raise BenchError(
                f"BLE run: the device and its BLE button were not up within "
                f"{BLE_CONNECT_TIMEOUT:g} s ({ble_input.state})"
            ) from None
        await asyncio.sleep(0.4)  # the 'connected' tone plays out
        for i in range(count):  # alternating: both under the same conditions
            gpio_runs.append(await input_press(sim, gpio, gpio_press, gpio_release))
            await asyncio.sleep(PAUSE_S)
            ble_runs.append(await input_press(sim, ble, button.press, button.release))
            await asyncio.sleep(PAUSE_S)
            log.info(
                "BLE/GPIO press %d/%d: access %.2f ms BLE, %.2f ms GPIO",
                i + 1,
                count,
                ble_runs[-1].access_ms,
                gpio_runs[-1].access_ms,
            )
        battery, connects = ble_input.battery, ble_input.connects
    return {
        "address": BLE_ADDRESS,
        "gpio_pin": GPIO_PIN,
        "access_time_ms": distribution([p.access_ms for p in ble_runs]),
        "gpio_access_time_ms": distribution([p.access_ms for p in gpio_runs]),
        "edge_ms": distribution([p.edge_ms for p in ble_runs], digits=3),
        "gpio_edge_ms": distribution([p.edge_ms for p in gpio_runs], digits=3),
        "battery": battery,
        "connects": connects,
    }


# --------------------------------------------------------------------------- late entry


async def late_entries(
    bench: Loopback, a: SimDevice, b: SimDevice, count: int, audio: AudioConfig
) -> list[float]:
    """A talks; ``count`` devices log on one after the other; ms from online to first sound."""
    late_audio = replace(audio, volume=UNITY_VOLUME, tone_level_db=QUIET_TONES_DB)
    a.button.press()
    try:
        t_press = time.monotonic()
        flowing = await poll(
            lambda: b.speaker.first_above(HEARD_THRESHOLD, since=t_press + TONE_AT_S) is not None,
            TONE_AT_S + HEAR_TIMEOUT,
        )
        if not flowing:
            raise BenchError("late entry: A's talk did not reach B")
        return [await one_late_entry(bench, f"late-{i + 1}", late_audio) for i in range(count)]
    finally:
        a.button.release()


async def one_late_entry(bench: Loopback, name: str, audio: AudioConfig) -> float:
    """Pair and start device ``name``; ms from its link coming up to the first sound it plays."""
    c = await bench.add_device(name, np.zeros(RATE // 10, np.int16), audio)
    try:
        counters, speaker = c.device.counters, c.speaker
        if not await poll(lambda: bool(counters.online_times), ONLINE_TIMEOUT):
            raise BenchError(f"late entry: device {name} did not come online")
        t_up = counters.online_times[0]
        if not await poll(
            lambda: speaker.first_above(HEARD_THRESHOLD, since=t_up) is not None, HEAR_TIMEOUT
        ):
            raise BenchError(f"late entry: device {name} heard nothing")
        t_heard = speaker.first_above(HEARD_THRESHOLD, since=t_up)
        assert t_heard is not None
        return (t_heard - t_up) * 1000
    finally:
        await c.stop()
        bench.devices.remove(c)


# --------------------------------------------------------------------------- device RSS


IMPORT_TIME: Final = "import time:"  # how ``python -X importtime`` starts each line on stderr


def _tail(path: Path, lines: int = 10) -> str:
    """The last ``lines`` of a process's stderr, without ``-X importtime``'s lines."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join([x for x in text.splitlines() if not x.startswith(IMPORT_TIME)][-lines:])


def imported_modules(stderr: str) -> list[str]:
    """The modules a ``python -X importtime`` process imported, in its order, from its stderr."""
    names = []
    for line in stderr.splitlines():
        if line.startswith(IMPORT_TIME) and "|" in line:
            name = line.rpartition("|")[2].strip()
            if name and name != "imported package":  # the header
                names.append(name)
    return names


def is_pttd(module: str) -> bool:
    return module == "pttd" or module.startswith("pttd.")


async def import_floor(modules: list[str], env: dict[str, str]) -> tuple[int, int, list[str]]:
    """A bare interpreter's VmRSS and VmHWM (kB) once it has imported ``modules`` (none of pttd's),
    and those it could not import."""
    if any(is_pttd(m) for m in modules):
        raise ValueError("the import floor must not import pttd")
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", FLOOR_PROBE),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        async with asyncio.timeout(FLOOR_TIMEOUT):
            out, err = await proc.communicate("\n".join(modules).encode())
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BenchError(
            f"the import-floor probe did not finish within {FLOOR_TIMEOUT:g} s"
        ) from None
    fields = out.decode(errors="replace").split()
    if proc.returncode != 0 or len(fields) < 2:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        raise BenchError(f"the import-floor probe failed ({proc.returncode}): {' '.join(tail)}")
    return int(fields[0]), int(fields[1]), fields[2:]


async def device_rss(bench: Loopback, b: SimDevice) -> dict[str, Any]:
    """Run ``pttd run`` as a process, let it talk for a moment; its VmRSS and VmHWM in MB, and
    those of a bare interpreter that imports the same modules, pttd's own excepted."""
    name = "rss-probe"
    code = await asyncio.to_thread(bench.registry.create_pair_code, [ROOM])
    credential = await pair(bench.server.url, code.code, name, LinkSettings())
    state = bench.directory / name
    Store(state).save_credential(credential)
    master, slave = os.openpty()
    config = bench.directory / f"{name}.toml"
    config.write_text(
        f'[device]\nname = "{name}"\n'
        f'[server]\nurl = "{bench.server.url}"\n'
        f'[state]\ndir = "{state}"\n'
        '[audio]\nbackend = "sim"\n'
        f'[[ptt]]\nkind = "serial"\nport = "{os.ttyname(slave)}"\n'
        '[log]\nlevel = "WARNING"\n'
    )
    env = child_env()
    errors = bench.directory / f"{name}.stderr"
    received = b.device.counters.packets_received
    with errors.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-X", "importtime", "-m", "pttd.cli", "run", "--config", str(config)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    began = time.monotonic()
    try:

        def online() -> bool:
            return any(
                s.principal is not None and s.principal.name == name
                for s in bench.server.core.sessions.values()
            )

        if not await poll(lambda: online() or proc.returncode is not None, PROCESS_START_TIMEOUT):
            raise BenchError(f"the device process did not come online: {_tail(errors)}")
        if proc.returncode is not None:
            raise BenchError(f"the device process exited ({proc.returncode}): {_tail(errors)}")
        online_s = time.monotonic() - began
        os.write(master, b"+PTT=P\r\n")
        if not await poll(lambda: b.device.counters.packets_received > received, HEAR_TIMEOUT):
            raise BenchError(f"the device process did not transmit: {_tail(errors)}")
        await asyncio.sleep(TRANSMIT_S)
        rss_kb = proc_status_kb(proc.pid, "VmRSS")
        os.write(master, b"+PTT=R\r\n")
        await asyncio.sleep(0.2)
        peak_kb = proc_status_kb(proc.pid, "VmHWM")
        packets = b.device.counters.packets_received - received
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        os.close(master)
        os.close(slave)
    if rss_kb is None or peak_kb is None:
        raise BenchError("no /proc/PID/status to read the device's memory from")
    imported = imported_modules(errors.read_text(errors="replace"))
    modules = list(dict.fromkeys(m for m in imported if not is_pttd(m)))
    if len(modules) == len(imported):
        raise BenchError("no list of the device process's imports (python -X importtime)")
    floor_kb, floor_peak_kb, failed = await import_floor(modules, env)
    return {
        "rss_mb": round(rss_kb / 1024, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "floor_rss_mb": round(floor_kb / 1024, 1),
        "floor_peak_rss_mb": round(floor_peak_kb / 1024, 1),
        "own_rss_mb": round((rss_kb - floor_kb) / 1024, 1),
        "modules_imported": len(modules),
        "pttd_modules": len(imported) - len(modules),
        "floor_import_failures": failed,
        "online_s": round(online_s, 2),
        "packets_heard": packets,
    }


# --------------------------------------------------------------------------- the whole run


@dataclass(frozen=True, slots=True)
class LatencySettings:
    presses: int = PRESSES[0]
    late_entries: int = LATE_ENTRIES[0]
    quick: bool = False
    rss: bool = True


async def bench(settings: LatencySettings) -> dict[str, Any]:
    """Run the presses, the late entries and the RSS probe; return the report."""
    began = time.perf_counter()
    load_before = load_average()
    audio = AudioConfig()
    if audio.sample_rate != RATE or audio.frame_ms != FRAME_MS:
        raise BenchError(f"the bench expects {RATE} Hz, {FRAME_MS} ms frames")
    talk_s = TONE_AT_S + settings.late_entries * 1.0 + 10.0  # A's signal outlasts the entries
    signal = mic_signal(talk_s)
    reference = codec_reference(signal, audio, IMPULSE_AT_S + 0.1)
    async with loopback() as bench_:
        a = await bench_.add_device("talker", signal, audio)  # restart_on_open: every press
        b = await bench_.add_device(
            "listener", np.zeros(RATE // 10, np.int16), replace(audio, volume=UNITY_VOLUME)
        )
        async with asyncio.timeout(ONLINE_TIMEOUT):
            await a.device.until(lambda m: m.link is Link.ONLINE)
            await b.device.until(lambda m: m.link is Link.ONLINE)
        await asyncio.sleep(0.4)  # the 'connected' tones play out
        presses, lost = await run_presses(a, b, reference, settings.presses)
        late = await late_entries(bench_, a, b, settings.late_entries, audio)
        log.info("late entries: %s ms", ", ".join(f"{v:.1f}" for v in late))
        rss: dict[str, Any] | None = None
        if settings.rss and sys.platform == "linux":  # a pty and /proc/PID/status
            rss = await device_rss(bench_, b)
            log.info(
                "device process: VmRSS %.1f MB (VmHWM %.1f MB) = import floor %.1f MB + pttd's "
                "own %.1f MB",
                rss["rss_mb"],
                rss["peak_rss_mb"],
                rss["floor_rss_mb"],
                rss["own_rss_mb"],
            )

    access = distribution([p.access_ms for p in presses])
    mouth_to_ear = distribution([p.mouth_to_ear_ms for p in presses])
    late_entry = distribution(late)
    clipped = round(max(p.clipped_ms for p in presses), 2)
    own_mb = rss["own_rss_mb"] if rss is not None else None
    encrypted = await encrypted_presses(signal, reference, audio, settings.presses)
    delta = {
        key: round(encrypted[f"{key}_ms"]["p95"] - clear["p95"], 2)
        for key, clear in (("access_time", access), ("mouth_to_ear", mouth_to_ear))
    }
    log.info(
        "encrypted room: p95 access %+.2f ms, mouth-to-ear %+.2f ms against the clear room",
        delta["access_time"],
        delta["mouth_to_ear"],
    )
    ble = await ble_presses(audio, settings.presses)
    ble_delta = round(ble["access_time_ms"]["p95"] - ble["gpio_access_time_ms"]["p95"], 2)
    log.info("BLE button: p95 access %+.2f ms against a GPIO button", ble_delta)
    web = await browser_presses(audio, signal, round(IMPULSE_AT_S * RATE), settings.presses)
    if "skipped" in web:
        log.warning("web console runs skipped: %s", web["skipped"])
    web_met = {
        f"{key}_p95_ms": None
        if "skipped" in web
        else web[f"{key}_ms"]["p95"] <= TARGET_BROWSER_P95_MS
        for key in ("browser_to_radio", "radio_to_browser")
    }
    return {
        "access_time_ms": access,
        "mouth_to_ear_ms": mouth_to_ear,
        "late_entry_ms": late_entry,
        "clipped_ms": clipped,
        "device_own_rss_mb": own_mb,
        "device_rss_mb": rss["rss_mb"] if rss is not None else None,
        "device_peak_rss_mb": rss["peak_rss_mb"] if rss is not None else None,
        "import_floor_rss_mb": rss["floor_rss_mb"] if rss is not None else None,
        "capture_start_ms": distribution([p.capture_start_ms for p in presses]),
        "clipped_ms_per_press": [round(p.clipped_ms, 2) for p in presses],
        "lost": lost,
        "rss_probe": rss,
        "encrypted": encrypted,
        "e2ee_delta_p95_ms": delta,
        "ble": ble,
        "ble_delta_p95_ms": ble_delta,
        "web_console": web,
        "targets": {
            "access_time_p95_ms": TARGET_ACCESS_P95_MS,
            "mouth_to_ear_p95_ms": TARGET_MOUTH_TO_EAR_P95_MS,
            "late_entry_p95_ms": TARGET_LATE_ENTRY_P95_MS,
            "clipped_ms": TARGET_CLIPPED_MS,
            "device_own_rss_mb": TARGET_OWN_RSS_MB,
            "access_time_e2ee_delta_p95_ms": TARGET_E2EE_DELTA_P95_MS,
            "mouth_to_ear_e2ee_delta_p95_ms": TARGET_E2EE_DELTA_P95_MS,
            "access_time_ble_delta_p95_ms": TARGET_BLE_DELTA_P95_MS,
            "browser_to_radio_p95_ms": TARGET_BROWSER_P95_MS,
            "radio_to_browser_p95_ms": TARGET_BROWSER_P95_MS,
        },
        "targets_met": {
            "access_time_p95_ms": access["p95"] <= TARGET_ACCESS_P95_MS,
            "mouth_to_ear_p95_ms": mouth_to_ear["p95"] <= TARGET_MOUTH_TO_EAR_P95_MS,
            "late_entry_p95_ms": late_entry["p95"] <= TARGET_LATE_ENTRY_P95_MS,
            "clipped_ms": clipped <= TARGET_CLIPPED_MS,
            "device_own_rss_mb": None if own_mb is None else own_mb <= TARGET_OWN_RSS_MB,
            "access_time_e2ee_delta_p95_ms": abs(delta["access_time"]) <= TARGET_E2EE_DELTA_P95_MS,
            "mouth_to_ear_e2ee_delta_p95_ms": abs(delta["mouth_to_ear"])
            <= TARGET_E2EE_DELTA_P95_MS,
            "access_time_ble_delta_p95_ms": abs(ble_delta) <= TARGET_BLE_DELTA_P95_MS,
            **web_met,
        },
        "settings": {
            **asdict(settings),
            "sample_rate": RATE,
            "frame_ms": FRAME_MS,
            "impulse_at_ms": IMPULSE_AT_S * 1000,
            "statistic": "nearest-rank percentiles over presses / entries",
            **machine(load_before),
        },
        "elapsed_s": round(time.perf_counter() - began, 1),
    }


# --------------------------------------------------------------------------- output, CLI


def format_report(report: dict[str, Any]) -> str:
    s, t, met = report["settings"], report["targets"], report["targets_met"]
    rss = report["rss_probe"]

    def row(label: str, d: dict[str, Any], target: float, ok: bool) -> str:
        return (
            f"{label:<24}{d['p50']:>8.1f}{d['p95']:>8.1f}{d['max']:>8.1f}"
            f"   p95 <= {target:>5.0f} ms  {mark(ok)}"
        )

    lines = [
        f"pttd bench latency: two simulated devices and the room server on loopback, "
        f"{s['frame_ms']} ms frames; {s['presses']} presses, {s['late_entries']} late entries",
        "",
        f"{'':<24}{'p50 ms':>8}{'p95 ms':>8}{'max ms':>8}   target",
        row(
            "access (press→permit)",
            report["access_time_ms"],
            t["access_time_p95_ms"],
            met["access_time_p95_ms"],
        ),
        row(
            "mouth-to-ear",
            report["mouth_to_ear_ms"],
            t["mouth_to_ear_p95_ms"],
            met["mouth_to_ear_p95_ms"],
        ),
        row(
            "late entry (online→ear)",
            report["late_entry_ms"],
            t["late_entry_p95_ms"],
            met["late_entry_p95_ms"],
        ),
        f"{'clipped at the press':<24}{report['clipped_ms']:>24.1f}   worst  <= "
        f"{t['clipped_ms']:>4.0f} ms  {mark(met['clipped_ms'])}",
    ]
    enc, delta = report["encrypted"], report["e2ee_delta_p95_ms"]

    def delta_row(label: str, key: str) -> str:
        name = f"{key}_e2ee_delta_p95_ms"
        d = enc[f"{key}_ms"]
        return (
            f"{label:<24}{d['p50']:>8.1f}{d['p95']:>8.1f}{d['max']:>8.1f}   p95 {delta[key]:+.2f} "
            f"ms vs clear, |delta| <= {t[name]:.0f} ms  {mark(met[name])}"
        )

    if rss is not None:
        lines.append(
            f"{'pttd RSS above imports':<24}{report['device_own_rss_mb']:>21.1f} MB"
            f"{'':<10}<= {t['device_own_rss_mb']:>4.0f} MB  {mark(met['device_own_rss_mb'])}"
        )
    lines += [
        f"end-to-end encrypted room '{enc['room']}' (the same presses, SFrame):",
        delta_row("  access (press→permit)", "access_time"),
        delta_row("  mouth-to-ear", "mouth_to_ear"),
    ]
    ble, ble_delta = report["ble"], report["ble_delta_p95_ms"]
    name = "access_time_ble_delta_p95_ms"

    def ble_row(label: str, d: dict[str, Any], verdict: str = "") -> str:
        return f"{label:<24}{d['p50']:>8.1f}{d['p95']:>8.1f}{d['max']:>8.1f}{verdict}"

    lines += [
        f"BLE button {ble['address']} (bleak, BlueZ stand-in on D-Bus) against GPIO "
        f"{ble['gpio_pin']} (mock pin), alternating:",
        ble_row(
            "  BLE (notify→permit)",
            ble["access_time_ms"],
            f"   p95 {ble_delta:+.2f} ms vs GPIO, |delta| <= {t[name]:.0f} ms  {mark(met[name])}",
        ),
        ble_row("  GPIO (pin low→permit)", ble["gpio_access_time_ms"]),
    ]
    web = report["web_console"]
    if "skipped" in web:
        lines.append(f"web console (browser ↔ radio): skipped: {web['skipped']}")
    else:
        lines.append(
            f"web console in {web['browser']} ↔ a simulated radio, {web['presses']} presses "
            "each way:"
        )
        for label, key in (
            ("  browser → radio", "browser_to_radio"),
            ("  radio → browser", "radio_to_browser"),
        ):
            name = f"{key}_p95_ms"
            lines.append(
                f"{label:<24}{web[key + '_ms']['p50']:>8.1f}{web[key + '_ms']['p95']:>8.1f}"
                f"{web[key + '_ms']['max']:>8.1f}   p95 <= {t[name]:>5.0f} ms  {mark(met[name])}"
            )
    cs = report["capture_start_ms"]
    lines.append("")
    if rss is not None:
        lines += [
            f"device process RSS {rss['rss_mb']:.1f} MB (peak {rss['peak_rss_mb']:.1f} MB) = "
            f"import floor {rss['floor_rss_mb']:.1f} MB + pttd's own {rss['own_rss_mb']:.1f} MB;",
            f"import floor: a bare interpreter that imports the same {rss['modules_imported']} "
            "modules as the device process, none of pttd's.",
        ]
    lines += [
        f"press edge → first captured sample (simulated microphone start): p50 {cs['p50']:.2f} ms,"
        f" p95 {cs['p95']:.2f} ms; packets lost {report['lost']} (encrypted room: {enc['lost']}).",
        f"notification sent → BLE edge on the loop: p50 {ble['edge_ms']['p50']:.2f} ms, p95 "
        f"{ble['edge_ms']['p95']:.2f} ms (GPIO: p95 {ble['gpio_edge_ms']['p95']:.3f} ms); "
        f"button battery {ble['battery']}%.",
        f"Load average {s['load_average_before']} before, {s['load_average_after']} after; took "
        f"{report['elapsed_s']:.0f} s.",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_output_arguments(parser, f"{PRESSES[1]} presses and {LATE_ENTRIES[1]} late entries")
    parser.add_argument(
        "--no-rss", dest="rss", action="store_false", help="skip the device-process RSS probe"
    )


def settings_from(args: argparse.Namespace) -> LatencySettings:
    pick = 1 if args.quick else 0
    return LatencySettings(
        presses=PRESSES[pick], late_entries=LATE_ENTRIES[pick], quick=args.quick, rss=args.rss
    )


def run(args: argparse.Namespace) -> int:
    start_logging(args.quiet)
    report = asyncio.run(bench(settings_from(args)))
    emit(report, args, format_report)
    return finish("pttd bench latency", report["targets_met"], args.report_only)
