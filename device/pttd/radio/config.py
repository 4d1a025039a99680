"""The device's static configuration: one dataclass tree, loaded once from TOML and passed down.

Persisted state (the credential, the selected room, the volume) lives apart, in the state
directory (:mod:`pttd.radio.store`). Every problem in a file is reported at once, each naming its
key:
``audio.frame_ms: must be one of 10, 20, 40, 60 (got 25)``. Rules that look at more than one key
live here too, so that ``pttd config check``, ``pttd run``, the console's ``config set`` and
``pttd doctor`` (which loads the file) all apply them: one GPIO for two functions is refused,
``leds.online: GPIO17 (pin 11) is also the PTT button (ptt[0].pin); ...``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pttd.errors import ConfigError
from pttd.radio.boards import bcm_number, describe_pin

Check = Callable[[Any], str | None]  # returns a complaint, or None when the value is fine


def one_of(*allowed: object) -> Check:
    def check(value: Any) -> str | None:
        if value in allowed:
            return None
        return f"must be one of {', '.join(map(str, allowed))} (got {value!r})"

    return check


def within(low: float, high: float) -> Check:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high} (got {value})"

    return check


def pin(value: Any) -> str | None:
    """A BCM GPIO number (0..27 on the 40-pin header) or a gpiozero pin name ("GPIO17")."""
    if isinstance(value, int):
        return None if 0 <= value <= 27 else f"GPIO {value} is not on the 40-pin header (0..27)"
    if isinstance(value, str) and value:
        return None
    return f"must be a BCM pin number or name (got {value!r})"


def board(value: Any) -> str | None:
    """Empty, or the name of a board profile shipped in ``pttd/radio/hw_profiles``."""
    from pttd.radio.boards import profile_names  # noqa: PLC0415 (reads the package's profile files)

    if value == "" or value in profile_names():
        return None
    return f"no board profile {value!r}; there are: {', '.join(profile_names())}"


# Bluetooth values (the BLE input's, checked here so that the file, `config set` and `bt add`
# refuse the same things).
PTT_Z_SERVICE = "0000ffe0-0000-1000-8000-00805f9b34fb"  # Pryme PTT-Z and its clones
_ADDRESS = re.compile(r"[0-9A-F]{2}(:[0-9A-F]{2}){5}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_BASE_UUID = "-0000-1000-8000-00805f9b34fb"


def normal_address(text: str) -> str:
    """``aa-bb-cc-dd-ee-ff`` or ``aa:bb:…`` as ``AA:BB:CC:DD:EE:FF``; ValueError otherwise."""
    address = text.strip().upper().replace("-", ":")
    if not _ADDRESS.fullmatch(address):
        raise ValueError(f"{text!r} is not a Bluetooth address (AA:BB:CC:DD:EE:FF)")
    return address


def normal_uuid(text: str) -> str:
    """A UUID in its 128-bit lower-case form; 16- and 32-bit short forms (``ffe0``,
    ``0xffe0``) are expanded on the Bluetooth base UUID. ValueError otherwise."""
    value = text.strip().lower().removeprefix("0x")
    if re.fullmatch(r"[0-9a-f]{4}", value):
        value = f"0000{value}{_BASE_UUID}"
    elif re.fullmatch(r"[0-9a-f]{8}", value):
        value = f"{value}{_BASE_UUID}"
    if not _UUID.fullmatch(value):
        raise ValueError(f"{text!r} is not a UUID")
    return value


def hex_list(text: str) -> tuple[bytes, ...]:
    """Notification values from comma-separated hex (``01``, ``45 4c 45 54 31``)."""
    out = []
    for item in split_list(text):
        try:
            value = bytes.fromhex(item)
        except ValueError:
            raise ValueError(f"{item!r} is not a value in hex (01, 454c455431 …)") from None
        out.append(value)
    if not out:
        raise ValueError("no value (an empty one would match every notification)")
    return tuple(out)


def uuid(value: Any) -> str | None:
    try:
        normal_uuid(str(value))
    except ValueError as exc:
        return str(exc)
    return None


def optional_uuid(value: Any) -> str | None:
    return None if value == "" else uuid(value)


def hex_values(value: Any) -> str | None:
    try:
        hex_list(str(value))
    except ValueError as exc:
        return str(exc)
    return None


def addresses(value: Any) -> str | None:
    try:
        for address in split_list(str(value)):
            normal_address(address)
    except ValueError as exc:
        return str(exc)
    return None


def split_list(text: str) -> list[str]:
    """A comma-separated config value's items (``"a, b"`` → ``["a", "b"]``; ``""`` → ``[]``)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _spec(default: Any, check: Check | None = None, doc: str = "") -> Any:
    return field(default=default, metadata={"check": check, "doc": doc})


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    name: str = _spec("pttd", doc="the name offered to the server when pairing")
    board: str = _spec("", board, "board profile that `pttd doctor` checks the wiring against")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    url: str = _spec("", doc="ws:// or wss:// address of the room server")
    ca_file: str = _spec("", doc="extra CA certificate (PEM) to trust for wss")
    tls_verify: bool = _spec(True, doc="false turns certificate checks off (logged loudly)")


@dataclass(frozen=True, slots=True)
class StateConfig:
    dir: str = _spec("/var/lib/pttd", doc="credential and persisted settings")


@dataclass(frozen=True, slots=True)
class AudioConfig:
    backend: Literal["sounddevice", "sim"] = _spec("sounddevice", one_of("sounddevice", "sim"))
    input_device: str | int | None = _spec(None, doc="name substring or index; none: default")
    output_device: str | int | None = _spec(None, doc="name substring or index; none: default")
    sample_rate: int = _spec(48000, one_of(8000, 12000, 16000, 24000, 48000))
    frame_ms: int = _spec(20, one_of(10, 20, 40, 60))
    bitrate: int = _spec(24000, within(6000, 510000))
    complexity: int = _spec(5, within(0, 10))
    fec: bool = _spec(True, doc="Opus in-band forward error correction")
    expected_loss_percent: int = _spec(5, within(0, 100))
    dtx: bool = _spec(False, doc="Opus discontinuous transmission")
    simplex: bool = _spec(True, doc="own transmission mutes playback")
    volume: int = _spec(70, within(0, 100), "initial volume; changes are persisted")
    tone_level_db: float = _spec(-12.0, within(-60, 0), "peak level of tones, dBFS")
    roger_beep: bool = _spec(False, doc="play a beep at the end of each own transmission")
    sim_input: str = _spec("", doc="sim backend: WAV file to 'speak' (default: a test signal)")


@dataclass(frozen=True, slots=True)
class TalkConfig:
    mode: Literal["hold", "toggle"] = _spec("hold", one_of("hold", "toggle"))
    timeout: float = _spec(60.0, within(1, 3600), "seconds before a transmission is cut")


@dataclass(frozen=True, slots=True)
class PttConfig:
    """One PTT input; several may be active at once."""

    kind: Literal["gpio", "evdev", "serial", "ble", "sim"] = _spec(
        "sim", one_of("gpio", "evdev", "serial", "ble", "sim")
    )
    pin: int | str | None = _spec(None, doc="gpio: BCM pin")
    pull_up: bool = _spec(True, doc="gpio: internal pull-up (button to ground)")
    bounce_ms: int = _spec(20, within(0, 1000), "gpio: debounce time")
    device: str = _spec("", doc="evdev: /dev/input path or device name")
    key: str = _spec("KEY_F13", doc="evdev: key code name")
    port: str = _spec("", doc="serial: port or pyserial URL")
    baudrate: int = _spec(9600, within(300, 4_000_000), "serial: speed")
    address: str = _spec("", doc="ble: the accessory's address (AA:BB:CC:DD:EE:FF)")
    service: str = _spec(PTT_Z_SERVICE, uuid, "ble: GATT service of the PTT button")
    characteristic: str = _spec("", optional_uuid, "ble: its characteristic; empty: any notifying")
    press: str = _spec(
        "01", hex_values, "ble: notification values (hex, comma-separated) = pressed"
    )
    release: str = _spec("00", hex_values, "ble: values = released")
    sos_characteristic: str = _spec("", optional_uuid, "ble: a second button's, as emergency")
    sos_press: str = _spec("01", hex_values, "ble: its values = pressed")
    sos_release: str = _spec("00", hex_values, "ble: its values = released")


@dataclass(frozen=True, slots=True)
class BluetoothConfig:
    buttons: str = _spec(
        "", addresses, "BLE PTT buttons (PTT-Z convention), comma-separated addresses ('bt add')"
    )


@dataclass(frozen=True, slots=True)
class ButtonsConfig:
    """Extra GPIO buttons, each optional."""

    room_up: int | str | None = _spec(None, pin)
    room_down: int | str | None = _spec(None, pin)
    volume_up: int | str | None = _spec(None, pin)
    volume_down: int | str | None = _spec(None, pin)
    emergency: int | str | None = _spec(None, pin)
    pull_up: bool = _spec(True)
    bounce_ms: int = _spec(20, within(0, 1000))


@dataclass(frozen=True, slots=True)
class LedsConfig:
    """GPIO LEDs, each optional."""

    online: int | str | None = _spec(None, pin)
    transmit: int | str | None = _spec(None, pin, "lit exactly while the microphone is live")
    receive: int | str | None = _spec(None, pin)
    error: int | str | None = _spec(None, pin, "blinks when unpaired or in error")
    active_high: bool = _spec(True)


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    port: str = _spec("", doc="serial port or pyserial URL of the installer console; empty: off")
    baudrate: int = _spec(115200, within(300, 4_000_000))


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = _spec("INFO", one_of("DEBUG", "INFO", "WARNING", "ERROR"))


@dataclass(frozen=True, slots=True)
class Config:
    device: DeviceConfig = field(default_factory=DeviceConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    state: StateConfig = field(default_factory=StateConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    talk: TalkConfig = field(default_factory=TalkConfig)
    ptt: tuple[PttConfig, ...] = ()
    bluetooth: BluetoothConfig = field(default_factory=BluetoothConfig)
    buttons: ButtonsConfig = field(default_factory=ButtonsConfig)
    leds: LedsConfig = field(default_factory=LedsConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    log: LogConfig = field(default_factory=LogConfig)


# --------------------------------------------------------------------------- loading


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return isinstance(value, str)  # the field's check names the allowed values
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "a string"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint) if h is not type(None))
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        hint, str(hint)
    )


def _build(cls: type[Any], table: Any, where: str, problems: list[str]) -> Any:
    if not isinstance(table, dict):
        problems.append(f"{where}: must be a table")
        return cls()
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in known:
            problems.append(f"{where}.{key}: unknown key")
    values: dict[str, Any] = {}
    for name, f in known.items():
        if name not in table:
            continue
        value = table[name]
        if not _type_ok(value, hints[name]):
            problems.append(f"{where}.{name}: must be {_type_name(hints[name])} (got {value!r})")
            continue
        check = f.metadata.get("check")
        complaint = check(value) if check is not None else None
        if complaint:
            problems.append(f"{where}.{name}: {complaint}")
            continue
        values[name] = float(value) if hints[name] is float else value
    return cls(**values)


def _ptt_problems(ptt: PttConfig, where: str) -> list[str]:
    if ptt.kind == "gpio" and ptt.pin is None:
        return [f"{where}.pin: a gpio PTT needs a pin"]
    if ptt.kind == "gpio" and (complaint := pin(ptt.pin)):
        return [f"{where}.pin: {complaint}"]
    if ptt.kind == "evdev" and not ptt.device:
        return [f"{where}.device: an evdev PTT needs a device path or name"]
    if ptt.kind == "ble" and not ptt.address:
        return [f"{where}.address: a ble PTT needs the accessory's address (AA:BB:CC:DD:EE:FF)"]
    if ptt.kind == "ble":
        try:
            normal_address(ptt.address)  # one address: a list would pass addresses()
        except ValueError as exc:
            return [f"{where}.address: {exc}"]
        return _ble_problems(ptt, where)
    if ptt.kind == "serial" and not ptt.port:
        return [f"{where}.port: a serial PTT needs a port"]
    return []


def _ble_problems(ptt: PttConfig, where: str) -> list[str]:
    """Values that would make a BLE button misbehave rather than fail (each checked alone
    already): one characteristic for PTT and SOS, a release that reads as a press."""
    problems = []
    try:
        same = bool(ptt.sos_characteristic and ptt.characteristic) and normal_uuid(
            ptt.sos_characteristic
        ) == normal_uuid(ptt.characteristic)
    except ValueError:
        same = False  # a bad UUID: said already
    if same:
        problems.append(f"{where}.sos_characteristic: the same as characteristic")
    for press_key, release_key in (("press", "release"), ("sos_press", "sos_release")):
        try:
            press = hex_list(getattr(ptt, press_key))
            release = hex_list(getattr(ptt, release_key))
        except ValueError:
            continue  # said already
        if any(r.startswith(p) or p.startswith(r) for p in press for r in release):
            problems.append(
                f"{where}.{release_key}: a value that {press_key} matches too (a release "
                "would read as a press, or the other way round)"
            )
    return problems


def _duplicate_ble(config: Config) -> list[str]:
    seen: dict[str, str] = {}
    problems = []
    for i, ptt in enumerate(config.ptt):
        if ptt.kind != "ble":
            continue
        try:
            address = normal_address(ptt.address)
        except ValueError:
            continue
        if address in seen:
            problems.append(f"ptt[{i}].address: {address} is {seen[address]}'s already")
        seen[address] = f"ptt[{i}]"
    return problems


@dataclass(frozen=True, slots=True)
class PinUse:
    """A GPIO the config gives a function."""

    function: str  # "PTT button", "transmit LED"
    key: str  # the config key: "ptt[0].pin", "leds.transmit"
    pin: int | str
    is_input: bool


def pin_uses(config: Config) -> list[PinUse]:
    """Every GPIO the config wires, in the file's order."""
    uses = [
        PinUse("PTT button", f"ptt[{i}].pin", ptt.pin, True)
        for i, ptt in enumerate(config.ptt)
        if ptt.kind == "gpio" and ptt.pin is not None
    ]
    b = config.buttons
    for function, key, value in (
        ("emergency button", "buttons.emergency", b.emergency),
        ("room up button", "buttons.room_up", b.room_up),
        ("room down button", "buttons.room_down", b.room_down),
        ("volume up button", "buttons.volume_up", b.volume_up),
        ("volume down button", "buttons.volume_down", b.volume_down),
    ):
        if value is not None:
            uses.append(PinUse(function, key, value, True))
    for name in ("online", "transmit", "receive", "error"):
        value = getattr(config.leds, name)
        if value is not None:
            uses.append(PinUse(f"{name} LED", f"leds.{name}", value, False))
    return uses


def pin_clashes(config: Config) -> list[str]:
    """One problem per GPIO given to more than one function (``17``, ``"GPIO17"`` and
    ``"BOARD11"`` are one pin), under the key of its last use, naming the others."""
    by_gpio: dict[int, list[PinUse]] = {}
    for use in pin_uses(config):
        gpio = bcm_number(use.pin)
        if gpio is not None:  # a name off the header: `pttd doctor` says so
            by_gpio.setdefault(gpio, []).append(use)
    problems = []
    for gpio, uses in by_gpio.items():
        if len(uses) > 1:
            *earlier, last = uses
            also = " and the ".join(f"{u.function} ({u.key})" for u in earlier)
            problems.append(
                f"{last.key}: {describe_pin(gpio)} is also the {also}; "
                "give each function its own pin"
            )
    return problems


def _whole_problems(config: Config) -> list[str]:
    """Checks that look at more than one field."""
    problems = []
    if config.server.url and not config.server.url.startswith(("ws://", "wss://")):
        problems.append(f"server.url: must start with ws:// or wss:// (got {config.server.url!r})")
    problems.extend(pin_clashes(config))
    problems.extend(_duplicate_ble(config))
    return problems


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse TOML text; raise :class:`ConfigError` listing every problem, each with its key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    problems: list[str] = []
    sections: dict[str, Any] = {}
    hints = typing.get_type_hints(Config)
    for key, value in data.items():
        if key not in hints:
            problems.append(f"{key}: unknown section")
        elif key == "ptt":
            if not isinstance(value, list):
                problems.append("ptt: must be an array of tables ([[ptt]])")
                continue
            items = []
            for i, item in enumerate(value):
                built = _build(PttConfig, item, f"ptt[{i}]", problems)
                problems.extend(_ptt_problems(built, f"ptt[{i}]"))
                items.append(built)
            sections[key] = tuple(items)
        else:
            sections[key] = _build(hints[key], value, key, problems)
    config = Config(**sections)
    problems.extend(_whole_problems(config))
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return config


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text") from exc
    return parse_config(text, str(path))


# --------------------------------------------------------------------------- single keys
# The installer console reads and sets one dotted key at a time (``audio.volume``); what it sets
# is saved in the state directory and laid over the file's values at start (apply_overrides).

FIXED_KEYS = frozenset({"state.dir"})  # where the saved values live: only the file may move it
SECRET_WORDS = frozenset({"token", "password", "passwd", "secret", "pin", "code"})


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One settable key: ``section.name``, its type, default and description."""

    key: str
    section: str
    name: str
    hint: Any
    default: Any
    doc: str

    @property
    def secret(self) -> bool:
        """Shown masked: a word of the key names a secret."""
        return any(w in SECRET_WORDS for w in self.key.replace(".", "_").split("_"))

    @property
    def type_name(self) -> str:
        if typing.get_origin(self.hint) is Literal:
            return "one of " + ", ".join(map(str, typing.get_args(self.hint)))
        return _type_name(self.hint)


def settable_keys() -> dict[str, KeyInfo]:
    """Every dotted key a single value can be set for (``[[ptt]]`` entries are the file's)."""
    keys: dict[str, KeyInfo] = {}
    for section, cls in typing.get_type_hints(Config).items():
        if not dataclasses.is_dataclass(cls):
            continue
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            if key not in FIXED_KEYS:
                keys[key] = KeyInfo(
                    key, section, f.name, hints[f.name], f.default, f.metadata.get("doc", "")
                )
    return keys


def get_value(config: Config, key: str) -> Any:
    section, _, name = key.partition(".")
    return getattr(getattr(config, section), name)


def _key_info(key: str) -> KeyInfo:
    keys = settable_keys()
    info = keys.get(key)
    if info is None:
        if key in FIXED_KEYS:
            raise ConfigError(f"{key}: set in the configuration file only")
        near = difflib.get_close_matches(key, list(keys), n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise ConfigError(f"{key}: unknown key{hint}")
    return info


def _accepts(hint: Any, kind: type) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_accepts(h, kind) for h in typing.get_args(hint))
    if typing.get_origin(hint) is Literal:
        return kind is str
    return bool(hint is kind)


def parse_value(key: str, text: str) -> Any:
    """A value typed at the console (``50``, ``true``, ``toggle``, ``"a b"``, ``none``) as the
    key's type wants it; checked by :func:`apply_overrides`, not here. ConfigError for an
    unknown key."""
    info = _key_info(key)
    text = text.strip()
    if _accepts(info.hint, type(None)) and text.lower() in ("", "none", "null"):
        return None
    if _accepts(info.hint, bool) and text.lower() in ("yes", "on", "no", "off"):
        return text.lower() in ("yes", "on")
    try:
        value: Any = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word: the string itself
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not (_accepts(info.hint, int) or _accepts(info.hint, float)):
            value = text  # "1234" for a name
    elif not isinstance(value, str | bool | int | float):
        value = text  # a date, a table…: the text, which the type check then judges
    return value


def format_value(value: Any) -> str:
    """A value as TOML writes it (``"ops"``, ``true``, ``50``), ``none`` for unset."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def apply_overrides(config: Config, values: Mapping[str, Any]) -> Config:
    """``config`` with single dotted-key values laid over it, each checked as the file's would
    be; ConfigError naming every bad key (``audio.volume: must be between 0 and 100``)."""
    problems: list[str] = []
    tables: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        try:
            info = _key_info(key)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        tables.setdefault(info.section, {})[info.name] = value
    sections: dict[str, Any] = {}
    for section, table in tables.items():
        current = getattr(config, section)
        merged = {f.name: getattr(current, f.name) for f in dataclasses.fields(current)}
        merged.update(table)
        sections[section] = _build(type(current), merged, section, problems)
    result = dataclasses.replace(config, **sections)
    problems.extend(_whole_problems(result))
    if problems:
        raise ConfigError("; ".join(problems))
    return result
