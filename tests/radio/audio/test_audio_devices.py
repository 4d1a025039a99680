"""Choosing a device from the config: pure, on made-up device lists (no PortAudio)."""

from __future__ import annotations

import pytest

from pttd.errors import AudioDeviceError, AudioError, PttdError
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
