"""The registry's file: a schema-1 database carried over to schema 2 with nothing lost, and a
file (or its -wal/-shm) that other users may read made private at open, or refused."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pttd import kdf
from pttd.server.names import name_key
from pttd.server.registry import MAX_REFRESH_FAMILIES, SCHEMA_VERSION, Registry

PTTD = [sys.executable, "-m", "pttd.cli"]

# The schema pttd wrote as version 1, as it was.
SCHEMA_1 = """
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


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def make_schema_1(path: Path, now: float) -> None:
    """A schema-1 registry as a busy server left it: two users whose names look alike, a device,
    a pairing code, and a refresh-token row per logon (live and expired)."""
    with raw(path) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(SCHEMA_1)
        db.execute("PRAGMA user_version = 1")
        db.execute("INSERT INTO rooms VALUES ('ops'), ('yard')")
        for user in ("alice", "Alice"):
            db.execute("INSERT INTO users VALUES (?, ?, ?)", (user, kdf.hash_secret("pw"), now))
            db.execute("INSERT INTO user_rooms VALUES (?, 'ops')", (user,))
        db.execute("INSERT INTO devices VALUES ('radio', ?, ?, 0, NULL)", (sha256("dev"), now))
        db.execute("INSERT INTO device_rooms VALUES ('radio', 'yard')")
        code = sha256("C0DE")
        db.execute("INSERT INTO pair_codes VALUES (?, ?, ?, NULL, NULL)", (code, now, now + 600))
        db.execute("INSERT INTO pair_code_rooms VALUES (?, 'ops')", (code,))
        rows = [(sha256(f"alice-{i}"), "alice", None, now - i, now + 1000) for i in range(40)]
        rows += [(sha256(f"old-{i}"), "alice", None, now - 9000, now - 1) for i in range(20)]
        rows.append((sha256("radio-refresh"), None, "radio", now, now + 1000))
        db.executemany("INSERT INTO refresh_tokens VALUES (?, ?, ?, ?, ?)", rows)


def columns(path: Path) -> dict[str, list[tuple[str, str, int, int]]]:
    with raw(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]
        return {
            t: sorted((c[1], c[2], c[3], c[5]) for c in db.execute(f"PRAGMA table_info({t})"))
            for t in sorted(tables)
        }


def indexes(path: Path) -> set[tuple[str, str]]:
    with raw(path) as db:
        rows = db.execute("SELECT name, tbl_name FROM sqlite_schema WHERE type = 'index'")
        return set(rows)


def test_a_schema_1_registry_is_carried_over_with_nothing_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = time.time()
    old = tmp_path / "old.db"
    make_schema_1(old, now)
    with caplog.at_level(logging.INFO), Registry(old) as reg:
        assert [u.name for u in reg.list_users()] == ["Alice", "alice"]
        assert reg.check_password("alice", "pw") is not None
        assert reg.check_password("Alice", "pw") is not None
        radio = reg.check_device_token("dev")
        assert radio is not None and radio.rooms == {"yard"} and not radio.emergency
        # A refresh token from schema 1 still logs on, once: its successor is of a family.
        legacy = reg.check_refresh_token("radio-refresh")
        assert legacy is not None and legacy.name == "radio"
        successor = reg.issue_refresh_token(legacy)
        assert successor and "." in successor
        assert reg.check_refresh_token("radio-refresh") is None
        assert reg.check_refresh_token(successor) is not None
        # The newest of alice's live tokens were kept, to the bound; expired ones went.
        assert reg.check_refresh_token("alice-0") is not None
        assert reg.check_refresh_token(f"alice-{MAX_REFRESH_FAMILIES - 1}") is not None
        assert reg.check_refresh_token(f"alice-{MAX_REFRESH_FAMILIES}") is None
        assert reg.redeem_pair_code("C0DE", "van").rooms == ("ops",)
    with raw(old) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        keys = db.execute(
            "SELECT name, name_key FROM users UNION ALL SELECT name, name_key FROM devices"
        )
        assert all(key == name_key(name) for name, key in keys)
        assert db.execute("SELECT count(*) FROM refresh_tokens").fetchone()[0] == (
            MAX_REFRESH_FAMILIES + 1
        )
    assert "schema 1 upgraded to 2 (refresh tokens: 9 kept, 52 expired or beyond 8" in caplog.text
    alike = [r for r in caplog.records if "look alike" in r.getMessage()]
    assert len(alike) == 1 and "user 'Alice' and user 'alice'" in alike[0].getMessage()
    # The same tables, columns and indexes as a registry made new.
    new = tmp_path / "new.db"
    Registry(new).close()
    assert columns(old) == columns(new)
    assert indexes(old) == indexes(new)


def test_two_processes_opening_a_schema_1_registry_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_schema_1(path, time.time())
    script = "import sys; from pttd.server.registry import Registry; Registry(sys.argv[1]).close()"
    command = [sys.executable, "-c", script, str(path)]
    procs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [proc.communicate(timeout=60)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], errors
    with Registry(path) as reg:
        assert len(reg.list_users()) == 2


# ---------------------------------------------------------------------------- permissions


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def files(db: Path) -> list[Path]:
    return [db, Path(f"{db}-wal"), Path(f"{db}-shm")]


def test_a_registry_open_to_others_is_made_private_with_one_warning(tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    Registry(db).close()
    with raw(db) as keeper:  # holds the WAL open, as a running server would
        keeper.execute("SELECT count(*) FROM rooms").fetchone()
        assert all(p.exists() for p in files(db))
        for p in files(db):
            os.chmod(p, 0o644)
        done = subprocess.run(
            [*PTTD, "server", "room", "list", "--db", str(db)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert [mode(p) for p in files(db)] == [0o600] * 3
    assert done.stderr == (
        f"registry {db} was open to other users (server.db 0644, server.db-wal 0644, "
        "server.db-shm 0644): made private (0600)\n"
    )
    again = subprocess.run(
        [*PTTD, "server", "room", "list", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 0 and again.stderr == ""  # private now: nothing to say


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a file someone else's")
def test_a_registry_open_to_others_that_is_not_ours_is_refused() -> None:
    """The command runs as another user than the file's owner (root): it cannot repair the
    mode, so it refuses, in one line, before anything is read."""
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o755)  # the other user may look in, not write
        db = Path(directory) / "server.db"
        Registry(db).close()
        os.chmod(db, 0o644)
        child = textwrap.dedent(
            f"""
            import os, sys
            import pttd.cli, pttd.server.admin, pttd.server.registry
            os.setegid(65534)
            os.seteuid(65534)
            sys.exit(pttd.cli.main(["server", "room", "list", "--db", {str(db)!r}]))
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", child], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 1
        assert done.stderr == (
            f"pttd: registry {db} is open to other users (mode 0644) and cannot be made private "
            f"(Operation not permitted): its owner must run 'chmod 600 {db}'\n"
        )
        assert mode(db) == 0o644
        assert not Path(f"{db}-wal").exists()  # refused before SQLite opened it
