"""The device configuration: ``pttd config check`` as a process, and parse_config per section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pttd.errors import ConfigError, PttdError
from pttd.radio.config import (
    AudioConfig,
    ButtonsConfig,
    Config,
    ConsoleConfig,
    DeviceConfig,
    LedsConfig,
    LogConfig,
    PttConfig,
    ServerConfig,
    StateConfig,
    TalkConfig,
    apply_overrides,
    load_config,
    parse_config,
)

GOOD = """\
[device]
name = "gate-3"

[server]
url = "wss://ptt.example.org:8443"
ca_file = "/etc/pttd/ca.pem"
tls_verify = true

[state]
dir = "/var/lib/pttd"

[audio]
backend = "sim"
sample_rate = 16000
frame_ms = 40
bitrate = 16000
complexity = 3
fec = false
expected_loss_percent = 10
dtx = true
simplex = false
volume = 55
tone_level_db = -18
roger_beep = true
input_device = "USB"
output_device = 2
sim_input = "/usr/share/pttd/speech.wav"

[talk]
mode = "toggle"
timeout = 30

[[ptt]]
kind = "gpio"
pin = 17
pull_up = false
bounce_ms = 5

[[ptt]]
kind = "evdev"
device = "/dev/input/by-id/usb-pedal-event-kbd"
key = "KEY_F14"

[[ptt]]
kind = "serial"
port = "/dev/rfcomm0"
baudrate = 115200

[[ptt]]
kind = "sim"

[buttons]
room_up = 22
room_down = "GPIO23"
volume_up = 24
volume_down = 25
emergency = 26
pull_up = true
bounce_ms = 50

[leds]
online = 5
transmit = 6
receive = 13
error = 19
active_high = false

[console]
port = "/dev/ttyGS0"
baudrate = 57600

[log]
level = "DEBUG"
"""


def pttd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pttd.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --------------------------------------------------------------------------- the command


def test_config_check_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "pttd.toml"
    path.write_text(GOOD, encoding="utf-8")
    done = pttd("config", "check", "--config", str(path))
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout
    assert "gpio, evdev, serial, sim" in done.stdout


def test_config_check_names_every_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "pttd.toml"
    path.write_text(
        """\
[server]
url = "http://ptt.example.org"

[audio]
backend = "sim"
frame_ms = 25
volume = "loud"
bogus = 1

[talk]
timeout = 0.5

[[ptt]]
kind = "serial"

[leds]
transmit = 40

[mystery]
x = 1
""",
        encoding="utf-8",
    )
    done = pttd("config", "check", "--config", str(path))
    assert done.returncode == 1
    err = done.stderr
    for key in (
        "server.url",
        "audio.frame_ms",
        "audio.volume",
        "audio.bogus: unknown key",
        "talk.timeout",
        "ptt[0].port",
        "leds.transmit",
        "mystery: unknown section",
    ):
        assert key in err, (key, err)
    assert "25" in err  # the value that was wrong
    assert "Traceback" not in err


def test_config_check_on_a_missing_file(tmp_path: Path) -> None:
    done = pttd("config", "check", "--config", str(tmp_path / "absent.toml"))
    assert done.returncode == 1
    assert "absent.toml" in done.stderr and "cannot read" in done.stderr


# --------------------------------------------------------------------------- parse_config


def test_empty_file_is_all_defaults() -> None:
    assert parse_config("") == Config()
    config = Config()
    assert config.audio.backend == "sounddevice" and config.talk.timeout == 60.0
    assert config.ptt == () and config.state.dir == "/var/lib/pttd"


def test_every_section_is_read() -> None:
    config = parse_config(GOOD)
    assert config.device == DeviceConfig(name="gate-3")
    assert config.server == ServerConfig(
        url="wss://ptt.example.org:8443", ca_file="/etc/pttd/ca.pem", tls_verify=True
    )
    assert config.state == StateConfig(dir="/var/lib/pttd")
    assert config.audio == AudioConfig(
        backend="sim",
        input_device="USB",
        output_device=2,
        sample_rate=16000,
        frame_ms=40,
        bitrate=16000,
        complexity=3,
        fec=False,
        expected_loss_percent=10,
        dtx=True,
        simplex=False,
        volume=55,
        tone_level_db=-18.0,
        roger_beep=True,
        sim_input="/usr/share/pttd/speech.wav",
    )
    assert isinstance(config.audio.tone_level_db, float)
    assert config.talk == TalkConfig(mode="toggle", timeout=30.0)
    assert isinstance(config.talk.timeout, float)
    assert config.ptt == (
        PttConfig(kind="gpio", pin=17, pull_up=False, bounce_ms=5),
        PttConfig(kind="evdev", device="/dev/input/by-id/usb-pedal-event-kbd", key="KEY_F14"),
        PttConfig(kind="serial", port="/dev/rfcomm0", baudrate=115200),
        PttConfig(kind="sim"),
    )
    assert config.buttons == ButtonsConfig(
        room_up=22,
        room_down="GPIO23",
        volume_up=24,
        volume_down=25,
        emergency=26,
        pull_up=True,
        bounce_ms=50,
    )
    assert config.leds == LedsConfig(online=5, transmit=6, receive=13, error=19, active_high=False)
    assert config.console == ConsoleConfig(port="/dev/ttyGS0", baudrate=57600)
    assert config.log == LogConfig(level="DEBUG")


@pytest.mark.parametrize(
    ("ptt", "config"),
    [
        ('kind = "gpio"\npin = 4', PttConfig(kind="gpio", pin=4)),
        ('kind = "gpio"\npin = "BOARD11"', PttConfig(kind="gpio", pin="BOARD11")),
        ('kind = "evdev"\ndevice = "Foot Switch"', PttConfig(kind="evdev", device="Foot Switch")),
        ('kind = "serial"\nport = "loop://"', PttConfig(kind="serial", port="loop://")),
        ('kind = "sim"', PttConfig(kind="sim")),
        ("", PttConfig(kind="sim")),  # the default kind
    ],
)
def test_each_ptt_kind(ptt: str, config: PttConfig) -> None:
    assert parse_config(f"[[ptt]]\n{ptt}\n").ptt == (config,)


@pytest.mark.parametrize(
    ("ptt", "complaint"),
    [
        ('kind = "gpio"', "ptt[0].pin: a gpio PTT needs a pin"),
        ('kind = "gpio"\npin = 28', "ptt[0].pin: GPIO 28 is not on the 40-pin header"),
        ('kind = "evdev"', "ptt[0].device: an evdev PTT needs a device"),
        ('kind = "serial"', "ptt[0].port: a serial PTT needs a port"),
        ('kind = "bluetooth"', "ptt[0].kind: must be one of gpio, evdev, serial, ble, sim"),
        ('kind = "serial"\nport = "x"\nbaudrate = 10', "ptt[0].baudrate: must be between"),
        ('kind = "gpio"\npin = 17\nbounce_ms = true', "ptt[0].bounce_ms: must be an integer"),
        ('kind = "sim"\nspeed = 1', "ptt[0].speed: unknown key"),
    ],
)
def test_bad_ptt_entries(ptt: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[[ptt]]\n{ptt}\n")
    assert complaint in str(caught.value)


def test_ptt_must_be_an_array_of_tables() -> None:
    with pytest.raises(ConfigError, match=r"ptt: must be an array of tables"):
        parse_config('[ptt]\nkind = "sim"\n')


def test_second_ptt_entry_is_named_by_its_index() -> None:
    with pytest.raises(ConfigError, match=r"ptt\[1\]\.port"):
        parse_config('[[ptt]]\nkind = "sim"\n\n[[ptt]]\nkind = "serial"\n')


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[device]\nname = 3", "device.name: must be a string (got 3)"),
        ('[server]\nurl = "ptt.example.org"', "server.url: must start with ws:// or wss://"),
        ('[server]\ntls_verify = "no"', "server.tls_verify: must be true or false"),
        ("[state]\ndir = []", "state.dir: must be a string"),
        ('[audio]\nbackend = "pulse"', "audio.backend: must be one of sounddevice, sim"),
        ("[audio]\nsample_rate = 44100", "audio.sample_rate: must be one of"),
        ("[audio]\nframe_ms = 25", "audio.frame_ms: must be one of 10, 20, 40, 60 (got 25)"),
        ("[audio]\nbitrate = 1000", "audio.bitrate: must be between"),
        ("[audio]\ncomplexity = 11", "audio.complexity: must be between 0 and 10"),
        ("[audio]\nvolume = 101", "audio.volume: must be between 0 and 100"),
        ("[audio]\ntone_level_db = 3", "audio.tone_level_db: must be between -60 and 0"),
        ("[audio]\nfec = 1", "audio.fec: must be true or false (got 1)"),
        ("[audio]\ninput_device = 1.5", "audio.input_device: must be"),
        ('[talk]\nmode = "latch"', "talk.mode: must be one of hold, toggle"),
        ("[talk]\ntimeout = 0.5", "talk.timeout: must be between 1 and 3600"),
        ('[talk]\ntimeout = "60"', "talk.timeout: must be a number"),
        ("[buttons]\nroom_up = -1", "buttons.room_up: GPIO -1 is not on the 40-pin header"),
        ('[buttons]\nemergency = ""', "buttons.emergency: must be a BCM pin number or name"),
        ("[leds]\nerror = 99", "leds.error: GPIO 99 is not on the 40-pin header"),
        ("[leds]\nactive_high = 0", "leds.active_high: must be true or false"),
        ("[console]\nbaudrate = 0", "console.baudrate: must be between"),
        ('[log]\nlevel = "TRACE"', "log.level: must be one of DEBUG, INFO, WARNING, ERROR"),
        ("device = 3", "device: must be a table"),
        ("[audio]\nframe = 20", "audio.frame: unknown key"),
        ("[speaker]\nvolume = 3", "speaker: unknown section"),
    ],
)
def test_bad_values_name_their_key(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "pttd.toml")
    message = str(caught.value)
    assert message.startswith("pttd.toml: ")
    assert complaint in message


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        (
            "[[ptt]]\nkind = 'gpio'\npin = 17\n[leds]\nonline = 17",
            "leds.online: GPIO17 (pin 11) is also the PTT button (ptt[0].pin); "
            "give each function its own pin",
        ),
        (  # one pin under three names
            "[[ptt]]\nkind = 'gpio'\npin = 'GPIO22'\n"
            "[buttons]\nroom_up = 'BOARD15'\n[leds]\nerror = 22",
            "leds.error: GPIO22 (pin 15) is also the PTT button (ptt[0].pin) and the room up "
            "button (buttons.room_up); give each function its own pin",
        ),
        (
            "[[ptt]]\nkind = 'gpio'\npin = 5\n[[ptt]]\nkind = 'gpio'\npin = 5",
            "ptt[1].pin: GPIO5 (pin 29) is also the PTT button (ptt[0].pin)",
        ),
    ],
)
def test_a_pin_given_to_two_functions_is_refused_naming_both(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "pttd.toml")
    assert str(caught.value).startswith(f"pttd.toml: {complaint}")


def test_config_check_refuses_a_pin_clash_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "pttd.toml"
    path.write_text("[[ptt]]\nkind = 'gpio'\npin = 17\n[leds]\nonline = 17\n", encoding="utf-8")
    done = pttd("config", "check", "--config", str(path))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"pttd: {path}: leds.online: GPIO17 (pin 11) is also the PTT button (ptt[0].pin); "
        "give each function its own pin"
    ]


def test_a_console_setting_that_would_share_a_pin_is_refused() -> None:
    config = parse_config("[[ptt]]\nkind = 'gpio'\npin = 17\n[leds]\nonline = 5\n")
    with pytest.raises(ConfigError, match=r"leds\.transmit: GPIO17 \(pin 11\) is also the PTT"):
        apply_overrides(config, {"leds.transmit": 17})


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[audio]\nframe_ms = 25\nvolume = 500\n[talk]\nmode = 1\n[nope]\n")
    message = str(caught.value)
    for key in ("audio.frame_ms", "audio.volume", "talk.mode", "nope"):
        assert key in message


def test_an_integer_is_a_good_float_and_is_stored_as_one() -> None:
    config = parse_config("[talk]\ntimeout = 1\n")
    assert config.talk.timeout == 1.0 and isinstance(config.talk.timeout, float)


def test_not_toml() -> None:
    with pytest.raises(ConfigError, match=r"not valid TOML"):
        parse_config("[audio\n", "pttd.toml")


def test_config_error_is_a_pttd_error_and_a_value_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[x]\n")
    assert isinstance(caught.value, PttdError) and isinstance(caught.value, ValueError)


def test_load_config_reads_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "pttd.toml"
    path.write_text(GOOD, encoding="utf-8")
    assert load_config(path) == parse_config(GOOD)
    path.write_text("[audio]\nframe_ms = 25\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"pttd\.toml: audio\.frame_ms"):
        load_config(path)
    path.write_bytes(b'[device]\nname = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")
