"""Board profiles: what a Pi and its audio hardware reserve, and how a radio is wired on it.

A profile is a TOML file shipped in the package (``pttd/radio/hw_profiles/NAME.toml``) and named by
the
config's ``[device] board``. It lists the pins the board's hardware uses (I2S, I2C, a HAT's
button…), the audio devices to expect, the serial console modes that work on that board, the
``config.txt`` lines its hardware needs, and the default wiring that ``scripts/install`` writes
into a new config. ``pttd doctor`` checks a config against it.

Standard library only: ``scripts/install`` runs this with the system Python before the package's
dependencies are installed.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

ConsoleMode = Literal["uart", "gadget"]

# The 40-pin header: physical pin -> BCM GPIO number, or the name of a power/ground pin.
HEADER: dict[int, int | str] = {
    1: "3V3", 2: "5V", 3: 2, 4: "5V", 5: 3, 6: "GND", 7: 4, 8: 14, 9: "GND", 10: 15,
    11: 17, 12: 18, 13: 27, 14: "GND", 15: 22, 16: 23, 17: "3V3", 18: 24, 19: 10, 20: "GND",
    21: 9, 22: 25, 23: 11, 24: 8, 25: "GND", 26: 7, 27: 0, 28: 1, 29: 5, 30: "GND",
    31: 6, 32: 12, 33: 13, 34: "GND", 35: 19, 36: 16, 37: 26, 38: 20, 39: "GND", 40: 21,
}  # fmt: skip

PHYSICAL: dict[int, int] = {gpio: pin for pin, gpio in HEADER.items() if isinstance(gpio, int)}
"""BCM GPIO number -> physical pin on the 40-pin header."""

_NAME = re.compile(r"(?i)^\s*(?:(gpio|bcm)\s*(\d+)|(board|j8:)\s*(\d+)|(\d+))\s*$")


def bcm_number(pin: int | str) -> int | None:
    """The BCM GPIO number a config names (``17``, ``"17"``, ``"GPIO17"``, ``"BCM17"``,
    ``"BOARD11"``, ``"J8:11"``), or None if it is not a GPIO on the 40-pin header."""
    if isinstance(pin, bool):
        return None
    if isinstance(pin, int):
        return pin if pin in PHYSICAL else None
    m = _NAME.match(pin)
    if m is None:
        return None
    if m.group(2) or m.group(5):
        n = int(m.group(2) or m.group(5))
        return n if n in PHYSICAL else None
    physical = HEADER.get(int(m.group(4)))
    return physical if isinstance(physical, int) else None


def describe_pin(gpio: int) -> str:
    """``GPIO17 (pin 11)``."""
    return f"GPIO{gpio} (pin {PHYSICAL[gpio]})"


# --------------------------------------------------------------------------- console modes


@dataclass(frozen=True, slots=True)
class ConsoleSetup:
    """How the installer console reaches a laptop in one mode on one board."""

    mode: ConsoleMode
    port: str  # the device pttd's console opens
    pins: tuple[int, ...] = ()  # GPIOs the mode takes (the UART's TX and RX)
    config_txt: tuple[str, ...] = ()  # lines config.txt needs ([all] section)
    modules: tuple[str, ...] = ()  # kernel modules to load at boot
    kernel_names: tuple[str, ...] = ()  # console=NAME values that would sit on this port
    getty_units: tuple[str, ...] = ()  # serial-getty@ units that would take the port


CONSOLE_DEFAULTS: dict[str, ConsoleSetup] = {
    # GPIO14 (TXD) / GPIO15 (RXD); serial0 is the UART the firmware routes to those pins.
    "uart": ConsoleSetup(
        mode="uart",
        port="/dev/serial0",
        pins=(14, 15),
        config_txt=("enable_uart=1",),
        kernel_names=("serial0", "ttyS0", "ttyAMA0"),
        getty_units=(
            "serial-getty@serial0.service",
            "serial-getty@ttyS0.service",
            "serial-getty@ttyAMA0.service",
        ),
    ),
    # USB gadget serial: the Pi's OTG port appears on the laptop as a serial port (ttyACM).
    "gadget": ConsoleSetup(
        mode="gadget",
        port="/dev/ttyGS0",
        config_txt=("dtoverlay=dwc2,dr_mode=peripheral",),
        modules=("g_serial",),
        kernel_names=("ttyGS0",),
        getty_units=("serial-getty@ttyGS0.service",),
    ),
}

UART_DEVICES = frozenset({"/dev/serial0", "/dev/ttyS0", "/dev/ttyAMA0", "/dev/serial1"})


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True, slots=True)
class Reservation:
    """Pins a board's hardware uses; ``inputs_ok``: a button there may be a PTT or button input
    (it *is* a button, such as a HAT's), but nothing else may use it."""

    pins: tuple[int, ...]
    use: str
    inputs_ok: bool = False


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    description: str
    models: tuple[str, ...]  # /proc/device-tree/model starts with one of these; (): any Pi
    reserved: tuple[Reservation, ...]
    console_modes: tuple[ConsoleMode, ...]
    console_default: ConsoleMode
    console_note: str  # why a mode is missing, shown when it is asked for
    consoles: dict[str, ConsoleSetup]
    audio_input: tuple[str, ...]  # the capture device's name contains one of these
    audio_output: tuple[str, ...]
    audio_hint: str  # how to make the expected audio devices appear
    config_txt: tuple[str, ...]  # lines the board's hardware needs in config.txt
    defaults: dict[str, int]  # default wiring: function -> BCM GPIO
    notes: str = ""
    source: str = field(default="", compare=False)

    def console(self, mode: str) -> ConsoleSetup:
        if mode not in self.console_modes:
            why = f": {self.console_note}" if self.console_note else ""
            raise ProfileError(
                f"board {self.name} has no {mode} console (it has "
                f"{', '.join(self.console_modes)}){why}"
            )
        return self.consoles[mode]

    def reservations_for(self, pin: int) -> list[Reservation]:
        return [r for r in self.reserved if pin in r.pins]


def free_pins(profile: Profile | None, taken: AbstractSet[int] = frozenset()) -> list[int]:
    """GPIOs on the header that are not ``taken``, not the UART's and not reserved by
    ``profile``'s hardware (with no profile: none is): the profile's default wiring pins first,
    then the rest, each in header order."""
    blocked = set(CONSOLE_DEFAULTS["uart"].pins)
    wired: set[int] = set()
    if profile is not None:
        blocked |= {p for r in profile.reserved for p in r.pins}
        wired = set(profile.defaults.values())
    return sorted(
        (g for g in PHYSICAL if g not in blocked and g not in taken),
        key=lambda g: (g not in wired, PHYSICAL[g]),
    )


class ProfileError(ValueError):
    """A profile that does not exist or does not make sense; the message says which."""


FUNCTIONS = (
    "ptt",
    "emergency",
    "room_up",
    "room_down",
    "volume_up",
    "volume_down",
    "online_led",
    "transmit_led",
    "receive_led",
    "error_led",
)
"""The functions a profile's ``[defaults]`` may wire, as config keys name them."""


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProfileError(f"{where}: must be a list of strings")
    return tuple(value)


_KEYS: dict[str, set[str]] = {
    "": {
        "description",
        "models",
        "notes",
        "config_txt",
        "reserved",
        "console",
        "audio",
        "defaults",
    },
    "reserved": {"pins", "use", "inputs_ok"},
    "console": {"modes", "default", "note", "uart", "gadget"},
    "console.mode": {"port", "pins", "config_txt", "modules", "kernel_names", "getty_units"},
    "audio": {"input", "output", "hint"},
}


def _unknown(table: Any, kind: str, where: str) -> None:
    if not isinstance(table, dict):
        raise ProfileError(f"{where}: must be a table")
    extra = sorted(set(table) - _KEYS[kind])
    if extra:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(extra)}")


def _mode(name: str, source: str) -> ConsoleMode:
    if name == "uart":
        return "uart"
    if name == "gadget":
        return "gadget"
    raise ProfileError(f"{source}: console.modes: each must be uart or gadget (got {name!r})")


def _parse(name: str, text: str, source: str) -> Profile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{source}: not valid TOML: {exc}") from exc
    _unknown(data, "", source)
    for i, r in enumerate(data.get("reserved", [])):
        _unknown(r, "reserved", f"{source}: reserved[{i}]")
    _unknown(data.get("console", {}), "console", f"{source}: console")
    for mode in CONSOLE_DEFAULTS:
        _unknown(data.get("console", {}).get(mode, {}), "console.mode", f"{source}: console.{mode}")
    _unknown(data.get("audio", {}), "audio", f"{source}: audio")
    reserved = []
    for i, r in enumerate(data.get("reserved", [])):
        pins = r.get("pins", [])
        if not pins or not all(isinstance(p, int) and p in PHYSICAL for p in pins):
            raise ProfileError(f"{source}: reserved[{i}].pins: must be GPIO numbers 0..27")
        reserved.append(Reservation(tuple(pins), str(r["use"]), bool(r.get("inputs_ok", False))))
    console = data.get("console", {})
    modes = tuple(
        _mode(m, source) for m in _strings(console.get("modes", ["uart"]), f"{source}: modes")
    )
    if not modes:
        raise ProfileError(f"{source}: console.modes: none given")
    default = _mode(str(console.get("default", modes[0])), source)
    if default not in modes:
        raise ProfileError(f"{source}: console.default: must be one of console.modes")
    consoles = {}
    for mode, base in CONSOLE_DEFAULTS.items():
        override = console.get(mode, {})
        consoles[mode] = ConsoleSetup(
            mode=base.mode,
            port=str(override.get("port", base.port)),
            pins=tuple(override.get("pins", base.pins)),
            config_txt=_strings(
                override.get("config_txt", list(base.config_txt)), f"{source}: console.{mode}"
            ),
            modules=tuple(override.get("modules", base.modules)),
            kernel_names=tuple(override.get("kernel_names", base.kernel_names)),
            getty_units=tuple(override.get("getty_units", base.getty_units)),
        )
    audio = data.get("audio", {})
    defaults = data.get("defaults", {})
    for key, value in defaults.items():
        if key not in FUNCTIONS:
            raise ProfileError(f"{source}: defaults.{key}: unknown function")
        if not isinstance(value, int) or value not in PHYSICAL:
            raise ProfileError(f"{source}: defaults.{key}: must be a GPIO number 0..27")
    profile = Profile(
        name=name,
        description=str(data.get("description", name)),
        models=_strings(data.get("models", []), f"{source}: models"),
        reserved=tuple(reserved),
        console_modes=modes,
        console_default=default,
        console_note=str(console.get("note", "")),
        consoles=consoles,
        audio_input=_strings(audio.get("input", []), f"{source}: audio.input"),
        audio_output=_strings(audio.get("output", []), f"{source}: audio.output"),
        audio_hint=str(audio.get("hint", "")),
        config_txt=_strings(data.get("config_txt", []), f"{source}: config_txt"),
        defaults=dict(defaults),
        notes=str(data.get("notes", "")),
        source=source,
    )
    _check_defaults(profile)
    return profile


def _check_defaults(profile: Profile) -> None:
    """The default wiring must itself pass the checks ``pttd doctor`` makes."""
    seen: dict[int, str] = {}
    for function, gpio in profile.defaults.items():
        if gpio in seen:
            raise ProfileError(
                f"{profile.source}: defaults: {function} and {seen[gpio]} share {gpio}"
            )
        seen[gpio] = function
        is_input = not function.endswith("_led")
        for r in profile.reservations_for(gpio):
            if not (r.inputs_ok and is_input):
                raise ProfileError(f"{profile.source}: defaults.{function}: GPIO{gpio} is {r.use}")
        if gpio in CONSOLE_DEFAULTS["uart"].pins:
            raise ProfileError(f"{profile.source}: defaults.{function}: GPIO{gpio} is the UART's")


def _files() -> Any:
    return resources.files("pttd.radio") / "hw_profiles"


@cache
def profile_names() -> tuple[str, ...]:
    """The shipped profiles' names, sorted."""
    return tuple(
        sorted(f.name.removesuffix(".toml") for f in _files().iterdir() if f.name.endswith(".toml"))
    )


@cache
def load_profile(name: str) -> Profile:
    """The shipped profile ``name``; :class:`ProfileError` naming the ones there are."""
    if name not in profile_names():
        raise ProfileError(f"no board profile {name!r}; there are: {', '.join(profile_names())}")
    resource = _files() / f"{name}.toml"
    return _parse(name, resource.read_text(encoding="utf-8"), f"hw_profiles/{name}.toml")
