"""The parts of ``scripts/install`` that edit text: the config it writes, and the boot files.

``scripts/install`` runs ``python3 -m pttd.radio.installer …`` with the system Python and the
source tree
on ``PYTHONPATH``, before the package's dependencies exist: standard library only.

* ``render-config``: the commented example config (``pttd/data/pttd.example.toml``) with a board
  profile's default wiring, console port and audio devices filled in.
* ``boot``: the lines the board and the console need in ``config.txt`` (added once, in an
  ``[all]`` section; a commented-out copy is uncommented in place; a conflicting line is commented
  out), and ``console=`` entries that would put the kernel's login console on pttd's console port
  removed from ``cmdline.txt``. The first change to a file keeps the original beside it
  (``config.txt.pttd-backup``); every change is printed as a unified diff.
* ``plan``: shell assignments (console port, modules, getty units) for the script to ``eval``.
* ``guess-board``: a profile for ``/proc/device-tree/model``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pttd.errors import ConfigError
from pttd.radio.boards import FUNCTIONS, Profile, ProfileError, load_profile, profile_names

EXIT_CHANGED = 100
"""``boot`` exits with this when it changed (or, dry, would change) a boot file."""

BACKUP_SUFFIX = ".pttd-backup"
MARK = "# pttd (scripts/install)"

# --------------------------------------------------------------------------- the config


def example_config() -> str:
    return (resources.files("pttd") / "data" / "pttd.example.toml").read_text(encoding="utf-8")


def toml_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)  # a TOML basic string is a JSON string


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?\s*(#.*)?$")


def set_key(text: str, section: str, key: str, value: str | int | bool | None) -> str:
    """``text`` with ``key`` in the first ``[section]`` (or ``[[section]]``) table set to ``value``:
    its ``key = …`` or ``# key = …`` line replaced by ``key = value``, or commented out for None.

    :raises KeyError: if the table has no such line (the example documents every key).
    """
    lines = text.splitlines(keepends=True)
    pattern = re.compile(rf"^(\s*)(#\s*)?{re.escape(key)}\s*=\s*(.*?)\s*$")
    inside = False
    for i, line in enumerate(lines):
        header = _HEADER.match(line)
        if header:
            if inside:
                break
            inside = header.group(2) == section
            continue
        if not inside:
            continue
        m = pattern.match(line)
        if m is None:
            continue
        indent, old = m.group(1), m.group(3)
        end = "\n" if line.endswith("\n") else ""
        if value is None:
            lines[i] = f"{indent}# {key} = {old}{end}"
        else:
            lines[i] = f"{indent}{key} = {toml_value(value)}{end}"
        return "".join(lines)
    raise KeyError(f"[{section}] has no {key} line")


# config section and key of each wiring function
_WIRING: dict[str, tuple[str, str]] = {
    "ptt": ("ptt", "pin"),
    "emergency": ("buttons", "emergency"),
    "room_up": ("buttons", "room_up"),
    "room_down": ("buttons", "room_down"),
    "volume_up": ("buttons", "volume_up"),
    "volume_down": ("buttons", "volume_down"),
    "online_led": ("leds", "online"),
    "transmit_led": ("leds", "transmit"),
    "receive_led": ("leds", "receive"),
    "error_led": ("leds", "error"),
}
assert set(_WIRING) == set(FUNCTIONS)


def render_config(
    profile: Profile,
    console_mode: str,
    *,
    name: str = "",
    server_url: str = "",
    template: str | None = None,
) -> str:
    """The example config for ``profile``: its default wiring (functions it does not wire are
    commented out), the console port of ``console_mode`` ("none": off), its audio devices."""
    text = example_config() if template is None else template
    text = set_key(text, "device", "board", profile.name)
    if name:
        text = set_key(text, "device", "name", name)
    if server_url:
        text = set_key(text, "server", "url", server_url)
    for function, (section, key) in _WIRING.items():
        text = set_key(text, section, key, profile.defaults.get(function))
    if "ptt" not in profile.defaults:
        text = set_key(text, "ptt", "kind", "sim")
    port = "" if console_mode == "none" else profile.console(console_mode).port
    text = set_key(text, "console", "port", port)
    text = set_key(
        text, "audio", "input_device", profile.audio_input[0] if profile.audio_input else None
    )
    return set_key(
        text, "audio", "output_device", profile.audio_output[0] if profile.audio_output else None
    )


# --------------------------------------------------------------------------- boot files


def boot_dir(root: Path) -> Path:
    """Where config.txt and cmdline.txt are: /boot/firmware (bookworm) or /boot (older)."""
    firmware = root / "boot" / "firmware"
    if (firmware / "config.txt").exists() or not (root / "boot" / "config.txt").exists():
        return firmware
    return root / "boot"


def _setting(line: str) -> tuple[str, str] | None:
    """(key, value) of an active ``key=value`` line; dtoverlay's key includes the overlay name
    and dtparam's the parameter name, since those repeat with different subjects."""
    stripped = line.strip()
    if not stripped or stripped.startswith(("#", "[")) or "=" not in stripped:
        return None
    key, _, value = stripped.partition("=")
    key, value = key.strip(), value.strip()
    if key == "dtoverlay":
        return f"dtoverlay={value.split(',')[0].split(':')[0]}", value
    if key == "dtparam":
        pname, _, pvalue = value.partition("=")
        return f"dtparam={pname.strip()}", pvalue.strip()
    return key, value


def edit_config_txt(text: str, wanted: Sequence[str], reason: str) -> str:
    """``text`` with each of ``wanted`` active in an ``[all]`` part of config.txt.

    A line already active there is left alone; a commented-out copy (``#dtparam=i2s=on``) is
    uncommented in place; an active line for the same setting with another value
    (``enable_uart=0``) is commented out; the rest are appended in an ``[all]`` section.
    """
    lines = text.splitlines()
    section = "all"
    where: list[str] = []  # the section each line is in
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip().lower()
        where.append(section)
    append: list[str] = []
    for want in wanted:
        key_value = _setting(want)
        if key_value is None:
            raise ValueError(f"not a config.txt setting: {want!r}")
        key, value = key_value
        active = [
            i
            for i, line in enumerate(lines)
            if where[i] == "all" and not line.strip().startswith("[") and _setting(line)
        ]
        if any(lines[i].strip() == want for i in active):
            continue
        for i in active:
            setting = _setting(lines[i])
            if setting is not None and setting[0] == key and setting[1] != value:
                lines[i] = f"#{lines[i].strip()}  {MARK}: replaced by {want}"
        commented = [
            i
            for i, line in enumerate(lines)
            if where[i] == "all" and re.fullmatch(rf"#\s*{re.escape(want)}\s*", line.strip())
        ]
        if commented:
            lines[commented[0]] = want
        else:
            append.append(want)
    if append:
        ends_in_all = (where[-1] if where else "all") == "all"
        if lines and lines[-1].strip():
            lines.append("")
        if not ends_in_all:
            lines.append("[all]")
        lines.append(f"{MARK}: {reason}")
        lines.extend(append)
    return "\n".join(lines) + "\n"


def edit_cmdline(text: str, kernel_names: Sequence[str]) -> str:
    """``cmdline.txt`` without the ``console=`` entries on ``kernel_names`` (serial0, ttyS0…)."""
    names = set(kernel_names)
    words = text.split()
    kept = [w for w in words if not (w.startswith("console=") and w[8:].split(",")[0] in names)]
    if kept == words:
        return text
    return " ".join(kept) + "\n"


@dataclass
class BootChange:
    path: Path
    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                self.before.splitlines(keepends=True),
                self.after.splitlines(keepends=True),
                fromfile=f"{self.path} (before)",
                tofile=f"{self.path} (after)",
            )
        )


def plan_boot(root: Path, profile: Profile, console_mode: str) -> list[BootChange]:
    """What ``boot`` would change; files that do not exist are left out (not a Pi image)."""
    directory = boot_dir(root)
    changes = []
    wanted = list(profile.config_txt)
    kernel_names: tuple[str, ...] = ()
    if console_mode != "none":
        console = profile.console(console_mode)
        wanted += console.config_txt
        kernel_names = console.kernel_names
    config_txt = directory / "config.txt"
    if config_txt.exists() and wanted:
        before = config_txt.read_text(encoding="utf-8")
        reason = f"board {profile.name}, {console_mode} console"
        changes.append(BootChange(config_txt, before, edit_config_txt(before, wanted, reason)))
    cmdline = directory / "cmdline.txt"
    if cmdline.exists() and kernel_names:
        before = cmdline.read_text(encoding="utf-8")
        changes.append(BootChange(cmdline, before, edit_cmdline(before, kernel_names)))
    return changes


def apply_boot(changes: Sequence[BootChange], *, dry_run: bool) -> bool:
    """Write the changes (the original kept once beside each file); print each as a diff."""
    any_change = False
    for change in changes:
        if not change.changed:
            print(f"unchanged: {change.path}")
            continue
        any_change = True
        backup = change.path.with_name(change.path.name + BACKUP_SUFFIX)
        if dry_run:
            print(f"would change {change.path} (original kept as {backup.name}):")
        else:
            if not backup.exists():
                backup.write_text(change.before, encoding="utf-8")
            tmp = change.path.with_name(change.path.name + ".pttd-new")
            tmp.write_text(change.after, encoding="utf-8")
            tmp.replace(change.path)
            print(f"changed {change.path} (original kept as {backup.name}):")
        sys.stdout.write(change.diff())
    return any_change


# --------------------------------------------------------------------------- boards


def guess_board(model: str) -> str:
    """A profile for a Pi model string (``Raspberry Pi Zero 2 W Rev 1.0``): the first of the
    USB-audio profiles whose models match, else ``generic-pi``."""
    for name in ("pi-zero2w-usb", "pi5-usb", "generic-pi"):
        if any(model.startswith(m) for m in load_profile(name).models):
            return name
    return "generic-pi"


def _plan(profile: Profile, console_mode: str) -> str:
    values: dict[str, str] = {
        "BOARD": profile.name,
        "BOARD_DESCRIPTION": profile.description,
        "BOARD_NOTES": profile.notes,
        "CONSOLE_MODE": console_mode,
        "CONSOLE_PORT": "",
        "CONSOLE_MODULES": "",
        "CONSOLE_GETTY_UNITS": "",
    }
    if console_mode != "none":
        console = profile.console(console_mode)
        values["CONSOLE_PORT"] = console.port
        values["CONSOLE_MODULES"] = " ".join(console.modules)
        values["CONSOLE_GETTY_UNITS"] = " ".join(console.getty_units)
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m pttd.radio.installer")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("render-config", "boot", "plan"):
        p = sub.add_parser(command)
        p.add_argument("--board", required=True)
        p.add_argument("--console", default="", help="uart, gadget or none (default: the board's)")
        if command == "render-config":
            p.add_argument("--name", default="")
            p.add_argument("--server-url", default="")
        if command == "boot":
            p.add_argument("--root", type=Path, default=Path("/"))
            p.add_argument("--dry-run", action="store_true")
    check = sub.add_parser("check-config")
    check.add_argument("path", type=Path)
    guess = sub.add_parser("guess-board")
    guess.add_argument("--model-file", type=Path, default=Path("/proc/device-tree/model"))
    sub.add_parser("boards")
    args = parser.parse_args(argv)
    try:
        if args.command == "boards":
            for name in profile_names():
                print(f"{name}\t{load_profile(name).description}")
            return 0
        if args.command == "check-config":
            from pttd.radio.config import load_config  # noqa: PLC0415 (standard library only too)

            config = load_config(args.path)
            print(f"{args.path}: OK (board {config.device.board or 'none'})")
            return 0
        if args.command == "guess-board":
            try:
                model = args.model_file.read_bytes().rstrip(b"\0").decode("utf-8", "replace")
            except OSError:
                model = ""
            print(guess_board(model))
            return 0
        profile = load_profile(args.board)
        mode = args.console or profile.console_default
        if mode != "none":
            profile.console(mode)  # ProfileError if the board has no such console
        if args.command == "plan":
            sys.stdout.write(_plan(profile, mode))
        elif args.command == "render-config":
            sys.stdout.write(
                render_config(profile, mode, name=args.name, server_url=args.server_url)
            )
        else:
            changed = apply_boot(plan_boot(args.root, profile, mode), dry_run=args.dry_run)
            return EXIT_CHANGED if changed else 0
    except (ProfileError, ConfigError) as exc:
        print(f"install: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
