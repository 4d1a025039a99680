"""The ``pttd`` command: one entry point, a subcommand per job.

Only the chosen subcommand's module is imported: :data:`COMMANDS` names each command's module and
its one-line help, which is all ``pttd --help`` needs. The device daemon (``pttd run``) then does
not load the benchmarks, the demo, the room server or SQLite, which it never uses.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Final

from pttd import __version__
from pttd.errors import PttdError

COMMANDS: Final[dict[str, tuple[str, str]]] = {
    # name: (the module whose add_parser(sub) registers it, its help in `pttd --help`)
    "demo": ("pttd.demo", "two simulated devices talk through a local room server"),
    "run": ("pttd.radio.run", "run the device daemon"),
    "config": ("pttd.radio.run", "configuration file tools"),
    "server": ("pttd.server.admin", "the room server and its registry"),
    "keys": ("pttd.server.keys", "the room key authority of encrypted rooms"),
    "audio": ("pttd.radio.audio.cli", "audio devices: list what PortAudio sees"),
    "bench": (
        "pttd.bench",
        "benchmarks: print figures, optionally as JSON; with none named, run them all",
    ),
    "doctor": (
        "pttd.radio.doctor",
        "check the wiring, audio devices, permissions and server; say how to fix each",
    ),
}
"""Every subcommand, in ``pttd --help``'s order. A module may register several (``run`` and
``config``); the help here must be the module's own (a test keeps them in step)."""


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names, if it names a known one: its first argument that is not an
    option (``pttd`` itself takes no option with a value)."""
    for arg in argv:
        if arg == "--":
            break
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``pttd`` parser, with ``command``'s real subparser (its module imported) and every
    other command as a stub that only shows its help line. With no ``command``, stubs only:
    enough for ``pttd --help``, ``--version`` and the usage errors."""
    parser = argparse.ArgumentParser(
        prog="pttd", description="Internet push-to-talk radio: device daemon and room server."
    )
    parser.add_argument("--version", action="version", version=f"pttd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = COMMANDS[command][0] if command in COMMANDS else None
    for name, (module_name, help_text) in COMMANDS.items():
        if module_name != chosen:
            sub.add_parser(name, help=help_text)
        elif name == command:  # its module registers it and its siblings (run, config) here
            importlib.import_module(module_name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(chosen_command(arguments))
    args = parser.parse_args(arguments)
    try:
        code: int = args.func(args)
    except (PttdError, OSError) as exc:
        # Our own errors say what is wrong in one line; an OSError reaching here (a file or
        # folder the command was pointed at) does too, with the path in it.
        print(f"pttd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
