"""``pttd doctor``: tell an installer exactly what is miswired, one line per check.

It checks the config against its board profile (pins that clash with the board's I2S, I2C or
UART; two functions on one pin is the config's own rule, :func:`pttd.radio.config.pin_clashes`, so a
config with one does not load), that libopus loads and the encoder the daemon builds from the
config keeps its settings (read back from libopus), that the audio devices the config names
exist and are the board's, that the GPIO chip, the sound devices, the serial ports and the input
devices are open to the service's user (as systemd starts it: its groups plus the unit's
SupplementaryGroups), that the kernel's login console is not on pttd's console port, that the
stored credential reads, and that the room server answers with a valid certificate. Each failing
line says how to fix it; the exit status is 1 when any check fails. An unset board is fine: it
is said (INFO), and the pins are checked against the header and the UART only.

It claims no pin and opens no audio stream, so it can run beside the running service.

Its lines carry text from outside: a server's answer (a hostile one chooses its headers), the
names sound cards and input devices give themselves. Each line is printed through
:func:`pttd.redact.escape_controls`, so that nothing in it can move the cursor, clear the screen
or forge another line on the installer's terminal; ``--json`` escapes them as JSON does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import grp
import json
import os
import pwd
import ssl
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pttd import cliargs
from pttd.errors import PttdError, StoreError
from pttd.radio.boards import (
    CONSOLE_DEFAULTS,
    UART_DEVICES,
    Profile,
    ProfileError,
    bcm_number,
    describe_pin,
    free_pins,
    load_profile,
    profile_names,
)
from pttd.radio.config import Config, load_config, normal_address, pin_uses, split_list
from pttd.radio.store import Store
from pttd.redact import escape_controls

if TYPE_CHECKING:
    from pttd.radio.audio.devices import AudioDevice, DeviceSpec, Kind

DEFAULT_CONFIG = Path("/etc/pttd/pttd.toml")
SERVICE_USER = "pttd"
SERVICE_GROUPS = ("gpio", "audio", "dialout", "input", "bluetooth")
"""The unit's SupplementaryGroups= (systemd/pttd.service): the service has them whatever
/etc/group says."""

Status = Literal["pass", "fail", "skip", "info"]


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report."""

    name: str
    status: Status
    message: str
    fix: str = ""

    def line(self) -> str:
        """The check as the terminal shows it: one line, control characters escaped."""
        text = f"{self.status.upper():4}  {self.name}: {self.message}"
        if self.status == "fail" and self.fix:
            text += f" -> fix: {self.fix}"
        return escape_controls(text)

    def to_json(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "message": self.message, "fix": self.fix}


def passed(name: str, message: str) -> Check:
    return Check(name, "pass", message)


def failed(name: str, message: str, fix: str) -> Check:
    return Check(name, "fail", message, fix)


def skipped(name: str, message: str) -> Check:
    return Check(name, "skip", message)


def info(name: str, message: str) -> Check:
    """Worth knowing, nothing wrong."""
    return Check(name, "info", message)


# --------------------------------------------------------------------------- the machine


@dataclass(frozen=True, slots=True)
class Account:
    """The service's user as systemd runs it: uid, and every group it has."""

    name: str
    uid: int
    gid: int
    groups: frozenset[int]


def lookup_account(name: str, extra_groups: Sequence[str] = SERVICE_GROUPS) -> Account | None:
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        return None
    groups = {user.pw_gid}
    groups.update(g.gr_gid for g in grp.getgrall() if name in g.gr_mem)
    for group in extra_groups:
        with contextlib.suppress(KeyError):
            groups.add(grp.getgrnam(group).gr_gid)
    return Account(name, user.pw_uid, user.pw_gid, frozenset(groups))


@dataclass(slots=True)
class Machine:
    """Where the checks look; tests point it at a made-up /dev and made-up audio devices."""

    dev: Path = Path("/dev")
    model_file: Path = Path("/proc/device-tree/model")
    cmdline_file: Path = Path("/proc/cmdline")
    user: str = SERVICE_USER
    account: Account | None = None
    audio_devices: Callable[[], list[AudioDevice]] | None = None  # default: PortAudio's list
    timeout: float = 5.0
    _account_looked_up: bool = field(default=False, repr=False)

    def path(self, device: str) -> Path:
        """A /dev path as seen here (under :attr:`dev`)."""
        if device.startswith("/dev/"):
            return self.dev / device.removeprefix("/dev/")
        return Path(device)

    def service_account(self) -> Account | None:
        if self.account is None and not self._account_looked_up:
            self.account = lookup_account(self.user)
            self._account_looked_up = True
        return self.account

    def model(self) -> str:
        try:
            return self.model_file.read_bytes().rstrip(b"\0").decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def kernel_consoles(self) -> list[str]:
        """``console=`` values of the running kernel (``serial0,115200``, ``tty1``)."""
        try:
            words = self.cmdline_file.read_text(encoding="utf-8", errors="replace").split()
        except OSError:
            return []
        return [w.removeprefix("console=") for w in words if w.startswith("console=")]


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def describe_mode(st: os.stat_result) -> str:
    return f"{_owner_name(st.st_uid)}:{_group_name(st.st_gid)} {stat.S_IMODE(st.st_mode):04o}"


def can_read_write(st: os.stat_result, account: Account) -> bool:
    """Whether ``account`` may open the file read-write by its mode bits (ACLs not counted:
    logind's seat ACLs never apply to a system service)."""
    if account.uid == 0:
        return True
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == account.uid:
        bits = mode >> 6
    elif st.st_gid in account.groups:
        bits = mode >> 3
    else:
        bits = mode
    return bits & 0o6 == 0o6


def _access_fix(path: str, st: os.stat_result, user: str) -> str:
    group = _group_name(st.st_gid)
    if group == "root" or (stat.S_IMODE(st.st_mode) & 0o060) != 0o060:
        return (
            f"the device node is {describe_mode(st)}: a udev rule must give it to a group "
            f"{user} is in (Raspberry Pi OS does: is this Pi OS?)"
        )
    return f"add {user} to the {group} group (sudo usermod -aG {group} {user}), then restart pttd"


# --------------------------------------------------------------------------- checks


def check_board(config: Config, machine: Machine) -> tuple[Check, Profile | None]:
    name = config.device.board
    choices = ", ".join(profile_names())
    if not name:
        return (
            info(
                "board",
                "no board profile set: pins are checked against the header and the UART only, "
                f"audio devices by name (a profile checks the board's hardware too: {choices})",
            ),
            None,
        )
    try:
        profile = load_profile(name)
    except ProfileError as exc:
        return failed("board", str(exc), f"set [device] board to one of: {choices}"), None
    model = machine.model()
    if not model:
        return passed("board", f"{name}: {profile.description} (model not known here)"), profile
    if profile.models and not any(model.startswith(m) for m in profile.models):
        from pttd.radio.installer import guess_board  # noqa: PLC0415

        return (
            failed(
                "board",
                f"this is a {model}, but profile {name} is for {' or '.join(profile.models)}",
                f"set [device] board to a profile for this Pi (e.g. {guess_board(model)}); "
                f"there are: {choices}",
            ),
            profile,
        )
    return passed("board", f"{name}: {profile.description} ({model})"), profile


def _console_uart(config: Config, profile: Profile | None) -> bool:
    ports = {config.console.port} | {p.port for p in config.ptt if p.kind == "serial"}
    uart = set(UART_DEVICES)
    if profile is not None:
        uart.add(profile.consoles["uart"].port)
    return bool(ports & uart)


def check_pins(config: Config, profile: Profile | None) -> list[Check]:
    """Each GPIO against the UART and the board's hardware. Two functions on one pin never
    get here: the config does not load (:func:`pttd.radio.config.pin_clashes`)."""
    uses = pin_uses(config)
    if not uses:
        return [skipped("pins", "no GPIO buttons or LEDs in the config")]
    numbers = {u.key: bcm_number(u.pin) for u in uses}
    taken = {n for n in numbers.values() if n is not None}
    uart = _console_uart(config, profile)
    uart_pins = CONSOLE_DEFAULTS["uart"].pins if profile is None else profile.consoles["uart"].pins

    def free(limit: int = 6) -> str:
        pins = free_pins(profile, taken)
        return ", ".join(describe_pin(p) for p in pins[:limit]) or "none left"

    checks = []
    for use in uses:
        name = f"pin {use.key}"
        gpio = numbers[use.key]
        if gpio is None:
            checks.append(
                failed(
                    name,
                    f"{use.function}: {use.pin!r} is not a GPIO on the 40-pin header",
                    f"set {use.key} to a BCM GPIO number (0..27), e.g. 17 for pin 11",
                )
            )
            continue
        where = describe_pin(gpio)
        if uart and gpio in uart_pins:
            checks.append(
                failed(
                    name,
                    f"{use.function} on {where}: that pin is the serial console's UART "
                    "(TXD GPIO14, RXD GPIO15)",
                    f"move the {use.function} to a free pin ({free()}) and set {use.key}",
                )
            )
            continue
        reservations = profile.reservations_for(gpio) if profile is not None else []
        blocking = [r for r in reservations if not (r.inputs_ok and use.is_input)]
        if blocking:
            checks.append(
                failed(
                    name,
                    f"{use.function} on {where}: board {profile.name if profile else ''} "
                    f"uses that pin for {blocking[0].use}",
                    f"move the {use.function} to a free pin ({free()}) and set {use.key}",
                )
            )
            continue
        note = f" ({reservations[0].use})" if reservations else ""
        checks.append(passed(name, f"{use.function} on {where}{note}"))
    return checks


def check_opus(config: Config) -> Check:
    """The encoder the daemon runs, built the daemon's way, encodes; its settings read back."""
    try:
        import numpy as np  # noqa: PLC0415
        import opuslib.api.info  # type: ignore[import-untyped]  # noqa: PLC0415

        from pttd.radio.audio.codec import Encoder, OpusSettings  # noqa: PLC0415

        encoder = Encoder(OpusSettings.from_config(config.audio))
        encoder.encode(np.zeros(encoder.settings.frame_samples, dtype=np.int16))
        applied = encoder.applied_settings()
        wrong = encoder.mismatches()
        version = opuslib.api.info.get_version_string()
        if isinstance(version, bytes):
            version = version.decode("ascii", "replace")
    except Exception as exc:
        return failed(
            "libopus",
            f"the Opus codec does not load or encode: {exc}",
            "sudo apt install libopus0 (and reinstall pttd if opuslib is missing)",
        )
    if wrong:
        said = ", ".join(f"{name} {got} (set to {want})" for name, (want, got) in wrong.items())
        return failed(
            "libopus",
            f"{version} does not keep the [audio] settings: it reports {said}",
            "install a libopus that supports them (sudo apt install libopus0) and opuslib==3.0.1",
        )
    on_off = {0: "off", 1: "on"}
    return passed(
        "libopus",
        f"{version} encodes {applied['sample_rate']} Hz mono in "
        f"{encoder.settings.frame_ms} ms frames at {applied['bitrate'] // 1000} kbit/s, "
        f"complexity {applied['complexity']}, FEC {on_off[applied['inband_fec']]} "
        f"({applied['packet_loss_perc']} % expected loss), DTX {on_off[applied['dtx']]} "
        "(read back from the encoder)",
    )


def _portaudio_devices() -> list[AudioDevice]:
    from pttd.radio.audio.devices import list_devices  # noqa: PLC0415

    return list_devices()


def check_audio(config: Config, profile: Profile | None, machine: Machine) -> list[Check]:
    a = config.audio
    if a.backend == "sim":
        return [skipped("audio", "audio.backend is sim: no sound card used")]
    try:
        from pttd.radio.audio.devices import check_settings, find_device  # noqa: PLC0415

        devices = (machine.audio_devices or _portaudio_devices)()
    except Exception as exc:
        fix = "sudo apt install libportaudio2"
        return [failed("audio", f"cannot list audio devices: {exc}", fix)]
    checks = []
    hint = f"; {profile.audio_hint}" if profile and profile.audio_hint else ""
    directions: tuple[tuple[Kind, DeviceSpec, str], ...] = (
        ("input", a.input_device, "audio.input_device"),
        ("output", a.output_device, "audio.output_device"),
    )
    for kind, spec, key in directions:
        name = f"audio {kind}"
        try:
            device = find_device(spec, kind, devices)
        except PttdError as exc:
            if any(d.channels(kind) > 0 for d in devices):
                fix = f"set {key} to part of one of those names{hint}"
            else:
                fix = (profile.audio_hint if profile else "") or "connect the sound card"
            checks.append(failed(name, str(exc), fix))
            continue
        expected = (
            (profile.audio_input if kind == "input" else profile.audio_output) if profile else ()
        )
        if expected and not any(e.casefold() in device.name.casefold() for e in expected):
            checks.append(
                failed(
                    name,
                    f"{key} gives {device.describe()}, not the board's "
                    f"{' or '.join(repr(e) for e in expected)} device",
                    f"set {key} to the board's card{hint}",
                )
            )
            continue
        if machine.audio_devices is None:  # PortAudio's own list: ask it about the rate too
            try:
                check_settings(device, kind, sample_rate=a.sample_rate)
            except PttdError as exc:
                checks.append(
                    failed(name, str(exc), "set audio.sample_rate to a rate the device supports")
                )
                continue
        checks.append(passed(name, device.describe()))
    return checks


def _nodes(directory: Path, prefixes: Sequence[str]) -> list[Path]:
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    return [p for p in entries if p.name.startswith(tuple(prefixes))]


def _access(
    name: str, nodes: Sequence[Path], machine: Machine, what: str, fix_missing: str
) -> Check:
    account = machine.service_account()
    if account is None:
        return failed(
            name,
            f"there is no user {machine.user!r} to run the service",
            "run scripts/install (it creates the user from /etc/sysusers.d/pttd.conf)",
        )
    if not nodes:
        return failed(name, f"no {what}", fix_missing)
    blocked = []
    for node in nodes:
        try:
            st = node.stat()
        except OSError as exc:
            return failed(name, f"{node}: {exc.strerror}", fix_missing)
        if not can_read_write(st, account):
            blocked.append((node, st))
    if blocked:
        node, st = blocked[0]
        listing = ", ".join(f"{n} ({describe_mode(s)})" for n, s in blocked)
        return failed(
            name,
            f"{account.name} cannot open {listing}",
            _access_fix(str(node), st, account.name),
        )
    groups = sorted({_group_name(n.stat().st_gid) for n in nodes})
    shown = ", ".join(n.name for n in nodes[:4]) + (" …" if len(nodes) > 4 else "")
    return passed(name, f"{shown}: read/write for {account.name} (group {', '.join(groups)})")


def check_gpio_access(config: Config, machine: Machine) -> Check:
    if not pin_uses(config):
        return skipped("gpio access", "no GPIO buttons or LEDs in the config")
    return _access(
        "gpio access",
        _nodes(machine.dev, ["gpiochip"]),
        machine,
        "/dev/gpiochip*: this is not a Raspberry Pi, or its kernel has no GPIO character device",
        "run pttd on the Pi, with the Raspberry Pi OS kernel",
    )


def check_sound_access(config: Config, machine: Machine) -> Check:
    if config.audio.backend == "sim":
        return skipped("sound access", "audio.backend is sim")
    return _access(
        "sound access",
        _nodes(machine.dev / "snd", ["controlC", "pcmC"]),
        machine,
        "sound card in /dev/snd",
        "connect the sound card or enable the HAT's overlay in config.txt, and reboot",
    )


def _serial_ports(config: Config) -> list[tuple[str, str]]:
    ports = []
    if config.console.port:
        ports.append(("console", config.console.port))
    ports.extend(
        (f"serial ptt[{i}]", p.port) for i, p in enumerate(config.ptt) if p.kind == "serial"
    )
    return ports


def check_serial(config: Config, profile: Profile | None, machine: Machine) -> list[Check]:
    checks = []
    for role, port in _serial_ports(config):
        name = f"{role} port"
        if "://" in port:
            checks.append(skipped(name, f"{port} is a pyserial URL, not a device"))
            continue
        gadget = port == CONSOLE_DEFAULTS["gadget"].port
        if role == "console" and profile is not None:
            mode = "gadget" if gadget else "uart" if port in UART_DEVICES else ""
            if mode and mode not in profile.console_modes:
                checks.append(
                    failed(
                        name,
                        f"{port}: board {profile.name} has no {mode} console "
                        f"({profile.console_note})",
                        f"set console.port to {profile.console(profile.console_default).port}",
                    )
                )
                continue
        path = machine.path(port)
        if not path.exists():
            if gadget:
                fix = (
                    "enable USB gadget serial (dtoverlay=dwc2 in config.txt, g_serial in "
                    "/etc/modules-load.d: scripts/install --console gadget does both), reboot, "
                    "and connect the Pi's OTG/USB-C port to the laptop"
                )
            elif port in UART_DEVICES:
                fix = (
                    "enable the UART (enable_uart=1 in config.txt: scripts/install --console "
                    "uart does it) and reboot"
                )
            else:
                fix = "plug in the serial adapter, or correct the port in the config"
            checks.append(failed(name, f"{port} does not exist", fix))
            continue
        real = path.resolve()
        holders = [
            c
            for c in machine.kernel_consoles()
            if machine.path(f"/dev/{c.split(',')[0]}").resolve() == real
        ]
        if holders:
            checks.append(
                failed(
                    name,
                    f"{port} is the kernel's login console (console={holders[0]} on the kernel "
                    "command line): the kernel writes there and a getty answers",
                    f"remove console={holders[0]} from cmdline.txt (/boot/firmware/cmdline.txt), "
                    "and reboot: scripts/install does it",
                ),
            )
            continue
        st = real.stat()
        if _group_name(st.st_gid) == "tty":
            unit = f"serial-getty@{real.name}.service"
            checks.append(
                failed(
                    name,
                    f"{port} ({real.name}) belongs to group tty: a login getty holds it",
                    f"sudo systemctl mask --now {unit}",
                )
            )
            continue
        access = _access(name, [real], machine, port, "")
        if access.status == "pass":
            access = passed(name, f"{port} ({real.name}): read/write for {machine.user}")
        checks.append(access)
    return checks


def check_input_devices(config: Config, machine: Machine) -> list[Check]:
    checks = []
    for i, ptt in enumerate(config.ptt):
        if ptt.kind != "evdev":
            continue
        name = f"input ptt[{i}]"
        if not ptt.device.startswith("/dev/"):
            checks.append(skipped(name, f"{ptt.device!r} is found by name when the daemon starts"))
            continue
        path = machine.path(ptt.device)
        if not path.exists():
            checks.append(
                failed(name, f"{ptt.device} does not exist", "plug the device in, or fix the path")
            )
            continue
        checks.append(_access(name, [path.resolve()], machine, ptt.device, ""))
    return checks


def check_state_dir(config: Config, machine: Machine) -> Check:
    path = Path(config.state.dir)
    account = machine.service_account()
    if not path.exists():
        return passed("state dir", f"{path} does not exist yet; systemd creates it at start")
    st = path.stat()
    if account is not None and account.uid not in (0, st.st_uid):
        return failed(
            "state dir",
            f"{path} is {describe_mode(st)}, not {account.name}'s",
            f"sudo chown -R {account.name}: {path}",
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        return failed(
            "state dir",
            f"{path} is {describe_mode(st)}: others can read the credential",
            f"sudo chmod 0700 {path}",
        )
    return passed("state dir", f"{path} ({describe_mode(st)})")


def check_credential(config: Config) -> Check:
    """The stored credential reads (the daemon would start unpaired if it did not)."""
    try:
        credential = Store(config.state.dir).credential()
    except StoreError as exc:
        if isinstance(exc.__cause__, PermissionError):
            fix = "run it as root (sudo pttd doctor): the credential is the service's, 0600"
        else:
            fix = "pair the device again at the installer console (unpair, then pair)"
        return failed("credential", str(exc), fix)
    if credential is None:
        return skipped("credential", "not paired yet: pair at the installer console")
    return passed("credential", f"paired with {credential.server_url} as {credential.device_name}")


def server_url(config: Config) -> str:
    """The address the daemon connects to: the credential's, else the config's (an unreadable
    credential is :func:`check_credential`'s failure)."""
    try:
        credential = Store(config.state.dir).credential()
    except StoreError:
        credential = None
    return credential.server_url if credential is not None else config.server.url


def _expiry(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    if ssl_object is None:
        return ""
    cert = ssl_object.getpeercert()
    not_after = cert.get("notAfter") if cert else None
    if not isinstance(not_after, str):
        return ""
    expires = ssl.cert_time_to_seconds(not_after)
    days = int((expires - time.time()) // 86400)
    return f"; certificate valid for {days} more day(s), until {not_after}"


async def check_server(config: Config, seconds: float = 5.0, url: str | None = None) -> Check:
    from websockets.asyncio.client import connect  # noqa: PLC0415

    from pttd import __version__  # noqa: PLC0415
    from pttd.radio.link import LinkSettings, describe_failure, tls_context  # noqa: PLC0415

    url = server_url(config) if url is None else url
    if not url:
        return skipped("server", "no server address yet (server.url empty, not paired)")
    settings = LinkSettings(ca_file=config.server.ca_file, tls_verify=config.server.tls_verify)
    try:
        context = tls_context(url, settings)
        async with asyncio.timeout(seconds):
            async with connect(
                url,
                ssl=context,
                open_timeout=seconds,
                close_timeout=1,
                compression=None,
                user_agent_header=f"pttd-doctor/{__version__}",
            ) as ws:
                transport_ssl = ws.transport.get_extra_info("ssl_object")
                expiry = _expiry(transport_ssl)
    except Exception as exc:
        reason, message = describe_failure(exc)
        if reason == "tls":
            fix = (
                "install the full certificate chain on the server (a certificate from a public "
                "CA, not expired, for this host name), or set server.ca_file to the PEM of the CA "
                "that signed it"
            )
        else:
            fix = (
                "check the address and port, this Pi's network (ping the host), and that "
                "pttd-server runs there and its firewall lets the port in"
            )
        return failed("server", f"{url}: {message}", fix)
    if not config.server.tls_verify and url.startswith("wss://"):
        return failed(
            "server",
            f"{url} answers, but server.tls_verify = false: the certificate is not checked",
            "set server.ca_file to the server's CA and tls_verify = true",
        )
    return passed("server", f"{url} answers{expiry}")


# --------------------------------------------------------------------------- running


def run_local_checks(config: Config, machine: Machine) -> list[Check]:
    """Every check but the server's."""
    board, profile = check_board(config, machine)
    checks = [board]
    checks += check_pins(config, profile)
    checks.append(check_opus(config))
    checks += check_audio(config, profile, machine)
    checks.append(check_gpio_access(config, machine))
    checks.append(check_sound_access(config, machine))
    checks += check_serial(config, profile, machine)
    checks += check_input_devices(config, machine)
    checks.append(check_state_dir(config, machine))
    checks.append(check_credential(config))
    return checks


def ble_addresses(config: Config) -> list[str]:
    """The BLE accessories the config binds (``[[ptt]]`` of kind ble, ``bluetooth.buttons``)."""
    found = [normal_address(p.address) for p in config.ptt if p.kind == "ble"]
    found += [normal_address(a) for a in split_list(config.bluetooth.buttons)]
    return list(dict.fromkeys(found))


async def check_bluetooth(config: Config, wait_s: float) -> list[Check]:
    """The adapter is there and powered; each BLE accessory is known to BlueZ and connected
    (with its battery level when BlueZ has it). Nothing to check without a BLE accessory."""
    addresses = ble_addresses(config)
    if not addresses:
        return [skipped("bluetooth", "no BLE accessory configured")]
    from pttd.radio.inputs.bluez import BluezUnavailable, bluez_facts  # noqa: PLC0415

    try:
        facts = await bluez_facts(wait_s)
    except BluezUnavailable as exc:
        fix = "install BlueZ and start it (scripts/install does): apt install bluez; " + (
            "systemctl enable --now bluetooth"
        )
        return [failed("bluetooth", str(exc), fix)]
    powered = [a for a in facts.adapters if a.powered]
    if not facts.adapters:
        return [
            failed(
                "bluetooth",
                "BlueZ has no adapter",
                "check the Pi's Bluetooth (or a USB dongle): rfkill list; dmesg | grep -i blue",
            )
        ]
    if not powered:
        return [
            failed(
                "bluetooth", f"adapter {facts.adapters[0].address} is off", "bluetoothctl power on"
            )
        ]
    checks = [passed("bluetooth", f"adapter {powered[0].address} powered")]
    for address in addresses:
        name = f"ble {address}"
        seen = facts.accessories.get(address)
        if seen is None:
            checks.append(
                failed(
                    name,
                    "not seen by BlueZ",
                    "wake it (press its button) near the Pi; 'bt scan' at the console finds it",
                )
            )
        elif not seen.connected:
            checks.append(
                failed(
                    name,
                    f"{seen.name or 'the accessory'} is known but not connected (asleep, or off)",
                    "press its button to wake it; the daemon reconnects by itself",
                )
            )
        else:
            battery = f", battery {seen.battery}%" if seen.battery is not None else ""
            checks.append(passed(name, f"{seen.name or 'accessory'} connected{battery}"))
    return checks


async def run_checks(config: Config, machine: Machine) -> list[Check]:
    checks = run_local_checks(config, machine)
    checks += await check_bluetooth(config, machine.timeout)
    checks.append(await check_server(config, machine.timeout))
    return checks


def report(
    checks: Sequence[Check], *, config_path: Path, board: str | None, as_json: bool
) -> Iterator[str]:
    failures = [c for c in checks if c.status == "fail"]
    if as_json:
        yield json.dumps(  # ensure_ascii: control characters come out as \u escapes
            {
                "config": str(config_path),
                "board": board,
                "ok": not failures,
                "failed": len(failures),
                "checks": [c.to_json() for c in checks],
            },
            indent=2,
        )
        return
    for check in checks:
        yield check.line()
    if failures:
        yield f"doctor: {len(failures)} of {len(checks)} checks failed"
    else:
        yield f"doctor: all {len(checks)} checks passed (or did not apply)"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check the wiring, audio devices, permissions and server; say how to fix each",
    )
    doctor.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help=f"default: {DEFAULT_CONFIG}"
    )
    doctor.add_argument("--json", action="store_true", help="one JSON document")
    doctor.add_argument(
        "--user", default=SERVICE_USER, help=f"the service's user (default: {SERVICE_USER})"
    )
    doctor.add_argument(
        "--timeout", type=cliargs.positive_float, default=5.0, help="server check, seconds"
    )
    doctor.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace, machine: Machine | None = None) -> int:
    machine = machine or Machine(user=args.user, timeout=args.timeout)
    try:
        config = load_config(args.config)
    except PttdError as exc:
        if args.config.exists() and not os.access(args.config, os.R_OK):
            fix = "run it as root (sudo pttd doctor): the config is root's and the pttd group's"
        elif not args.config.exists():
            fix = f"run scripts/install, or give the config with --config (not {args.config})"
        else:
            fix = f"edit {args.config} (pttd config check names each key)"
        checks = [failed("config", str(exc), fix)]
        board = None
    else:
        checks = [passed("config", f"{args.config} loads")]
        checks += asyncio.run(run_checks(config, machine))
        board = config.device.board or None
    for line in report(checks, config_path=args.config, board=board, as_json=args.json):
        print(line)
    sys.stdout.flush()
    return 1 if any(c.status == "fail" for c in checks) else 0
