"""The registry's file: one (or its -wal/-shm) that other users may read is made private at open,
or refused."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pttd.server.registry import Registry

PTTD = [sys.executable, "-m", "pttd.cli"]


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


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
