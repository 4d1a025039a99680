"""Persisted device state, apart from the static config: the credential, a few settings, and the
installer console's PIN record. Every file of device state is written here, and only here.

Files live in the state directory, each JSON, written atomically (a temporary file in the same
directory, fsync, rename, fsync of the directory), so a power cut leaves the old or the new
version, never a broken one. The credential file is 0600. A failed write (disk full, read-only
directory) raises :class:`StoreError` naming the file, and the old state stays intact.

At the daemon's start (``pttd run``, and so its console) :meth:`Store.open` checks the directory
before anything in it is trusted; the checks read owners and mode bits, never ``access()``, so that
they mean the same when the daemon runs as root. The directory must belong to this process's user
and be writable by nobody else, each file must be a regular file of ours, writable by nobody else.
Anything else is refused with one line naming the path and what to check: whoever could write
there could have planted a credential (the device would talk to their server), settings (no TLS
check, an hour-long transmission), or removed the PIN record (an open console), and a removal
leaves no trace to check. Read bits for others are repaired (0700, 0600) with a warning, since
nothing could have been changed through them; for the credential or the PIN the warning says what
may have leaked and what to do about it.

A settings file writable by others is refused too, rather than set aside as
``settings.json.untrusted`` with the daemon going on with defaults: on a headless radio a warning
in the journal goes unread, the device would then run quietly with other settings than the
installer's (a server address or room set at the console gone), and what made the file writable
may well have touched the rest of the directory; a refused start is seen (the unit fails, the
radio stays off the air) and the line tells the installer what to look at.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import stat
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
IDENTITY_FILE = "identity.json"  # the private identity key of end-to-end encryption
SFRAME_FILE = "sframe.json"  # the SFrame counter generation (counters never repeat)
ROOM_KEYS_FILE = "room-keys.json"  # per room, the highest key epoch accepted (no secret)
STATE_FILES = (
    CREDENTIAL_FILE,
    SETTINGS_FILE,
    PIN_FILE,
    IDENTITY_FILE,
    SFRAME_FILE,
    ROOM_KEYS_FILE,
)
_LEAK = {  # what a file readable by others may have given away, and what to do about it
    CREDENTIAL_FILE: "its token may have been copied: unpair and pair again to be sure",
    IDENTITY_FILE: "its private key may have been copied: unpair and pair again to be sure",
    PIN_FILE: "the PIN's hash may have been copied: set a new PIN ('pin set') to be sure",
}
_RISK = {  # what a file others could write may have been made to do
    CREDENTIAL_FILE: "it may point the device at someone else's server",
    SETTINGS_FILE: "it may have been changed (server address, TLS check, talk time-out ...)",
    PIN_FILE: "the installer PIN in it may have been changed",
    IDENTITY_FILE: "the identity key in it may have been replaced",
    SFRAME_FILE: "the counter generation in it may have been turned back (nonce reuse)",
    ROOM_KEYS_FILE: "its room key epochs may have been turned back (an old key accepted)",
}
_DIR_RISK = "a credential, settings or the PIN record in it may have been planted or removed"


@dataclass(frozen=True, slots=True)
class Credential:
    server_url: str
    device_name: str
    auth_token: str = field(repr=False)
    rooms: tuple[str, ...]
    paired_at: float = 0.0
    # End-to-end encryption: the public half of the identity key made at pairing (its private
    # half is in IDENTITY_FILE), and the room key authority's public key from the pairing link.
    identity_key: str | None = None
    authority_key: str | None = None


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

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> Store:
        """The store at ``directory``, its owner and modes checked first (:meth:`check`): what
        the daemon uses at start. StoreError (one line, naming the path) when it is refused."""
        store = cls(directory)
        store.check()
        return store

    def check(self) -> None:
        """Refuse a state directory that someone else could have written to (owned by another
        user, writable by group or others; a file in it not a regular file of ours, or writable by
        group or others): StoreError saying what to check. Repair read bits for others (the
        directory 0700, files 0600), logging a warning for each. A directory not there yet is
        fine: the first save makes it, 0700."""
        uid = os.geteuid()
        try:
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except NotADirectoryError:
            raise StoreError(f"state directory {self.dir}: not a directory") from None
        except OSError as exc:
            raise StoreError(f"state directory {self.dir}: cannot open: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            self._check_one(fd, f"state directory {self.dir}", uid, 0o700, st, _DIR_RISK)
            searchable = bool(st.st_mode & 0o011)  # by others: its files' read bits mattered
            for name in STATE_FILES:
                self._check_file(fd, name, uid, _LEAK.get(name, "") if searchable else "")
        finally:
            os.close(fd)

    def _check_file(self, dir_fd: int, name: str, uid: int, leak: str) -> None:
        path = self.dir / name
        try:
            before = os.lstat(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(before.st_mode):
            raise StoreError(
                f"{path}: not a regular file ({_kind(before)}): refused; check it (what it is), "
                "then remove it"
            )
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
            )
        except OSError as exc:
            raise StoreError(f"{path}: cannot open: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
                raise StoreError(f"{path}: replaced while being checked: refused; check it")
            self._check_one(fd, str(path), uid, 0o600, st, _RISK[name], leak)
        finally:
            os.close(fd)

    @staticmethod
    def _check_one(
        fd: int, what: str, uid: int, wanted: int, st: os.stat_result, risk: str, leak: str = ""
    ) -> None:
        """Refuse ``what`` (open as ``fd``, ``st``) when another user owns it or group or others
        may write to it (``risk``: what that may have done); repair other modes to ``wanted``."""
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid != uid:
            raise StoreError(
                f"{what} belongs to uid {st.st_uid}, not to this service's user (uid {uid}): "
                f"refused, {risk}; check it, then give it to the service's user (chown) or remove "
                "it"
            )
        if mode & 0o022:
            raise StoreError(
                f"{what} is writable by group or others (mode {mode:04o}): refused, {risk}; "
                f"check it, then chmod {wanted:o} it (or remove it)"
            )
        if mode != wanted:
            try:
                os.fchmod(fd, wanted)
            except OSError as exc:
                raise StoreError(f"{what}: mode {mode:04o}, cannot set {wanted:04o}") from exc
            log.warning(
                "%s was mode %04o: set to %04o%s",
                what,
                mode,
                wanted,
                f"; others could read it, {leak}" if mode & 0o044 and leak else "",
            )

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
                identity_key=_optional_text(data.get("identity_key")),
                authority_key=_optional_text(data.get("authority_key")),
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
        """The credential goes, and with it the identity key made at its pairing."""
        self._remove(CREDENTIAL_FILE)
        self._remove(IDENTITY_FILE)
        self._remove(ROOM_KEYS_FILE)
        log.info("credential wiped")

    # -- end-to-end encryption ----------------------------------------------------------------

    def identity(self) -> bytes | None:
        """The private identity key made at pairing (None: none yet); StoreError if unreadable."""
        data = self._read(IDENTITY_FILE)
        if data is None:
            return None
        try:
            return base64.b64decode(str(data["private"]), validate=True)
        except (KeyError, ValueError) as exc:
            raise StoreError(f"{self.dir / IDENTITY_FILE}: not an identity key") from exc

    def save_identity(self, private: bytes) -> None:
        self._write(IDENTITY_FILE, {"private": base64.b64encode(private).decode("ascii")})
        log.info("identity key saved")

    def room_epochs(self) -> dict[str, int]:
        """Per room, the highest key epoch this identity accepted ({} for none)."""
        data = self._read(ROOM_KEYS_FILE) or {}
        return {
            str(room): epoch
            for room, epoch in data.items()
            if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch > 0
        }

    def save_room_epochs(self, epochs: dict[str, int]) -> None:
        self._write(ROOM_KEYS_FILE, dict(epochs))

    def has_generation(self) -> bool:
        """Whether the SFrame counter state exists (made at pairing, with the identity)."""
        return (self.dir / SFRAME_FILE).exists()

    def next_generation(self) -> int:
        """A number never given before by this state directory (1, 2, …), persisted before it
        is returned: each start of the daemon sends under counters of a generation of its own,
        so that an SFrame counter never repeats under one key, whatever was sent before."""
        data = self._read(SFRAME_FILE) or {}
        last = data.get("generation", 0)
        if not isinstance(last, int) or last < 0:
            raise StoreError(f"{self.dir / SFRAME_FILE}: not a counter generation")
        self._write(SFRAME_FILE, {"generation": last + 1})
        return last + 1

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


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"
