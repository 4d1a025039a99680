"""Board profiles: the shipped ones load and agree with themselves; pin names resolve."""

from __future__ import annotations

import pytest

from pttd.radio import boards
from pttd.radio.boards import (
    HEADER,
    PHYSICAL,
    ProfileError,
    _parse,
    bcm_number,
    describe_pin,
    free_pins,
    load_profile,
    profile_names,
)
from pttd.radio.config import ConfigError, parse_config

REQUIRED = {"pi-zero2w-usb", "pi4-respeaker-2mic", "wm8960-hat", "generic-pi", "pi5-usb"}
I2S = {18, 19, 20, 21}


def test_the_required_profiles_ship() -> None:
    assert set(profile_names()) >= REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_each_profile_loads_with_a_sane_default_wiring(name: str) -> None:
    profile = load_profile(name)
    assert profile.description
    assert profile.audio_input and profile.audio_output and profile.audio_hint
    assert profile.console_default in profile.console_modes
    assert "ptt" in profile.defaults
    pins = list(profile.defaults.values())
    assert len(pins) == len(set(pins))
    assert not set(pins) & {0, 1, 2, 3, 14, 15}  # HAT EEPROM, I2C, UART


@pytest.mark.parametrize("name", ["pi4-respeaker-2mic", "wm8960-hat"])
def test_i2s_hats_reserve_i2s_and_i2c(name: str) -> None:
    profile = load_profile(name)
    reserved = {p for r in profile.reserved for p in r.pins}
    assert I2S | {2, 3} <= reserved
    assert not I2S & set(profile.defaults.values())
    assert "dtoverlay=wm8960-soundcard" in profile.config_txt


def test_respeaker_ptt_is_the_hats_button() -> None:
    profile = load_profile("pi4-respeaker-2mic")
    assert profile.defaults["ptt"] == 17
    (button,) = profile.reservations_for(17)
    assert button.inputs_ok and "button" in button.use


def test_zero_2w_with_usb_audio_has_no_gadget_console() -> None:
    profile = load_profile("pi-zero2w-usb")
    assert profile.console_modes == ("uart",)
    with pytest.raises(ProfileError, match="only USB data port hosts the sound card"):
        profile.console("gadget")


def test_pi5_console_is_uart0_on_the_header() -> None:
    uart = load_profile("pi5-usb").console("uart")
    assert uart.port == "/dev/ttyAMA0"
    assert uart.config_txt == ("dtparam=uart0=on",)
    assert uart.pins == (14, 15)


def test_unknown_profile_names_the_shipped_ones() -> None:
    with pytest.raises(ProfileError, match=r"no board profile 'pi9'.*generic-pi"):
        load_profile("pi9")


def test_the_header_table() -> None:
    gpios = [v for v in HEADER.values() if isinstance(v, int)]
    assert sorted(gpios) == list(range(28))
    assert PHYSICAL[17] == 11
    assert describe_pin(18) == "GPIO18 (pin 12)"


@pytest.mark.parametrize(
    ("name", "gpio"),
    [
        (17, 17),
        ("17", 17),
        ("GPIO17", 17),
        ("gpio 17", 17),
        ("BCM17", 17),
        ("BOARD11", 17),
        ("J8:11", 17),
        ("BOARD6", None),  # ground
        (28, None),
        ("GPIO40", None),
        ("nonsense", None),
        (True, None),
    ],
)
def test_pin_names(name: int | str, gpio: int | None) -> None:
    assert bcm_number(name) == gpio


def test_free_pins_prefer_the_default_wiring() -> None:
    profile = load_profile("wm8960-hat")
    free = free_pins(profile, {17, 27})
    assert not {17, 27, 14, 15, 2, 3, 18, 19, 20, 21} & set(free)
    wired = [p for p in free if p in profile.defaults.values()]
    assert free[: len(wired)] == wired


def test_free_pins_without_a_board_are_the_headers_but_the_uart_and_the_taken() -> None:
    free = free_pins(None, {17, 4})
    assert set(free) == set(PHYSICAL) - {14, 15, 17, 4}
    assert free == sorted(free, key=PHYSICAL.__getitem__)  # in header order
    assert free[:2] == [2, 3]  # pins 3 and 5


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("nonsense = 1", "unknown key"),
        ("[audio]\nbogus = 1", "audio: unknown key"),
        ('[[reserved]]\npins = [40]\nuse = "x"', "GPIO numbers"),
        ('[console]\nmodes = ["serial"]', "uart or gadget"),
        ("[defaults]\nptt = 14", "UART"),
        ('[[reserved]]\npins = [18]\nuse = "I2S"\n[defaults]\ntransmit_led = 18', "is I2S"),
        ("[defaults]\nptt = 17\ntransmit_led = 17", "share 17"),
        ("[defaults]\nlaser = 5", "unknown function"),
    ],
)
def test_a_broken_profile_says_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(ProfileError, match=complaint):
        _parse("x", text, "x.toml")


def test_config_board_key_is_checked_against_the_profiles() -> None:
    assert parse_config('[device]\nboard = "wm8960-hat"').device.board == "wm8960-hat"
    assert parse_config("").device.board == ""
    with pytest.raises(ConfigError, match=r"device\.board: no board profile 'pi9'; there are: "):
        parse_config('[device]\nboard = "pi9"')


def test_profiles_are_package_data() -> None:
    files = boards._files()
    assert all(files.joinpath(f"{name}.toml").is_file() for name in REQUIRED)
