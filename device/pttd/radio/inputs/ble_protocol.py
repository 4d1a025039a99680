"""BLE PTT buttons, sans-I/O: which characteristics to subscribe to, and what their
notifications mean. The bleak adapter (:mod:`pttd.radio.inputs.ble`) only moves data.

The common convention (Pryme PTT-Z and its many clones, made for Zello): GATT service
:data:`PTT_Z_SERVICE`, characteristic :data:`PTT_Z_CHARACTERISTIC`, one notification per edge,
``01`` pressed and ``00`` released. Hand microphones expose the same behaviour under
:data:`HAND_MIC_SERVICE`. Other buttons differ in UUIDs and values (some send ASCII, ``ELET1`` /
``ELET2``): everything is configurable (:class:`BleButtonSpec`), and a value matches a
notification that *starts with* it. A second button on the same accessory (SOS) maps to the
emergency button when its characteristic is configured.

Battery level comes from the standard Battery Service (:data:`BATTERY_SERVICE`, level
:data:`BATTERY_LEVEL`, one byte, percent).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from pttd.radio.config import PTT_Z_SERVICE, PttConfig, hex_list, normal_address, normal_uuid
from pttd.radio.inputs import Button

PTT_Z_CHARACTERISTIC: Final = "0000ffe1-0000-1000-8000-00805f9b34fb"
HAND_MIC_SERVICE: Final = "28393551-5345-5209-fd67-45287c0bdac5"
BATTERY_SERVICE: Final = "0000180f-0000-1000-8000-00805f9b34fb"
BATTERY_LEVEL: Final = "00002a19-0000-1000-8000-00805f9b34fb"
PTT_SERVICES: Final = (PTT_Z_SERVICE, HAND_MIC_SERVICE)  # what `bt scan` calls a PTT button


@dataclass(frozen=True, slots=True)
class BleButtonSpec:
    """One BLE accessory, bound by its address (never to whatever is nearby)."""

    address: str
    service: str = PTT_Z_SERVICE  # empty: either PTT service (PTT-Z, hand microphone)
    characteristic: str = ""  # empty: every notifying characteristic of the service
    press: tuple[bytes, ...] = (b"\x01",)
    release: tuple[bytes, ...] = (b"\x00",)
    sos_characteristic: str = ""  # empty: no SOS button
    sos_press: tuple[bytes, ...] = (b"\x01",)
    sos_release: tuple[bytes, ...] = (b"\x00",)

    @property
    def source(self) -> str:
        return f"ble:{self.address}"

    @classmethod
    def from_config(cls, ptt: PttConfig) -> BleButtonSpec:
        """The spec of a ``[[ptt]]`` of kind ``ble`` (checked when the config was loaded)."""
        return cls(
            normal_address(ptt.address),
            normal_uuid(ptt.service),
            normal_uuid(ptt.characteristic) if ptt.characteristic else "",
            hex_list(ptt.press),
            hex_list(ptt.release),
            normal_uuid(ptt.sos_characteristic) if ptt.sos_characteristic else "",
            hex_list(ptt.sos_press),
            hex_list(ptt.sos_release),
        )


@dataclass(frozen=True, slots=True)
class Characteristic:
    """What the adapter found on the accessory (after service discovery)."""

    uuid: str
    service: str
    properties: tuple[str, ...] = ()

    @property
    def notifies(self) -> bool:
        return "notify" in self.properties or "indicate" in self.properties


class NotAPttButton(Exception):
    """The accessory has none of the characteristics its spec names."""


@dataclass
class BleDecoder:
    """Notifications in, button edges out. ``plan`` says which characteristics to subscribe to
    (and for which button); ``notification`` decodes one."""

    spec: BleButtonSpec
    _buttons: dict[str, Button] = field(default_factory=dict)
    unknown: int = 0  # notifications that were neither a press nor a release (ignored)

    def plan(self, found: Sequence[Characteristic]) -> dict[str, Button]:
        """Characteristic UUID → button, for the characteristics to subscribe to. NotAPttButton
        (naming what is missing) when the PTT characteristic is not there; an SOS
        characteristic that is missing is left out."""
        spec, plan = self.spec, {}
        for c in found:
            if not c.notifies:
                continue
            if spec.sos_characteristic and c.uuid == spec.sos_characteristic:
                plan[c.uuid] = Button.EMERGENCY
            elif spec.characteristic:
                if c.uuid == spec.characteristic:
                    plan[c.uuid] = Button.PTT
            elif c.service == spec.service or (not spec.service and c.service in PTT_SERVICES):
                plan[c.uuid] = Button.PTT
        if Button.PTT not in plan.values():
            wanted = (
                f"notifying characteristic {spec.characteristic}"
                if spec.characteristic
                else f"notifying characteristic in service {spec.service}"
                if spec.service
                else "notifying characteristic in a PTT service (ffe0, or a hand microphone's)"
            )
            raise NotAPttButton(f"{spec.address} has no {wanted}")
        self._buttons = plan
        return dict(plan)

    def notification(self, uuid: str, data: bytes) -> tuple[Button, bool] | None:
        """The edge a notification of characteristic ``uuid`` says (None: none)."""
        button = self._buttons.get(uuid)
        if button is None:
            return None
        sos = button is Button.EMERGENCY
        press = self.spec.sos_press if sos else self.spec.press
        release = self.spec.sos_release if sos else self.spec.release
        if any(data.startswith(v) for v in press):
            return (button, True)
        if any(data.startswith(v) for v in release):
            return (button, False)
        self.unknown += 1
        return None


def battery_percent(data: bytes) -> int | None:
    """The Battery Level characteristic's value (one byte, 0 to 100); None if it is not one."""
    return data[0] if len(data) >= 1 and data[0] <= 100 else None


def looks_like_ptt(name: str | None, service_uuids: Iterable[str]) -> bool:
    """Whether an advertisement looks like a PTT accessory: it advertises a PTT service, or
    its name says PTT."""
    uuids = {u.lower() for u in service_uuids}
    return bool(uuids & set(PTT_SERVICES)) or bool(name and "ptt" in name.lower())


def describe_state(connected: bool, battery: int | None, last_error: str, attempts: int) -> str:
    """A BLE accessory's state for people (status, doctor)."""
    if connected:
        return "connected" + (f", battery {battery}%" if battery is not None else "")
    why = f": {last_error}" if last_error else ""
    tries = f" ({attempts} attempts)" if attempts > 1 else ""
    return f"not connected{tries}{why}"
