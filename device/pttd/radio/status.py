"""What a running device reports of itself (:meth:`pttd.radio.daemon.Device.status`): one frozen
snapshot, read by the installer console (``status``, the prompt) and the tests. A module of its
own, without the daemon's imports, so that the console's interpreter stays light."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    device: str  # its name: the server's (from the credential) once paired
    paired: bool
    link: str  # a pttd.radio.machine.Link value: unpaired, connecting, online …
    server: str
    rooms: tuple[str, ...]
    room: str | None
    transmitting: bool
    mic_open: bool
    receiving: bool
    last_error: str
    volume: int
    uptime_s: float
    packets_sent: int
    packets_received: int

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rooms"] = list(self.rooms)
        return data
