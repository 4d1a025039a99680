"""Choosing a device from the config, and ``pttd audio list``'s table: pure, on made-up device
lists (no PortAudio)."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from pttd.errors import AudioDeviceError, AudioError, PttdError
from pttd.radio.audio import devices
from pttd.radio.audio.cli import cmd_list, device_table
from pttd.radio.audio.devices import AudioDevice, find_device


def dev(
    index: int,
    name: str,
    ins: int,
    outs: int,
    *,
    hostapi: str = "ALSA",
    default_in: bool = False,
    default_out: bool = False,
) -> AudioDevice:
    return AudioDevice(index, name, hostapi, ins, outs, 48000.0, default_in, default_out)


PI = [
    dev(0, "bcm2835 Headphones: - (hw:0,0)", 0, 8, default_out=True),
    dev(1, "USB PnP Sound Device: Audio (hw:1,0)", 1, 2),
    dev(2, "USB Audio Device (hw:2,0)", 1, 0),
    dev(3, "sysdefault", 128, 128, default_in=True),
    dev(4, "USB PnP Sound Device: Audio (hw:1,0)", 1, 2, hostapi="JACK Audio Connection Kit"),
]


def test_none_and_blank_mean_the_default() -> None:
    assert find_device(None, "input", PI).index == 3
    assert find_device("", "input", PI).index == 3
    assert find_device("  ", "output", PI).index == 0


def test_no_default_device() -> None:
    with pytest.raises(AudioDeviceError, match="no default input device") as exc:
        find_device(None, "input", [d for d in PI if d.index != 3])
    assert "USB Audio Device" in str(exc.value)


def test_index_as_int_or_digits() -> None:
    assert find_device(2, "input", PI).index == 2
    assert find_device(" 2 ", "input", PI).index == 2


def test_index_without_channels_in_that_direction() -> None:
    with pytest.raises(AudioDeviceError, match=r"#2 'USB Audio Device \(hw:2,0\)'.*no output"):
        find_device(2, "output", PI)


def test_unknown_index_lists_the_devices_of_that_direction() -> None:
    with pytest.raises(AudioDeviceError, match="no audio device #7") as exc:
        find_device(7, "output", PI)
    message = str(exc.value)
    assert "output devices: #0 'bcm2835 Headphones: - (hw:0,0)'" in message
    assert "USB Audio Device (hw:2,0)" not in message  # input only


def test_name_substring_is_case_insensitive() -> None:
    assert find_device("headphones", "output", PI).index == 0
    assert find_device("USB AUDIO DEVICE", "input", PI).index == 2


def test_host_api_disambiguates() -> None:
    with pytest.raises(AudioDeviceError, match="several input devices") as exc:
        find_device("pnp", "input", PI)
    assert "#1" in str(exc.value) and "#4" in str(exc.value)
    assert find_device("pnp sound device: audio (hw:1,0), alsa", "input", PI).index == 1
    assert find_device("jack", "input", PI).index == 4


def test_substring_filters_by_direction() -> None:
    # "usb" matches 1, 2 and 4; of them 1 and 4 (one device, two host APIs) have outputs.
    with pytest.raises(AudioDeviceError, match="several output devices"):
        find_device("usb", "output", PI)
    assert find_device("usb audio", "input", PI).index == 2
    with pytest.raises(AudioDeviceError, match="only devices with no output channels"):
        find_device("usb audio", "output", PI)


def test_exact_name_wins_over_substring() -> None:
    devices = [dev(0, "mic", 1, 0), dev(1, "mic 2", 1, 0)]
    assert find_device("MIC", "input", devices).index == 0
    with pytest.raises(AudioDeviceError, match="several input devices"):
        find_device("mi", "input", devices)


def test_name_matching_only_devices_without_channels() -> None:
    with pytest.raises(AudioDeviceError, match="only devices with no input channels"):
        find_device("headphones", "input", PI)


def test_unknown_name() -> None:
    with pytest.raises(AudioDeviceError, match="no audio device matches 'hdmi'") as exc:
        find_device("hdmi", "output", PI)
    assert "output devices:" in str(exc.value)


def test_no_devices_at_all() -> None:
    with pytest.raises(AudioDeviceError, match="there are no input devices"):
        find_device("usb", "input", [])


def test_error_hierarchy() -> None:
    assert issubclass(AudioDeviceError, AudioError)
    assert issubclass(AudioDeviceError, LookupError)
    assert issubclass(AudioError, PttdError)


def test_describe_and_json() -> None:
    d = PI[1]
    assert d.describe() == "#1 'USB PnP Sound Device: Audio (hw:1,0)' (ALSA, 1 in, 2 out, 48000 Hz)"
    assert d.to_json()["max_output_channels"] == 2
    assert d.channels("input") == 1 and d.channels("output") == 2


# A USB device names itself: ESC sequences (clear the screen, set the window title), their C1
# forms (CSI, OSC, ST), NEL and a line separator, a line end to forge a row of the table.
HOSTILE = (
    "USB Audio\x1b[2J\x1b]0;owned\x07\x9b31m\x9d0;t\x9c\x85\u2028\r\n"
    "9  default  ALSA  2  2  48000  in,out"
)
TERMINAL_ACTS_ON = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def test_the_table_of_audio_list() -> None:
    assert device_table(PI[:2]) == [
        "#  name                                  host API  in  out   rate  default",
        "0  bcm2835 Headphones: - (hw:0,0)        ALSA       0    8  48000  out",
        "1  USB PnP Sound Device: Audio (hw:1,0)  ALSA       1    2  48000",
    ]
    assert device_table([])[0].startswith("no audio devices")


def test_audio_list_shows_a_hostile_device_name_escaped() -> None:
    lines = device_table([PI[0], dev(1, HOSTILE, 1, 1, hostapi="ALSA\x1b[8m")])
    assert len(lines) == 3  # no forged row
    assert not [line for line in lines if TERMINAL_ACTS_ON.search(line)]
    assert lines[2].startswith(
        "1  USB Audio\\x1b[2J\\x1b]0;owned\\x07\\x9b31m\\x9d0;t\\x9c\\x85\\u2028\\r\\n9  default"
    )
    assert "ALSA\\x1b[8m" in lines[2]
    # Still a table: the host API column starts at one place on every line.
    header, pi, hostile = lines
    assert header.index("host API") == pi.index("ALSA") == hostile.index("ALSA\\x1b[8m")


def test_audio_list_json_escapes_a_hostile_device_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(devices, "list_devices", lambda: [dev(1, HOSTILE, 1, 1)])
    assert cmd_list(argparse.Namespace(json=True)) == 0
    out = capsys.readouterr().out
    assert not TERMINAL_ACTS_ON.search(out.replace("\n", ""))
    assert json.loads(out)["devices"][0]["name"] == HOSTILE  # a program reading it gets it back
    assert cmd_list(argparse.Namespace(json=False)) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 2 and not TERMINAL_ACTS_ON.search(out.replace("\n", ""))
