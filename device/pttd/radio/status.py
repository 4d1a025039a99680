"""Plain records the device keeps and the installer console reads, in a module of their own
without the daemon's or the store's imports, so that the console's interpreter stays light:
what a running device reports of itself (:meth:`pttd.radio.daemon.Device.status`), and the
installer PIN's record as the store saves it."""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pttd import kdf


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
    # End-to-end encryption, nothing secret: the identity key's fingerprint (digits; None: no
    # identity key), and each encrypted room's key state ("encrypted, epoch 3 …", "waiting …").
    fingerprint: str | None = None
    room_keys: tuple[tuple[str, str], ...] = ()
    # Inputs that keep a link (BLE accessories): their name ("ble:AA:…") and state
    # ("connected, battery 87%", "not connected (3 attempts): …").
    accessories: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rooms"] = list(self.rooms)
        data["room_keys"] = dict(self.room_keys)
        data["accessories"] = dict(self.accessories)
        return data


@dataclass(frozen=True, slots=True)
class PinRecord:
    """The installer PIN as saved: its hash (a :mod:`pttd.kdf` string: scrypt, a salt of its own)
    and the wrong tries, so that a restart does not reset the back-off."""

    hash: str = field(repr=False)
    failures: int = 0  # wrong PINs in a row (they set the back-off)
    wrong_total: int = 0  # wrong PINs since this PIN was set

    def wrong(self) -> PinRecord:
        return replace(self, failures=self.failures + 1, wrong_total=self.wrong_total + 1)

    def right(self) -> PinRecord:
        return replace(self, failures=0)

    def to_json(self) -> dict[str, Any]:
        return {"hash": self.hash, "failures": self.failures, "wrong_total": self.wrong_total}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PinRecord:
        """The record :meth:`to_json` wrote, or the one versions before :mod:`pttd.kdf` wrote
        (``scheme``, base64 ``salt`` and ``hash``, ``n``, ``r``, ``p``: carried over to the hash
        string, and saved so at the next change); ValueError for anything else."""
        try:
            stored = data["hash"]
            if data.get("scheme") == "scrypt":  # the first format
                stored = kdf.encode(
                    int(data["n"]),
                    int(data["r"]),
                    int(data["p"]),
                    base64.b64decode(data["salt"], validate=True),
                    base64.b64decode(stored, validate=True),
                )
            if not isinstance(stored, str):
                raise TypeError("the hash is not a string")
            kdf.parse(stored)
            record = cls(
                stored,
                failures=int(data.get("failures", 0)),
                wrong_total=int(data.get("wrong_total", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"damaged PIN record: {exc}") from None
        if record.failures < 0 or record.wrong_total < 0:
            raise ValueError("damaged PIN record: negative counts")
        return record
