"""What BlueZ knows, read over D-Bus (with dbus-fast, which bleak brings): the adapters and the
accessories it has seen, for ``pttd doctor``. Read-only: nothing here connects, pairs or scans.

The system bus is the one at ``DBUS_SYSTEM_BUS_ADDRESS`` when set (the tests serve a BlueZ
stand-in on a private bus), else the default system bus socket.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pttd.errors import PttdError

BLUEZ = "org.bluez"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"


class BluezUnavailable(PttdError):
    """No system bus, or no BlueZ on it; the message says which."""


@dataclass(frozen=True, slots=True)
class Adapter:
    path: str
    address: str
    powered: bool


@dataclass(frozen=True, slots=True)
class Accessory:
    address: str
    name: str
    connected: bool
    paired: bool
    battery: int | None  # org.bluez.Battery1 Percentage, when BlueZ exposes it


@dataclass(frozen=True, slots=True)
class BluezFacts:
    adapters: list[Adapter] = field(default_factory=list)
    accessories: dict[str, Accessory] = field(default_factory=dict)  # by upper-case address


def _value(props: dict[str, Any], name: str, default: Any) -> Any:
    variant = props.get(name)
    return default if variant is None else variant.value


async def bluez_facts(wait_s: float = 5.0) -> BluezFacts:
    """Adapters and known accessories; BluezUnavailable (one line) when BlueZ cannot be asked."""
    try:
        from dbus_fast import BusType, Message, MessageType  # noqa: PLC0415 (bleak's; Linux only)
        from dbus_fast.aio import MessageBus  # noqa: PLC0415
    except ImportError as exc:
        raise BluezUnavailable(f"dbus-fast is not installed ({exc})") from None
    try:
        async with asyncio.timeout(wait_s):
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    except (OSError, TimeoutError, ValueError) as exc:
        raise BluezUnavailable(f"cannot reach the system bus: {exc or 'timed out'}") from None
    try:
        async with asyncio.timeout(wait_s):
            # The call itself, as bleak makes it (no introspection first: what an object lists
            # in its introspection data is not what matters).
            reply = await bus.call(
                Message(
                    destination=BLUEZ,
                    path="/",
                    interface=OBJECT_MANAGER,
                    member="GetManagedObjects",
                )
            )
    except TimeoutError:
        raise BluezUnavailable("BlueZ did not answer in time") from None
    finally:
        bus.disconnect()
    if reply is None or reply.message_type is not MessageType.METHOD_RETURN:
        why = (reply.body[0] if reply is not None and reply.body else "") or "no answer"
        raise BluezUnavailable(f"BlueZ is not running on the system bus ({why})")
    objects: dict[str, dict[str, dict[str, Any]]] = reply.body[0]
    facts = BluezFacts()
    for path, interfaces in sorted(objects.items()):
        adapter = interfaces.get("org.bluez.Adapter1")
        if adapter is not None:
            facts.adapters.append(
                Adapter(
                    path,
                    str(_value(adapter, "Address", "")),
                    bool(_value(adapter, "Powered", False)),
                )
            )
        device = interfaces.get("org.bluez.Device1")
        if device is not None:
            address = str(_value(device, "Address", "")).upper()
            battery = interfaces.get("org.bluez.Battery1")
            facts.accessories[address] = Accessory(
                address,
                str(_value(device, "Alias", "") or _value(device, "Name", "")),
                bool(_value(device, "Connected", False)),
                bool(_value(device, "Paired", False)),
                int(_value(battery, "Percentage", 0)) if battery is not None else None,
            )
    return facts
