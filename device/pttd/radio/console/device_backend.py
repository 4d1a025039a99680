"""The console's side of a running :class:`~pttd.radio.daemon.Device`: what the interpreter reads
(:class:`~pttd.radio.console.interpreter.DeviceView`), and the runner of the effects it returns.

Everything here runs on the event loop thread, as the device wants, but for scrypt (hashing and
checking a PIN), which runs in a worker thread so that the loop keeps the audio going. What the
console changes goes through the device (:meth:`~pttd.radio.daemon.Device.set_volume`,
:meth:`~pttd.radio.daemon.Device.feed`) or its store; nothing here writes a file itself. The audio
test never opens capture itself: it asks the state machine (:class:`~pttd.radio.machine.AudioTest`),
which opens it, lights the transmit LED, and closes both when the test ends however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

import numpy as np

from pttd.e2ee.keys import AuthorityPublicKey, E2eeError
from pttd.errors import PairingFailed, StoreError
from pttd.radio.audio import Pcm
from pttd.radio.config import Config
from pttd.radio.console.interpreter import (
    AudioTestDone,
    AudioTestRequest,
    BtChange,
    BtFound,
    BtPair,
    BtScan,
    BtSeen,
    CheckPin,
    ClearPin,
    Console,
    Done,
    Effect,
    FactoryResetRequest,
    HashPin,
    Outcome,
    PairDone,
    PairRequest,
    PinChecked,
    PinHashed,
    RemoveValue,
    ResetDone,
    SavePin,
    SaveValue,
    SelectRoom,
    SetVolume,
    UnpairDone,
    UnpairRequest,
    meter_line,
)
from pttd.radio.console.pin import hash_pin, pin_matches
from pttd.radio.console.serial_console import SerialConsole
from pttd.radio.daemon import Device
from pttd.radio.inputs.ble_protocol import BleButtonSpec
from pttd.radio.link import pair, with_identity
from pttd.radio.machine import AudioTest, ChangeRoom, Link
from pttd.radio.status import DeviceStatus, PinRecord
from pttd.redact import LOG_BUFFER, LogBuffer
from pttd.sim.audio import sine

log = logging.getLogger(__name__)

ONLINE_WAIT_S: Final = 10.0  # after pairing: how long to wait for the logon and the rooms
METER_INTERVAL_S: Final = 0.1
TEST_TONE_HZ: Final = 1000.0
TEST_TONE_S: Final = 1.0


def dbfs(peak: int) -> float:
    return 20.0 * math.log10(peak / 32768.0) if peak > 0 else -math.inf


class DeviceBackend:
    """The console's view of ``device`` (:class:`~pttd.radio.console.interpreter.DeviceView`) and
    the runner of its effects."""

    def __init__(
        self,
        device: Device,
        *,
        log_buffer: LogBuffer = LOG_BUFFER,
        online_wait_s: float = ONLINE_WAIT_S,
        meter_interval_s: float = METER_INTERVAL_S,
    ) -> None:
        self.device = device
        self.log_buffer = log_buffer
        self.online_wait_s = online_wait_s
        self.meter_interval_s = meter_interval_s
        self._audio_devices: list[str] | None = None

    # -- DeviceView -------------------------------------------------------------------------

    def status(self) -> DeviceStatus:
        return self.device.status()

    def audio_devices(self) -> list[str]:
        """Names of the audio devices (read once: PortAudio lists them once per process)."""
        if self._audio_devices is None:
            self._audio_devices = self._list_audio_devices()
        return self._audio_devices

    def _list_audio_devices(self) -> list[str]:
        if self.device.config.audio.backend == "sim":
            return ["simulated"]
        try:
            from pttd.radio.audio.devices import list_devices  # noqa: PLC0415 - needs PortAudio

            found = list_devices()
        except Exception as exc:  # PortAudio missing or failing: say so, keep serving
            return [f"cannot list ({exc})"]
        names = []
        for d in found:
            ways = "/".join(
                w for w, n in (("in", d.max_input_channels), ("out", d.max_output_channels)) if n
            )
            marks = (" default in" if d.default_input else "") + (
                " default out" if d.default_output else ""
            )
            names.append(f"#{d.index} {d.name} ({ways}{marks})")
        return names

    def config(self) -> Config:
        return self.device.config

    def saved_values(self) -> Mapping[str, Any]:
        return self.device.store.settings().values

    def log_lines(self, count: int) -> list[str]:
        return self.log_buffer.lines(count)

    def load_pin(self) -> PinRecord | None:
        """The PIN record in the store; a damaged one is logged and the console runs without."""
        try:
            return self.device.store.pin()
        except StoreError as exc:
            log.error("%s: the console runs without a PIN", exc)
            return None

    # -- effects ----------------------------------------------------------------------------

    async def run(self, effect: Effect, progress: Callable[[str], None]) -> Outcome:
        d = self.device
        match effect:
            case PairRequest():
                return await self.pair(effect)
            case UnpairRequest():
                return await self.unpair()
            case AudioTestRequest():
                return await self.audio_test(effect.seconds, progress)
            case FactoryResetRequest():
                return await self.factory_reset()
            case SelectRoom():
                d.feed(ChangeRoom(d.clock(), name=effect.name))
            case SaveValue():
                values = dict(d.store.settings().values)
                values[effect.key] = effect.value
                d.store.update_settings(values=values)
            case BtScan():
                from pttd.radio.inputs.ble import scan  # noqa: PLC0415 (bleak, when asked)

                found = await scan(effect.seconds)
                return BtFound(tuple(BtSeen(n.address, n.name, n.rssi, n.ptt) for n in found))
            case BtPair():
                from pttd.radio.inputs.ble import bond  # noqa: PLC0415

                await bond(effect.address)
            case BtChange():
                values = dict(d.store.settings().values)
                values["bluetooth.buttons"] = effect.buttons
                d.store.update_settings(values=values)  # first: a failed save changes nothing
                if effect.add:
                    from pttd.radio.inputs.ble import BleButton  # noqa: PLC0415

                    spec = BleButtonSpec(effect.address, service="")  # PTT-Z or a hand mic
                    await d.add_input(BleButton(spec))
                else:
                    await d.remove_input(f"ble:{effect.address}")
            case RemoveValue():
                values = dict(d.store.settings().values)
                values.pop(effect.key, None)
                d.store.update_settings(values=values)
            case SetVolume():
                d.set_volume(effect.volume)
            case HashPin():  # scrypt: a fraction of a second of CPU, never on the loop
                return PinHashed(await asyncio.to_thread(hash_pin, effect.pin, n=effect.n))
            case CheckPin():
                return PinChecked(await asyncio.to_thread(pin_matches, effect.record, effect.pin))
            case SavePin():
                self._pin_change(lambda: d.store.save_pin(effect.record))
            case ClearPin():
                self._pin_change(d.store.wipe_pin)
        return Done()

    @staticmethod
    def _pin_change(change: Callable[[], None]) -> None:
        try:
            change()
        except StoreError as exc:
            log.error("cannot save the console PIN: %s", exc)
            raise

    async def pair(self, request: PairRequest) -> PairDone:
        """Pair: a new identity key is made for this pairing (its private half stays in the
        state directory, 0600; the public half goes to the server with every logon), and the key
        authority the link named is kept with the credential."""
        d = self.device
        if request.authority is not None:
            try:
                AuthorityPublicKey.from_text(request.authority)
            except E2eeError as exc:
                raise PairingFailed(
                    "bad link", f"the link's key authority is not a key: {exc}"
                ) from None
        credential = await pair(
            request.server_url, request.code, request.device_name, d.link.settings
        )
        credential = with_identity(credential, d.store, request.authority)
        d.store.save_credential(credential)  # 0600, atomically; StoreError says which file
        d.set_credential(credential)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.online_wait_s):
                await d.until(lambda m: m.link is Link.ONLINE)
        m = d.machine
        online = m.link is Link.ONLINE
        return PairDone(
            credential.server_url,
            credential.device_name,
            credential.rooms,
            online,
            m.room if online else None,
            d.fingerprint,
        )

    async def _give_up_credential(self) -> bool:
        """Tell the server (if online), wipe the credential, let the link drop: whether the
        server was told."""
        d = self.device
        told = await d.link.unpair() if d.link.online else False
        d.store.wipe_credential()
        d.set_credential(None)
        return told

    async def unpair(self) -> UnpairDone:
        had = self.device.credential is not None
        told = await self._give_up_credential()
        log.info("unpaired from the console (server %s)", "told" if told else "not told")
        return UnpairDone(had, told)

    async def factory_reset(self) -> ResetDone:
        d = self.device
        told = await self._give_up_credential()
        d.store.wipe()  # the credential (again), the settings and the PIN
        d.set_volume(d.config.audio.volume, save=False)
        log.warning("factory reset from the console")
        return ResetDone(told)

    async def audio_test(self, seconds: float, progress: Callable[[str], None]) -> AudioTestDone:
        d = self.device
        loop = asyncio.get_running_loop()
        window = 0
        overall = 0
        frames = 0

        def tap(frame: Pcm) -> None:
            nonlocal window, overall, frames
            if not d.machine.audio_test:
                return  # a frame of someone talking, not of the test
            peak = int(np.max(np.abs(frame.astype(np.int32)))) if frame.size else 0
            window = max(window, peak)
            overall = max(overall, peak)
            frames += 1

        d.frame_taps.append(tap)
        started = loop.time()
        try:
            d.feed(AudioTest(d.clock(), True))
            if not d.machine.audio_test:
                return AudioTestDone(False, refused="the PTT is in use")
            d.mixer.play(self._test_tone())
            log.info("audio test: microphone open for %.1f s", seconds)
            while (elapsed := loop.time() - started) < seconds:
                await asyncio.sleep(min(self.meter_interval_s, seconds - elapsed))
                if not d.machine.audio_test:
                    progress("\n")
                    return AudioTestDone(False, refused="stopped by the PTT")
                progress("\r" + meter_line(dbfs(window)))
                window = 0
            progress("\n")
        finally:
            d.frame_taps.remove(tap)
            if d.machine.audio_test:
                d.feed(AudioTest(d.clock(), False))
            log.info("audio test: microphone closed")
        return AudioTestDone(True, loop.time() - started, frames, dbfs(overall))

    def _test_tone(self) -> Pcm:
        rate = self.device.audio_out.sample_rate
        level = 10 ** (self.device.config.audio.tone_level_db / 20)
        pcm = sine(TEST_TONE_HZ, TEST_TONE_S, sample_rate=rate, amplitude=level)
        fade = min(len(pcm) // 2, rate // 100)  # 10 ms in and out: no click
        if fade:
            ramp = np.linspace(0.0, 1.0, fade)
            shaped = pcm.astype(np.float64)
            shaped[:fade] *= ramp
            shaped[-fade:] *= ramp[::-1]
            pcm = shaped.astype(np.int16)
        return pcm


def build_console(
    device: Device, *, log_buffer: LogBuffer = LOG_BUFFER, **options: Any
) -> SerialConsole | None:
    """The installer console on ``device.config.console.port``; None when none is configured.
    ``options`` go to :class:`SerialConsole` (retry and timeouts, for tests)."""
    port = device.config.console.port
    if not port:
        return None
    backend = DeviceBackend(device, log_buffer=log_buffer)
    console = Console(backend, pin=backend.load_pin(), now=device.clock())
    return SerialConsole(
        port,
        console,
        backend,
        baudrate=device.config.console.baudrate,
        clock=device.clock,
        **options,
    )
