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
* refresh tokens are rotated on use (OAuth 2.0 Security BCP): a token is ``<family>.<secret>``;
  logging on with it gives its successor in the same family, and presenting a token of the family
  that is no longer the current one (a copy kept by a thief, or by the client it was taken from)
  revokes the whole family. One row per family, with the SHA-256 of the family id and of its
  current token; at most ``MAX_REFRESH_FAMILIES`` per user or device (the least recently used go),
  expired ones purged;
* pairing codes: 60 random bits in Crockford base32 (``XXXX-XXXX-XXXX``), short-lived and single
  use; only the SHA-256 of the normalised code is stored.

User and device names are unique together after folding look-alikes (:func:`pttd.server.names.
name_key`: ``alice``, ``Alice`` and a Cyrillic ``аlice`` are one name); the key is stored beside
each name, indexed. A revoked device's name is free again.

The file and its ``-wal``/``-shm`` are its owner's only (0600): created so, and repaired at open
when they are not (with a warning), or refused when they cannot be.

End-to-end encryption: the registry is only the key authority's mailbox. It keeps which rooms
are encrypted, each member's public identity key (sent at logon), the authority's public key (for
pairing links), and the room keys the authority sealed for each member (ciphertext the server
cannot open, signed so that it cannot forge one); never a key that opens anything.

No audio is ever stored here.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import logging
import os
import secrets
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

from pttd import kdf
from pttd.errors import (
    AlreadyExists,
    InvalidArgument,
    InvalidName,
    NotFound,
    PairingError,
    RegistryError,
)
from pttd.server.names import name_key
from pttd.server.session import Pairing, Principal
from pttd.wire.messages import (
    MAX_NAME,
    MAX_ROOM_KEY,
    REASON_EXPIRED_CODE,
    REASON_INVALID_CODE,
    REASON_USED_CODE,
)

logger = logging.getLogger(__name__)

DEFAULT_DB = os.environ.get("PTTD_DB", "pttd-server.db")  # the admin commands' --db

SCHEMA_VERSION: Final = 4
BUSY_TIMEOUT_MS: Final = 5000

TOKEN_BYTES: Final = 32  # device auth tokens and refresh tokens
FAMILY_BYTES: Final = 16  # a refresh token's family id
DEFAULT_REFRESH_TTL: Final = 7 * 86400.0
MAX_REFRESH_FAMILIES: Final = 8  # live refresh tokens per user or device (least recently used go)
DEFAULT_CODE_TTL: Final = 600.0
CODE_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I L O U
CODE_LENGTH: Final = 12  # 60 bits
CODE_GROUP: Final = 4
# Used and expired codes are kept this long past their expiry, so that a late redeem is told
# "used code" or "expired code" rather than "invalid code".
CODE_KEEP_AFTER_EXPIRY: Final = 86400.0

# What an ``on_room_key``'s ``key`` may hold (pttd.wire.messages checks it so on the wire).
_BASE64URL: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="

# Crockford decoding: letters people confuse with digits read as those digits.
_CODE_TRANSLATION: Final = str.maketrans({"O": "0", "I": "1", "L": "1", "-": None, " ": None})

# One row per refresh-token family (see the module's docstring).
_REFRESH_TABLE: Final = """
CREATE TABLE refresh_tokens (
    family_hash TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user TEXT REFERENCES users(name) ON DELETE CASCADE,
    device TEXT REFERENCES devices(name) ON DELETE CASCADE,
    issued_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    CHECK ((user IS NULL) <> (device IS NULL))
);
CREATE INDEX refresh_tokens_user ON refresh_tokens(user);
CREATE INDEX refresh_tokens_device ON refresh_tokens(device);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens(expires_at);
"""

# Schema 3: end-to-end encryption (see the module's docstring).
_KEYS_TABLES: Final = """
CREATE TABLE room_keys (
    room TEXT NOT NULL REFERENCES rooms(name) ON DELETE CASCADE,
    member TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    sealed TEXT NOT NULL,
    published_at REAL NOT NULL,
    PRIMARY KEY (room, member)
);
CREATE TABLE facts (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_SCHEMA: Final = (
    """
CREATE TABLE rooms (
    name TEXT PRIMARY KEY,
    encrypted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    name_key TEXT NOT NULL,
    emergency INTEGER NOT NULL DEFAULT 0,
    identity_key TEXT,
    admin INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX users_name_key ON users(name_key);
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
    last_seen REAL,
    name_key TEXT NOT NULL,
    emergency INTEGER NOT NULL DEFAULT 0,
    identity_key TEXT
);
CREATE INDEX devices_name_key ON devices(name_key);
CREATE TABLE device_rooms (
    device TEXT NOT NULL REFERENCES devices(name) ON DELETE CASCADE,
    room TEXT NOT NULL REFERENCES rooms(name) ON DELETE CASCADE,
    PRIMARY KEY (device, room)
);
"""
    + _REFRESH_TABLE
    + """
CREATE TABLE pair_codes (
    code_hash TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL,
    device TEXT,
    emergency INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX pair_codes_expiry ON pair_codes(expires_at);
CREATE TABLE pair_code_rooms (
    code_hash TEXT NOT NULL REFERENCES pair_codes(code_hash) ON DELETE CASCADE,
    room TEXT NOT NULL REFERENCES rooms(name) ON DELETE CASCADE,
    PRIMARY KEY (code_hash, room)
);
"""
    + _KEYS_TABLES
)


@dataclass(frozen=True, slots=True)
class PairCode:
    """A new pairing code. ``code`` is the clear code, returned only here, at creation."""

    code: str
    rooms: tuple[str, ...]
    expires_at: float  # unix time
    emergency: bool = False  # the device it pairs is granted emergency priority

    def __repr__(self) -> str:  # keep the code out of logs and tracebacks
        return (
            f"PairCode(code='<redacted>', rooms={self.rooms!r}, expires_at={self.expires_at!r}, "
            f"emergency={self.emergency!r})"
        )


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A paired device, as the admin sees it."""

    name: str
    rooms: tuple[str, ...]
    paired_at: float
    revoked: bool
    last_seen: float | None
    emergency: bool = False


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A user or active device as the key authority sees it."""

    kind: Literal["user", "device"]
    name: str
    rooms: tuple[str, ...]
    identity_key: str | None


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A named user, as the admin sees it."""

    name: str
    rooms: tuple[str, ...]
    created_at: float
    emergency: bool = False
    admin: bool = False  # may administer the server in the web console
    # Changes with the password and when the name is given to a new user (``get_user`` only):
    # what a web console session was made with must still hold.
    credential: str = field(default="", repr=False, compare=False)


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


def _family_hash(family: str, token_hash: str) -> str:
    """The stored key of a refresh token's family: the SHA-256 of its id; for a token from
    before families (schema 1, no id), its own hash, which the migration made its key."""
    return _sha256(family) if family else token_hash


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
            elif version in (1, 2, 3):
                if version == 1:
                    self._migrate_1_to_2(db)
                if version <= 2:
                    self._migrate_2_to_3(db)
                self._migrate_3_to_4(db)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise RegistryError(
                    f"registry {self.path} has schema version {version}, expected {SCHEMA_VERSION}"
                )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _migrate_1_to_2(self, db: sqlite3.Connection) -> None:
        """Schema 1 → 2, in the caller's transaction: the folded name keys (filled in and
        indexed), the emergency grants (none), and refresh tokens one row per family (each old
        token its own family; expired ones and those beyond the bound dropped)."""
        now = time.time()
        for table in ("users", "devices"):
            # table is a constant of this module, never outside input.
            db.execute(f"ALTER TABLE {table} ADD COLUMN name_key TEXT NOT NULL DEFAULT ''")
            db.execute(f"ALTER TABLE {table} ADD COLUMN emergency INTEGER NOT NULL DEFAULT 0")
            names = [row[0] for row in db.execute(f"SELECT name FROM {table}")]  # noqa: S608
            db.executemany(
                f"UPDATE {table} SET name_key = ? WHERE name = ?",  # noqa: S608
                [(name_key(name), name) for name in names],
            )
            db.execute(f"CREATE INDEX {table}_name_key ON {table}(name_key)")
        db.execute("ALTER TABLE pair_codes ADD COLUMN emergency INTEGER NOT NULL DEFAULT 0")
        before = db.execute("SELECT count(*) FROM refresh_tokens").fetchone()[0]
        db.execute("ALTER TABLE refresh_tokens RENAME TO refresh_tokens_1")
        for index in ("user", "device", "expiry"):
            db.execute(f"DROP INDEX refresh_tokens_{index}")
        for statement in _REFRESH_TABLE.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(
            "INSERT INTO refresh_tokens"
            " (family_hash, token_hash, user, device, issued_at, expires_at)"
            " SELECT token_hash, token_hash, user, device, issued_at, expires_at"
            " FROM refresh_tokens_1 WHERE expires_at > ?",
            (now,),
        )
        db.execute("DROP TABLE refresh_tokens_1")
        db.execute(
            "DELETE FROM refresh_tokens WHERE rowid IN (SELECT rowid FROM (SELECT rowid,"
            " row_number() OVER (PARTITION BY user, device ORDER BY issued_at DESC, rowid DESC)"
            " AS n FROM refresh_tokens) WHERE n > ?)",
            (MAX_REFRESH_FAMILIES,),
        )
        after = db.execute("SELECT count(*) FROM refresh_tokens").fetchone()[0]
        logger.info(
            "registry %s: schema 1 upgraded to 2 (refresh tokens: %d kept, %d expired or beyond "
            "%d per owner dropped)",
            self.path,
            after,
            before - after,
            MAX_REFRESH_FAMILIES,
        )
        for first, second in self._look_alikes(db):
            logger.warning(
                "registry %s: %s and %s look alike; names are unique after folding from now "
                "on, and these two were made before: remove or rename one",
                self.path,
                first,
                second,
            )

    def _migrate_2_to_3(self, db: sqlite3.Connection) -> None:
        """Schema 2 → 3, in the caller's transaction: end-to-end encryption (no room encrypted,
        no identity key, no room key yet)."""
        db.execute("ALTER TABLE rooms ADD COLUMN encrypted INTEGER NOT NULL DEFAULT 0")
        for table in ("users", "devices"):  # constants of this module
            db.execute(f"ALTER TABLE {table} ADD COLUMN identity_key TEXT")
        for statement in _KEYS_TABLES.split(";"):
            if statement.strip():
                db.execute(statement)
        logger.info("registry %s: schema 2 upgraded to 3 (end-to-end encryption)", self.path)

    def _migrate_3_to_4(self, db: sqlite3.Connection) -> None:
        """Schema 3 → 4, in the caller's transaction: web console admins (nobody yet)."""
        db.execute("ALTER TABLE users ADD COLUMN admin INTEGER NOT NULL DEFAULT 0")
        logger.info("registry %s: schema 3 upgraded to 4 (web console admins)", self.path)

    @staticmethod
    def _look_alikes(db: sqlite3.Connection) -> list[tuple[str, str]]:
        """Pairs of names (users and active devices) that share a key, as "user 'x'"."""
        rows = db.execute(
            "SELECT name_key, 'user ' || quote(name) FROM users UNION ALL"
            " SELECT name_key, 'device ' || quote(name) FROM devices WHERE revoked = 0"
            " ORDER BY 1, 2"
        ).fetchall()
        return [(a[1], b[1]) for a, b in itertools.pairwise(rows) if a[0] == b[0]]

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

    def add_room(self, name: str, *, encrypted: bool = False) -> None:
        """Create a room (``encrypted``: end-to-end, SFrame only). InvalidName for a bad name,
        AlreadyExists if taken."""
        check_name(name, "room name")
        with self._write() as db:
            if db.execute("SELECT 1 FROM rooms WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(f"room {name!r} already exists")
            db.execute("INSERT INTO rooms (name, encrypted) VALUES (?, ?)", (name, int(encrypted)))
        logger.info("room %s added%s", name, " (encrypted)" if encrypted else "")

    def set_encrypted(self, name: str, encrypted: bool) -> None:
        """Mark a room end-to-end encrypted (or clear again). NotFound. Connections follow at
        the server's next look at the registry: clear clients leave a room that turned
        encrypted, a clear talk in it ends."""
        with self._write() as db:
            changed = db.execute(
                "UPDATE rooms SET encrypted = ? WHERE name = ?", (int(encrypted), name)
            ).rowcount
            if changed == 0:
                raise NotFound(f"no room named {name!r}")
            if not encrypted:
                db.execute("DELETE FROM room_keys WHERE room = ?", (name,))
        logger.info("room %s is now %s", name, "encrypted" if encrypted else "clear")

    def encrypted_rooms(self) -> set[str]:
        with self._read() as db:
            return {row[0] for row in db.execute("SELECT name FROM rooms WHERE encrypted = 1")}

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

    def add_user(
        self,
        name: str,
        password: str,
        rooms: Sequence[str],
        *,
        emergency: bool = False,
        admin: bool = False,
    ) -> None:
        """Create a named account (``emergency``: granted emergency priority; ``admin``: may
        administer the server in the web console). AlreadyExists if the name, or one that looks
        like it, is a user's or an active device's; NotFound for an unknown room."""
        check_name(name, "user name")
        if not isinstance(password, str) or not password:
            raise InvalidArgument(f"password for user {name!r} is empty")
        key = name_key(name)
        stored = hash_password(password)  # slow: outside the lock
        with self._write() as db:
            taken = self._holder(db, key)
            if taken == ("user", name):
                raise AlreadyExists(f"user {name!r} already exists")
            if taken is not None:
                raise AlreadyExists(
                    f"user name {name!r} is taken: it looks like {taken[0]} {taken[1]!r}"
                )
            wanted = self._check_rooms(db, rooms)
            db.execute(
                "INSERT INTO users (name, password_hash, created_at, name_key, emergency, admin)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, stored, time.time(), key, int(emergency), int(admin)),
            )
            db.executemany(
                "INSERT INTO user_rooms (user, room) VALUES (?, ?)",
                [(name, room) for room in wanted],
            )
        logger.info(
            "user %s added (rooms %s%s%s)",
            name,
            ", ".join(wanted) or "none",
            "; emergency" if emergency else "",
            "; admin" if admin else "",
        )

    @staticmethod
    def _holder(db: sqlite3.Connection, key: str) -> tuple[str, str] | None:
        """Who holds the name key ``key``: ("user", name) or ("device", name) of an active
        device; None when it is free (a revoked device's name is free)."""
        row = db.execute("SELECT name FROM users WHERE name_key = ?", (key,)).fetchone()
        if row is not None:
            return ("user", row[0])
        row = db.execute(
            "SELECT name FROM devices WHERE name_key = ? AND revoked = 0", (key,)
        ).fetchone()
        return None if row is None else ("device", row[0])

    def list_users(self) -> list[UserInfo]:
        """Every user, sorted by name."""
        with self._read() as db:
            rows = db.execute(
                "SELECT name, created_at, emergency, admin FROM users ORDER BY name"
            ).fetchall()
            return [
                UserInfo(
                    name=name,
                    rooms=self._rooms_of(db, "user_rooms", "user", name),
                    created_at=created_at,
                    emergency=bool(emergency),
                    admin=bool(admin),
                )
                for name, created_at, emergency, admin in rows
            ]

    def get_user(self, name: str) -> UserInfo | None:
        """The user ``name`` as the registry has them now; None if there is none."""
        with self._read() as db:
            row = db.execute(
                "SELECT created_at, emergency, admin, password_hash FROM users WHERE name = ?",
                (name,),
            ).fetchone()
            if row is None:
                return None
            return UserInfo(
                name=name,
                rooms=self._rooms_of(db, "user_rooms", "user", name),
                created_at=row[0],
                emergency=bool(row[1]),
                admin=bool(row[2]),
                credential=_sha256(f"{row[3]} {row[0]!r}"),
            )

    def set_admin(self, name: str, granted: bool) -> None:
        """Make a user a web console admin, or no longer one. NotFound."""
        with self._write() as db:
            if not db.execute(
                "UPDATE users SET admin = ? WHERE name = ?", (int(granted), name)
            ).rowcount:
                raise NotFound(f"no user named {name!r}")
        logger.info("user %s %s an admin", name, "is now" if granted else "is no longer")

    def is_admin(self, name: str) -> bool:
        """Whether the user ``name`` is a web console admin (False for an unknown name)."""
        with self._read() as db:
            row = db.execute("SELECT admin FROM users WHERE name = ?", (name,)).fetchone()
        return row is not None and bool(row[0])

    def set_password(self, name: str, password: str) -> None:
        """A new password for the user; their refresh tokens go (logged-on sessions stay until
        they end). NotFound; InvalidArgument for an empty password."""
        if not isinstance(password, str) or not password:
            raise InvalidArgument(f"password for user {name!r} is empty")
        stored = hash_password(password)  # slow: outside the lock
        with self._write() as db:
            if not db.execute(
                "UPDATE users SET password_hash = ? WHERE name = ?", (stored, name)
            ).rowcount:
                raise NotFound(f"no user named {name!r}")
            db.execute("DELETE FROM refresh_tokens WHERE user = ?", (name,))
        logger.info("user %s has a new password", name)

    def remove_user(self, name: str) -> None:
        """Remove a user (their refresh tokens and room keys go with them). NotFound."""
        with self._write() as db:
            if not db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount:
                raise NotFound(f"no user named {name!r}")
            db.execute("DELETE FROM room_keys WHERE member = ?", (name,))
        logger.info("user %s removed", name)

    def set_emergency(self, kind: Literal["user", "device"], name: str, granted: bool) -> None:
        """Grant (or take back) emergency priority to a user or a device. NotFound. Logged-on
        connections follow at the server's next look at the registry."""
        table = "users" if kind == "user" else "devices"
        with self._write() as db:
            changed = db.execute(
                f"UPDATE {table} SET emergency = ? WHERE name = ?",  # noqa: S608
                (int(granted), name),
            ).rowcount
            if changed == 0:
                raise NotFound(f"no {kind} named {name!r}")
        logger.info(
            "emergency priority %s %s %s", "granted to" if granted else "taken from", kind, name
        )

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
            return self._user(db, name)

    def _user(self, db: sqlite3.Connection, name: str) -> Principal | None:
        """The user's Principal as the registry has it now; None if there is no such user."""
        row = db.execute("SELECT emergency FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        rooms = self._rooms_of(db, "user_rooms", "user", name)
        return Principal(
            "user", name, frozenset(rooms), emergency=bool(row[0]), **self._keys_of(db, name, rooms)
        )

    def _device(self, db: sqlite3.Connection, name: str) -> Principal | None:
        """The active device's Principal as the registry has it now; None if it is not."""
        row = db.execute(
            "SELECT token_hash, emergency FROM devices WHERE name = ? AND revoked = 0", (name,)
        ).fetchone()
        if row is None:
            return None
        rooms = self._rooms_of(db, "device_rooms", "device", name)
        return Principal(
            "device",
            name,
            frozenset(rooms),
            credential=row[0],
            emergency=bool(row[1]),
            **self._keys_of(db, name, rooms),
        )

    @staticmethod
    def _keys_of(db: sqlite3.Connection, name: str, rooms: Sequence[str]) -> dict[str, Any]:
        """A principal's encrypted rooms, and the room keys sealed for it in them."""
        encrypted = {
            row[0] for row in db.execute("SELECT name FROM rooms WHERE encrypted = 1")
        } & set(rooms)
        keys = db.execute(
            "SELECT room, sealed FROM room_keys WHERE member = ? ORDER BY room", (name,)
        ).fetchall()
        return {
            "encrypted": frozenset(encrypted),
            "room_keys": tuple((room, sealed) for room, sealed in keys if room in encrypted),
        }

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
            return self._device(db, name)

    def list_devices(self) -> list[DeviceInfo]:
        """Every paired device, revoked ones included, sorted by name."""
        with self._read() as db:
            rows = db.execute(
                "SELECT name, paired_at, revoked, last_seen, emergency FROM devices ORDER BY name"
            ).fetchall()
            return [
                DeviceInfo(
                    name=name,
                    rooms=self._rooms_of(db, "device_rooms", "device", name),
                    paired_at=paired_at,
                    revoked=bool(revoked),
                    last_seen=last_seen,
                    emergency=bool(emergency),
                )
                for name, paired_at, revoked, last_seen, emergency in rows
            ]

    def revoke_device(self, name: str) -> None:
        """Refuse the device's credential from now on (the row stays, for the admin to see) and
        kill its refresh tokens and room keys. NotFound for an unknown device."""
        with self._write() as db:
            row = db.execute("SELECT revoked FROM devices WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no device named {name!r}")
            db.execute("UPDATE devices SET revoked = 1 WHERE name = ?", (name,))
            db.execute("DELETE FROM refresh_tokens WHERE device = ?", (name,))
            self._drop_room_keys(db, name, was_active=not row[0])
        logger.info("device %s revoked", name)

    @staticmethod
    def _drop_room_keys(db: sqlite3.Connection, name: str, *, was_active: bool) -> None:
        """The room keys of a device that goes. Room keys are kept by member name, and a
        revoked device's name is free for a user to take: the keys under the name of a device
        revoked before are no longer its (they went at its revocation)."""
        if was_active:
            db.execute("DELETE FROM room_keys WHERE member = ?", (name,))

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
        """Each principal as the registry has it now: with its current rooms and emergency
        grant, or None when its credential is no longer good (a device revoked, unpaired, or
        paired again with a new token; a user removed). What the server checks live connections
        against."""
        out: dict[Principal, Principal | None] = {}
        with self._read() as db:
            for p in principals:
                now = self._device(db, p.name) if p.kind == "device" else self._user(db, p.name)
                if now is None or now.credential != p.credential:
                    out[p] = None
                elif now == p:  # who it is, its rooms, grant, encrypted rooms and room keys
                    out[p] = p
                else:
                    out[p] = replace(
                        p,
                        rooms=now.rooms,
                        emergency=now.emergency,
                        encrypted=now.encrypted,
                        room_keys=now.room_keys,
                    )
        return out

    def unpair_device(self, name: str) -> None:
        """The device gives up its credential: delete it and its refresh tokens. NotFound."""
        with self._write() as db:
            row = db.execute("SELECT revoked FROM devices WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no device named {name!r}")
            # refresh_tokens and device_rooms go with it (ON DELETE CASCADE).
            db.execute("DELETE FROM devices WHERE name = ?", (name,))
            self._drop_room_keys(db, name, was_active=not row[0])
        logger.info("device %s unpaired", name)

    # --- the key authority's mailbox ---------------------------------------------------------

    def set_identity_key(self, kind: Literal["user", "device"], name: str, key: str) -> bool:
        """Record the public identity key a user or device logged on with; True when it is new
        or changed (the key authority approves it, or not, by its fingerprint). The room keys
        sealed for its earlier key go: nothing but that key opens them, and handing them out
        would only tell a member with a new key (a browser that forgot its key, a device paired
        again) that its key was refused. NotFound."""
        table = "users" if kind == "user" else "devices"
        with self._write() as db:
            row = db.execute(
                f"SELECT identity_key FROM {table} WHERE name = ?",  # noqa: S608
                (name,),
            ).fetchone()
            if row is None:
                raise NotFound(f"no {kind} named {name!r}")
            if row[0] == key:
                return False
            db.execute(
                f"UPDATE {table} SET identity_key = ? WHERE name = ?",  # noqa: S608
                (key, name),
            )
            if row[0] is not None:
                db.execute("DELETE FROM room_keys WHERE member = ?", (name,))
        change = "new" if row[0] is None else "changed"
        logger.info("%s %s has a %s identity key", kind, name, change)
        return True

    def members(self) -> list[MemberInfo]:
        """Every user and active device, with its rooms and the identity key it logged on with
        (None: none yet): what the key authority approves from."""
        with self._read() as db:
            users = db.execute("SELECT name, identity_key FROM users ORDER BY name").fetchall()
            devices = db.execute(
                "SELECT name, identity_key FROM devices WHERE revoked = 0 ORDER BY name"
            ).fetchall()
            return [
                MemberInfo("user", name, self._rooms_of(db, "user_rooms", "user", name), key)
                for name, key in users
            ] + [
                MemberInfo("device", name, self._rooms_of(db, "device_rooms", "device", name), key)
                for name, key in devices
            ]

    def publish_room_keys(
        self, room: str, sealed: Sequence[tuple[str, int, str]], *, only: bool = False
    ) -> None:
        """Keep the room keys the authority sealed, ``(member, epoch, sealed key)``, for the
        server to hand each member (replacing that member's older one). ``only``: these are the
        room's only members now (a rotation): every other member's key in it goes. NotFound for
        an unknown room; InvalidArgument, and nothing kept, for a sealed key that an
        ``on_room_key`` cannot carry (empty, not base64url, longer than ``MAX_ROOM_KEY``):
        every client would refuse it, and its member would never get its key."""
        for member, _, text in sealed:
            if not text:
                raise InvalidArgument(f"the room key sealed for {member!r} is empty")
            if text.strip(_BASE64URL):
                raise InvalidArgument(f"the room key sealed for {member!r} is not base64url")
            if len(text) > MAX_ROOM_KEY:
                raise InvalidArgument(
                    f"the room key sealed for {member!r} is longer than {MAX_ROOM_KEY} characters"
                )
        now = time.time()
        with self._write() as db:
            if db.execute("SELECT 1 FROM rooms WHERE name = ?", (room,)).fetchone() is None:
                raise NotFound(f"no room named {room!r}")
            if only:
                db.execute("DELETE FROM room_keys WHERE room = ?", (room,))
            db.executemany(
                "INSERT OR REPLACE INTO room_keys (room, member, epoch, sealed, published_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(room, member, epoch, text, now) for member, epoch, text in sealed],
            )
        logger.info("room %s: %d room keys published", room, len(sealed))

    def room_key_epochs(self, room: str) -> dict[str, int]:
        """Which member holds a room key of which epoch in ``room`` (for the admin)."""
        with self._read() as db:
            rows = db.execute("SELECT member, epoch FROM room_keys WHERE room = ?", (room,))
            return {member: epoch for member, epoch in rows}

    def set_authority_key(self, key: str) -> None:
        """The key authority's public key, which pairing links carry to the devices."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO facts (name, value) VALUES ('authority', ?)", (key,))
        logger.info("key authority's public key recorded")

    def authority_key(self) -> str | None:
        with self._read() as db:
            row = db.execute("SELECT value FROM facts WHERE name = 'authority'").fetchone()
        return None if row is None else str(row[0])

    # --- refresh tokens ----------------------------------------------------------------------

    def issue_refresh_token(
        self, principal: Principal, ttl: float = DEFAULT_REFRESH_TTL, now: float | None = None
    ) -> str | None:
        """A refresh token for ``principal`` (clear, returned once), valid ``ttl`` seconds.

        For a logon made with a refresh token (``principal.refreshed_with``, from
        :meth:`check_refresh_token`), that token is used up and its successor, in the same
        family, is returned; None if it was used up meanwhile by another logon (a reuse: the
        family is revoked) or is gone (revoked, expired). Any other logon starts a new family;
        the owner keeps at most ``MAX_REFRESH_FAMILIES``, the least recently used going first.
        NotFound if the owner does not exist or is a revoked device.
        """
        now = time.time() if now is None else now
        secret = secrets.token_urlsafe(TOKEN_BYTES)
        kind, name = principal.kind, principal.name
        with self._write() as db:
            owner = self._user(db, name) if kind == "user" else self._device(db, name)
            if owner is None:
                raise NotFound(f"no active {kind} named {name!r}")
            db.execute("DELETE FROM refresh_tokens WHERE expires_at <= ?", (now,))
            if principal.refreshed_with is None:
                family = secrets.token_urlsafe(FAMILY_BYTES)
                token = f"{family}.{secret}"
                db.execute(
                    f"INSERT INTO refresh_tokens (family_hash, token_hash, {kind}, issued_at,"  # noqa: S608
                    " expires_at) VALUES (?, ?, ?, ?, ?)",
                    (_sha256(family), _sha256(token), name, now, now + ttl),
                )
                db.execute(
                    f"DELETE FROM refresh_tokens WHERE {kind} = ? AND family_hash NOT IN"  # noqa: S608
                    f" (SELECT family_hash FROM refresh_tokens WHERE {kind} = ?"
                    "  ORDER BY issued_at DESC, rowid DESC LIMIT ?)",
                    (name, name, MAX_REFRESH_FAMILIES),
                )
                return token
            family, presented = principal.refreshed_with
            row = db.execute(
                "SELECT family_hash, token_hash, user, device FROM refresh_tokens"
                " WHERE family_hash = ?",
                (_family_hash(family, presented),),
            ).fetchone()
            if row is None or (row[2], row[3]) != (
                (name, None) if kind == "user" else (None, name)
            ):
                return None
            family_hash, current = row[0], row[1]
            reused = not hmac.compare_digest(current, presented)
            if reused:
                db.execute("DELETE FROM refresh_tokens WHERE family_hash = ?", (family_hash,))
            else:
                if not family:  # a token from before families: its row gets one now
                    family = secrets.token_urlsafe(FAMILY_BYTES)
                token = f"{family}.{secret}"
                db.execute(
                    "UPDATE refresh_tokens SET family_hash = ?, token_hash = ?, issued_at = ?,"
                    " expires_at = ? WHERE family_hash = ?",
                    (_sha256(family), _sha256(token), now, now + ttl, family_hash),
                )
        if reused:
            self._warn_reuse(kind, name)
            return None
        return token

    def check_refresh_token(self, token: str, now: float | None = None) -> Principal | None:
        """The owner's Principal, with the owner's current rooms and grant, for a good refresh
        token (its family's current one); None if the token is unknown or expired, or its owner
        was removed or revoked. The token is used up only when the logon completes
        (:meth:`issue_refresh_token` with the principal returned here).

        A token of a family that is not the family's current one was used before: the family
        is revoked (its current token no longer logs on either) and a warning logged.
        A device's ``last_seen`` is updated.
        """
        now = time.time() if now is None else now
        token_hash = _sha256(token)
        family, dot, _ = token.partition(".")
        if not dot:
            family = ""  # a token from before families
        reused_by: tuple[str, str] | None = None
        principal: Principal | None = None
        with self._write() as db:
            row = db.execute(
                "SELECT family_hash, token_hash, user, device, expires_at FROM refresh_tokens"
                " WHERE family_hash = ?",
                (_family_hash(family, token_hash),),
            ).fetchone()
            if row is None or row[4] <= now:
                return None
            family_hash, current, user, device, _ = row
            if not hmac.compare_digest(current, token_hash):
                db.execute("DELETE FROM refresh_tokens WHERE family_hash = ?", (family_hash,))
                reused_by = ("user", user) if user is not None else ("device", device)
            elif user is not None:
                principal = self._user(db, user)
            else:
                principal = self._device(db, device)
                if principal is not None:
                    db.execute("UPDATE devices SET last_seen = ? WHERE name = ?", (now, device))
        if reused_by is not None:
            self._warn_reuse(*reused_by)
        if principal is None:
            return None
        return replace(principal, refreshed_with=(family, token_hash))

    @staticmethod
    def _warn_reuse(kind: str, name: str) -> None:
        logger.warning(
            "a used refresh token of %s %s was presented again: its family is revoked (a copy "
            "of the token was used, or a client kept an old one)",
            kind,
            name,
        )

    # --- pairing codes -----------------------------------------------------------------------

    def create_pair_code(
        self,
        rooms: Sequence[str],
        ttl: float = DEFAULT_CODE_TTL,
        now: float | None = None,
        *,
        emergency: bool = False,
    ) -> PairCode:
        """A new single-use pairing code for ``rooms``, valid ``ttl`` seconds from ``now``;
        the device it pairs is granted emergency priority if ``emergency``.

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
                        "INSERT INTO pair_codes (code_hash, created_at, expires_at, emergency)"
                        " VALUES (?, ?, ?, ?)",
                        (code_hash, now, now + ttl, int(emergency)),
                    )
                except sqlite3.IntegrityError:  # 1 in 2**60: draw again
                    continue
                break
            db.executemany(
                "INSERT INTO pair_code_rooms (code_hash, room) VALUES (?, ?)",
                [(code_hash, room) for room in wanted],
            )
        logger.info(
            "pairing code created (rooms %s, valid %.0f s%s)",
            ", ".join(wanted),
            ttl,
            "; emergency" if emergency else "",
        )
        return PairCode(
            code=format_code(raw), rooms=wanted, expires_at=now + ttl, emergency=emergency
        )

    @staticmethod
    def _purge_codes(db: sqlite3.Connection, now: float) -> None:
        db.execute("DELETE FROM pair_codes WHERE expires_at < ?", (now - CODE_KEEP_AFTER_EXPIRY,))

    def redeem_pair_code(self, code: str, device_name: str, now: float | None = None) -> Pairing:
        """Pair a new device with a code: atomically use the code up and create the device.

        PairingError with ``reason`` "invalid code", "expired code" or "used code"; InvalidName
        for a bad device name (the code is not used up then). If a user or an active device
        already has the name, or one that looks like it (:func:`~pttd.server.names.name_key`),
        "-2", "-3"… is appended; a revoked device's name is reused.
        """
        now = time.time() if now is None else now
        check_name(device_name, "device name")
        code_hash = _sha256(normalise_code(code)) if isinstance(code, str) else ""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        with self._write() as db:
            self._purge_codes(db, now)
            row = db.execute(
                "SELECT expires_at, used_at, emergency FROM pair_codes WHERE code_hash = ?",
                (code_hash,),
            ).fetchone()
            if row is None:
                raise PairingError(REASON_INVALID_CODE)
            expires_at, used_at, emergency = row
            if used_at is not None:
                raise PairingError(REASON_USED_CODE)
            if now >= expires_at:
                raise PairingError(REASON_EXPIRED_CODE)
            rooms = self._rooms_of(db, "pair_code_rooms", "code_hash", code_hash)
            name = self._free_device_name(db, device_name)
            db.execute("DELETE FROM devices WHERE name = ?", (name,))  # a revoked one, if any
            db.execute(
                "INSERT INTO devices (name, token_hash, paired_at, name_key, emergency)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, _sha256(token), now, name_key(name), emergency),
            )
            db.executemany(
                "INSERT INTO device_rooms (device, room) VALUES (?, ?)",
                [(name, room) for room in rooms],
            )
            db.execute(
                "UPDATE pair_codes SET used_at = ?, device = ? WHERE code_hash = ?",
                (now, name, code_hash),
            )
        logger.info(
            "device %s paired (rooms %s%s)",
            name,
            ", ".join(rooms) or "none",
            "; emergency" if emergency else "",
        )
        return Pairing(device_name=name, auth_token=token, rooms=rooms)

    @classmethod
    def _free_device_name(cls, db: sqlite3.Connection, wanted: str) -> str:
        """``wanted``, or ``wanted-2``, ``wanted-3``…: the first name that neither a user nor
        an active device holds, nor one that looks like it (a revoked device's name may be
        taken over)."""
        suffix = 1
        while True:
            if suffix == 1:
                name = wanted
            else:
                tail = f"-{suffix}"
                name = wanted[: MAX_NAME - len(tail)].rstrip() + tail
            if cls._holder(db, name_key(name)) is None:
                return name
            suffix += 1


def open_registry(path: Path, *, create: bool = False) -> Registry:
    """The one way the admin commands open the registry. Only ``room add`` (the first step of
    setting up a server) may create it: everywhere else a missing file is a typo, not a new
    server."""
    if not create and not path.exists():
        raise RegistryError(
            f"no registry at {path}: check --db (or $PTTD_DB), or create one with "
            f"'pttd server room add NAME --db {path}'"
        )
    existed = path.exists()
    registry = Registry(path)
    if not existed:
        print(f"created a new registry at {path}", file=sys.stderr)
    return registry
