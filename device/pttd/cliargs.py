"""Argument types and options every ``pttd`` command shares.

One place decides how a bad command-line value is told: argparse types here raise
:class:`argparse.ArgumentTypeError` with a sentence that names what is wrong, and argparse prints
it as one ``pttd …: error: argument --x: …`` line with exit status 2, never a traceback. Checks
that need the filesystem (an output file whose folder must exist) run at parse time too, so a
command fails before it does any work.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Final

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(value: str) -> str:
    """A logging level name, any case: ``debug`` → ``DEBUG``."""
    level = value.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"unknown log level {value!r}: choose one of {', '.join(LOG_LEVELS)}"
        )
    return level


def add_log_level(parser: argparse.ArgumentParser, default: str) -> None:
    """``--log-level`` with its choices and default in ``--help``."""
    parser.add_argument(
        "--log-level",
        type=log_level,
        default=default,
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)} (any case; default: {default})",
    )


def port(value: str) -> int:
    """A TCP port number, 0 (the OS picks) to 65535."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port {number} is out of range (0 to 65535)")
    return number


def positive_float(value: str) -> float:
    """A number of seconds (or a rate) above zero."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"{value} must be a finite number above 0")
    return number


def non_negative_float(value: str) -> float:
    """A number of zero or more (0 often means "no limit")."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number >= 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"{value} must be a finite number of 0 or more")
    return number


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} must be 1 or more")
    return number


def readable_file(value: str) -> Path:
    """A file that exists and can be read (a certificate, a config, a WAV)."""
    path = Path(value)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{value}: not readable (permission denied)")
    return path


def output_file(value: str) -> Path:
    """A file to write: its folder must exist and be writable, and it must not be a folder."""
    path = Path(value)
    folder = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: is a folder, not a file")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{value}: not writable (permission denied)")
    return path
