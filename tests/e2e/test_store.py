"""The device's persisted state: atomic writes, 0600 credentials, failures that keep the old state.

Write failures are real ones. The tests run as root here, where a read-only mode bit stops
nothing, so a failure is made in a child process that really cannot write: one whose file size
limit (RLIMIT_FSIZE) is below the credential's size (the write fails part-way, as on a full
disk), and one without the capability that lets root ignore permissions (CAP_DAC_OVERRIDE,
dropped with util-linux's setpriv) writing into a 0500 directory. A power cut is a SIGKILL at a
random moment of a child that saves credentials in a loop.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from device_harness import Rig, make_device

from pttd.errors import PttdError, StoreError
from pttd.radio.console.pin import hash_pin, pin_matches
from pttd.radio.leds import MemoryLed
from pttd.radio.machine import Link
from pttd.radio.store import (
    CREDENTIAL_FILE,
    PIN_FILE,
    SETTINGS_FILE,
    Credential,
    Settings,
    Store,
)
from pttd.sim.device import sim_config

CREDENTIAL = Credential(
    server_url="ws://127.0.0.1:9",
    device_name="gate-3",
    auth_token="old-token-" + "x" * 40,
    rooms=("demo", "ops"),
    paired_at=1700000000.0,
)


def child(code: str, *args: str, prefix: tuple[str, ...] = ()) -> str:
    """Run ``code`` in a fresh interpreter; return its stderr (it must exit 0)."""
    done = subprocess.run(
        [*prefix, sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# The child's side of the write-failure tests: try to save a new credential, report the error.
SAVE_NEW = """
    import sys
    from pttd.errors import StoreError
    from pttd.radio.store import Credential, Store
    new = Credential("ws://127.0.0.1:9", "gate-3", "new-token-" + "y" * 400, ("demo",), 1.0)
    try:
        Store(sys.argv[1]).save_credential(new)
    except StoreError as exc:
        print(f"StoreError: {exc}")
    else:
        print("saved")
"""


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- writing


def test_credential_round_trip_is_0600_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    assert store.credential() is None
    store.save_credential(CREDENTIAL)
    path = tmp_path / "state" / CREDENTIAL_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert store.credential() == CREDENTIAL
    assert leftovers(tmp_path / "state") == []
    # Saved again over a file someone made world-readable: 0600 again.
    path.chmod(0o644)
    store.save_credential(CREDENTIAL)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "old-token" not in repr(store.credential())  # the token stays out of reprs


def test_settings_round_trip_and_update(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.settings() == Settings()
    store.update_settings(room="ops")
    store.update_settings(volume=40)
    assert store.settings() == Settings(room="ops", volume=40)
    assert stat.S_IMODE((tmp_path / SETTINGS_FILE).stat().st_mode) == 0o600
    # Damaged or nonsense settings are not worth refusing to start for.
    (tmp_path / SETTINGS_FILE).write_text('{"room": 3, "volume": 900}')
    assert store.settings() == Settings()
    (tmp_path / SETTINGS_FILE).write_text("{not json")
    assert store.settings() == Settings()


def test_wipe_removes_credential_settings_and_the_pin(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.save_credential(CREDENTIAL)
    store.update_settings(room="demo")
    store.save_pin(hash_pin("2468", n=16))
    store.wipe()
    assert store.credential() is None and store.settings() == Settings() and store.pin() is None
    assert sorted(os.listdir(tmp_path)) == []
    store.wipe()  # nothing there: fine


def test_pin_record_round_trip_is_0600(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    assert store.pin() is None
    record = hash_pin("2468", n=16).wrong().wrong().right().wrong()
    store.save_pin(record)
    assert stat.S_IMODE((tmp_path / "state" / PIN_FILE).stat().st_mode) == 0o600
    again = store.pin()
    assert again == record and (again.failures, again.wrong_total) == (1, 3)
    assert pin_matches(again, "2468") and not pin_matches(again, "2469")
    assert again.hash not in repr(again)
    store.wipe_pin()
    assert store.pin() is None and leftovers(tmp_path / "state") == []


def test_a_pin_record_of_the_first_format_still_unlocks(tmp_path: Path) -> None:
    """What the console saved before pttd.kdf: salt and hash in base64, the parameters apart. It
    verifies as it is, and is saved in the hash-string format at the next change."""
    salt = bytes(range(16))
    digest = hashlib.scrypt(b"2468", salt=salt, n=2**10, r=8, p=1, dklen=32)
    first = {
        "scheme": "scrypt",
        "salt": base64.b64encode(salt).decode(),
        "hash": base64.b64encode(digest).decode(),
        "n": 2**10,
        "r": 8,
        "p": 1,
        "failures": 2,
        "wrong_total": 5,
    }
    (tmp_path / PIN_FILE).write_text(json.dumps(first))
    store = Store(tmp_path)
    record = store.pin()
    assert record is not None and (record.failures, record.wrong_total) == (2, 5)
    assert pin_matches(record, "2468") and not pin_matches(record, "1357")
    store.save_pin(record.right())
    saved = json.loads((tmp_path / PIN_FILE).read_text())
    assert saved == {"hash": record.hash, "failures": 0, "wrong_total": 5}
    assert record.hash.startswith(f"scrypt${2**10}$8$1${salt.hex()}$")
    assert pin_matches(Store(tmp_path).pin(), "2468")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "damaged",
    [
        "{not json",
        "[]",
        "{}",
        '{"hash": "scrypt$16$8$1$zz$00"}',
        '{"hash": 7}',
        '{"hash": "scrypt$16$8$1$0011$0011", "failures": -1}',
        '{"scheme": "scrypt", "salt": "!!", "hash": "AA==", "n": 16, "r": 8, "p": 1}',
    ],
)
def test_a_damaged_pin_record_is_a_store_error_naming_the_file(
    tmp_path: Path, damaged: str
) -> None:
    (tmp_path / PIN_FILE).write_text(damaged)
    with pytest.raises(StoreError, match=PIN_FILE):
        Store(tmp_path).pin()


def test_a_write_that_fails_part_way_keeps_the_old_credential(tmp_path: Path) -> None:
    Store(tmp_path).save_credential(CREDENTIAL)
    before = (tmp_path / CREDENTIAL_FILE).read_bytes()
    limited = """
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
    """
    out = child(textwrap.dedent(limited) + textwrap.dedent(SAVE_NEW), str(tmp_path))
    assert out.startswith("StoreError: ")
    assert str(tmp_path / CREDENTIAL_FILE) in out  # names the file
    assert "old state is kept" in out
    assert (tmp_path / CREDENTIAL_FILE).read_bytes() == before
    assert Store(tmp_path).credential() == CREDENTIAL
    assert leftovers(tmp_path) == []  # the partial temporary file was removed


def test_a_read_only_directory_keeps_the_old_credential(tmp_path: Path) -> None:
    state = tmp_path / "state"
    Store(state).save_credential(CREDENTIAL)
    before = (state / CREDENTIAL_FILE).read_bytes()
    state.chmod(0o500)
    try:
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("root, and no setpriv to drop CAP_DAC_OVERRIDE with")
            # Root without the capabilities that bypass file permissions.
            drop = "-dac_override,-dac_read_search,-fowner"
            prefix = (setpriv, "--inh-caps=-all", f"--bounding-set={drop}", "--")
            out = child(SAVE_NEW, str(state), prefix=prefix)
        else:
            out = child(SAVE_NEW, str(state))
    finally:
        state.chmod(0o700)
    assert out.startswith("StoreError: "), out
    assert str(state / CREDENTIAL_FILE) in out
    assert (state / CREDENTIAL_FILE).read_bytes() == before
    assert leftovers(state) == []


def test_a_state_directory_that_is_a_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("not a directory")
    store = Store(state)
    with pytest.raises(StoreError, match=r"state directory .*state"):
        store.save_credential(CREDENTIAL)
    with pytest.raises(StoreError, match=r"cannot read"):
        store.credential()
    assert state.read_text() == "not a directory"


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (b"", "not valid JSON"),
        (b'{"server_url": "ws://x", "device_na', "not valid JSON"),
        (b"\x00\x00\x00\x00", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"server_url": "ws://x", "device_name": "d"}', "incomplete credential"),
        (b'{"server_url": "ws://x", "device_name": "d", "auth_token": "t", "rooms": 3}', "incomp"),
    ],
)
def test_a_damaged_credential_is_a_store_error_naming_the_file(
    tmp_path: Path, content: bytes, complaint: str
) -> None:
    (tmp_path / CREDENTIAL_FILE).write_bytes(content)
    with pytest.raises(StoreError) as caught:
        Store(tmp_path).credential()
    assert str(tmp_path / CREDENTIAL_FILE) in str(caught.value)
    assert complaint in str(caught.value)
    assert isinstance(caught.value, PttdError) and isinstance(caught.value, OSError)


async def test_a_damaged_credential_starts_the_daemon_unpaired(rig: Rig, tmp_path: Path) -> None:
    state = tmp_path / "damaged"
    state.mkdir()
    (state / CREDENTIAL_FILE).write_text('{"server_url": "ws://127.0.0.1:9", "auth_tok')
    device = make_device(sim_config("device-a", rig.url, state))
    rig.devices.append(device)
    await device.start()
    await device.until(lambda m: m.link is Link.UNPAIRED)
    assert device.device.credential is None
    assert device.device.status().paired is False
    error = device.device.leds.error
    assert isinstance(error, MemoryLed) and error.state.mode == "blink"
    # It does not try to connect; a press gives the error tone and opens nothing.
    device.button.press()
    await device.until(lambda m: m.blocked)
    assert not device.mic.is_open
    assert device.device.link.connects == 0 and device.machine.link is Link.UNPAIRED
    device.button.release()
    # A new pairing brings it online.
    fresh = await rig.credential("device-a")
    device.device.store.save_credential(fresh)
    device.device.set_credential(fresh)
    await device.online()


# --------------------------------------------------------------------------- power loss


SAVE_FOREVER = """
    import sys
    from pttd.radio.store import Credential, Store
    store = Store(sys.argv[1])
    rooms = ("demo", "ops", "yard")
    i = 0
    while True:
        i += 1
        token = f"token-{i:08d}-" + "z" * (i % 300)  # lengths vary: a torn write would show
        store.save_credential(Credential("ws://127.0.0.1:9", f"gate-{i}", token, rooms, 1.0))
        if i == 1:
            print("saving", flush=True)
"""


def check_complete(credential: Credential | None) -> int:
    """The credential is one the child wrote whole: its fields agree with each other."""
    assert credential is not None
    number = int(credential.device_name.removeprefix("gate-"))
    assert credential.auth_token == f"token-{number:08d}-" + "z" * (number % 300)
    assert credential.rooms == ("demo", "ops", "yard")
    assert credential.server_url == "ws://127.0.0.1:9"
    return number


def test_power_loss_leaves_the_old_or_the_new_credential_never_a_broken_one(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    rng = random.Random(1234)
    last = 0
    for _ in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(SAVE_FOREVER), str(state)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "saving\n"
            time.sleep(rng.uniform(0.0, 0.05))
        finally:
            proc.kill()  # SIGKILL: no clean-up runs, as at a power cut
            proc.wait(30)
        number = check_complete(Store(state).credential())
        assert number >= 1
        last = number
        data = json.loads((state / CREDENTIAL_FILE).read_bytes())
        assert set(data) == {
            "server_url",
            "device_name",
            "auth_token",
            "rooms",
            "paired_at",
            "identity_key",
            "authority_key",
        }
        assert stat.S_IMODE((state / CREDENTIAL_FILE).stat().st_mode) == 0o600
    assert last >= 1
    # At most the one write in progress at each kill leaves a temporary file behind; a wipe
    # (factory reset) removes those too, whole tokens and torn ones alike.
    assert len(leftovers(state)) <= 20
    Store(state).wipe()
    assert list(state.iterdir()) == []
