"""The state directory's owner and modes, checked when the daemon opens its store (``pttd run``, and
so its console): refused when someone else could have written there, repaired when others could
only read, with one line naming the path.

Real files, modes and owners. The tests run as root, for whom ``access()`` allows everything: the
checks read owners and mode bits, and a test below shows one refusing what ``access()`` allows.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pttd.errors import StoreError
from pttd.radio.config import Config, StateConfig
from pttd.radio.run import build_device
from pttd.radio.store import CREDENTIAL_FILE, PIN_FILE, SETTINGS_FILE, Credential, Store

OTHER_UID = 65534  # nobody
CREDENTIAL = Credential(
    server_url="ws://127.0.0.1:9",
    device_name="gate-3",
    auth_token="tok-" + "x" * 40,
    rooms=("ops",),
    paired_at=1700000000.0,
)
PLANTED = {"values": {"server.tls_verify": False, "talk.timeout": 3600}}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state directory as the daemon leaves it: 0700, a 0600 credential."""
    directory = tmp_path / "state"
    Store(directory).save_credential(CREDENTIAL)
    assert mode(directory) == 0o700 and mode(directory / CREDENTIAL_FILE) == 0o600
    return directory


def plant_settings(directory: Path, file_mode: int) -> Path:
    path = directory / SETTINGS_FILE
    path.write_text(json.dumps(PLANTED))
    path.chmod(file_mode)
    return path


def refusal(directory: Path) -> str:
    with pytest.raises(StoreError) as raised:
        Store.open(directory)
    message = str(raised.value)
    assert "\n" not in message and "refused" in message and "check it" in message
    return message


def test_a_sound_directory_opens_without_a_word(state: Path, caplog) -> None:
    plant_settings(state, 0o600)
    with caplog.at_level(logging.DEBUG, logger="pttd.radio.store"):
        store = Store.open(state)
    assert store.credential() == CREDENTIAL
    assert caplog.records == []


def test_a_directory_not_there_yet_is_fine_and_not_made(tmp_path: Path) -> None:
    Store.open(tmp_path / "state")
    assert not (tmp_path / "state").exists()


def test_the_world_writable_directory_of_the_issue_is_refused(state: Path) -> None:
    """0777 directory, 0644 credential, planted settings: refused before anything is read or
    repaired."""
    state.chmod(0o777)
    (state / CREDENTIAL_FILE).chmod(0o644)
    plant_settings(state, 0o644)
    message = refusal(state)
    assert message.startswith(f"state directory {state} is writable by group or others (mode 0777)")
    assert "chmod 700" in message
    assert mode(state) == 0o777 and mode(state / CREDENTIAL_FILE) == 0o644  # left to look at


@pytest.mark.parametrize("dir_mode", [0o770, 0o730, 0o703, 0o1777])
def test_a_directory_group_or_others_may_write_is_refused(state: Path, dir_mode: int) -> None:
    state.chmod(dir_mode)
    assert f"(mode {dir_mode:04o})" in refusal(state)


def test_a_directory_of_another_user_is_refused_even_for_root(state: Path) -> None:
    os.chown(state, OTHER_UID, OTHER_UID)
    assert os.access(state, os.W_OK)  # what root's access() says: no help here
    message = refusal(state)
    assert message.startswith(f"state directory {state} belongs to uid {OTHER_UID}, not to")
    assert f"(uid {os.geteuid()})" in message


@pytest.mark.parametrize("name", [CREDENTIAL_FILE, SETTINGS_FILE, PIN_FILE])
def test_a_file_of_another_user_is_refused(state: Path, name: str) -> None:
    path = state / name
    if not path.exists():
        path.write_text("{}")
        path.chmod(0o600)
    os.chown(path, OTHER_UID, OTHER_UID)
    assert refusal(state).startswith(f"{path} belongs to uid {OTHER_UID}")


@pytest.mark.parametrize("file_mode", [0o666, 0o620, 0o602])
def test_planted_settings_are_refused_and_never_applied(state: Path, file_mode: int) -> None:
    """A settings file others could write (server.tls_verify = false, talk.timeout = 3600
    planted) stops the start with one line naming it: the daemon never runs with it."""
    path = plant_settings(state, file_mode)
    message = refusal(state)
    assert message.startswith(f"{path} is writable by group or others (mode {file_mode:04o})")
    assert "TLS check" in message and "chmod 600" in message
    config = Config(state=StateConfig(dir=str(state)))
    with pytest.raises(StoreError, match=r"settings\.json is writable"):
        build_device(config)
    assert json.loads(path.read_text()) == PLANTED and mode(path) == file_mode  # kept, to look at


@pytest.mark.parametrize(
    ("name", "risk"), [(CREDENTIAL_FILE, "someone else's server"), (PIN_FILE, "PIN")]
)
def test_a_credential_or_pin_others_may_write_is_refused(state: Path, name: str, risk: str) -> None:
    path = state / name
    if not path.exists():
        path.write_text("{}")
    path.chmod(0o646)
    message = refusal(state)
    assert message.startswith(f"{path} is writable by group or others") and risk in message


def test_a_symlink_or_a_pipe_in_place_of_a_file_is_refused(state: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(PLANTED))
    elsewhere.chmod(0o600)
    (state / SETTINGS_FILE).symlink_to(elsewhere)
    assert "not a regular file (a symbolic link)" in refusal(state)
    (state / SETTINGS_FILE).unlink()
    os.mkfifo(state / SETTINGS_FILE, 0o600)
    assert "not a regular file (a named pipe)" in refusal(state)  # and no hang opening it


def test_read_bits_are_repaired_and_said(state: Path, caplog) -> None:
    """Others could only read: nothing could have been changed, so the modes are put right, each
    with one warning naming the path; the credential's says its token may have leaked."""
    state.chmod(0o755)
    (state / CREDENTIAL_FILE).chmod(0o644)
    plant_settings(state, 0o640)
    with caplog.at_level(logging.WARNING, logger="pttd.radio.store"):
        store = Store.open(state)
    assert mode(state) == 0o700
    assert mode(state / CREDENTIAL_FILE) == mode(state / SETTINGS_FILE) == 0o600
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"state directory {state} was mode 0755: set to 0700",
        f"{state / CREDENTIAL_FILE} was mode 0644: set to 0600; others could read it, its token "
        "may have been copied: unpair and pair again to be sure",
        f"{state / SETTINGS_FILE} was mode 0640: set to 0600",
    ]
    assert CREDENTIAL.auth_token not in caplog.text
    assert store.credential() == CREDENTIAL


def test_a_readable_file_in_a_closed_directory_leaked_nothing(state: Path, caplog) -> None:
    (state / CREDENTIAL_FILE).chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="pttd.radio.store"):
        Store.open(state)
    assert [r.getMessage() for r in caplog.records] == [
        f"{state / CREDENTIAL_FILE} was mode 0644: set to 0600"
    ]


def test_pttd_run_refuses_with_one_line(state: Path, tmp_path: Path) -> None:
    """``pttd run`` as a real process on the directory of the issue: exit 1, one line on stderr
    naming the directory, nothing else done."""
    state.chmod(0o777)
    (state / CREDENTIAL_FILE).chmod(0o644)
    plant_settings(state, 0o666)
    config = tmp_path / "pttd.toml"
    config.write_text(f'[state]\ndir = "{state}"\n[audio]\nbackend = "sim"\n[console]\nport = ""\n')
    done = subprocess.run(
        [sys.executable, "-m", "pttd.cli", "run", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"pttd: state directory {state} is writable by group or others (mode 0777): refused, "
        "a credential, settings or the PIN record in it may have been planted or removed; "
        "check it, then chmod 700 it (or remove it)"
    ]
    assert CREDENTIAL.auth_token not in done.stderr
