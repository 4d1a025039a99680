"""The systemd units: offline security exposure, `systemd-analyze verify`, and the settings that
keep the device's hardware reachable (each one a way a service fails where a shell works)."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from deploy_helpers import SYSTEMD, need

from pttd.radio.doctor import SERVICE_GROUPS, SERVICE_USER

EXPOSURE = re.compile(r"Overall exposure level for (\S+): (\d+\.\d+) (\w+)")
TARGETS = {"pttd.service": 2.0, "pttd-server.service": 1.5}


def unit_settings(name: str) -> dict[str, list[str]]:
    """Service and unit settings, each with every value it was given (settings repeat)."""
    settings: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    return settings


def exposure(unit: Path) -> tuple[float, str]:
    need("systemd-analyze")
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    match = EXPOSURE.search(result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(2)), match.group(0)


@pytest.mark.parametrize(("name", "target"), sorted(TARGETS.items()))
def test_offline_security_exposure(name: str, target: float) -> None:
    level, line = exposure(SYSTEMD / name)
    print(line)
    assert level <= target, line
    # the same limit as systemd-analyze's own gate (tenths)
    gate = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=yes",
            f"--threshold={round(target * 10)}",
            "--no-pager",
            str(SYSTEMD / name),
        ],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert gate.returncode == 0


@pytest.fixture(scope="module")
def verify_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with the distribution's units (targets the units order against) and an executable
    where ExecStart= expects pttd."""
    need("systemd-analyze")
    root = tmp_path_factory.mktemp("verify-root")
    units = Path("/usr/lib/systemd/system")
    if not units.is_dir():
        pytest.skip("no /usr/lib/systemd/system on this machine")
    shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
    binary = root / "opt/pttd/venv/bin/pttd"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    return root


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_verify_is_clean(verify_root: Path, name: str) -> None:
    shutil.copy(SYSTEMD / name, verify_root / "etc/systemd/system" / name)
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={verify_root}", name],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""


def test_verify_would_catch_a_broken_unit(verify_root: Path) -> None:
    broken = (SYSTEMD / "pttd.service").read_text().replace("Type=notify", "Type=notifyy")
    (verify_root / "etc/systemd/system/broken.service").write_text(broken)
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={verify_root}", "broken.service"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert "Failed to parse service type" in result.stderr


def test_device_unit_is_a_watched_notify_service_that_restarts() -> None:
    s = unit_settings("pttd.service")
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert float(s["WatchdogSec"][0]) > 0
    assert s["Restart"] == ["on-failure"]  # includes the watchdog's kill
    assert s["StartLimitIntervalSec"] == ["0"]
    assert s["ExecStart"] == ["/opt/pttd/venv/bin/pttd run --config /etc/pttd/pttd.toml"]
    assert s["WantedBy"] == ["multi-user.target"]


def test_device_unit_reaches_gpio_sound_serial_and_input_devices() -> None:
    s = unit_settings("pttd.service")
    assert s["User"] == ["pttd"]
    groups = {"gpio", "audio", "dialout", "input", "bluetooth"}  # bluetooth: BlueZ on D-Bus
    assert set(s["SupplementaryGroups"][0].split()) == groups
    assert s["PrivateDevices"] == ["no"]
    assert s["DevicePolicy"] == ["closed"]
    allowed = {v.split()[0]: v.split()[1] for v in s["DeviceAllow"]}
    for group in ("gpiochip", "alsa", "ttyAMA", "ttyS", "ttyGS", "ttyUSB", "ttyACM", "input"):
        assert allowed.get(f"char-{group}") == "rw", group
    families = set(s["RestrictAddressFamilies"][0].split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}  # server link; sd_notify


def test_device_unit_avoids_the_settings_that_break_a_service_but_not_a_shell() -> None:
    s = unit_settings("pttd.service")
    # cffi (sounddevice's stream callback) needs writable executable memory
    assert "MemoryDenyWriteExecute" not in s
    # gpiozero reads /proc/device-tree and /proc/cpuinfo to know the board
    assert "ProcSubset" not in s
    # lgpio makes its notification pipes in the working directory
    assert s["RuntimeDirectory"] == ["pttd"]
    assert s["WorkingDirectory"] == ["/run/pttd"]
    assert "GPIOZERO_PIN_FACTORY=lgpio" in s["Environment"]
    assert s["StateDirectory"] == ["pttd"] and s["ConfigurationDirectory"] == ["pttd"]


def test_server_unit_is_locked_down_to_its_port() -> None:
    s = unit_settings("pttd-server.service")
    assert s["User"] == ["pttd-server"]
    assert s["PrivateDevices"] == ["yes"]
    assert s["MemoryDenyWriteExecute"] == ["yes"]
    assert s["SocketBindAllow"] == ["tcp:8080"]
    assert "--port 8080" in s["ExecStart"][0]
    assert "--db /var/lib/pttd-server/" in s["ExecStart"][0]
    assert s["StateDirectory"] == ["pttd-server"]


def test_sysusers_and_tmpfiles_agree_with_the_units() -> None:
    sysusers = (SYSTEMD / "pttd.sysusers").read_text()
    assert re.search(r"^u pttd - .* /var/lib/pttd$", sysusers, re.M)
    for group in unit_settings("pttd.service")["SupplementaryGroups"][0].split():
        assert re.search(rf"^m pttd {group}$", sysusers, re.M), group
    assert re.search(r"^u pttd-server - ", (SYSTEMD / "pttd-server.sysusers").read_text(), re.M)
    # pttd doctor judges device access with the unit's groups
    groups = unit_settings("pttd.service")["SupplementaryGroups"][0].split()
    assert tuple(groups) == SERVICE_GROUPS
    assert unit_settings("pttd.service")["User"] == [SERVICE_USER]
    assert "d /var/lib/pttd 0700 pttd pttd -" in (SYSTEMD / "pttd.tmpfiles").read_text()


# --- writable executable memory, as the kernel enforces it (PR_SET_MDWE, Linux 6.3+) ---------

PR_SET_MDWE = 65
MDWE_RUNNER = textwrap.dedent(
    """
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:
        sys.exit(77)
    os.execv(sys.argv[1], sys.argv[1:])
    """
)


def mdwe_supported() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(66, 0, 0, 0, 0) >= 0)  # PR_GET_MDWE


def run_under_mdwe(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", MDWE_RUNNER, *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@pytest.mark.skipif(not mdwe_supported(), reason="kernel without PR_SET_MDWE (Linux < 6.3)")
def test_why_the_device_unit_allows_writable_executable_memory() -> None:
    """Under MemoryDenyWriteExecute= a cffi callback cannot be made: sounddevice's streams would
    fail as a service (they need PortAudio, not a sound card, to show it)."""
    pytest.importorskip("sounddevice", exc_type=OSError)
    code = "import sounddevice as sd; sd._ffi.callback('PaStreamCallback', lambda *a: 0)"
    result = run_under_mdwe(sys.executable, "-c", code)
    assert result.returncode != 0
    assert "Cannot allocate write+execute memory for ffi.callback()" in result.stderr


@pytest.mark.skipif(not mdwe_supported(), reason="kernel without PR_SET_MDWE (Linux < 6.3)")
def test_the_room_server_runs_without_writable_executable_memory(tmp_path: Path) -> None:
    """What pttd-server.service's MemoryDenyWriteExecute=yes relies on: the whole `pttd server`
    command starts, serves a logon (scrypt, SQLite, TLS-free websockets) and stops."""
    pttd = Path(sys.executable).with_name("pttd")
    db = tmp_path / "server.db"
    subprocess.run([pttd, "server", "room", "add", "a", "--db", db], check=True, timeout=60)
    client = textwrap.dedent(
        """
        import asyncio, json, subprocess, sys
        from websockets.asyncio.client import connect
        async def main():
            server = await asyncio.create_subprocess_exec(
                *sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            line = (await asyncio.wait_for(server.stdout.readline(), 30)).decode()
            url = line.split()[-1]
            async with connect(url) as ws:
                await ws.send(json.dumps({"command": "logon", "seq": 1, "username": "u",
                                          "password": "p", "channels": ["a"]}))
                print(await asyncio.wait_for(ws.recv(), 10))
            server.terminate()
            print("exit", await server.wait())
        asyncio.run(main())
        """
    )
    server = [
        sys.executable,
        "-c",
        MDWE_RUNNER,
        str(pttd),
        "server",
        "run",
        "--port",
        "0",
        "--db",
        str(db),
    ]
    result = subprocess.run(
        [sys.executable, "-c", client, *server],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"error":"not authorized"' in result.stdout
    assert "exit 0" in result.stdout


def test_unit_files_are_world_readable() -> None:
    for unit in TARGETS:
        assert (SYSTEMD / unit).stat().st_mode & stat.S_IROTH
    assert os.access(SYSTEMD / "pttd.service", os.R_OK)
