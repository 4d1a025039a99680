"""Persisted device state, apart from the static config: the credential, a few settings, and the
installer console's PIN record. Every file of device state is written here, and only here.

Files live in the state directory, each JSON, written atomically (a temporary file in the same
directory, fsync, rename, fsync of the directory), so a power cut leaves the old or the new
version, never a broken one. The credential file is 0600. A failed write (disk full, read-only
directory) raises :class:`StoreError` naming the file, and the old state stays intact.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pttd.errors import StoreError
from pttd.radio.status import PinRecord

log = logging.getLogger(__name__)

CREDENTIAL_FILE = "credential.json"
SETTINGS_FILE = "settings.json"
PIN_FILE = "console-pin.json"


@dataclass(frozen=True, slots=True)
class Credential:
    server_url: str
    device_name: str
    auth_token: str = field(repr=False)
    rooms: tuple[str, ...]
    paired_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Settings:
    """What the user changes at the device and expects to find again after a restart."""

    room: str | None = None
    volume: int | None = None
    values: dict[str, Any] = field(default_factory=dict)  # console `config set` overrides


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Store:
    """The state directory: ``Store(path).credential()``, ``.save_credential(c)``, …"""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)

    def _ensure_dir(self) -> None:
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"state directory {self.dir}: {exc.strerror}") from exc

    def _read(self, name: str) -> dict[str, Any] | None:
        path = self.dir / name
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{path}: cannot read: {exc.strerror}") from exc
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise StoreError(f"{path}: not valid JSON (damaged?)") from exc
        if not isinstance(data, dict):
            raise StoreError(f"{path}: not a JSON object")
        return data

    def _write(self, name: str, data: dict[str, Any]) -> None:
        self._ensure_dir()
        path = self.dir / name
        try:
            write_atomically(path, json.dumps(data, indent=1, sort_keys=True).encode())
        except OSError as exc:
            raise StoreError(
                f"{path}: cannot save ({exc.strerror}); the old state is kept"
            ) from exc

    # -- credential ---------------------------------------------------------------------------

    def credential(self) -> Credential | None:
        data = self._read(CREDENTIAL_FILE)
        if data is None:
            return None
        try:
            return Credential(
                server_url=str(data["server_url"]),
                device_name=str(data["device_name"]),
                auth_token=str(data["auth_token"]),
                rooms=tuple(str(r) for r in data["rooms"]),
                paired_at=float(data.get("paired_at", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{self.dir / CREDENTIAL_FILE}: incomplete credential") from exc

    def save_credential(self, credential: Credential) -> None:
        data = asdict(credential)
        data["rooms"] = list(credential.rooms)
        data["paired_at"] = credential.paired_at or time.time()
        self._write(CREDENTIAL_FILE, data)
        log.info("credential for %s saved", credential.device_name)

    def _remove(self, name: str) -> None:
        """Remove ``name`` and the temporary copies of it that crashes left behind mid-write: a
        wipe must not leave a token in one."""
        for path in [self.dir / name, *self.dir.glob(f".{name}.*.tmp")]:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise StoreError(f"{path}: cannot remove: {exc.strerror}") from exc

    def wipe_credential(self) -> None:
        self._remove(CREDENTIAL_FILE)
        log.info("credential wiped")

    # -- settings -------------------------------------------------------------------------------

    def settings(self) -> Settings:
        try:
            data = self._read(SETTINGS_FILE)
        except StoreError as exc:
            log.warning("%s; using defaults", exc)  # settings are not worth refusing to start
            return Settings()
        if data is None:
            return Settings()
        room = data.get("room")
        volume = data.get("volume")
        values = data.get("values")
        return Settings(
            room=room if isinstance(room, str) else None,
            volume=volume if isinstance(volume, int) and 0 <= volume <= 100 else None,
            values=values if isinstance(values, dict) else {},
        )

    def save_settings(self, settings: Settings) -> None:
        self._write(SETTINGS_FILE, asdict(settings))

    def update_settings(self, **changes: Any) -> Settings:
        current = self.settings()
        data = asdict(current)
        data.update(changes)
        new = Settings(**data)
        self.save_settings(new)
        return new

    # -- the installer PIN ------------------------------------------------------------------------

    def pin(self) -> PinRecord | None:
        """The console's PIN record; None when no PIN is set. StoreError when it cannot be read
        or is damaged."""
        data = self._read(PIN_FILE)
        if data is None:
            return None
        try:
            return PinRecord.from_json(data)
        except ValueError as exc:
            raise StoreError(f"{self.dir / PIN_FILE}: {exc}") from None

    def save_pin(self, record: PinRecord) -> None:
        self._write(PIN_FILE, record.to_json())

    def wipe_pin(self) -> None:
        self._remove(PIN_FILE)

    def wipe(self) -> None:
        """Factory reset: credential, settings and the installer PIN."""
        self.wipe_credential()
        self._remove(SETTINGS_FILE)
        self.wipe_pin()
