"""A BlueZ stand-in on a private D-Bus bus, so that bleak (unmodified) can be tested without
Bluetooth hardware.

:func:`private_bus` starts a real ``dbus-daemon`` (a system-like bus on a unix socket in a temp
dir) and yields its address; point bleak at it with ``DBUS_SYSTEM_BUS_ADDRESS``.
:class:`FakeBluez` connects to that bus, owns ``org.bluez`` and serves the object tree bleak
reads: an adapter ``/org/bluez/hci0`` (``org.bluez.Adapter1``), devices below it
(``org.bluez.Device1``, ``org.bluez.Battery1`` while connected) and, while a device is connected,
its GATT services, characteristics and descriptors (``org.bluez.GattService1`` …). Like BlueZ it
announces objects with ``InterfacesAdded``/``InterfacesRemoved`` (sent from ``/``, every
interface of an object in one signal) and every property change with ``PropertiesChanged``.

Typical use (the ``bluez`` fixture in ``tests/radio/inputs/conftest.py`` does the first part)::

    async with private_bus(tmp_path) as address:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        async with FakeBluez(address) as bluez:
            button = await bluez.ptt_button("AA:BB:CC:DD:EE:FF")
            ...                       # bleak scans, connects, subscribes
            await button.wait_subscribed()
            await button.press()      # 0x01 to every subscriber
            await button.release()    # 0x00
            await button.sleep()      # the button drops the link; Connect fails until wake()
            await button.wake()
            await button.vanish()     # the device object leaves BlueZ

A device is in the tree (``GetManagedObjects``) from the start when ``known=True`` (a bonded
device); otherwise it appears (``InterfacesAdded``) once a discovery runs while it advertises.
Shipped in the package (like gpiozero's MockFactory): the tests and `pttd bench latency` use it.
"""

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

from dbus_fast import BusType, DBusError, Message, PropertyAccess, RequestNameReply, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

DBUS_DAEMON = "/usr/bin/dbus-daemon"
STARTUP_TIMEOUT = 5.0  # seconds for dbus-daemon to print its address
STOP_TIMEOUT = 3.0  # seconds for dbus-daemon to exit on SIGTERM before SIGKILL

BLUEZ = "org.bluez"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
ADAPTER = "org.bluez.Adapter1"
DEVICE = "org.bluez.Device1"
BATTERY = "org.bluez.Battery1"
GATT_SERVICE = "org.bluez.GattService1"
GATT_CHARACTERISTIC = "org.bluez.GattCharacteristic1"
GATT_DESCRIPTOR = "org.bluez.GattDescriptor1"

ERROR_FAILED = "org.bluez.Error.Failed"
ERROR_NOT_READY = "org.bluez.Error.NotReady"
ERROR_NOT_PERMITTED = "org.bluez.Error.NotPermitted"
ERROR_NOT_SUPPORTED = "org.bluez.Error.NotSupported"
ERROR_DOES_NOT_EXIST = "org.bluez.Error.DoesNotExist"
ERROR_ALREADY_EXISTS = "org.bluez.Error.AlreadyExists"
ERROR_NOT_CONNECTED = "org.bluez.Error.NotConnected"
# What BlueZ answers a Connect to an LE device that never answered (asleep, out of range). Not
# "le-connection-abort-by-local": bleak retries that one.
CONNECT_FAILED_MESSAGE = "Software caused connection abort"

PTT_SERVICE = "0000ffe0-0000-1000-8000-00805f9b34fb"  # Pryme PTT-Z style buttons
PTT_CHARACTERISTIC = "0000ffe1-0000-1000-8000-00805f9b34fb"  # notifies 0x01 pressed, 0x00 released
HAND_MIC_SERVICE = "28393551-5345-5209-fd67-45287c0bdac5"  # BLE hand microphones
BATTERY_SERVICE = "0000180f-0000-1000-8000-00805f9b34fb"
BATTERY_LEVEL = "00002a19-0000-1000-8000-00805f9b34fb"
CCCD = "00002902-0000-1000-8000-00805f9b34fb"
_DISCOVERY_FILTERS = ("UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData", "Discoverable")
PRESSED = b"\x01"
RELEASED = b"\x00"

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow send_type="signal"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
</busconfig>
"""


# --------------------------------------------------------------------------- the private bus


NO_DBUS_DAEMON = (
    f"dbus-daemon not found ({DBUS_DAEMON}, PATH): the BlueZ stand-in needs it "
    "(Debian: apt-get install dbus-daemon)"
)


def dbus_daemon() -> str | None:
    """The ``dbus-daemon`` :func:`private_bus` runs (:data:`DBUS_DAEMON`, else the one on PATH);
    None if there is none."""
    return DBUS_DAEMON if os.access(DBUS_DAEMON, os.X_OK) else shutil.which("dbus-daemon")


@contextlib.asynccontextmanager
async def private_bus(
    directory: Path, *, startup_timeout: float = STARTUP_TIMEOUT
) -> AsyncIterator[str]:
    """Run a system-like ``dbus-daemon`` for the block; yield its address (``unix:path=…``).

    The config and the daemon's log go to ``directory``; the socket too unless that path is too
    long for a unix socket, then to a short temp dir. The daemon is stopped on exit (SIGTERM,
    SIGKILL after :data:`STOP_TIMEOUT` s).
    """
    daemon = dbus_daemon()
    if daemon is None:
        raise RuntimeError(NO_DBUS_DAEMON)
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    socket_dir = directory
    short_dir: str | None = None
    if len(str(directory / "system_bus_socket")) > 100:  # sun_path holds 108 bytes
        short_dir = tempfile.mkdtemp(prefix="fakebluez-")
        socket_dir = Path(short_dir)
    config = directory / "fake-system-bus.conf"
    config.write_text(_BUS_CONFIG.format(socket=socket_dir / "system_bus_socket"))
    log_path = directory / "dbus-daemon.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            daemon,
            f"--config-file={config}",
            "--nofork",
            "--nopidfile",
            "--print-address=1",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    try:
        assert process.stdout is not None
        try:
            async with asyncio.timeout(startup_timeout):
                line = await process.stdout.readline()
        except TimeoutError:
            line = b""
        address = line.decode().strip()
        if not address:
            raise RuntimeError(
                f"dbus-daemon gave no address within {startup_timeout} s: "
                f"{log_path.read_text(errors='replace').strip() or 'no output'}"
            )
        yield address
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if short_dir is not None:
            shutil.rmtree(short_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_bluez(directory: Path, **options: Any) -> AsyncIterator["FakeBluez"]:
    """A private bus with a :class:`FakeBluez` on it (``options`` go to FakeBluez) for the
    block. The caller points bleak at ``bluez.bus_address`` (``DBUS_SYSTEM_BUS_ADDRESS``) before
    bleak's first use in the running loop. On exit bleak's manager for this loop is released
    first, so that the bus goes away quietly."""
    async with private_bus(directory) as address, FakeBluez(address, **options) as bluez:
        try:
            yield bluez
        finally:
            await release_bleak()


async def release_bleak() -> None:
    """Close the BlueZ manager bleak keeps for the running loop (and its D-Bus connection).

    bleak caches one manager per event loop (``bleak.backends.bluezdbus.manager``); a test's
    loop ends with the test, but the manager's connection would otherwise outlive the bus.
    """
    try:
        from bleak.backends.bluezdbus import manager as bleak_manager  # noqa: PLC0415 (optional)
    except ImportError:
        return
    instances = bleak_manager._global_instances
    instance = instances.pop(asyncio.get_running_loop(), None)
    if instance is None:
        return
    # bleak would log the closed connection as lost and tell its clients: nothing to tell here
    instance._handle_bus_disconnect = lambda exc: None  # type: ignore[method-assign]
    bus = instance._bus
    if bus is not None:
        bus.disconnect()
    watcher = instance._bus_watcher_task
    if watcher is not None:
        await asyncio.wait({watcher}, timeout=STOP_TIMEOUT)


# --------------------------------------------------------------------------- D-Bus objects


class _QuietBus(MessageBus):
    """A bus that leaves ``InterfacesAdded``/``InterfacesRemoved`` to :class:`FakeBluez`.

    dbus-fast sends one signal per exported interface, from the object's own path; BlueZ sends
    one per object, from ``/``, with all of its interfaces.
    """

    def _emit_interface_added(self, path: str, interface: ServiceInterface) -> None:
        pass

    def _emit_interface_removed(self, path: str, removed_interfaces: list[str]) -> None:
        pass


def _property(name: str, signature: str, writable: bool) -> Any:
    """A D-Bus property ``name`` of type ``signature`` backed by ``_Interface.values``."""

    def getter(self: "_Interface") -> Any:
        return self.values[name]

    getter.__name__ = name
    getter.__annotations__ = {"return": signature}  # dbus-fast reads the signature from here
    access = PropertyAccess.READWRITE if writable else PropertyAccess.READ
    prop = dbus_property(access=access, name=name)(getter)
    if writable:

        def setter(self: "_Interface", value: Any) -> None:
            self.written(name, value)

        setter.__name__ = name  # dbus-fast sets the property by this name
        setter.__annotations__ = {"value": signature}
        prop = prop.setter(setter)
    return prop


class _Interface(ServiceInterface):
    """A BlueZ interface whose property values live in ``values``.

    The D-Bus properties come from :meth:`build`, which makes a subclass with exactly the given
    properties (BlueZ leaves unset ones out, e.g. ``Name`` of a device that never said it).
    """

    INTERFACE: ClassVar[str] = ""
    _classes: ClassVar[dict[tuple[type, tuple[tuple[str, str, bool], ...]], type]] = {}

    def __init__(self, values: dict[str, Any], signatures: dict[str, str]) -> None:
        super().__init__(self.INTERFACE)
        self.values = values
        self.signatures = signatures

    @classmethod
    def build(cls, properties: Mapping[str, tuple[str, Any]], writable: Iterable[str] = ()) -> Any:
        """An instance with ``properties`` (name: (signature, value)); ``writable`` can be Set."""
        rw = set(writable)
        key = (cls, tuple((n, s, n in rw) for n, (s, _) in sorted(properties.items())))
        klass = cls._classes.get(key)
        if klass is None:
            namespace = {n: _property(n, s, w) for n, s, w in key[1]}
            klass = type(f"{cls.__name__}Props", (cls,), namespace)
            cls._classes[key] = klass
        return klass(
            {n: v for n, (_, v) in properties.items()}, {n: s for n, (s, _) in properties.items()}
        )

    def variants(self) -> dict[str, Variant]:
        return {n: Variant(self.signatures[n], v) for n, v in self.values.items()}

    def update(self, *, always: bool = False, **changes: Any) -> None:
        """Set properties; emit ``PropertiesChanged`` for those that changed (all if ``always``)."""
        changed = {n: v for n, v in changes.items() if always or self.values.get(n) != v}
        self.values.update(changes)
        if changed:
            self.emit_properties_changed(changed)

    def written(self, name: str, value: Any) -> None:
        """A client Set a writable property."""
        self.update(**{name: value})


class _Adapter(_Interface):
    INTERFACE = ADAPTER
    bluez: "FakeBluez"

    @dbus_method()
    def StartDiscovery(self) -> None:
        self.bluez._start_discovery()

    @dbus_method()
    def StopDiscovery(self) -> None:
        self.bluez._stop_discovery()

    @dbus_method()
    def SetDiscoveryFilter(
        self, filters: Annotated[dict[str, Variant], DBusSignature("a{sv}")]
    ) -> None:
        self.bluez._set_discovery_filter(filters)

    @dbus_method()
    def GetDiscoveryFilters(self) -> Annotated[list[str], DBusSignature("as")]:
        return list(_DISCOVERY_FILTERS)

    @dbus_method()
    async def RemoveDevice(self, device: Annotated[str, DBusSignature("o")]) -> None:
        await self.bluez._remove_device(device)

    def written(self, name: str, value: Any) -> None:
        super().written(name, value)
        if name == "Powered" and not value:
            self.bluez._powered_off()


class _Device(_Interface):
    INTERFACE = DEVICE
    device: "FakeDevice"

    @dbus_method()
    async def Connect(self) -> None:
        await self.device._connect_request()

    @dbus_method()
    async def Disconnect(self) -> None:
        await self.device._disconnect_request()

    @dbus_method()
    async def Pair(self) -> None:
        await self.device._pair_request()

    @dbus_method()
    def CancelPairing(self) -> None:
        raise DBusError(ERROR_DOES_NOT_EXIST, "Does Not Exist")

    @dbus_method()
    async def ConnectProfile(self, uuid: Annotated[str, DBusSignature("s")]) -> None:
        await self.device._connect_request()

    @dbus_method()
    async def DisconnectProfile(self, uuid: Annotated[str, DBusSignature("s")]) -> None:
        await self.device._disconnect_request()


class _Battery(_Interface):
    INTERFACE = BATTERY


class _GattService(_Interface):
    INTERFACE = GATT_SERVICE


def _offset(options: dict[str, Variant]) -> int:
    offset = options.get("offset")
    return int(offset.value) if offset is not None else 0


class _GattCharacteristic(_Interface):
    INTERFACE = GATT_CHARACTERISTIC
    device: "FakeDevice"
    spec: "Characteristic"

    @dbus_method()
    def ReadValue(
        self, options: Annotated[dict[str, Variant], DBusSignature("a{sv}")]
    ) -> Annotated[bytes, DBusSignature("ay")]:
        if not {"read", "encrypt-read", "encrypt-authenticated-read"} & set(self.spec.flags):
            raise DBusError(ERROR_NOT_PERMITTED, "Read not permitted")
        value = bytes(self.values["Value"])[_offset(options) :]
        # BlueZ stores what it read in Value and signals it (a subscriber sees it as a notification)
        self.update(always=True, Value=value)
        return value

    @dbus_method()
    def WriteValue(
        self,
        value: Annotated[bytes, DBusSignature("ay")],
        options: Annotated[dict[str, Variant], DBusSignature("a{sv}")],
    ) -> None:
        if not {"write", "write-without-response"} & set(self.spec.flags):
            raise DBusError(ERROR_NOT_PERMITTED, "Write not permitted")
        self.device.writes.append((self.spec.uuid, bytes(value)))

    @dbus_method()
    def StartNotify(self) -> None:
        if not {"notify", "indicate"} & set(self.spec.flags):
            raise DBusError(ERROR_NOT_SUPPORTED, "Operation is not supported")
        self.update(Notifying=True)
        self.device._changed()

    @dbus_method()
    def StopNotify(self) -> None:
        if not self.values["Notifying"]:
            raise DBusError(ERROR_FAILED, "No notify session started")
        self.update(Notifying=False)
        self.device._changed()


class _GattDescriptor(_Interface):
    INTERFACE = GATT_DESCRIPTOR

    @dbus_method()
    def ReadValue(
        self, options: Annotated[dict[str, Variant], DBusSignature("a{sv}")]
    ) -> Annotated[bytes, DBusSignature("ay")]:
        return bytes(self.values["Value"])[_offset(options) :]

    @dbus_method()
    def WriteValue(
        self,
        value: Annotated[bytes, DBusSignature("ay")],
        options: Annotated[dict[str, Variant], DBusSignature("a{sv}")],
    ) -> None:
        raise DBusError(ERROR_NOT_PERMITTED, "Write not permitted")


# --------------------------------------------------------------------------- GATT layout


@dataclass(frozen=True)
class Characteristic:
    """A GATT characteristic the device has; ``value`` is what a read gives at first."""

    uuid: str
    flags: tuple[str, ...] = ("read", "notify")
    value: bytes = b""


@dataclass(frozen=True)
class Service:
    """A GATT service the device has."""

    uuid: str
    characteristics: tuple[Characteristic, ...] = ()
    primary: bool = True


@dataclass
class _GattObjects:
    """The GATT objects of one connection, in export order."""

    objects: list[tuple[str, _Interface]] = field(default_factory=list)
    characteristics: dict[str, _GattCharacteristic] = field(default_factory=dict)  # by UUID


def _uuid(value: str | int) -> str:
    """A full 128-bit UUID string from a 16-bit number or any spelling of a UUID."""
    if isinstance(value, int):
        return f"0000{value:04x}-0000-1000-8000-00805f9b34fb"
    value = value.lower()
    if len(value) == 4:
        return f"0000{value}-0000-1000-8000-00805f9b34fb"
    return value


# --------------------------------------------------------------------------- the fake


class FakeDevice:
    """A BLE accessory as BlueZ shows it; the control API for tests.

    Made by :meth:`FakeBluez.add_device` or :meth:`FakeBluez.ptt_button`.
    """

    def __init__(
        self,
        bluez: "FakeBluez",
        address: str,
        name: str | None,
        *,
        rssi: int,
        services: Sequence[Service],
        advertised_uuids: Sequence[str],
        manufacturer_data: Mapping[int, bytes],
        service_data: Mapping[str, bytes],
        address_type: str,
        paired: bool,
        battery: int | None,
        battery_gatt: bool,
        connect_delay: float,
    ) -> None:
        self.bluez = bluez
        self.address = address.upper()
        self.name = name
        self.path = f"{bluez.adapter_path}/dev_{self.address.replace(':', '_')}"
        self.services = list(services)
        self.battery: int | None = battery
        self.battery_gatt = battery_gatt
        if battery is not None and battery_gatt:
            level = Characteristic(BATTERY_LEVEL, ("read", "notify"), bytes([battery]))
            self.services.append(Service(BATTERY_SERVICE, (level,)))
        self.connect_delay = connect_delay  # seconds a Connect takes
        self.asleep = False  # not advertising, does not answer Connect
        self.gone = False  # vanished: not advertising until wake()
        self.connect_calls = 0  # Connect requests BlueZ got for this device
        self.writes: list[tuple[str, bytes]] = []  # (characteristic UUID, value) written
        self._waiters: list[asyncio.Event] = []
        self._gatt: _GattObjects | None = None
        self._battery_iface: _Battery | None = None
        properties: dict[str, tuple[str, Any]] = {
            "Address": ("s", self.address),
            "AddressType": ("s", address_type),
            "Alias": ("s", name if name is not None else self.address.replace(":", "-")),
            "Paired": ("b", paired),
            "Bonded": ("b", paired),
            "Trusted": ("b", paired),
            "Blocked": ("b", False),
            "LegacyPairing": ("b", False),
            "RSSI": ("n", rssi),
            "Connected": ("b", False),
            "UUIDs": ("as", [_uuid(u) for u in advertised_uuids]),
            "Adapter": ("o", bluez.adapter_path),
            "ServicesResolved": ("b", False),
        }
        if name is not None:
            properties["Name"] = ("s", name)
        if manufacturer_data:
            properties["ManufacturerData"] = (
                "a{qv}",
                {k: Variant("ay", bytes(v)) for k, v in manufacturer_data.items()},
            )
        if service_data:
            properties["ServiceData"] = (
                "a{sv}",
                {_uuid(k): Variant("ay", bytes(v)) for k, v in service_data.items()},
            )
        self._iface: _Device = _Device.build(properties, writable=("Trusted", "Blocked", "Alias"))
        self._iface.device = self

    # -- state

    @property
    def in_tree(self) -> bool:
        """Whether BlueZ has the device object (``GetManagedObjects`` lists it)."""
        return self.bluez._exported(self.path)

    @property
    def bonded(self) -> bool:
        """Paired and trusted (what ``bt pair`` asks of BlueZ)."""
        v = self._iface.values
        return bool(v["Paired"]) and bool(v["Trusted"])

    @property
    def connected(self) -> bool:
        return bool(self._iface.values["Connected"])

    @property
    def advertising(self) -> bool:
        return not (self.asleep or self.gone or self.connected)

    def subscribed(self, characteristic: str | int | None = None) -> bool:
        """Whether a client has notifications on for ``characteristic`` (default: the first
        notifying characteristic of the first service)."""
        char = self._characteristic(characteristic, required=False)
        return char is not None and bool(char.values["Notifying"])

    async def wait_subscribed(
        self, characteristic: str | int | None = None, wait_s: float = 5.0
    ) -> None:
        """Wait until a client has notifications on for ``characteristic``."""
        await self._wait(lambda: self.subscribed(characteristic), wait_s)

    async def wait_connected(self, connected: bool = True, wait_s: float = 5.0) -> None:
        await self._wait(lambda: self.connected == connected, wait_s)

    # -- what the accessory does

    async def notify(self, value: bytes, characteristic: str | int | None = None) -> bool:
        """Send a notification; only a subscribed characteristic sends (as the accessory only
        notifies with its CCCD set). Returns whether it was sent."""
        char = self._characteristic(characteristic, required=False)
        if char is None or not char.values["Notifying"]:
            return False
        char.update(always=True, Value=bytes(value))
        return True

    async def press(self, characteristic: str | int | None = None) -> bool:
        """The PTT edge down: notifies 0x01."""
        return await self.notify(PRESSED, characteristic)

    async def release(self, characteristic: str | int | None = None) -> bool:
        """The PTT edge up: notifies 0x00."""
        return await self.notify(RELEASED, characteristic)

    async def set_battery(self, percent: int) -> None:
        """A new battery level: ``Battery1.Percentage`` and the Battery Level characteristic
        (notified if subscribed)."""
        self.battery = percent
        if self._battery_iface is not None:
            self._battery_iface.update(Percentage=percent)
        if self._gatt is not None and (char := self._gatt.characteristics.get(BATTERY_LEVEL)):
            char.values["Value"] = bytes([percent])
            if char.values["Notifying"]:
                char.update(always=True, Value=bytes([percent]))

    async def set_rssi(self, rssi: int) -> None:
        """A new signal strength, as an advertisement seen during discovery would report."""
        self._iface.update(RSSI=rssi)

    async def advertise(self) -> None:
        """One advertisement: seen only while the adapter discovers."""
        self.bluez._seen(self)

    async def drop_link(self) -> None:
        """The link goes down (out of range, the accessory reset) but the accessory stays awake."""
        self._link_down()

    async def sleep(self) -> None:
        """The accessory sleeps: it drops the link and no longer advertises or answers Connect."""
        self.asleep = True
        self._link_down()

    async def wake(self) -> None:
        """The accessory wakes (or comes back after :meth:`vanish`) and advertises again."""
        self.asleep = False
        self.gone = False
        self.bluez._seen(self)

    async def vanish(self) -> None:
        """BlueZ forgets the device: link down, then the device object goes
        (``InterfacesRemoved``). It stays quiet until :meth:`wake`."""
        self.gone = True
        self._link_down()
        self.bluez._unexport_device(self)

    # -- what BlueZ does for clients

    async def _connect_request(self) -> None:
        self.connect_calls += 1
        if self.connected:
            return
        if self.connect_delay:
            await asyncio.sleep(self.connect_delay)
        if self.asleep or self.gone or not self.bluez.powered:
            raise DBusError(ERROR_FAILED, CONNECT_FAILED_MESSAGE)
        self._link_up()

    async def _disconnect_request(self) -> None:
        self._link_down()

    async def _pair_request(self) -> None:
        if self._iface.values["Paired"]:
            raise DBusError(ERROR_ALREADY_EXISTS, "Already Exists")
        await self._connect_request()
        self._iface.update(Paired=True, Bonded=True)

    def _link_up(self) -> None:
        self._iface.update(Connected=True)
        gatt = _GattObjects()
        handle = 0x000A
        for service in self.services:
            service_path = f"{self.path}/service{handle:04x}"
            svc = _GattService.build(
                {
                    "UUID": ("s", _uuid(service.uuid)),
                    "Device": ("o", self.path),
                    "Primary": ("b", service.primary),
                    "Includes": ("ao", []),
                    "Handle": ("q", handle),
                }
            )
            gatt.objects.append((service_path, svc))
            handle += 1
            for spec in service.characteristics:
                char_path = f"{service_path}/char{handle:04x}"
                char: _GattCharacteristic = _GattCharacteristic.build(
                    {
                        "UUID": ("s", _uuid(spec.uuid)),
                        "Service": ("o", service_path),
                        "Value": ("ay", bytes(spec.value)),
                        "Notifying": ("b", False),
                        "Flags": ("as", list(spec.flags)),
                        "Handle": ("q", handle + 1),
                        "MTU": ("q", 23),
                    }
                )
                char.device = self
                char.spec = spec
                if _uuid(spec.uuid) == BATTERY_LEVEL and self.battery is not None:
                    char.values["Value"] = bytes([self.battery])
                gatt.objects.append((char_path, char))
                gatt.characteristics.setdefault(_uuid(spec.uuid), char)
                handle += 2
                if {"notify", "indicate"} & set(spec.flags):
                    desc = _GattDescriptor.build(
                        {
                            "UUID": ("s", CCCD),
                            "Characteristic": ("o", char_path),
                            "Value": ("ay", b""),
                            "Flags": ("as", ["read", "write"]),
                            "Handle": ("q", handle),
                        }
                    )
                    gatt.objects.append((f"{char_path}/desc{handle:04x}", desc))
                    handle += 1
        self._gatt = gatt
        for path, iface in gatt.objects:
            self.bluez._export(path, [iface])
        if self.battery is not None:
            self._battery_iface = _Battery.build({"Percentage": ("y", self.battery)})
            self.bluez._export(self.path, [self._battery_iface])
        self._iface.update(ServicesResolved=True)
        self._changed()

    def _link_down(self) -> None:
        if not self.connected:
            return
        self._iface.update(ServicesResolved=False)
        self._iface.update(Connected=False)
        if self._battery_iface is not None:
            self.bluez._unexport(self.path, [self._battery_iface])
            self._battery_iface = None
        if self._gatt is not None:
            for path, iface in reversed(self._gatt.objects):
                self.bluez._unexport(path, [iface])
            self._gatt = None
        self._changed()

    # -- helpers

    def _characteristic(
        self, characteristic: str | int | None, *, required: bool = True
    ) -> _GattCharacteristic | None:
        if self._gatt is None:
            return None
        if characteristic is None:
            for service in self.services:
                for spec in service.characteristics:
                    if {"notify", "indicate"} & set(spec.flags):
                        return self._gatt.characteristics[_uuid(spec.uuid)]
            return None
        char = self._gatt.characteristics.get(_uuid(characteristic))
        if char is None and required:
            raise KeyError(f"{self.address} has no characteristic {characteristic}")
        return char

    def _changed(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    async def _wait(self, check: Callable[[], bool], wait_s: float) -> None:
        async with asyncio.timeout(wait_s):
            while not check():
                waiter = asyncio.Event()
                self._waiters.append(waiter)
                try:
                    await waiter.wait()
                finally:
                    self._waiters.remove(waiter)


class FakeBluez:
    """``org.bluez`` on the bus at ``address``: one powered adapter and the devices tests add."""

    def __init__(
        self,
        address: str,
        *,
        adapter: str = "hci0",
        adapter_address: str = "00:1A:7D:DA:71:13",
        adapter_name: str = "pttd-test",
        advertising_interval: float = 0.05,
    ) -> None:
        self.bus_address = address
        # while discovering, each visible device is seen again this often (a real accessory
        # advertises every 20 ms to 10 s; bleak's find_device_by_address needs a second sighting)
        self.advertising_interval = advertising_interval
        self._advertising: asyncio.Task[None] | None = None
        self.adapter_path = f"/org/bluez/{adapter}"
        self.devices: dict[str, FakeDevice] = {}  # by upper-case address
        self.discovery_sessions = 0
        self.discovery_uuids: set[str] = set()  # the UUIDs filter of SetDiscoveryFilter
        self._bus: MessageBus | None = None
        self._tree: dict[str, list[_Interface]] = {}  # what BlueZ exports, by object path
        self._adapter: _Adapter = _Adapter.build(
            {
                "Address": ("s", adapter_address),
                "AddressType": ("s", "public"),
                "Name": ("s", adapter_name),
                "Alias": ("s", adapter_name),
                "Class": ("u", 0),
                "Powered": ("b", True),
                "PowerState": ("s", "on"),
                "Discoverable": ("b", False),
                "DiscoverableTimeout": ("u", 180),
                "Pairable": ("b", True),
                "PairableTimeout": ("u", 0),
                "Discovering": ("b", False),
                "UUIDs": ("as", []),
                "Modalias": ("s", "usb:v1D6Bp0246d0548"),
                "Roles": ("as", ["central", "peripheral"]),
            },
            writable=("Powered", "Alias", "Discoverable", "Pairable"),
        )
        self._adapter.bluez = self

    async def __aenter__(self) -> "FakeBluez":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect, export the adapter and own ``org.bluez``."""
        bus = _QuietBus(bus_address=self.bus_address, bus_type=BusType.SYSTEM)
        await bus.connect()
        self._bus = bus
        self._export(self.adapter_path, [self._adapter])
        reply = await bus.request_name(BLUEZ)
        if reply is not RequestNameReply.PRIMARY_OWNER:
            raise RuntimeError(f"could not own {BLUEZ} on {self.bus_address}: {reply}")

    async def stop(self) -> None:
        self._stop_advertising()
        if self._bus is not None:
            self._bus.disconnect()
            with contextlib.suppress(Exception):
                await self._bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
            self._bus = None

    # -- control API

    @property
    def discovering(self) -> bool:
        return bool(self._adapter.values["Discovering"])

    @property
    def powered(self) -> bool:
        return bool(self._adapter.values["Powered"])

    async def add_device(
        self,
        address: str,
        name: str | None = None,
        *,
        rssi: int = -50,
        services: Sequence[Service] = (),
        advertised_uuids: Sequence[str] | None = None,
        manufacturer_data: Mapping[int, bytes] | None = None,
        service_data: Mapping[str, bytes] | None = None,
        address_type: str = "public",
        known: bool = False,
        paired: bool | None = None,
        battery: int | None = None,
        battery_gatt: bool = True,
        connect_delay: float = 0.0,
    ) -> FakeDevice:
        """A BLE accessory, awake and advertising ``advertised_uuids`` (default: its services').

        ``known``: already in BlueZ's tree (a bonded device; ``paired`` defaults to ``known``);
        otherwise it appears when a discovery sees it. ``battery``: a percentage for
        ``org.bluez.Battery1`` and, with ``battery_gatt``, a Battery Service 0x180F whose Battery
        Level 0x2A19 can be read (real BlueZ hides that service behind Battery1).
        """
        if address.upper() in self.devices:
            raise ValueError(f"{address} already added")
        if advertised_uuids is None:
            advertised_uuids = [s.uuid for s in services]
        device = FakeDevice(
            self,
            address,
            name,
            rssi=rssi,
            services=services,
            advertised_uuids=advertised_uuids,
            manufacturer_data=manufacturer_data or {},
            service_data=service_data or {},
            address_type=address_type,
            paired=known if paired is None else paired,
            battery=battery,
            battery_gatt=battery_gatt,
            connect_delay=connect_delay,
        )
        self.devices[device.address] = device
        if known:
            self._export_device(device)
        self._seen(device)
        return device

    async def ptt_button(
        self,
        address: str,
        name: str | None = "PTT-Z",
        *,
        service: str = PTT_SERVICE,
        characteristic: str = PTT_CHARACTERISTIC,
        sos_characteristic: str | None = None,
        battery: int | None = 87,
        **kwargs: Any,
    ) -> FakeDevice:
        """A PTT button: ``service`` with a read/notify ``characteristic`` (0x01 pressed, 0x00
        released) and an optional ``sos_characteristic`` alike; other keywords as
        :meth:`add_device`."""
        chars = [Characteristic(characteristic, ("read", "notify"), RELEASED)]
        if sos_characteristic is not None:
            chars.append(Characteristic(sos_characteristic, ("read", "notify"), RELEASED))
        return await self.add_device(
            address,
            name,
            services=[Service(service, tuple(chars))],
            battery=battery,
            **kwargs,
        )

    def device(self, address: str) -> FakeDevice:
        return self.devices[address.upper()]

    # -- the object tree

    def _exported(self, path: str) -> bool:
        return path in self._tree

    def _export(self, path: str, interfaces: list[_Interface]) -> None:
        assert self._bus is not None, "FakeBluez not started"
        for iface in interfaces:
            self._bus.export(path, iface)
        self._tree.setdefault(path, []).extend(interfaces)
        body = {iface.name: iface.variants() for iface in interfaces}
        self._signal("InterfacesAdded", "oa{sa{sv}}", [path, body])

    def _unexport(self, path: str, interfaces: list[_Interface]) -> None:
        assert self._bus is not None, "FakeBluez not started"
        for iface in interfaces:
            self._bus.unexport(path, iface)
        remaining = [i for i in self._tree.get(path, []) if i not in interfaces]
        if remaining:
            self._tree[path] = remaining
        else:
            self._tree.pop(path, None)
        self._signal("InterfacesRemoved", "oas", [path, [i.name for i in interfaces]])

    def _signal(self, member: str, signature: str, body: list[Any]) -> None:
        assert self._bus is not None
        self._bus.send(
            Message.new_signal(
                path="/", interface=OBJECT_MANAGER, member=member, signature=signature, body=body
            )
        )

    def _export_device(self, device: FakeDevice) -> None:
        if not self._exported(device.path):
            self._export(device.path, [device._iface])

    def _unexport_device(self, device: FakeDevice) -> None:
        if self._exported(device.path):
            self._unexport(device.path, list(self._tree[device.path]))

    # -- discovery

    def _visible(self, device: FakeDevice) -> bool:
        if not (self.discovering and device.advertising):
            return False
        if not self.discovery_uuids:
            return True
        return bool(self.discovery_uuids & set(device._iface.values["UUIDs"]))

    def _seen(self, device: FakeDevice) -> None:
        """An advertisement of ``device``: added to the tree, or its RSSI signalled again."""
        if not self._visible(device):
            return
        if self._exported(device.path):
            device._iface.update(always=True, RSSI=device._iface.values["RSSI"])
        else:
            self._export_device(device)

    def _start_discovery(self) -> None:
        if not self.powered:
            raise DBusError(ERROR_NOT_READY, "Resource Not Ready")
        self.discovery_sessions += 1
        if self.discovery_sessions == 1:
            self._adapter.update(Discovering=True)
            self._advertising = asyncio.get_running_loop().create_task(self._advertise())

    async def _advertise(self) -> None:
        """Every visible device is seen, after the StartDiscovery reply and then periodically."""
        while True:
            await asyncio.sleep(0)  # after the reply, as from the radio
            for device in list(self.devices.values()):
                self._seen(device)
            await asyncio.sleep(self.advertising_interval)

    def _stop_advertising(self) -> None:
        if self._advertising is not None:
            self._advertising.cancel()
            self._advertising = None

    def _stop_discovery(self) -> None:
        if self.discovery_sessions == 0:
            raise DBusError(ERROR_FAILED, "No discovery started")
        self.discovery_sessions -= 1
        if self.discovery_sessions == 0:
            self._stop_advertising()
            self._adapter.update(Discovering=False)

    def _set_discovery_filter(self, filters: dict[str, Variant]) -> None:
        uuids = filters.get("UUIDs")
        self.discovery_uuids = {_uuid(u) for u in uuids.value} if uuids is not None else set()

    async def _remove_device(self, path: str) -> None:
        device = next((d for d in self.devices.values() if d.path == path), None)
        if device is None or not self._exported(path):
            raise DBusError(ERROR_DOES_NOT_EXIST, "Does Not Exist")
        device._link_down()
        self._unexport_device(device)

    def _powered_off(self) -> None:
        for device in self.devices.values():
            device._link_down()
        self.discovery_sessions = 0
        self._stop_advertising()
        self._adapter.update(Discovering=False)
