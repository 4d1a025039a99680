"""The room server's registry: rooms, users, devices, refresh tokens and pairing codes, in SQLite.

One SQLite file, shared by the asyncio server (which calls in through ``asyncio.to_thread``) and by
admin commands run as separate processes while the server runs. Hence: WAL journal mode, a busy
timeout, explicit ``BEGIN IMMEDIATE`` transactions for every write, and a lock around the one
connection of each :class:`Registry` object. The server notices admin changes (revocations) by
polling :meth:`Registry.data_version`, which is cheap.

Secrets never stored in clear (anyone who can read the file must learn nothing they can log on
with) and never logged:

* passwords: scrypt with a random salt per user (:mod:`pttd.kdf`, which the device's installer PIN
  uses too); the KDF parameters are stored with the hash (``scrypt$n$r$p$<salt hex>$<hash hex>``)
  so that they can be raised later;
* device auth tokens and refresh tokens: 256 random bits, so a fast hash is enough; only their
  SHA-256 is stored, indexed, so that a token can be looked up;
* pairing codes: 60 random bits in Crockford base32 (``XXXX-XXXX-XXXX``), short-lived and single
  use; only the SHA-256 of the normalised code is stored.

The file and its ``-wal``/``-shm`` are its owner's only (0600): created so, and repaired at open
when they are not (with a warning), or refused when they cannot be.

No audio is ever stored here.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Final

from pttd import kdf
from pttd.errors import (
    AlreadyExists,
    InvalidArgument,
    InvalidName,
    NotFound,
    PairingError,
    RegistryError,
)
from pttd.server.session import Pairing, Principal
from pttd.wire.messages import (
    MAX_NAME,
    REASON_EXPIRED_CODE,
    REASON_INVALID_CODE,
    REASON_USED_CODE,
)

logger = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
BUSY_TIMEOUT_MS: Final = 5000

TOKEN_BYTES: Final = 32  # device auth tokens and refresh tokens
DEFAULT_REFRESH_TTL: Final = 7 * 86400.0
DEFAULT_CODE_TTL: Final = 600.0
CODE_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I L O U
CODE_LENGTH: Final = 12  # 60 bits
CODE_GROUP: Final = 4
# Used and expired codes are kept this long past their expiry, so that a late redeem is told
# "used code" or "expired code" rather than "invalid code".
CODE_KEEP_AFTER_EXPIRY: Final = 86400.0

# Crockford decoding: letters people confuse with digits read as those digits.
_CODE_TRANSLATION: Final = str.maketrans({"O": "0", "I": "1", "L": "1", "-": None, " ": None})

_SCHEMA: Final = """
CREATE TABLE rooms (
    name TEXT PRIMARY KEY
);
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE user_rooms (
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    room TEXT NOT NULL REFERENCES rooms(name) ON DELETE CASCADE,
    PRIMARY KEY (user, room)
);
CREATE TABLE devices (
    name TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    paired_at REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    last_seen REAL
);
CREATE TABLE device_rooms (
    device TEXT NOT NULL REFERENCES devices(name) ON DELETE CASCADE,
    room TEXT NOT NULL REFERENCES rooms(name) ON DELETE CASCADE,
    PRIMARY KEY (device, room)
);
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user TEXT REFERENCES users(name) ON DELETE CASCADE,
    device TEXT REFERENCES devices(name) ON DELETE CASCADE,
    issued_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    CHECK ((user IS NULL) <> (device IS NULL))
);
CREATE INDEX refresh_tokens_user ON refresh_tokens(user);
CREATE INDEX refresh_tokens_device ON refresh_tokens(device);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens(expires_at);
CREATE TABLE pair_codes (
    code_hash TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL,
    device TEXT
);
CREATE INDEX pair_codes_expiry ON pair_codes(expires_at);
CREATE TABLE pair_code_rooms (
    code_hash TEXT NOT NULL REFERENCES pair_codes(code_hash) ON DELETE CASCADE,
    room TEXT NOT NULL REFERENCES rooms(name) ON DELETE CASCADE,
    PRIMARY KEY (code_hash, room)
);
"""


@dataclass(frozen=True, slots=True)
class PairCode:
    """A new pairing code. ``code`` is the clear code, returned only here, at creation."""

    code: str
    rooms: tuple[str, ...]
    expires_at: float  # unix time

    def __repr__(self) -> str:  # keep the code out of logs and tracebacks
        return f"PairCode(code='<redacted>', rooms={self.rooms!r}, expires_at={self.expires_at!r})"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A paired device, as the admin sees it."""

    name: str
    rooms: tuple[str, ...]
    paired_at: float
    revoked: bool
    last_seen: float | None


# --- names and secrets ------------------------------------------------------------------------


def check_name(name: object, what: str = "name") -> str:
    """Return ``name`` if it is a usable room, user or device name, else raise InvalidName.

    A name is 1 to ``MAX_NAME`` printable characters with no leading or trailing space.
    """
    if not isinstance(name, str):
        raise InvalidName(f"{what} must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidName(f"{what} is empty")
    if len(name) > MAX_NAME:
        raise InvalidName(f"{what} {name[:MAX_NAME]!r}… is longer than {MAX_NAME} characters")
    if not name.isprintable():
        raise InvalidName(f"{what} {name!r} contains a control or non-printable character")
    if name != name.strip():
        raise InvalidName(f"{what} {name!r} has a leading or trailing space")
    return name


def normalise_code(code: str) -> str:
    """A pairing code as stored: upper case, no spaces or dashes, Crockford look-alikes mapped."""
    return code.upper().translate(_CODE_TRANSLATION)


def format_code(raw: str) -> str:
    """``XXXXXXXXXXXX`` → ``XXXX-XXXX-XXXX``."""
    return "-".join(raw[i : i + CODE_GROUP] for i in range(0, len(raw), CODE_GROUP))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$<salt hex>$<hash hex>`` for a new random salt (:func:`pttd.kdf.hash_secret`:
    16 MiB of memory, ~50 ms)."""
    return kdf.hash_secret(password)


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored`` (from :func:`hash_password`), in constant time."""
    try:
        return kdf.verify(password, stored)
    except ValueError:  # a damaged row: refuse, never crash the logon path
        logger.error("unreadable password hash in the registry")
        return False


@functools.cache
def _dummy_hash() -> str:
    """Verified against for unknown users, so that they cost as much time as known ones."""
    return hash_password(secrets.token_urlsafe(16))


# --- the registry ------------------------------------------------------------------------------


class Registry:
    """The server's persistent store. Thread-safe; several processes may open the same file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._create_private(self.path)
        self._make_private(self.path)
        try:
            self._db = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # autocommit; transactions are explicit
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot open registry {self.path}: {exc}") from exc
        try:
            self._setup()
        except sqlite3.Error as exc:
            self._db.close()
            raise RegistryError(
                f"registry {self.path} is not a usable pttd database: {exc}"
            ) from exc
        except BaseException:
            self._db.close()
            raise

    @staticmethod
    def _create_private(path: str) -> None:
        """Create a new database file readable by its owner only (SQLite's -wal/-shm follow)."""
        if path == ":memory:" or path.startswith("file:"):
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        except OSError as exc:
            raise RegistryError(f"cannot create registry {path}: {exc}") from exc
        os.close(fd)

    @staticmethod
    def _make_private(path: str) -> None:
        """An existing file (and its -wal/-shm) that others may read or write is made its
        owner's only (0600), with one warning line; RegistryError, before anything is read, when
        that is not allowed (someone else's file)."""
        if path == ":memory:" or path.startswith("file:"):
            return
        repaired = []
        for name in (path, f"{path}-wal", f"{path}-shm"):
            try:
                mode = stat.S_IMODE(os.stat(name).st_mode)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise RegistryError(f"cannot open registry {name}: {exc.strerror}") from exc
            if not mode & 0o077:
                continue
            try:
                os.chmod(name, 0o600)
            except OSError as exc:
                raise RegistryError(
                    f"registry {name} is open to other users (mode {mode:04o}) and cannot be "
                    f"made private ({exc.strerror}): its owner must run 'chmod 600 {name}'"
                ) from exc
            repaired.append(f"{os.path.basename(name)} {mode:04o}")
        if repaired:
            logger.warning(
                "registry %s was open to other users (%s): made private (0600)",
                path,
                ", ".join(repaired),
            )

    def _setup(self) -> None:
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA foreign_keys = ON")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal" and self.path != ":memory:":
            logger.warning("registry %s: journal mode is %s, not wal", self.path, mode)
        db.execute("PRAGMA synchronous = NORMAL")  # safe with WAL
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise RegistryError(
                f"registry {self.path} has schema version {version}, newer than this pttd "
                f"understands ({SCHEMA_VERSION}); upgrade pttd"
            )
        db.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have created the schema while we waited for the lock.
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                if db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
                    raise RegistryError(
                        f"{self.path} is an SQLite database but not a pttd registry"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                logger.info("created registry %s (schema version %s)", self.path, SCHEMA_VERSION)
            elif version != SCHEMA_VERSION:
                raise RegistryError(
                    f"registry {self.path} has schema version {version}, expected {SCHEMA_VERSION}"
                )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the database connection; further calls raise RegistryError."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({self.path!r})"

    # --- plumbing ----------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, with SQLite errors turned into RegistryError."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise RegistryError(f"registry {self.path}: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``: takes the write lock up front, so that
        check-then-write sequences are atomic across threads and processes)."""
        with self._read() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def data_version(self) -> int:
        """A number that changes when another connection commits (``PRAGMA data_version``)."""
        with self._read() as db:
            return int(db.execute("PRAGMA data_version").fetchone()[0])

    @staticmethod
    def _rooms_of(db: sqlite3.Connection, table: str, column: str, owner: str) -> tuple[str, ...]:
        # table and column are constants from this module, never outside input.
        rows = db.execute(
            f"SELECT room FROM {table} WHERE {column} = ? ORDER BY room",  # noqa: S608
            (owner,),
        )
        return tuple(row[0] for row in rows)

    @staticmethod
    def _check_rooms(db: sqlite3.Connection, rooms: Sequence[str]) -> tuple[str, ...]:
        """Rooms deduplicated and sorted; NotFound for the first unknown one."""
        if isinstance(rooms, str):
            raise InvalidArgument("rooms must be a sequence of room names, not one string")
        wanted = tuple(sorted(set(rooms)))
        for room in wanted:
            if db.execute("SELECT 1 FROM rooms WHERE name = ?", (room,)).fetchone() is None:
                raise NotFound(f"no room named {room!r}")
        return wanted

    # --- rooms -------------------------------------------------------------------------------

    def add_room(self, name: str) -> None:
        """Create a room. InvalidName for a bad name, AlreadyExists if taken."""
        check_name(name, "room name")
        with self._write() as db:
            if db.execute("SELECT 1 FROM rooms WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(f"room {name!r} already exists")
            db.execute("INSERT INTO rooms (name) VALUES (?)", (name,))
        logger.info("room %s added", name)

    def remove_room(self, name: str) -> None:
        """Delete a room, and take it off every user's, device's and pairing code's list."""
        with self._write() as db:
            if db.execute("DELETE FROM rooms WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"no room named {name!r}")
        logger.info("room %s removed", name)

    def list_rooms(self) -> list[str]:
        """Every room name, sorted."""
        with self._read() as db:
            return [row[0] for row in db.execute("SELECT name FROM rooms ORDER BY name")]

    def has_room(self, name: str) -> bool:
        with self._read() as db:
            return db.execute("SELECT 1 FROM rooms WHERE name = ?", (name,)).fetchone() is not None

    # --- users -------------------------------------------------------------------------------

    def add_user(self, name: str, password: str, rooms: Sequence[str]) -> None:
        """Create a named account. AlreadyExists if taken, NotFound for an unknown room."""
        check_name(name, "user name")
        if not isinstance(password, str) or not password:
            raise InvalidArgument(f"password for user {name!r} is empty")
        stored = hash_password(password)  # slow: outside the lock
        with self._write() as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(f"user {name!r} already exists")
            wanted = self._check_rooms(db, rooms)
            db.execute(
                "INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)",
                (name, stored, time.time()),
            )
            db.executemany(
                "INSERT INTO user_rooms (user, room) VALUES (?, ?)",
                [(name, room) for room in wanted],
            )
        logger.info("user %s added (rooms %s)", name, ", ".join(wanted) or "none")

    def check_password(self, name: str, password: str) -> Principal | None:
        """The user's Principal if the password is right; None for a wrong one or unknown user.

        Unknown users cost the same KDF work, so that timing does not tell who exists.
        """
        with self._read() as db:
            row = db.execute("SELECT password_hash FROM users WHERE name = ?", (name,)).fetchone()
        stored: str = row[0] if row else _dummy_hash()
        ok = verify_password(password, stored)  # slow: outside the lock
        if row is None or not ok:
            return None
        with self._read() as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is None:
                return None  # removed meanwhile
            rooms = self._rooms_of(db, "user_rooms", "user", name)
        return Principal("user", name, frozenset(rooms))

    # --- devices -----------------------------------------------------------------------------

    def check_device_token(self, token: str) -> Principal | None:
        """The device's Principal for its auth token; None if unknown or revoked.

        Records the time as the device's ``last_seen``.
        """
        token_hash = _sha256(token)
        with self._write() as db:
            row = db.execute(
                "SELECT name FROM devices WHERE token_hash = ? AND revoked = 0", (token_hash,)
            ).fetchone()
            if row is None:
                return None
            name: str = row[0]
            db.execute("UPDATE devices SET last_seen = ? WHERE name = ?", (time.time(), name))
            rooms = self._rooms_of(db, "device_rooms", "device", name)
        return Principal("device", name, frozenset(rooms), credential=token_hash)

    def list_devices(self) -> list[DeviceInfo]:
        """Every paired device, revoked ones included, sorted by name."""
        with self._read() as db:
            rows = db.execute(
                "SELECT name, paired_at, revoked, last_seen FROM devices ORDER BY name"
            ).fetchall()
            return [
                DeviceInfo(
                    name=name,
                    rooms=self._rooms_of(db, "device_rooms", "device", name),
                    paired_at=paired_at,
                    revoked=bool(revoked),
                    last_seen=last_seen,
                )
                for name, paired_at, revoked, last_seen in rows
            ]

    def revoke_device(self, name: str) -> None:
        """Refuse the device's credential from now on (the row stays, for the admin to see) and
        kill its refresh tokens. NotFound for an unknown device."""
        with self._write() as db:
            if db.execute("UPDATE devices SET revoked = 1 WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"no device named {name!r}")
            db.execute("DELETE FROM refresh_tokens WHERE device = ?", (name,))
        logger.info("device %s revoked", name)

    def is_revoked(self, name: str) -> bool:
        """True if the device's credential is no longer good: revoked, or the device is gone
        (unpaired). False only for a paired, active device."""
        with self._read() as db:
            row = db.execute("SELECT revoked FROM devices WHERE name = ?", (name,)).fetchone()
        return row is None or bool(row[0])

    def revoked_devices(self) -> set[str]:
        """Names of every revoked device."""
        with self._read() as db:
            return {row[0] for row in db.execute("SELECT name FROM devices WHERE revoked = 1")}

    def current(self, principals: Iterable[Principal]) -> dict[Principal, Principal | None]:
        """Each principal as the registry has it now: with its current rooms, or None when its
        credential is no longer good (a device revoked, unpaired, or paired again with a new
        token; a user removed). What the server checks live connections against."""
        out: dict[Principal, Principal | None] = {}
        with self._read() as db:
            for p in principals:
                if p.kind == "device":
                    row = db.execute(
                        "SELECT 1 FROM devices WHERE name = ? AND token_hash = ? AND revoked = 0",
                        (p.name, p.credential),
                    ).fetchone()
                    table = "device_rooms"
                else:
                    row = db.execute("SELECT 1 FROM users WHERE name = ?", (p.name,)).fetchone()
                    table = "user_rooms"
                if row is None:
                    out[p] = None
                    continue
                rooms = frozenset(self._rooms_of(db, table, p.kind, p.name))
                out[p] = p if rooms == p.rooms else replace(p, rooms=rooms)
        return out

    def unpair_device(self, name: str) -> None:
        """The device gives up its credential: delete it and its refresh tokens. NotFound."""
        with self._write() as db:
            # refresh_tokens and device_rooms go with it (ON DELETE CASCADE).
            if db.execute("DELETE FROM devices WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"no device named {name!r}")
        logger.info("device %s unpaired", name)

    # --- refresh tokens ----------------------------------------------------------------------

    def issue_refresh_token(
        self, principal: Principal, ttl: float = DEFAULT_REFRESH_TTL, now: float | None = None
    ) -> str:
        """A new refresh token for ``principal`` (clear, returned once), valid ``ttl`` seconds.

        NotFound if the owner does not exist or is a revoked device.
        """
        now = time.time() if now is None else now
        token = secrets.token_urlsafe(TOKEN_BYTES)
        with self._write() as db:
            if principal.kind == "user":
                owner = db.execute(
                    "SELECT 1 FROM users WHERE name = ?", (principal.name,)
                ).fetchone()
            else:
                owner = db.execute(
                    "SELECT 1 FROM devices WHERE name = ? AND revoked = 0", (principal.name,)
                ).fetchone()
            if owner is None:
                raise NotFound(f"no active {principal.kind} named {principal.name!r}")
            db.execute("DELETE FROM refresh_tokens WHERE expires_at <= ?", (now,))
            db.execute(
                f"INSERT INTO refresh_tokens (token_hash, {principal.kind}, issued_at, expires_at)"  # noqa: S608
                " VALUES (?, ?, ?, ?)",
                (_sha256(token), principal.name, now, now + ttl),
            )
        return token

    def check_refresh_token(self, token: str, now: float | None = None) -> Principal | None:
        """The owner's Principal, with the owner's current rooms; None if the token is unknown
        or expired, or its owner was removed or revoked. A device's ``last_seen`` is updated."""
        now = time.time() if now is None else now
        token_hash = _sha256(token)
        with self._write() as db:
            row = db.execute(
                "SELECT user, device FROM refresh_tokens WHERE token_hash = ? AND expires_at > ?",
                (token_hash, now),
            ).fetchone()
            if row is None:
                return None
            user, device = row
            if user is not None:
                rooms = self._rooms_of(db, "user_rooms", "user", user)
                return Principal("user", user, frozenset(rooms))
            found = db.execute(
                "SELECT token_hash FROM devices WHERE name = ? AND revoked = 0", (device,)
            ).fetchone()
            if found is None:
                return None
            db.execute("UPDATE devices SET last_seen = ? WHERE name = ?", (now, device))
            rooms = self._rooms_of(db, "device_rooms", "device", device)
            return Principal("device", device, frozenset(rooms), credential=found[0])

    # --- pairing codes -----------------------------------------------------------------------

    def create_pair_code(
        self, rooms: Sequence[str], ttl: float = DEFAULT_CODE_TTL, now: float | None = None
    ) -> PairCode:
        """A new single-use pairing code for ``rooms``, valid ``ttl`` seconds from ``now``.

        The clear code is in the result only. NotFound for an unknown room; InvalidArgument
        for no room at all.
        """
        now = time.time() if now is None else now
        if isinstance(rooms, str):
            raise InvalidArgument("rooms must be a sequence of room names, not one string")
        if not rooms:
            raise InvalidArgument("a pairing code needs at least one room")
        with self._write() as db:
            wanted = self._check_rooms(db, rooms)
            self._purge_codes(db, now)
            while True:
                raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
                code_hash = _sha256(raw)
                try:
                    db.execute(
                        "INSERT INTO pair_codes (code_hash, created_at, expires_at)"
                        " VALUES (?, ?, ?)",
                        (code_hash, now, now + ttl),
                    )
                except sqlite3.IntegrityError:  # 1 in 2**60: draw again
                    continue
                break
            db.executemany(
                "INSERT INTO pair_code_rooms (code_hash, room) VALUES (?, ?)",
                [(code_hash, room) for room in wanted],
            )
        logger.info("pairing code created (rooms %s, valid %.0f s)", ", ".join(wanted), ttl)
        return PairCode(code=format_code(raw), rooms=wanted, expires_at=now + ttl)

    @staticmethod
    def _purge_codes(db: sqlite3.Connection, now: float) -> None:
        db.execute("DELETE FROM pair_codes WHERE expires_at < ?", (now - CODE_KEEP_AFTER_EXPIRY,))

    def redeem_pair_code(self, code: str, device_name: str, now: float | None = None) -> Pairing:
        """Pair a new device with a code: atomically use the code up and create the device.

        PairingError with ``reason`` "invalid code", "expired code" or "used code"; InvalidName
        for a bad device name (the code is not used up then). If an active device already has
        the name, "-2", "-3"… is appended; a revoked device's name is reused.
        """
        now = time.time() if now is None else now
        check_name(device_name, "device name")
        code_hash = _sha256(normalise_code(code)) if isinstance(code, str) else ""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        with self._write() as db:
            self._purge_codes(db, now)
            row = db.execute(
                "SELECT expires_at, used_at FROM pair_codes WHERE code_hash = ?", (code_hash,)
            ).fetchone()
            if row is None:
                raise PairingError(REASON_INVALID_CODE)
            expires_at, used_at = row
            if used_at is not None:
                raise PairingError(REASON_USED_CODE)
            if now >= expires_at:
                raise PairingError(REASON_EXPIRED_CODE)
            rooms = self._rooms_of(db, "pair_code_rooms", "code_hash", code_hash)
            name = self._free_device_name(db, device_name)
            db.execute("DELETE FROM devices WHERE name = ?", (name,))  # a revoked one, if any
            db.execute(
                "INSERT INTO devices (name, token_hash, paired_at) VALUES (?, ?, ?)",
                (name, _sha256(token), now),
            )
            db.executemany(
                "INSERT INTO device_rooms (device, room) VALUES (?, ?)",
                [(name, room) for room in rooms],
            )
            db.execute(
                "UPDATE pair_codes SET used_at = ?, device = ? WHERE code_hash = ?",
                (now, name, code_hash),
            )
        logger.info("device %s paired (rooms %s)", name, ", ".join(rooms) or "none")
        return Pairing(device_name=name, auth_token=token, rooms=rooms)

    @staticmethod
    def _free_device_name(db: sqlite3.Connection, wanted: str) -> str:
        """``wanted``, or ``wanted-2``, ``wanted-3``…: the first name not held by an active
        device (a revoked device's name may be taken over)."""
        suffix = 1
        while True:
            if suffix == 1:
                name = wanted
            else:
                tail = f"-{suffix}"
                name = wanted[: MAX_NAME - len(tail)].rstrip() + tail
            row = db.execute("SELECT revoked FROM devices WHERE name = ?", (name,)).fetchone()
            if row is None or row[0]:
                return name
            suffix += 1
