"""BLE PTT buttons through bleak (BlueZ over D-Bus): the adapter, which only moves data.

What the notifications mean, and which characteristics to subscribe to, is
:mod:`pttd.radio.inputs.ble_protocol`'s (sans-I/O). This adapter keeps one accessory's link up:
it connects to the accessory *by its address* (never to whatever is nearby), subscribes,
passes edges to the :class:`~pttd.radio.inputs.EdgeSink` and reads the battery level. Buttons
sleep and drop the link: it reconnects with exponential back-off and full jitter, logging the
first failure and then ever fewer (1st, 2nd, 4th, 8th … attempt), never a line per attempt. A link
lost for any reason is reported as the input gone (:class:`~pttd.radio.inputs.InputGone`): a
button held is up and the microphone closes, a talk it latched on (toggle mode) ends.

bleak calls back on the asyncio loop (its D-Bus connection is an asyncio one), so edges are
stamped where the notification is handled; they still cross into the device through the sink,
the one path every input uses. bleak reaches the system bus at ``DBUS_SYSTEM_BUS_ADDRESS`` when set
(the tests run it against a BlueZ stand-in on a private bus).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pttd.radio.inputs import EdgeHandler, EdgeSink
from pttd.radio.inputs.ble_protocol import (
    BATTERY_LEVEL,
    BleButtonSpec,
    BleDecoder,
    Characteristic,
    NotAPttButton,
    battery_percent,
    describe_state,
    looks_like_ptt,
)
from pttd.ratelimit import doubling
from pttd.wire.client import Backoff

if TYPE_CHECKING:
    from bleak import BleakClient
    from bleak.backends.characteristic import BleakGATTCharacteristic

log = logging.getLogger(__name__)

# BlueZ refuses a second discovery from one D-Bus client (org.bluez.Error.InProgress), and bleak
# discovers to find an accessory it connects to by address: connection attempts and scans take
# turns, one per event loop.
_DISCOVERY: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _discovery() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _DISCOVERY.get(loop)
    if lock is None:
        lock = _DISCOVERY[loop] = asyncio.Lock()
    return lock


CONNECT_TIMEOUT_S: Final = 10.0
STEADY_S: Final = 30.0  # a link up this long counts as good: the back-off starts afresh after
BACKOFF_INITIAL_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0


class BleButton:
    """One BLE PTT accessory, kept connected until :meth:`close`."""

    def __init__(
        self,
        spec: BleButtonSpec,
        *,
        backoff_initial: float = BACKOFF_INITIAL_S,
        backoff_max: float = BACKOFF_MAX_S,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.spec = spec
        self._sink = EdgeSink(self.name)
        self._decoder = BleDecoder(spec)
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._connect_timeout = connect_timeout
        self._rng = rng
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._lost_links = 0  # links lost (logged on the 1st, 2nd, 4th … time)
        self.connected = False
        self.battery: int | None = None
        self.last_error = ""
        self.attempts = 0  # failed connection attempts since the link was last up
        self.connects = 0  # links made, in all

    @property
    def name(self) -> str:
        return self.spec.source

    @property
    def state(self) -> str:
        """For ``status`` and ``doctor``: connected (and the battery), or why not."""
        return describe_state(self.connected, self.battery, self.last_error, self.attempts)

    async def start(self, handler: EdgeHandler) -> None:
        self._sink.connect(handler)
        self._task = asyncio.create_task(self._run(), name=f"ble {self.spec.address}")

    async def close(self) -> None:
        """Stop; a button still held is released (closing is not the accessory vanishing)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._sink.release_all()
        self._sink.disconnect()
        self.connected = False

    # -- the link ---------------------------------------------------------------------------

    async def _run(self) -> None:
        self._backoff.reset()
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except NotAPttButton as exc:
                self._failed(str(exc))
            except Exception as exc:  # bleak, D-Bus, BlueZ: each a reason to try again
                self._failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            await asyncio.sleep(self._backoff.next(self._rng()))

    def _failed(self, why: str) -> None:
        self.attempts += 1
        self.last_error = why
        n = self.attempts
        if doubling(n):  # a line, not a flood
            log.warning("%s: cannot connect (attempt %d): %s", self.name, n, why)
        else:
            log.debug("%s: cannot connect (attempt %d): %s", self.name, n, why)

    async def _session(self) -> None:
        from bleak import BleakClient  # noqa: PLC0415 (only devices with a BLE button load it)

        lost = asyncio.Event()
        client = BleakClient(
            self.spec.address,
            disconnected_callback=lambda _: lost.set(),
            timeout=self._connect_timeout,
        )
        subscribed = False  # edges may flow from the first subscription on

        async def set_up() -> None:
            nonlocal subscribed
            found = [
                Characteristic(c.uuid.lower(), s.uuid.lower(), tuple(c.properties))
                for s in client.services
                for c in s.characteristics
            ]
            for uuid in self._decoder.plan(found):
                subscribed = True  # a notification may come before start_notify returns
                await client.start_notify(uuid, self._notified)
            self._up()
            await self._read_battery(client, found)

        try:
            async with _discovery():
                await client.connect()
            # bleak may retry a Connect inside connect() (BlueZ's le-connection-abort-by-local):
            # a disconnect seen on the way is not this link's.
            lost.clear()
            if not client.is_connected:
                raise ConnectionError("the link went as it came up")
            # A link lost while subscribing ends the set-up at once (a call to an accessory gone
            # may never be answered); a press already delivered is then released below.
            setup = asyncio.ensure_future(set_up())
            gone = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({setup, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (setup, gone):
                    task.cancel()
            if not setup.done() or setup.cancelled():
                raise ConnectionError("the link went while subscribing")
            setup.result()  # its error, if it failed
            up_at = asyncio.get_running_loop().time()
            await lost.wait()
            if asyncio.get_running_loop().time() - up_at >= STEADY_S:
                self._backoff.reset()  # a link that held: the next wait starts afresh
        finally:
            was_up = self.connected
            self.connected = False
            if (was_up or subscribed) and not self._closing:
                # A button held is up (it may have been pressed before the session failed), a
                # latched talk ends.
                self._sink.lost(self.name)
                self.last_error = "link lost"
                if was_up:
                    self._lost_links += 1
                    n = self._lost_links
                    level = logging.WARNING if doubling(n) else logging.DEBUG
                    times = f" ({n} times)" if n > 1 else ""
                    log.log(level, "%s: link lost%s", self.name, times)
            with contextlib.suppress(Exception):
                await asyncio.shield(client.disconnect())

    def _up(self) -> None:
        self.connected = True
        self.connects += 1
        if self.attempts:
            log.info("%s: connected after %d failed attempts", self.name, self.attempts)
        else:
            log.info("%s: connected", self.name)
        self.attempts = 0
        self.last_error = ""

    def _notified(self, characteristic: BleakGATTCharacteristic, data: bytearray) -> None:
        uuid = characteristic.uuid.lower()
        if uuid == BATTERY_LEVEL:
            self.battery = battery_percent(bytes(data))
            return
        edge = self._decoder.notification(uuid, bytes(data))
        if edge is None:
            log.debug("%s: ignored notification %s from %s", self.name, bytes(data).hex(), uuid)
            return
        self._sink.edge(edge[0], edge[1], self.name)

    async def _read_battery(self, client: BleakClient, found: list[Characteristic]) -> None:
        """The Battery Level characteristic when the accessory's GATT shows it; else what BlueZ
        says (its battery plugin takes the Battery Service over and shows ``Battery1``)."""
        battery = next((c for c in found if c.uuid == BATTERY_LEVEL), None)
        if battery is None:
            from pttd.radio.inputs.bluez import bluez_facts  # noqa: PLC0415

            with contextlib.suppress(Exception):
                seen = (await bluez_facts(2.0)).accessories.get(self.spec.address)
                self.battery = seen.battery if seen is not None else None
            return
        with contextlib.suppress(Exception):  # a battery that cannot be read is no failure
            self.battery = battery_percent(bytes(await client.read_gatt_char(BATTERY_LEVEL)))
            if battery.notifies:
                await client.start_notify(BATTERY_LEVEL, self._notified)


async def bond(address: str, wait_s: float = CONNECT_TIMEOUT_S) -> None:
    """Pair (bond) with the accessory at ``address`` and trust it, for those that need it. Do it
    before ``bt add``: BlueZ has one link per accessory, and this one is dropped after (an input
    bound to it would lose its link, and bleak skips pairing a device already connected).
    BleakError, TimeoutError when it fails."""
    from bleak import BleakClient  # noqa: PLC0415

    async with (
        _discovery(),
        asyncio.timeout(wait_s * 2),
        BleakClient(address, pair=True, timeout=wait_s),
    ):
        log.info("ble:%s: paired and trusted", address)


@dataclass(frozen=True, slots=True)
class Nearby:
    """An accessory seen by a scan."""

    address: str
    name: str
    rssi: int | None
    ptt: bool  # looks like a PTT accessory (advertises a PTT service, or its name says PTT)


async def scan(seconds: float) -> list[Nearby]:
    """The BLE accessories advertising nearby within ``seconds``, PTT-looking ones first, then
    by signal strength."""
    from bleak import BleakScanner  # noqa: PLC0415

    async with _discovery():
        seen: dict[str, Any] = await BleakScanner.discover(timeout=seconds, return_adv=True)
    found = [
        Nearby(
            device.address.upper(),
            adv.local_name or device.name or "",
            adv.rssi,
            looks_like_ptt(adv.local_name or device.name, adv.service_uuids),
        )
        for device, adv in seen.values()
    ]
    return sorted(found, key=lambda n: (not n.ptt, -(n.rssi if n.rssi is not None else -999)))
