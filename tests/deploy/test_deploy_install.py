"""scripts/install in a throwaway root: what it lays down, that a second run changes nothing, the
boot file edits (printed, backed up, made once), the dry run, and the uninstall.

``--root`` keeps everything inside the temporary directory: no apt, no pip, and systemctl,
systemd-sysusers and systemd-tmpfiles work on the root's files only. Not exercised here: the apt
and pip steps, and starting the service (they need a real Pi OS system).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_helpers import (
    INSTALL,
    PI_OS_CMDLINE_TXT,
    PI_OS_CONFIG_TXT,
    REPO,
    SYSTEMD,
    need,
    snapshot,
)

from pttd.radio.config import load_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the install sets owners: needs root")


def install(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    need("systemctl", "systemd-sysusers", "systemd-tmpfiles")
    result = subprocess.run(
        [str(INSTALL), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "PTTD_PYTHON": shutil.which("python3") or "python3"},
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def passwd(root: Path) -> dict[str, list[str]]:
    path = root / "etc/passwd"
    if not path.exists():
        return {}
    return {line.split(":")[0]: line.split(":") for line in path.read_text().splitlines()}


def group_members(root: Path, group: str) -> list[str]:
    for line in (root / "etc/group").read_text().splitlines():
        name, _, _, members = line.split(":")
        if name == group:
            return members.split(",") if members else []
    return []


def test_help_and_a_bad_option() -> None:
    assert "--uninstall" in install("--help").stdout
    bad = install("--frobnicate", check=False)
    assert bad.returncode != 0 and "unknown option --frobnicate" in bad.stderr


def test_dry_run_prints_every_action_and_changes_nothing(pi_root: Path) -> None:
    before = snapshot(pi_root)
    out = install("--root", str(pi_root), "--board", "pi4-respeaker-2mic", "--dry-run").stdout
    assert snapshot(pi_root) == before
    for action in (
        "would write /etc/sysusers.d/pttd.conf (new",
        f"+ systemd-sysusers --root={pi_root} pttd.conf",
        "would write /etc/tmpfiles.d/pttd.conf (new",
        "would create directory /etc/pttd (mode 0750, root:pttd)",
        "would write /etc/pttd/pttd.toml (new; mode 0640, root:pttd)",
        "would write /etc/systemd/system/pttd.service (new",
        f"would change {pi_root}/boot/firmware/config.txt (original kept as config.txt.pttd-",
        "+dtoverlay=wm8960-soundcard",
        "+enable_uart=1",
        "-console=serial0,115200 console=tty1",
        f"+ systemctl --root={pi_root} mask serial-getty@ttyS0.service",
        f"+ systemctl --root={pi_root} enable pttd.service",
        "dry run done: nothing was changed",
    ):
        assert action in out, action


def test_install_lays_down_units_user_config_and_console(pi_root: Path) -> None:
    out = install("--root", str(pi_root), "--board", "pi4-respeaker-2mic").stdout

    etc = pi_root / "etc"
    unit = etc / "systemd/system/pttd.service"
    assert unit.read_text() == (SYSTEMD / "pttd.service").read_text()
    wants = etc / "systemd/system/multi-user.target.wants/pttd.service"
    assert os.readlink(wants) == "/etc/systemd/system/pttd.service"
    assert (etc / "sysusers.d/pttd.conf").read_text() == (SYSTEMD / "pttd.sysusers").read_text()
    assert (etc / "tmpfiles.d/pttd.conf").read_text() == (SYSTEMD / "pttd.tmpfiles").read_text()
    assert not (etc / "systemd/system/pttd-server.service").exists()  # device role only

    users = passwd(pi_root)
    uid, gid = int(users["pttd"][2]), int(users["pttd"][3])
    assert users["pttd"][5] == "/var/lib/pttd" and users["pttd"][6].endswith("nologin")
    for group in ("gpio", "audio", "dialout", "input"):
        assert group_members(pi_root, group) == ["pttd"]
    state = pi_root / "var/lib/pttd"
    assert (state.stat().st_uid, state.stat().st_gid, state.stat().st_mode & 0o777) == (
        uid,
        gid,
        0o700,
    )

    config_dir = etc / "pttd"
    assert (config_dir.stat().st_uid, config_dir.stat().st_gid) == (0, gid)
    assert config_dir.stat().st_mode & 0o777 == 0o750
    config_file = config_dir / "pttd.toml"
    assert (config_file.stat().st_gid, config_file.stat().st_mode & 0o777) == (gid, 0o640)
    config = load_config(config_file)
    assert config.device.board == "pi4-respeaker-2mic"
    assert config.device.name == "radio7"  # the image's host name
    assert config.console.port == "/dev/serial0"
    assert config.ptt[0].pin == 17 and config.leds.transmit == 12
    assert config.audio.input_device == "wm8960"
    assert "# Lit exactly while the microphone is live." in config_file.read_text()

    boot = pi_root / "boot/firmware"
    config_txt = (boot / "config.txt").read_text()
    for line in ("enable_uart=1", "dtoverlay=wm8960-soundcard", "dtparam=i2s=on"):
        assert config_txt.splitlines().count(line) == 1, line
    assert "#dtparam=i2s=on" not in config_txt  # uncommented where it was
    cmdline = (boot / "cmdline.txt").read_text()
    assert "console=serial0" not in cmdline
    assert cmdline.startswith("console=tty1 root=PARTUUID=4e639091-02 ")
    assert (boot / "config.txt.pttd-backup").read_text() == PI_OS_CONFIG_TXT
    assert (boot / "cmdline.txt.pttd-backup").read_text() == PI_OS_CMDLINE_TXT
    assert f"changed {boot}/cmdline.txt (original kept as cmdline.txt.pttd-backup)" in out
    assert "-console=serial0,115200 console=tty1" in out  # the diff, printed

    for tty in ("serial0", "ttyS0", "ttyAMA0"):
        assert os.readlink(etc / f"systemd/system/serial-getty@{tty}.service") == "/dev/null"
    assert "reboot to apply the boot changes" in out


def test_a_second_run_changes_nothing(pi_root: Path) -> None:
    install("--root", str(pi_root), "--board", "generic-pi", "--role", "both")
    before = snapshot(pi_root)
    out = install("--root", str(pi_root), "--board", "generic-pi", "--role", "both").stdout
    assert snapshot(pi_root) == before
    assert "done: nothing to change" in out
    assert "wrote " not in out and "changed " not in out and "+ " not in out
    assert "unchanged: /etc/systemd/system/pttd.service" in out
    assert f"unchanged: {pi_root}/boot/firmware/config.txt" in out


def test_an_existing_config_is_kept(pi_root: Path) -> None:
    install("--root", str(pi_root), "--board", "generic-pi")
    config = pi_root / "etc/pttd/pttd.toml"
    mine = config.read_text().replace('name = "radio7"', 'name = "base-camp"')
    config.write_text(mine)
    out = install("--root", str(pi_root), "--board", "wm8960-hat").stdout
    assert config.read_text() == mine
    assert "kept /etc/pttd/pttd.toml (yours" in out
    example = (pi_root / "etc/pttd/pttd.example.toml").read_text()
    assert 'board = "wm8960-hat"' in example  # the reference follows the board


def test_a_broken_existing_config_stops_the_install(pi_root: Path) -> None:
    install("--root", str(pi_root), "--board", "generic-pi")
    (pi_root / "etc/pttd/pttd.toml").write_text("[leds]\ntransmit = 99\n")
    result = install("--root", str(pi_root), "--board", "generic-pi", check=False)
    assert result.returncode != 0
    assert (
        "leds.transmit" in result.stderr and "fix them and run the install again" in result.stderr
    )


def test_gadget_console(pi_root: Path) -> None:
    out = install("--root", str(pi_root), "--board", "generic-pi", "--console", "gadget").stdout
    modules = (pi_root / "etc/modules-load.d/pttd.conf").read_text()
    assert modules.splitlines()[-1] == "g_serial"
    config_txt = (pi_root / "boot/firmware/config.txt").read_text()
    assert config_txt.splitlines().count("dtoverlay=dwc2,dr_mode=peripheral") == 1
    assert "dtoverlay=dwc2,dr_mode=host" in config_txt  # the [cm5] line stays
    # the kernel console on serial0 is not pttd's port in gadget mode: cmdline.txt untouched
    assert (pi_root / "boot/firmware/cmdline.txt").read_text() == PI_OS_CMDLINE_TXT
    getty = pi_root / "etc/systemd/system/serial-getty@ttyGS0.service"
    assert os.readlink(getty) == "/dev/null"
    assert load_config(pi_root / "etc/pttd/pttd.toml").console.port == "/dev/ttyGS0"
    assert "reboot" in out


def test_a_console_the_board_cannot_have_is_refused(pi_root: Path) -> None:
    before = snapshot(pi_root)
    result = install(
        "--root", str(pi_root), "--board", "pi-zero2w-usb", "--console", "gadget", check=False
    )
    assert result.returncode != 0
    assert "only USB data port hosts the sound card" in result.stderr
    assert snapshot(pi_root) == before


def test_an_unknown_board_is_refused(pi_root: Path) -> None:
    result = install("--root", str(pi_root), "--board", "pi9", check=False)
    assert result.returncode != 0 and "there are: generic-pi" in result.stderr


def test_board_guessed_without_a_model_is_generic(pi_root: Path) -> None:
    out = install("--root", str(pi_root), "--dry-run").stdout
    assert "board: generic-pi (guessed from the model: not a Raspberry Pi, or unknown" in out


def test_the_server_role(pi_root: Path) -> None:
    install("--root", str(pi_root), "--role", "server")
    etc = pi_root / "etc"
    assert (etc / "systemd/system/pttd-server.service").exists()
    assert os.readlink(etc / "systemd/system/multi-user.target.wants/pttd-server.service")
    assert "pttd-server" in passwd(pi_root)
    assert not (etc / "systemd/system/pttd.service").exists()
    assert (pi_root / "boot/firmware/config.txt").read_text() == PI_OS_CONFIG_TXT


def test_uninstall_keeps_state_unless_purged(pi_root: Path) -> None:
    install("--root", str(pi_root), "--board", "generic-pi", "--role", "both")
    credential = pi_root / "var/lib/pttd/credential.json"
    credential.write_text("{}")
    out = install("--root", str(pi_root), "--uninstall").stdout
    etc = pi_root / "etc"
    for gone in (
        "systemd/system/pttd.service",
        "systemd/system/pttd-server.service",
        "systemd/system/multi-user.target.wants/pttd.service",
        "systemd/system/serial-getty@ttyS0.service",  # unmasked
        "sysusers.d/pttd.conf",
        "tmpfiles.d/pttd.conf",
    ):
        assert not (etc / gone).exists(), gone
    assert not (pi_root / "opt/pttd").exists()
    assert (etc / "pttd/pttd.toml").exists() and credential.exists()
    assert "pttd" in passwd(pi_root)
    assert "--purge removes them" in out
    # boot files are left as they are (no login console comes back by surprise), and said so
    assert "enable_uart=1" in (pi_root / "boot/firmware/config.txt").read_text()
    assert "the originals are in /boot/firmware/config.txt.pttd-backup" in out

    again = install("--root", str(pi_root), "--uninstall").stdout
    assert "absent: /etc/systemd/system/pttd.service" in again

    install("--root", str(pi_root), "--uninstall", "--purge")
    assert not (etc / "pttd").exists() and not (pi_root / "var/lib/pttd").exists()
    assert "pttd" not in passwd(pi_root) and "pttd-server" not in passwd(pi_root)
    assert group_members(pi_root, "gpio") == []  # the group stays, without pttd


def test_the_installed_units_verify_in_the_root(pi_root: Path) -> None:
    need("systemd-analyze")
    install("--root", str(pi_root), "--board", "generic-pi", "--role", "both")
    units = Path("/usr/lib/systemd/system")
    if not units.is_dir():
        pytest.skip("no /usr/lib/systemd/system here")
    shutil.copytree(units, pi_root / "usr/lib/systemd/system", symlinks=True)
    binary = pi_root / "opt/pttd/venv/bin/pttd"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={pi_root}", "pttd.service", "pttd-server.service"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stderr, result.stderr


def test_purge_needs_uninstall() -> None:
    result = install("--purge", check=False)
    assert result.returncode != 0 and "--purge goes with --uninstall" in result.stderr


@pytest.mark.parametrize("script", ["install", "hil-run"])
def test_scripts_pass_shellcheck(script: str) -> None:
    need("shellcheck")
    result = subprocess.run(
        ["shellcheck", str(REPO / "scripts" / script)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout
