"""The installer's text edits: the config it renders, config.txt and cmdline.txt."""

from __future__ import annotations

from pathlib import Path

import pytest

from pttd.radio.boards import load_profile, profile_names
from pttd.radio.config import parse_config
from pttd.radio.installer import (
    BACKUP_SUFFIX,
    EXIT_CHANGED,
    apply_boot,
    boot_dir,
    edit_cmdline,
    edit_config_txt,
    example_config,
    guess_board,
    main,
    plan_boot,
    render_config,
    set_key,
)

PI_OS_CONFIG = """\
# For more options and information see
# http://rptl.io/configtxt

# Uncomment some or all of these to enable the optional hardware interfaces
#dtparam=i2c_arm=on
#dtparam=i2s=on
#dtparam=spi=on

# Enable audio (loads snd_bcm2835)
dtparam=audio=on
dtoverlay=vc4-kms-v3d
arm_64bit=1

[cm4]
otg_mode=1

[cm5]
dtoverlay=dwc2,dr_mode=host

[all]
"""
PI_OS_CMDLINE = (
    "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 "
    "fsck.repair=yes rootwait quiet splash plymouth.ignore-serial-consoles\n"
)


def test_set_key_replaces_or_uncomments_in_the_right_table() -> None:
    text = "[a]\nx = 1\n# y = 2\n\n[b]\nx = 3\n"
    assert set_key(text, "b", "x", 4) == "[a]\nx = 1\n# y = 2\n\n[b]\nx = 4\n"
    assert set_key(text, "a", "y", "two") == '[a]\nx = 1\ny = "two"\n\n[b]\nx = 3\n'
    assert set_key(text, "a", "x", None) == "[a]\n# x = 1\n# y = 2\n\n[b]\nx = 3\n"
    assert set_key(text, "a", "x", True).startswith("[a]\nx = true\n")
    with pytest.raises(KeyError, match=r"\[b\] has no y"):
        set_key(text, "b", "y", 1)


def test_the_example_is_the_generic_rendering() -> None:
    generic = render_config(load_profile("generic-pi"), "uart")
    assert generic == example_config()


@pytest.mark.parametrize("name", profile_names())
@pytest.mark.parametrize("console", ["uart", "gadget", "none"])
def test_rendered_configs_are_valid_and_carry_the_profile(name: str, console: str) -> None:
    profile = load_profile(name)
    if console != "none" and console not in profile.console_modes:
        pytest.skip(f"{name} has no {console} console")
    text = render_config(profile, console, name="radio-7", server_url="wss://ptt.example.org")
    config = parse_config(text)
    assert config.device.board == name
    assert config.device.name == "radio-7"
    assert config.server.url == "wss://ptt.example.org"
    assert config.ptt[0].kind == "gpio"
    assert config.ptt[0].pin == profile.defaults["ptt"]
    assert config.leds.transmit == profile.defaults.get("transmit_led")
    assert config.leds.online == profile.defaults.get("online_led")
    assert config.buttons.emergency == profile.defaults.get("emergency")
    assert config.audio.input_device == profile.audio_input[0]
    expected_port = "" if console == "none" else profile.console(console).port
    assert config.console.port == expected_port


def test_config_txt_uncomments_in_place_and_appends_the_rest() -> None:
    wanted = ["dtparam=i2c_arm=on", "dtparam=i2s=on", "dtoverlay=wm8960-soundcard"]
    after = edit_config_txt(PI_OS_CONFIG, [*wanted, "enable_uart=1"], "board x")
    lines = after.splitlines()
    assert "dtparam=i2c_arm=on" in lines[:8]  # where the commented copy was
    assert "#dtparam=i2c_arm=on" not in lines
    assert "#dtparam=spi=on" in lines  # untouched
    assert lines[-3:] == [
        "# pttd (scripts/install): board x",
        "dtoverlay=wm8960-soundcard",
        "enable_uart=1",
    ]
    tail = after.split("[cm5]")[1]
    assert tail.index("[all]") < tail.index("dtoverlay=wm8960-soundcard")
    assert tail.index("dtoverlay=wm8960-soundcard") < tail.index("enable_uart=1")
    # idempotent
    assert edit_config_txt(after, [*wanted, "enable_uart=1"], "board x") == after


def test_config_txt_adds_an_all_section_when_the_file_ends_in_another() -> None:
    text = "arm_64bit=1\n[pi4]\narm_boost=1\n"
    after = edit_config_txt(text, ["enable_uart=1"], "uart console")
    assert after.endswith(
        "[pi4]\narm_boost=1\n\n[all]\n# pttd (scripts/install): uart console\nenable_uart=1\n"
    )


def test_config_txt_lines_in_a_conditional_section_do_not_count() -> None:
    text = "[pi4]\nenable_uart=1\n[all]\n"
    after = edit_config_txt(text, ["enable_uart=1"], "r")
    assert after.count("enable_uart=1") == 2
    assert after.rstrip().endswith("enable_uart=1")


def test_config_txt_conflicting_setting_is_commented_out_not_deleted() -> None:
    text = "enable_uart=0\ndtoverlay=dwc2\n"
    after = edit_config_txt(text, ["enable_uart=1", "dtoverlay=dwc2,dr_mode=peripheral"], "r")
    assert "#enable_uart=0  # pttd (scripts/install): replaced by enable_uart=1" in after
    assert "#dtoverlay=dwc2  # pttd" in after
    assert after.rstrip().endswith("enable_uart=1\ndtoverlay=dwc2,dr_mode=peripheral")


def test_cmdline_loses_only_the_serial_console() -> None:
    after = edit_cmdline(PI_OS_CMDLINE, ["serial0", "ttyS0", "ttyAMA0"])
    assert after.startswith("console=tty1 root=PARTUUID=4e639091-02 ")
    assert "serial0" not in after
    assert after.endswith("plymouth.ignore-serial-consoles\n")
    assert edit_cmdline(after, ["serial0"]) == after
    assert edit_cmdline("console=ttyGS0 console=tty1 rootwait", ["ttyGS0"]) == (
        "console=tty1 rootwait\n"
    )
    assert edit_cmdline(PI_OS_CMDLINE, ["ttyGS0"]) == PI_OS_CMDLINE


def make_boot(root: Path, firmware: bool = True) -> Path:
    boot = root / "boot" / "firmware" if firmware else root / "boot"
    boot.mkdir(parents=True)
    (boot / "config.txt").write_text(PI_OS_CONFIG)
    (boot / "cmdline.txt").write_text(PI_OS_CMDLINE)
    return boot


def test_boot_dir_bookworm_or_older(tmp_path: Path) -> None:
    assert boot_dir(tmp_path) == tmp_path / "boot" / "firmware"
    old = tmp_path / "old"
    make_boot(old, firmware=False)
    assert boot_dir(old) == old / "boot"


def test_apply_boot_keeps_the_original_once_and_prints_diffs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    boot = make_boot(tmp_path)
    profile = load_profile("generic-pi")
    assert apply_boot(plan_boot(tmp_path, profile, "uart"), dry_run=True)
    out = capsys.readouterr().out
    assert "would change" in out and "+enable_uart=1" in out and "-console=serial0,115200" in out
    assert (boot / "config.txt").read_text() == PI_OS_CONFIG  # dry
    assert not (boot / f"config.txt{BACKUP_SUFFIX}").exists()

    assert apply_boot(plan_boot(tmp_path, profile, "uart"), dry_run=False)
    assert (boot / f"config.txt{BACKUP_SUFFIX}").read_text() == PI_OS_CONFIG
    assert (boot / f"cmdline.txt{BACKUP_SUFFIX}").read_text() == PI_OS_CMDLINE
    assert "enable_uart=1" in (boot / "config.txt").read_text()
    capsys.readouterr()

    assert not apply_boot(plan_boot(tmp_path, profile, "uart"), dry_run=False)
    assert capsys.readouterr().out.count("unchanged:") == 2

    # a later change (gadget) keeps the first original, not the intermediate file
    apply_boot(plan_boot(tmp_path, profile, "gadget"), dry_run=False)
    assert (boot / f"config.txt{BACKUP_SUFFIX}").read_text() == PI_OS_CONFIG
    assert "dtoverlay=dwc2,dr_mode=peripheral" in (boot / "config.txt").read_text()


def test_no_boot_files_no_changes(tmp_path: Path) -> None:
    assert plan_boot(tmp_path, load_profile("wm8960-hat"), "uart") == []


def test_guess_board_from_the_model() -> None:
    assert guess_board("Raspberry Pi Zero 2 W Rev 1.0") == "pi-zero2w-usb"
    assert guess_board("Raspberry Pi 5 Model B Rev 1.0") == "pi5-usb"
    assert guess_board("Raspberry Pi 4 Model B Rev 1.5") == "generic-pi"
    assert guess_board("") == "generic-pi"


def test_main_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--board", "pi-zero2w-usb"]) == 0
    out = capsys.readouterr().out
    assert "CONSOLE_PORT=/dev/serial0\n" in out and "CONSOLE_MODE=uart\n" in out

    assert main(["plan", "--board", "pi-zero2w-usb", "--console", "gadget"]) == 2
    assert "has no gadget console" in capsys.readouterr().err

    make_boot(tmp_path)
    assert main(["boot", "--board", "generic-pi", "--root", str(tmp_path)]) == EXIT_CHANGED
    assert main(["boot", "--board", "generic-pi", "--root", str(tmp_path)]) == 0

    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    capsys.readouterr()
    assert main(["guess-board", "--model-file", str(model)]) == 0
    assert capsys.readouterr().out == "pi5-usb\n"

    bad = tmp_path / "bad.toml"
    bad.write_text('[device]\nboard = "nope"\n')
    assert main(["check-config", str(bad)]) == 2
    assert "device.board: no board profile 'nope'" in capsys.readouterr().err
