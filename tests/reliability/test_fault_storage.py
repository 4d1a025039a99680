"""A full disk and a read-only state directory while the device saves its credential or settings.

Real file systems where this machine allows it: a 64 KiB tmpfs filled to the last block (writes
fail with ENOSPC), and a tmpfs remounted read-only (EROFS). Mounting needs root with
CAP_SYS_ADMIN; without it the disk-full tests are skipped (``tests/device/test_store.py`` covers
the same failure with RLIMIT_FSIZE) and the read-only ones use a directory without write
permission instead (which only works for a user that is not root).

Every failed save must raise :class:`StoreError` naming the file, keep the old state intact and
loadable, and leave no temporary file behind; a running device must log it and keep working.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from relkit import PASSWORDS, hear_stream, pair_over_wire, start_radio, user_client
from waits import eventually

from pttd.errors import StoreError
from pttd.radio.store import CREDENTIAL_FILE, SETTINGS_FILE, Credential, Settings, Store
from pttd.server.app import RoomServer
from pttd.server.registry import Registry

OLD = Credential("ws://127.0.0.1:1", "radio-old", "old-token-" + "a" * 33, ("alpha",), 1.0)
NEW = Credential("ws://127.0.0.1:2", "radio-new", "new-token-" + "b" * 33, ("beta",), 2.0)


def _mount(*args: str) -> bool:
    if os.geteuid() != 0:
        return False
    try:
        done = subprocess.run(["mount", *args], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10, check=False)


@dataclass
class Fs:
    root: Path
    kind: str  # "enospc", "erofs", "eacces"

    def fill(self) -> None:
        """Write a filler file until the file system refuses another byte."""
        with (self.root / "filler").open("wb", buffering=0) as f:
            block = b"\0" * 4096
            with contextlib.suppress(OSError):
                while True:
                    f.write(block)
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0")

    def free(self) -> None:
        (self.root / "filler").unlink(missing_ok=True)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Fs]:
    root = tmp_path / "small"
    root.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(root)):
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        yield Fs(root, "enospc")
    finally:
        _umount(root)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Fs]:
    """A directory that refuses writes, once :func:`make_read_only` is called on it."""
    root = tmp_path / "ro"
    root.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(root))
    if not mounted and os.geteuid() == 0:
        pytest.skip("root without mount: no way to make a directory read-only for root here")
    try:
        yield Fs(root, "erofs" if mounted else "eacces")
    finally:
        if mounted:
            _umount(root)
        else:
            for path in (root, *root.iterdir()):
                if path.is_dir():
                    path.chmod(0o700)


def make_read_only(fs: Fs, state: Path) -> None:
    if fs.kind == "erofs":
        assert _mount("-o", "remount,ro", str(fs.root)), "remount read-only failed"
    else:
        state.chmod(0o500)


def leftovers(state: Path) -> list[str]:
    return sorted(p.name for p in state.iterdir() if p.name.endswith(".tmp"))


EXPECTED = {
    "enospc": os.strerror(errno.ENOSPC),
    "erofs": os.strerror(errno.EROFS),
    "eacces": os.strerror(errno.EACCES),
}


@pytest.mark.parametrize("fault", ["full_disk", "read_only"])
def test_saving_on_a_failing_file_system_keeps_the_old_state(
    fault: str, request: pytest.FixtureRequest
) -> None:
    fs: Fs = request.getfixturevalue(fault)
    state = fs.root / "state"
    store = Store(state)
    store.save_credential(OLD)
    store.save_settings(Settings(room="alpha", volume=40, values={"talk.timeout": 30.0}))
    before = {name: (state / name).read_bytes() for name in (CREDENTIAL_FILE, SETTINGS_FILE)}
    if fs.kind == "enospc":
        fs.fill()
    else:
        make_read_only(fs, state)

    with pytest.raises(StoreError) as caught:
        store.save_credential(NEW)
    message = str(caught.value)
    assert str(state / CREDENTIAL_FILE) in message and EXPECTED[fs.kind] in message
    assert "old state is kept" in message
    with pytest.raises(StoreError) as caught:
        store.update_settings(volume=90, room="beta")
    assert str(state / SETTINGS_FILE) in str(caught.value)

    for name, data in before.items():
        assert (state / name).read_bytes() == data, f"{name} changed"
    assert Store(state).credential() == OLD
    assert Store(state).settings() == Settings(
        room="alpha", volume=40, values={"talk.timeout": 30.0}
    )
    assert leftovers(state) == []

    if fs.kind == "enospc":  # space again: saving works again
        fs.free()
        store.save_credential(NEW)
        assert Store(state).credential() == NEW


async def test_a_running_device_on_a_full_disk_keeps_working(
    full_disk: Fs,
    registry: Registry,
    server: RoomServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    credential = await pair_over_wire(server.url, registry, "radio-full")
    radio = await start_radio(full_disk.root, credential)
    state = full_disk.root / credential.device_name
    listener = await user_client(server.url, "alice", PASSWORDS["alice"])
    try:
        await radio.wait_online()
        saved = (state / CREDENTIAL_FILE).read_bytes()
        settings_before = Store(state).settings()
        full_disk.fill()
        with caplog.at_level(logging.ERROR, logger="pttd"):
            volume = radio.sim.device.change_volume(-30)  # applied now, not saved
        assert radio.sim.device.mixer.volume == volume
        assert any("volume not saved" in r.getMessage() for r in caplog.records)
        assert Store(state).settings() == settings_before
        # It still talks and is heard.
        radio.sim.button.press()
        await hear_stream(listener, radio.name)
        radio.sim.button.release()
        await radio.wait_mic_closed()
    finally:
        await radio.sim.stop()
        await listener.close()
    radio.watch.check()
    assert (state / CREDENTIAL_FILE).read_bytes() == saved
    assert leftovers(state) == []
    # Restarted on the still-full disk, it comes back with its credential.
    again = await start_radio(full_disk.root, credential, save=False)
    try:
        await again.wait_online()
    finally:
        await again.sim.stop()


async def test_console_config_set_on_a_full_disk_says_so(
    full_disk: Fs, registry: Registry, server: RoomServer
) -> None:
    device_backend = pytest.importorskip("pttd.radio.console.device_backend")
    interpreter = pytest.importorskip("pttd.radio.console.interpreter")
    credential = await pair_over_wire(server.url, registry, "radio-console")
    radio = await start_radio(full_disk.root, credential)
    state = full_disk.root / credential.device_name
    try:
        await radio.wait_online()
        await eventually(lambda: (state / SETTINGS_FILE).exists(), what="room saved")
        before = (state / SETTINGS_FILE).read_bytes()
        backend = device_backend.DeviceBackend(radio.sim.device)
        console = interpreter.Console(backend)

        async def say(line: str, now: float) -> str:
            """The line, and its effects carried out by the device's back-end (as the
            transport does)."""
            reply = console.handle_line(line, now)
            texts = [reply.text]
            while (effect := reply.effect) is not None:
                try:
                    outcome = await backend.run(effect, lambda _: None)
                except Exception as exc:
                    outcome = exc
                reply = console.finish(effect, outcome, now)
                texts.append(reply.text)
            return "\n".join(texts)

        await say("", 0.0)  # the banner
        full_disk.fill()
        out = await say("config set talk.timeout 30", 1.0)
        assert "not saved" in out and str(state / SETTINGS_FILE) in out, out
        assert os.strerror(errno.ENOSPC) in out
        assert (state / SETTINGS_FILE).read_bytes() == before
        full_disk.free()
        out = await say("config set talk.timeout 30", 2.0)
        assert "saved" in out and "not saved" not in out, out
        assert Store(state).settings().values.get("talk.timeout") == 30.0
        assert replace(Store(state).settings(), values={}).room == "alpha"
    finally:
        await radio.sim.stop()
