"""The room key authority: the admin's signing key, each room's epoch secret and approved members,
kept in one key file apart from the server's database (possibly on another machine).

Every operation that changes something saves the file before it returns the bundles to deliver,
so the server can never hold a room key the file does not know. A failed save raises
:class:`AuthorityError` and changes nothing, neither the file nor this object.

Membership and epochs
---------------------
* :meth:`Authority.add_room` starts epoch 1 with a fresh secret and no members.
* :meth:`Authority.approve` adds a member only if the fingerprint the admin typed (read off the
  device's console) matches the key the server handed over: a server that substituted a key of
  its own is caught there (:class:`FingerprintMismatch`). A new member gets the next sender index
  and the *current* epoch, wrapped for it alone: no rotation on a join. Nothing is kept of the
  epoch's past audio by pttd, so the newcomer has nothing old to decrypt; but the server passes
  every packet on, and a server that recorded the epoch's earlier packets could hand them to the
  newcomer, who could then decrypt them. Call :meth:`Authority.rotate` after an approval when
  that matters. The other members' rosters do not name the newcomer until they get a bundle of
  a later epoch or a re-issue (:meth:`Authority.bundles`): until then they can decrypt the
  newcomer (its key derives from the epoch secret and its index) but not put a name to it.
* The same name approved again with the same key: nothing changes, its bundle is sealed again.
  The same name with another key (a device paired anew, a stolen one replaced) is a key change:
  the new key gets a new sender index and the epoch is rotated for everyone, so the old key gets
  no new epoch.
* :meth:`Authority.remove` (and :meth:`Authority.remove_everywhere`) starts a new epoch wrapped
  only for those who remain. :meth:`Authority.rotate` starts one for all current members.
* Sender indexes are never reused within a room (a removed member's key ids never reappear) and
  epoch numbers only grow; a device refuses an epoch older than the one it holds.

The key file
------------
JSON, 0600, written atomically (a temporary file in the same directory, fsync, rename, fsync of
the directory)::

    {"format": "pttd key authority", "version": 1, "created_at": 1700000000.0,
     "signing_key": "<base64url of the Ed25519 private key, 32 bytes>",
     "public_key": "<base64url of the Ed25519 public key>",
     "rooms": {"<room>": {
         "suite": 1, "epoch": 3, "epoch_secret": "<base64url, 32 bytes>", "next_index": 4,
         "members": {"<name>": {"index": 0, "public_key": "<IdentityPublicKey.to_text()>",
                                "fingerprint": "12345 67890 …", "approved_at": 1700000000.0}},
         "history": [{"epoch": 1, "reason": "room created", "at": 1700000000.0}, …]}}}

Only the current epoch's secret is kept; ``history`` has the numbers, reasons and times of the
epochs, never an old secret.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from pttd.e2ee.keys import (
    EPOCH_SECRET_BYTES,
    MAX_EPOCH,
    MAX_ROSTER,
    MAX_SENDER_INDEX,
    MAX_SUITE,
    SFRAME_DEFAULT_SUITE,
    AuthorityKey,
    AuthorityPublicKey,
    E2eeError,
    Fingerprint,
    IdentityPublicKey,
    KeyFormatError,
    RoomKey,
    b64url_decode,
    b64url_encode,
    check_name,
    new_epoch_secret,
    seal_bundle,
)

FORMAT: Final = "pttd key authority"
FILE_VERSION: Final = 1
CREATE_COMMAND: Final = "pttd keys init"
"""The admin command that makes a key authority file, named when the file is missing."""

Bundles = list[tuple[str, bytes]]
"""``(member name, bundle)`` pairs to deliver, in sender-index order."""


class AuthorityError(E2eeError):
    """The key authority file cannot be used, or an operation is refused: one line, naming the
    file or the room and member, never a secret."""


class FingerprintMismatch(AuthorityError):
    """The key the server holds for a device does not match the fingerprint read on the device."""


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """An approved member, as the admin sees it."""

    name: str
    index: int
    fingerprint: str  # the 40 digits, grouped
    approved_at: float


@dataclass(frozen=True, slots=True)
class EpochRecord:
    """One epoch of a room: its number, why it started, when."""

    epoch: int
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class _Member:
    index: int
    public_key: IdentityPublicKey
    approved_at: float


@dataclass(slots=True)
class _Room:
    suite: int
    epoch: int
    epoch_secret: bytes = field(repr=False)
    next_index: int
    members: dict[str, _Member]
    history: list[EpochRecord]

    def copy(self) -> _Room:
        return replace(self, members=dict(self.members), history=list(self.history))


class Authority:
    """A room key authority and its key file: :meth:`create` one, :meth:`load` it after."""

    def __init__(
        self,
        path: Path,
        key: AuthorityKey,
        rooms: dict[str, _Room],
        created_at: float,
        clock: Callable[[], float],
    ) -> None:
        self._path = path
        self._key = key
        self._rooms = rooms
        self._created_at = created_at
        self._clock = clock

    # --- the file ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> Authority:
        """A new authority with a new signing key and no rooms, saved at ``path`` (0600).
        AuthorityError when a file is already there: it is never overwritten."""
        file = Path(path)
        if file.exists() or file.is_symlink():
            raise AuthorityError(
                f"{file}: a file is already there; a key authority is never written over "
                "(its private key may be the only copy)"
            )
        if not file.parent.is_dir():
            raise AuthorityError(f"{file}: the directory {file.parent} does not exist")
        authority = cls(file, AuthorityKey.generate(), {}, clock(), clock)
        _create_exclusively(file, authority._serialise(authority._rooms))
        return authority

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> Authority:
        """The authority saved at ``path``. AuthorityError, one line naming the file and what to
        do, when it is missing, unreadable, open to other users, or not a key authority file."""
        file = Path(path)
        try:
            fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise AuthorityError(
                f"{file}: no key authority file there; create one with `{CREATE_COMMAND} {file}`"
            ) from None
        except PermissionError:
            raise AuthorityError(
                f"{file}: cannot read the key authority file: permission denied "
                "(run this as the user who owns it)"
            ) from None
        except OSError as e:
            raise AuthorityError(
                f"{file}: cannot read the key authority file: {e.strerror}"
            ) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise AuthorityError(f"{file}: not a regular file, so not a key authority file")
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                raise AuthorityError(
                    f"{file}: other users may read or change it (mode {mode:04o}) but a private "
                    f"key file must be 0600: chmod 600 {file}"
                )
            with os.fdopen(fd, "rb", closefd=False) as stream:
                raw = stream.read()
        except OSError as e:
            raise AuthorityError(
                f"{file}: cannot read the key authority file: {e.strerror}"
            ) from None
        finally:
            os.close(fd)
        return cls._parse(file, raw, clock)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def public_key(self) -> AuthorityPublicKey:
        """What the pairing link carries (``public_key.to_text()``)."""
        return self._key.public

    def _serialise(self, rooms: dict[str, _Room]) -> bytes:
        data = {
            "format": FORMAT,
            "version": FILE_VERSION,
            "created_at": self._created_at,
            "signing_key": b64url_encode(self._key.to_bytes()),
            "public_key": self._key.public.to_text(),
            "rooms": {
                name: {
                    "suite": room.suite,
                    "epoch": room.epoch,
                    "epoch_secret": b64url_encode(room.epoch_secret),
                    "next_index": room.next_index,
                    "members": {
                        member_name: {
                            "index": m.index,
                            "public_key": m.public_key.to_text(),
                            "fingerprint": m.public_key.fingerprint.digits,
                            "approved_at": m.approved_at,
                        }
                        for member_name, m in room.members.items()
                    },
                    "history": [
                        {"epoch": h.epoch, "reason": h.reason, "at": h.at} for h in room.history
                    ],
                }
                for name, room in rooms.items()
            },
        }
        return (json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()

    @classmethod
    def _parse(cls, file: Path, raw: bytes, clock: Callable[[], float]) -> Authority:
        def bad(what: str) -> AuthorityError:
            return AuthorityError(f"{file}: not a usable key authority file: {what}")

        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise bad("not UTF-8 text") from None
        except json.JSONDecodeError as e:
            raise bad(f"not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        except (ValueError, RecursionError):
            raise bad("not JSON") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise bad(f'no "format": "{FORMAT}"')
        version = data.get("version")
        if version != FILE_VERSION:
            shown = version if _is_int(version) else type(version).__name__
            raise bad(f"format version {shown}, this pttd reads version {FILE_VERSION}")

        def get(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
            value: Any = obj.get(key)
            if kind is float and _is_int(value):
                try:
                    value = float(value)
                except OverflowError:
                    raise bad(f"{where}{key} is out of range") from None
            if not isinstance(value, kind) or (kind is int and not _is_int(value)):
                raise bad(f"{where}{key} is missing or not {_KIND_NAMES[kind]}")
            return value

        def secret(obj: dict[str, Any], key: str, size: int, where: str) -> bytes:
            try:
                value = b64url_decode(get(obj, key, str, where))
            except KeyFormatError:
                value = b""
            if len(value) != size:
                raise bad(f"{where}{key} is not {size} bytes of base64url")
            return value

        try:
            key = AuthorityKey.from_bytes(secret(data, "signing_key", 32, ""))
        except KeyFormatError:
            raise bad("signing_key is not an Ed25519 private key") from None
        if get(data, "public_key", str, "") != key.public.to_text():
            raise bad("public_key is not the signing key's public key")
        created_at = get(data, "created_at", float, "")
        rooms: dict[str, _Room] = {}
        for room_name, room_data in get(data, "rooms", dict, "").items():
            where = f"rooms[{room_name!r}]."
            try:
                check_name(room_name, "room name")
            except KeyFormatError as e:
                raise bad(f"rooms: {e}") from None
            if not isinstance(room_data, dict):
                raise bad(f"rooms[{room_name!r}] is not an object")
            suite = get(room_data, "suite", int, where)
            epoch = get(room_data, "epoch", int, where)
            next_index = get(room_data, "next_index", int, where)
            if not 1 <= suite <= MAX_SUITE:
                raise bad(f"{where}suite {suite} is not between 1 and {MAX_SUITE}")
            if not 1 <= epoch <= MAX_EPOCH:
                raise bad(f"{where}epoch {epoch} is not between 1 and {MAX_EPOCH}")
            if not 0 <= next_index <= MAX_SENDER_INDEX + 1:
                raise bad(f"{where}next_index {next_index} is out of range")
            members: dict[str, _Member] = {}
            used: set[int] = set()
            for member_name, m in get(room_data, "members", dict, where).items():
                at = f"{where}members[{member_name!r}]."
                try:
                    check_name(member_name, "member name")
                except KeyFormatError as e:
                    raise bad(f"{where}members: {e}") from None
                if not isinstance(m, dict):
                    raise bad(f"{where}members[{member_name!r}] is not an object")
                index = get(m, "index", int, at)
                if not 0 <= index < next_index or index in used:
                    raise bad(f"{at}index {index} is used twice or not below next_index")
                used.add(index)
                try:
                    public_key = IdentityPublicKey.from_text(get(m, "public_key", str, at))
                except KeyFormatError as e:
                    raise bad(f"{at}public_key: {e}") from None
                try:
                    fingerprint_ok = Fingerprint.parse(get(m, "fingerprint", str, at)).matches(
                        public_key.fingerprint
                    )
                except KeyFormatError:
                    fingerprint_ok = False
                if not fingerprint_ok:
                    raise bad(f"{at}fingerprint is not the fingerprint of its public_key")
                members[member_name] = _Member(index, public_key, get(m, "approved_at", float, at))
            if len(members) > MAX_ROSTER:
                raise bad(f"{where}members: {len(members)} members, over {MAX_ROSTER}")
            history: list[EpochRecord] = []
            for n, h in enumerate(get(room_data, "history", list, where)):
                if not isinstance(h, dict):
                    raise bad(f"{where}history[{n}] is not an object")
                at = f"{where}history[{n}]."
                record = EpochRecord(
                    get(h, "epoch", int, at), get(h, "reason", str, at), get(h, "at", float, at)
                )
                if history and record.epoch <= history[-1].epoch:
                    raise bad(f"{where}history: epochs do not grow")
                history.append(record)
            if not history or history[-1].epoch != epoch:
                raise bad(f"{where}history does not end with the current epoch {epoch}")
            rooms[room_name] = _Room(
                suite=suite,
                epoch=epoch,
                epoch_secret=secret(room_data, "epoch_secret", EPOCH_SECRET_BYTES, where),
                next_index=next_index,
                members=members,
                history=history,
            )
        return cls(file, key, rooms, created_at, clock)

    def _save(self, rooms: dict[str, _Room]) -> None:
        """Write ``rooms`` to the file, then make them this object's. AuthorityError, with the
        file and this object as they were, when the file cannot be replaced."""
        data = self._serialise(rooms)
        directory = self._path.parent
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self._path.name}.", suffix=".tmp", dir=directory)
        except OSError as e:
            raise self._save_failed(e) from None
        try:
            try:
                os.fchmod(fd, 0o600)
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._path)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise self._save_failed(e) from None
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._rooms = rooms  # the new file is in place: from here on it is the truth
        with contextlib.suppress(OSError):  # durability of the rename; the file is already new
            _fsync_directory(directory)

    def _save_failed(self, e: OSError) -> AuthorityError:
        return AuthorityError(
            f"{self._path}: could not save the key authority file ({e.strerror or e}); "
            "nothing was changed, the file is as it was"
        )

    # --- reading ----------------------------------------------------------------------------

    def rooms(self) -> list[str]:
        """The rooms with room keys, sorted."""
        return sorted(self._rooms)

    def epoch(self, room: str) -> int:
        """The room's current epoch number."""
        return self._room(room).epoch

    def suite(self, room: str) -> int:
        """The room's SFrame cipher suite id."""
        return self._room(room).suite

    def members(self, room: str) -> list[MemberInfo]:
        """The room's approved members, in sender-index order."""
        r = self._room(room)
        return [
            MemberInfo(name, m.index, m.public_key.fingerprint.digits, m.approved_at)
            for name, m in sorted(r.members.items(), key=lambda item: item[1].index)
        ]

    def history(self, room: str) -> list[EpochRecord]:
        """The room's epochs, oldest first (numbers, reasons, times; no secrets)."""
        return list(self._room(room).history)

    def bundles(self, room: str) -> Bundles:
        """The current epoch sealed for every member (to publish again); changes nothing."""
        return self._seal_all(room, self._room(room))

    # --- changing ---------------------------------------------------------------------------

    def add_room(self, room: str, suite: int = SFRAME_DEFAULT_SUITE) -> None:
        """Start ``room`` at epoch 1 with a fresh secret and no members. AuthorityError when the
        room already has keys or ``suite`` is not a 16-bit suite id (1 and up)."""
        _name(room, "room")
        if room in self._rooms:
            raise AuthorityError(
                f"room {room!r} already has room keys (epoch {self._rooms[room].epoch}); "
                "nothing was changed"
            )
        if not _is_int(suite) or not 1 <= suite <= MAX_SUITE:
            raise AuthorityError(f"SFrame suite {suite!r} is not between 1 and {MAX_SUITE}")
        rooms = self._copy()
        rooms[room] = _Room(
            suite=suite,
            epoch=1,
            epoch_secret=new_epoch_secret(),
            next_index=0,
            members={},
            history=[EpochRecord(1, "room created", self._clock())],
        )
        self._save(rooms)

    def approve(
        self, room: str, name: str, public_key: IdentityPublicKey, typed_fingerprint: str
    ) -> Bundles:
        """Approve device (or client) ``name``'s ``public_key`` for ``room`` if
        ``typed_fingerprint`` (what the installer read off the device) is its fingerprint; the
        bundles to deliver (see the module's docstring for joins and key changes).
        FingerprintMismatch when the fingerprints differ, AuthorityError when the typed text is
        not a fingerprint; nothing is approved then."""
        r = self._room(room)
        _name(name, "member name")
        try:
            typed = Fingerprint.parse(typed_fingerprint)
        except KeyFormatError as e:
            raise AuthorityError(
                f"what was typed is not a fingerprint: {e}; nothing was approved"
            ) from None
        if not typed.matches(public_key.fingerprint):
            raise FingerprintMismatch(
                f"the key the server has for {name!r} does not match the fingerprint read on the "
                "device; nothing was approved (check the digits, or pair the device again)"
            )
        existing = r.members.get(name)
        if existing is not None and existing.public_key == public_key:
            return [(name, self._seal(room, r, name))]
        for other_name, other in r.members.items():
            if other.public_key == public_key:
                raise AuthorityError(
                    f"this key is already approved in room {room!r} as {other_name!r}; remove "
                    "that member first; nothing was approved"
                )
        if existing is None and len(r.members) >= MAX_ROSTER:
            raise AuthorityError(f"room {room!r} has {MAX_ROSTER} members, the most it can have")
        if r.next_index > MAX_SENDER_INDEX:
            raise AuthorityError(
                f"room {room!r} has used all {MAX_SENDER_INDEX + 1} sender indexes (they are "
                "never reused); make a new room"
            )
        rooms = self._copy()
        new = rooms[room]
        new.members[name] = _Member(new.next_index, public_key, self._clock())
        new.next_index += 1
        if existing is None:
            bundles = [(name, self._seal(room, new, name))]
        else:  # a key change: the old key must get no new epoch
            self._new_epoch(room, new, f"{name}'s key changed")
            bundles = self._seal_all(room, new)
        self._save(rooms)
        return bundles

    def remove(self, room: str, name: str) -> Bundles:
        """Remove member ``name`` from ``room`` and start a new epoch for those who remain;
        their bundles."""
        r = self._room(room)
        if name not in r.members:
            raise AuthorityError(f"{name!r} is not a member of room {room!r}; nothing was changed")
        rooms = self._copy()
        new = rooms[room]
        del new.members[name]
        self._new_epoch(room, new, f"{name} removed")
        bundles = self._seal_all(room, new)
        self._save(rooms)
        return bundles

    def remove_everywhere(self, name: str) -> dict[str, Bundles]:
        """Remove member ``name`` from every room it is in (a revoked device), each of those
        rooms starting a new epoch; their bundles by room (empty when it was in none)."""
        rooms = self._copy()
        result: dict[str, Bundles] = {}
        for room in sorted(rooms):
            new = rooms[room]
            if name in new.members:
                del new.members[name]
                self._new_epoch(room, new, f"{name} removed")
                result[room] = self._seal_all(room, new)
        if result:
            self._save(rooms)
        return result

    def rotate(self, room: str, reason: str = "rotated by the admin") -> Bundles:
        """A new epoch (fresh secret) of ``room`` for all its current members; their bundles."""
        self._room(room)
        rooms = self._copy()
        self._new_epoch(room, rooms[room], reason)
        bundles = self._seal_all(room, rooms[room])
        self._save(rooms)
        return bundles

    # --- inside -----------------------------------------------------------------------------

    def _room(self, room: str) -> _Room:
        r = self._rooms.get(room)
        if r is None:
            raise AuthorityError(f"no room {room!r} in the key authority file {self._path}")
        return r

    def _copy(self) -> dict[str, _Room]:
        return {name: room.copy() for name, room in self._rooms.items()}

    def _new_epoch(self, room: str, r: _Room, reason: str) -> None:
        if r.epoch >= MAX_EPOCH:
            raise AuthorityError(f"room {room!r} is at its last epoch; make a new room")
        r.epoch += 1
        r.epoch_secret = new_epoch_secret()
        r.history.append(EpochRecord(r.epoch, reason, self._clock()))

    def _room_key(self, room: str, r: _Room, name: str) -> RoomKey:
        roster = tuple(sorted((m.index, member) for member, m in r.members.items()))
        return RoomKey(
            room=room,
            epoch=r.epoch,
            suite=r.suite,
            sender_index=r.members[name].index,
            roster=roster,
            epoch_secret=r.epoch_secret,
        )

    def _seal(self, room: str, r: _Room, name: str) -> bytes:
        try:
            return seal_bundle(
                self._key, self._room_key(room, r, name), name, r.members[name].public_key
            )
        except KeyFormatError as e:
            raise AuthorityError(f"room {room!r}, member {name!r}: {e}") from None

    def _seal_all(self, room: str, r: _Room) -> Bundles:
        order = sorted(r.members, key=lambda member: r.members[member].index)
        return [(name, self._seal(room, r, name)) for name in order]

    def __repr__(self) -> str:
        return f"Authority({str(self._path)!r}, public_key={self._key.public.to_text()!r})"


_KIND_NAMES: Final[dict[type, str]] = {
    int: "an integer",
    float: "a number",
    str: "a string",
    dict: "an object",
    list: "a list",
}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _name(name: object, what: str) -> str:
    try:
        return check_name(name, what)
    except KeyFormatError as e:
        raise AuthorityError(str(e)) from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _create_exclusively(path: Path, data: bytes) -> None:
    """Write a new file at ``path`` (0600) without ever replacing one: written in full under a
    temporary name first, then hard-linked into place (which fails if ``path`` exists); where
    hard links are not possible, created with O_EXCL and written in place."""
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        try:
            try:
                os.fchmod(fd, 0o600)
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # FileExistsError when a file is there: never replaced
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                _create_in_place(path, data)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        _fsync_directory(directory)
    except FileExistsError:
        raise AuthorityError(
            f"{path}: a file is already there; a key authority is never written over "
            "(its private key may be the only copy)"
        ) from None
    except OSError as e:
        raise AuthorityError(
            f"{path}: could not create the key authority file ({e.strerror or e})"
        ) from None


def _create_in_place(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
