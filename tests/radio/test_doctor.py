"""``pttd doctor``: each check on a made-up machine (a /dev in a temporary directory, a list of
audio devices), the server check against a real room server on 127.0.0.1, plain and wss."""

from __future__ import annotations

import argparse
import asyncio
import grp
import json
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from pttd import cli
from pttd.radio.audio.devices import AudioDevice
from pttd.radio.config import Config, parse_config
from pttd.radio.doctor import (
    Account,
    Check,
    Machine,
    add_parser,
    can_read_write,
    check_audio,
    check_board,
    check_credential,
    check_gpio_access,
    check_opus,
    check_pins,
    check_serial,
    check_server,
    check_sound_access,
    check_state_dir,
    cmd_doctor,
    run_local_checks,
)
from pttd.server.app import RoomServer, ServerSettings
from pttd.server.registry import Registry

ME = os.getuid()
MY_GROUP = os.getgid()


def config(text: str = "", board: str = "generic-pi") -> Config:
    head = f'[device]\nboard = "{board}"\n' if board else ""
    return parse_config(head + text)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == "fail"]


# --------------------------------------------------------------------------- pins


def test_a_pin_that_clashes_with_the_boards_i2s_fails_naming_pin_and_fix() -> None:
    conf = config("[[ptt]]\nkind = 'gpio'\npin = 17\n[leds]\ntransmit = 18\n", "wm8960-hat")
    _, profile = check_board(conf, Machine(model_file=Path("/nonexistent")))
    checks = by_name(check_pins(conf, profile))
    assert checks["pin ptt[0].pin"].status == "pass"
    led = checks["pin leds.transmit"]
    assert led.status == "fail"
    assert "transmit LED on GPIO18 (pin 12)" in led.message
    assert "I2S audio" in led.message and "wm8960-hat" in led.message
    assert led.fix.startswith("move the transmit LED to a free pin (")
    assert "GPIO27 (pin 13)" in led.fix and "set leds.transmit" in led.fix
    assert "GPIO17" not in led.fix  # taken by the PTT
    assert "FAIL  pin leds.transmit: transmit LED on GPIO18 (pin 12)" in led.line()
    assert " -> fix: move the transmit LED" in led.line()


def test_two_functions_on_one_pin_are_the_configs_one_failing_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        tmp_path, "[[ptt]]\nkind = 'gpio'\npin = 'GPIO22'\n[buttons]\nroom_up = 'BOARD15'\n"
    )
    assert cmd_doctor(parse("--config", str(path)), good_machine(tmp_path)) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"FAIL  config: {path}: buttons.room_up: GPIO22 (pin 15) is also the PTT button "
        f"(ptt[0].pin); give each function its own pin -> fix: edit {path} "
        "(pttd config check names each key)"
    )
    assert len(lines) == 2  # and the summary: the same rule as `pttd config check`, once


def test_the_uart_pins_clash_only_while_the_console_is_on_the_uart() -> None:
    led_on_txd = "[leds]\nerror = 14\n"
    on_uart = by_name(check_pins(config(led_on_txd + "[console]\nport = '/dev/serial0'\n"), None))
    assert on_uart["pin leds.error"].status == "fail"
    assert "serial console's UART" in on_uart["pin leds.error"].message
    # No board: the free pins are the header's (not "none left"), the LED's own not among them.
    fix = on_uart["pin leds.error"].fix
    assert fix.startswith("move the error LED to a free pin (GPIO2 (pin 3), GPIO3 (pin 5), ")
    assert "GPIO14" not in fix and "GPIO15" not in fix
    gadget = by_name(check_pins(config(led_on_txd + "[console]\nport = '/dev/ttyGS0'\n"), None))
    assert gadget["pin leds.error"].status == "pass"


def test_a_hat_button_may_be_the_ptt_but_not_an_led() -> None:
    _, profile = check_board(config(board="pi4-respeaker-2mic"), Machine())
    ok = by_name(
        check_pins(config("[[ptt]]\nkind='gpio'\npin=17\n", "pi4-respeaker-2mic"), profile)
    )
    assert ok["pin ptt[0].pin"].status == "pass"
    assert "the HAT's user button" in ok["pin ptt[0].pin"].message
    bad = by_name(check_pins(config("[leds]\nonline = 17\n", "pi4-respeaker-2mic"), profile))
    assert bad["pin leds.online"].status == "fail"


def test_no_pins_is_a_skip() -> None:
    assert [c.status for c in check_pins(config(), None)] == ["skip"]


def test_a_pin_name_off_the_header() -> None:
    (check,) = check_pins(config("[leds]\nonline = 'BOARD2'\n"), None)
    assert check.status == "fail" and "not a GPIO on the 40-pin header" in check.message


# --------------------------------------------------------------------------- board


def test_board_unset_is_fine_and_said_or_for_another_model(tmp_path: Path) -> None:
    check, profile = check_board(config(board=""), Machine())
    assert check.status == "info" and profile is None
    assert check.line().startswith("INFO  board: no board profile set: pins are checked against")
    assert "wm8960-hat" in check.message and " -> fix" not in check.line()
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    check, _ = check_board(config(board="pi4-respeaker-2mic"), Machine(model_file=model))
    assert check.status == "fail"
    assert "this is a Raspberry Pi 5 Model B Rev 1.0" in check.message
    assert "pi5-usb" in check.fix
    check, _ = check_board(config(board="pi5-usb"), Machine(model_file=model))
    assert check.status == "pass"


# --------------------------------------------------------------------------- codec and audio


def test_libopus_loads_here() -> None:
    check = check_opus(config())
    assert check.status == "pass", check
    assert check.message.startswith("libopus ")
    assert "48000 Hz mono in 20 ms frames at 24 kbit/s, complexity 5" in check.message
    assert "FEC on (5 % expected loss), DTX off (read back from the encoder)" in check.message


def test_libopus_check_reads_back_the_configured_encoder() -> None:
    text = (
        "[audio]\nsample_rate = 16000\nframe_ms = 40\nbitrate = 16000\ncomplexity = 3\n"
        "fec = false\nexpected_loss_percent = 12\ndtx = true\n"
    )
    check = check_opus(config(text))
    assert check.status == "pass", check
    assert check.message.endswith(
        "encodes 16000 Hz mono in 40 ms frames at 16 kbit/s, complexity 3, FEC off "
        "(12 % expected loss), DTX on (read back from the encoder)"
    )


def dev(index: int, name: str, ins: int, outs: int, default: bool = False) -> AudioDevice:
    return AudioDevice(index, name, "ALSA", ins, outs, 48000.0, default, default)


PI_DEVICES = [
    dev(0, "bcm2835 Headphones: - (hw:0,0)", 0, 8),
    dev(1, "USB PnP Sound Device: Audio (hw:1,0)", 1, 2),
    dev(2, "default", 64, 64, default=True),
]


def test_named_audio_devices_that_exist_pass() -> None:
    machine = Machine(audio_devices=lambda: PI_DEVICES)
    checks = by_name(
        check_audio(config("[audio]\ninput_device='USB'\noutput_device='usb'"), None, machine)
    )
    assert checks["audio input"].status == "pass"
    assert "USB PnP Sound Device" in checks["audio output"].message


def test_a_missing_audio_device_fails_listing_the_devices() -> None:
    machine = Machine(audio_devices=lambda: PI_DEVICES)
    conf = config("[audio]\ninput_device = 'wm8960'\noutput_device = 'wm8960'", "wm8960-hat")
    _, profile = check_board(conf, machine)
    checks = by_name(check_audio(conf, profile, machine))
    check = checks["audio input"]
    assert check.status == "fail"
    assert "no audio device matches 'wm8960'" in check.message
    assert "USB PnP Sound Device: Audio (hw:1,0)" in check.message  # the list
    assert "bcm2835 Headphones" not in check.message  # output only
    assert "dtoverlay=wm8960-soundcard" in check.fix
    assert "bcm2835 Headphones" in checks["audio output"].message


def test_a_device_that_is_not_the_boards_fails() -> None:
    machine = Machine(audio_devices=lambda: PI_DEVICES)
    conf = config("[audio]\ninput_device = 'USB'\noutput_device = 'Headphones'", "wm8960-hat")
    _, profile = check_board(conf, machine)
    check = by_name(check_audio(conf, profile, machine))["audio output"]
    assert check.status == "fail"
    assert "not the board's 'wm8960' device" in check.message


def test_no_sound_card_at_all_says_how_to_get_one() -> None:
    machine = Machine(audio_devices=list)
    conf = config(board="pi-zero2w-usb")
    _, profile = check_board(conf, machine)
    check = by_name(check_audio(conf, profile, machine))["audio input"]
    assert check.status == "fail" and "no input devices" in check.message
    assert "OTG" in check.fix


# What a terminal would act on: CSI (clear the screen, colour), OSC (set the window title), NEL
# (a new line on some terminals) as C1 characters, and the same from a device as ESC sequences.
C1_HOSTILE = "\x9b2J\x9b31mALL CHECKS PASSED\x9d0;owned\x9c\x85PASS  server: fine"
TERMINAL_ACTS_ON = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def test_audio_device_names_reach_the_terminal_escaped() -> None:
    """A USB sound card chooses its own name: the doctor's line shows it escaped."""
    name = "USB Audio \x1b[2J\x1b]0;owned\x07" + C1_HOSTILE + "\u2028FAIL"
    machine = Machine(audio_devices=lambda: [dev(0, name, 1, 2)])
    checks = by_name(check_audio(config("[audio]\ninput_device='USB'"), None, machine))
    line = checks["audio input"].line()
    assert checks["audio input"].status == "pass" and not TERMINAL_ACTS_ON.search(line)
    assert "USB Audio \\x1b[2J\\x1b]0;owned\\x07\\x9b2J" in line
    missing = by_name(check_audio(config("[audio]\ninput_device='wm8960'"), None, machine))
    failing = missing["audio input"]
    assert failing.status == "fail" and repr(name) in failing.message  # the list of devices
    assert not TERMINAL_ACTS_ON.search(failing.line())


def test_sim_audio_skips_the_device_checks() -> None:
    checks = check_audio(config("[audio]\nbackend = 'sim'"), None, Machine())
    assert [c.status for c in checks] == ["skip"]


# --------------------------------------------------------------------------- device access


@pytest.fixture
def fake_dev(tmp_path: Path) -> Path:
    d = tmp_path / "dev"
    (d / "snd").mkdir(parents=True)
    for node, mode in (
        ("gpiochip0", 0o660),
        ("gpiochip4", 0o660),
        ("ttyS0", 0o660),
        ("ttyAMA0", 0o600),
        ("snd/controlC0", 0o660),
        ("snd/pcmC0D0c", 0o660),
        ("snd/pcmC0D0p", 0o660),
        ("snd/timer", 0o660),
    ):
        (d / node).touch()
        (d / node).chmod(mode)
    (d / "serial0").symlink_to("ttyS0")
    return d


def service(groups: set[int] | None = None) -> Account:
    """A service user that is not the files' owner: only group and other bits count."""
    return Account("pttd", ME + 4242, 4242, frozenset({MY_GROUP} if groups is None else groups))


def test_mode_bits() -> None:
    st = os.stat_result((0o100660, 0, 0, 1, ME, MY_GROUP, 0, 0, 0, 0))
    assert can_read_write(st, service())
    assert not can_read_write(st, service(set()))
    assert can_read_write(st, Account("root", 0, 0, frozenset()))


def test_gpio_chips_open_for_the_service_user(fake_dev: Path) -> None:
    conf = config("[leds]\ntransmit = 6")
    check = check_gpio_access(conf, Machine(dev=fake_dev, account=service()))
    assert check.status == "pass", check
    assert "gpiochip0, gpiochip4: read/write for pttd" in check.message
    denied = check_gpio_access(conf, Machine(dev=fake_dev, account=service(set())))
    assert denied.status == "fail"
    assert "pttd cannot open" in denied.message and "gpiochip0" in denied.message
    if os.geteuid() == 0:  # a node that belongs to a real group: join it
        dialout = grp.getgrnam("dialout").gr_gid
        for chip in ("gpiochip0", "gpiochip4"):
            os.chown(fake_dev / chip, -1, dialout)
        denied = check_gpio_access(conf, Machine(dev=fake_dev, account=service(set())))
        assert (
            denied.fix
            == "add pttd to the dialout group (sudo usermod -aG dialout pttd), then restart pttd"
        )
    else:  # a node of the group root: only a udev rule helps
        assert "udev rule" in denied.fix


def test_no_gpio_chip_or_no_user(tmp_path: Path, fake_dev: Path) -> None:
    conf = config("[leds]\ntransmit = 6")
    check = check_gpio_access(conf, Machine(dev=tmp_path, account=service()))
    assert check.status == "fail" and "/dev/gpiochip*" in check.message
    nobody = check_gpio_access(conf, Machine(dev=fake_dev, user="no-such-user-pttd"))
    assert nobody.status == "fail" and "no user 'no-such-user-pttd'" in nobody.message
    assert "scripts/install" in nobody.fix
    assert check_gpio_access(config(), Machine(dev=tmp_path)).status == "skip"


def test_sound_devices(fake_dev: Path, tmp_path: Path) -> None:
    assert check_sound_access(config(), Machine(dev=fake_dev, account=service())).status == "pass"
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = check_sound_access(config(), Machine(dev=empty, account=service()))
    assert missing.status == "fail" and "no sound card" in missing.message


def cmdline(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cmdline"
    path.write_text(text)
    return path


def test_console_port_is_checked_for_access_and_the_kernel_console(
    fake_dev: Path, tmp_path: Path
) -> None:
    conf = config("[console]\nport = '/dev/serial0'")
    clean = cmdline(tmp_path, "console=tty1 root=/dev/mmcblk0p2 rootwait")
    (ok,) = check_serial(conf, None, Machine(dev=fake_dev, cmdline_file=clean, account=service()))
    assert ok.status == "pass" and "/dev/serial0 (ttyS0)" in ok.message

    kernel = cmdline(tmp_path, "console=serial0,115200 console=tty1 rootwait")
    machine = Machine(dev=fake_dev, cmdline_file=kernel, account=service())
    (held,) = check_serial(conf, None, machine)
    assert held.status == "fail"
    assert "kernel's login console (console=serial0,115200" in held.message
    assert "cmdline.txt" in held.fix
    also = cmdline(tmp_path, "console=ttyS0,115200")
    (held,) = check_serial(conf, None, Machine(dev=fake_dev, cmdline_file=also, account=service()))
    assert held.status == "fail"

    denied = config("[console]\nport = '/dev/ttyAMA0'")
    (check,) = check_serial(
        denied, None, Machine(dev=fake_dev, cmdline_file=clean, account=service())
    )
    assert check.status == "fail" and "pttd cannot open" in check.message


def test_console_port_missing_or_not_on_this_board(fake_dev: Path, tmp_path: Path) -> None:
    clean = cmdline(tmp_path, "")
    machine = Machine(dev=fake_dev, cmdline_file=clean, account=service())
    gadget = config("[console]\nport = '/dev/ttyGS0'")
    (check,) = check_serial(gadget, None, machine)
    assert check.status == "fail" and "does not exist" in check.message
    assert "dtoverlay=dwc2" in check.fix
    _, zero = check_board(config(board="pi-zero2w-usb"), machine)
    (check,) = check_serial(gadget, zero, machine)
    assert check.status == "fail" and "has no gadget console" in check.message
    assert check.fix == "set console.port to /dev/serial0"
    (url,) = check_serial(config("[console]\nport = 'loop://'"), None, machine)
    assert url.status == "skip"


@pytest.mark.skipif(os.geteuid() != 0, reason="chgrp to tty needs root")
def test_a_getty_on_the_port_is_named(fake_dev: Path, tmp_path: Path) -> None:
    os.chown(fake_dev / "ttyS0", -1, grp.getgrnam("tty").gr_gid)
    machine = Machine(dev=fake_dev, cmdline_file=cmdline(tmp_path, ""), account=service())
    (check,) = check_serial(config("[console]\nport = '/dev/serial0'"), None, machine)
    assert check.status == "fail" and "login getty" in check.message
    assert check.fix == "sudo systemctl mask --now serial-getty@ttyS0.service"


def test_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    conf = config(f"[state]\ndir = '{state}'")
    assert check_state_dir(conf, Machine(account=service())).status == "pass"  # not yet
    state.mkdir(mode=0o700)
    owner = Account("pttd", ME, MY_GROUP, frozenset())
    assert check_state_dir(conf, Machine(account=owner)).status == "pass"
    state.chmod(0o755)
    check = check_state_dir(conf, Machine(account=owner))
    assert check.status == "fail" and check.fix == f"sudo chmod 0700 {state}"
    state.chmod(0o700)
    other = check_state_dir(conf, Machine(account=service()))
    assert other.status == "fail" and "chown" in other.fix


# --------------------------------------------------------------------------- the server


@pytest.fixture
async def room_server(tmp_path: Path) -> AsyncIterator[RoomServer]:
    with Registry(tmp_path / "server.db") as registry:
        async with RoomServer(registry, ServerSettings(host="127.0.0.1", port=0)) as server:
            yield server


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def wss_server(tmp_path: Path, ca: trustme.CA) -> AsyncIterator[RoomServer]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    settings = ServerSettings(host="127.0.0.1", port=0, tls_cert=cert_file, tls_key=key_file)
    with Registry(tmp_path / "server.db") as registry:
        async with RoomServer(registry, settings) as server:
            yield server


@pytest.fixture
async def hostile_server() -> AsyncIterator[str]:
    """Not a pttd server: it answers the websocket handshake with an Upgrade header full of C1
    control characters (ESC itself is no header byte: websockets refuses the answer)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
            b"Upgrade: " + C1_HOSTILE.encode("latin-1") + b"\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_a_hostile_servers_header_reaches_the_terminal_escaped(
    hostile_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = config(f"[server]\nurl = '{hostile_server}'\n[state]\ndir = '{tmp_path}'")
    check = await check_server(conf)
    assert check.status == "fail" and C1_HOSTILE in check.message  # what websockets said
    assert not TERMINAL_ACTS_ON.search(check.line())
    assert "\\x9b2J\\x9b31mALL CHECKS PASSED\\x9d0;owned\\x9c\\x85PASS" in check.line()
    # The whole command, as the installer runs it: printed lines, and --json.
    path = write_config(tmp_path, f"[audio]\nbackend = 'sim'\n[server]\nurl = '{hostile_server}'\n")
    machine = good_machine(tmp_path)
    assert await asyncio.to_thread(cmd_doctor, parse("--config", str(path)), machine) == 1
    out = capsys.readouterr().out
    server_lines = [line for line in out.splitlines() if line.startswith("FAIL  server: ")]
    assert len(server_lines) == 1 and "\\x9b31m" in server_lines[0]
    assert not TERMINAL_ACTS_ON.search(out.replace("\n", ""))
    assert await asyncio.to_thread(cmd_doctor, parse("--config", str(path), "--json"), machine)
    out = capsys.readouterr().out
    assert not TERMINAL_ACTS_ON.search(out.replace("\n", ""))
    server = next(c for c in json.loads(out)["checks"] if c["check"] == "server")
    assert C1_HOSTILE in server["message"]  # JSON escapes it, and a reader gets it back


async def test_a_running_server_answers(room_server: RoomServer, tmp_path: Path) -> None:
    conf = config(f"[server]\nurl = '{room_server.url}'\n[state]\ndir = '{tmp_path}'")
    check = await check_server(conf)
    assert check.status == "pass", check
    assert check.message == f"{room_server.url} answers"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_a_closed_port_fails(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{closed_port()}"
    check = await check_server(config(f"[server]\nurl = '{url}'\n[state]\ndir = '{tmp_path}'"))
    assert check.status == "fail"
    assert check.message.startswith(f"{url}: cannot reach the server")
    assert "pttd-server runs there" in check.fix


async def test_an_untrusted_certificate_fails_naming_the_problem(
    wss_server: RoomServer, tmp_path: Path
) -> None:
    conf = config(f"[server]\nurl = '{wss_server.url}'\n[state]\ndir = '{tmp_path}'")
    check = await check_server(conf)
    assert check.status == "fail"
    assert "TLS certificate not trusted: unable to get local issuer certificate" in check.message
    assert "server.ca_file" in check.fix


async def test_a_certificate_signed_by_the_configured_ca_passes_with_its_expiry(
    wss_server: RoomServer, ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    conf = config(
        f"[server]\nurl = '{wss_server.url}'\nca_file = '{ca_file}'\n[state]\ndir = '{tmp_path}'"
    )
    check = await check_server(conf)
    assert check.status == "pass", check
    assert "certificate valid for" in check.message and "more day(s), until" in check.message
    off = config(
        f"[server]\nurl = '{wss_server.url}'\ntls_verify = false\n[state]\ndir = '{tmp_path}'"
    )
    check = await check_server(off)
    assert check.status == "fail" and "tls_verify = false" in check.message


async def test_the_credentials_server_is_checked_first(
    tmp_path: Path, room_server: RoomServer
) -> None:
    from pttd.radio.store import Credential, Store

    Store(tmp_path).save_credential(Credential(room_server.url, "r", "token", ("a",)))
    conf = config(f"[server]\nurl = 'ws://127.0.0.1:{closed_port()}'\n[state]\ndir = '{tmp_path}'")
    assert (await check_server(conf)).status == "pass"


def test_the_credential_reads_or_its_file_is_named(tmp_path: Path) -> None:
    from pttd.radio.store import Credential, Store

    conf = config(f"[state]\ndir = '{tmp_path}'")
    assert check_credential(conf).status == "skip"  # not paired yet
    Store(tmp_path).save_credential(Credential("ws://radio.example:8080", "gate-3", "tok", ("a",)))
    check = check_credential(conf)
    assert check.status == "pass"
    assert check.message == "paired with ws://radio.example:8080 as gate-3"
    path = tmp_path / "credential.json"
    path.write_text("{damaged")
    check = check_credential(conf)
    assert check.status == "fail" and check.message == f"{path}: not valid JSON (damaged?)"
    assert "pair the device again" in check.fix and "\n" not in check.line()
    path.unlink()
    path.mkdir()  # unreadable, even for root
    check = check_credential(conf)
    assert check.status == "fail" and check.message.startswith(f"{path}: cannot read: ")


async def test_an_unreadable_credential_fails_once_and_the_configs_server_is_checked(
    tmp_path: Path, room_server: RoomServer
) -> None:
    (tmp_path / "credential.json").write_text("[]")
    conf = config(f"[server]\nurl = '{room_server.url}'\n[state]\ndir = '{tmp_path}'")
    checks = by_name(run_local_checks(conf, good_machine(tmp_path)))
    assert checks["credential"].status == "fail"
    assert str(tmp_path / "credential.json") in checks["credential"].message
    assert (await check_server(conf)).status == "pass"


async def test_no_server_yet_is_a_skip(tmp_path: Path) -> None:
    assert (await check_server(config(f"[state]\ndir = '{tmp_path}'"))).status == "skip"


def test_a_hostname_mismatch_is_a_tls_failure() -> None:
    from pttd.radio.link import describe_failure

    error = ssl.SSLCertVerificationError(1, "x")
    error.verify_message = "Hostname mismatch, certificate is not valid for 'a'."
    assert describe_failure(error) == (
        "tls",
        "TLS certificate not trusted: Hostname mismatch, certificate is not valid for 'a'.",
    )


# --------------------------------------------------------------------------- the command


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(["doctor", *argv])


def good_machine(tmp_path: Path) -> Machine:
    return Machine(
        dev=tmp_path / "no-dev",
        model_file=tmp_path / "no-model",
        cmdline_file=tmp_path / "no-cmdline",
        account=service(),
        timeout=2.0,
    )


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pttd.toml"
    path.write_text(
        f"[device]\nboard = 'generic-pi'\n[state]\ndir = '{tmp_path / 'state'}'\n{text}"
    )
    return path


def test_all_pass_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "[audio]\nbackend = 'sim'\n")
    assert cmd_doctor(parse("--config", str(path)), good_machine(tmp_path)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"PASS  config: {path} loads"
    assert all(line.startswith(("PASS  ", "SKIP  ")) for line in lines[:-1])
    assert lines[-1].startswith("doctor: all ")


def test_json_shape_and_exit_1_on_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, "[audio]\nbackend = 'sim'\n[leds]\ntransmit = 2\n")
    assert cmd_doctor(parse("--config", str(path), "--json"), good_machine(tmp_path)) == 1
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"config", "board", "ok", "failed", "checks"}
    assert report["ok"] is False and report["board"] == "generic-pi"
    assert report["config"] == str(path)
    for check in report["checks"]:
        assert set(check) == {"check", "status", "message", "fix"}
        assert check["status"] in ("pass", "fail", "skip", "info")
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert report["failed"] == len(failed)
    names = {c["check"] for c in failed}
    assert "pin leds.transmit" in names  # GPIO2: I2C1
    assert all(c["fix"] for c in failed)


def test_a_broken_config_is_one_failing_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[leds]\ntransmit = 99\n")
    assert cmd_doctor(parse("--config", str(path)), good_machine(tmp_path)) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("FAIL  config: ") and "leds.transmit" in out[0]
    assert "-> fix: edit " in out[0]


def test_a_config_without_a_board_is_checked_against_the_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pttd.toml"  # no [device] board, like the README's minimal config
    path.write_text(
        f"[state]\ndir = '{tmp_path / 'state'}'\n[audio]\nbackend = 'sim'\n"
        "[[ptt]]\nkind = 'gpio'\npin = 17\n[leds]\ntransmit = 27\n"
    )
    assert cmd_doctor(parse("--config", str(path)), good_machine(tmp_path)) == 1  # no gpiochip
    out = capsys.readouterr().out
    assert "INFO  board: no board profile set" in out
    assert "PASS  pin ptt[0].pin: PTT button on GPIO17 (pin 11)" in out
    assert "PASS  pin leds.transmit: transmit LED on GPIO27 (pin 13)" in out
    assert "FAIL  board" not in out and "none left" not in out


def test_local_checks_make_one_line_each(tmp_path: Path) -> None:
    conf = parse_config(write_config(tmp_path, "[[ptt]]\nkind='gpio'\npin=17\n").read_text())
    machine = good_machine(tmp_path)
    machine.audio_devices = lambda: PI_DEVICES
    checks = run_local_checks(conf, machine)
    names = [c.name for c in checks]
    assert len(names) == len(set(names))
    assert names[:2] == ["board", "pin ptt[0].pin"]


async def test_the_pttd_command_has_doctor(room_server: RoomServer, tmp_path: Path) -> None:
    path = write_config(
        tmp_path, f"[audio]\nbackend = 'sim'\n[server]\nurl = '{room_server.url}'\n"
    )
    # the real machine: no user pttd here, but nothing in this config needs one
    code = await asyncio.to_thread(cli.main, ["doctor", "--config", str(path), "--json"])
    assert code == 0
