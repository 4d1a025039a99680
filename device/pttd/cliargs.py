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


def _number(value: str, kind: type[float] | type[int], least: float, strict: bool) -> float:
    """``value`` as a finite ``kind`` above (``strict``) or at least ``least``."""
    try:
        number = kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{value!r} is not {what}") from None
    low_ok = number > least if strict else number >= least
    if not low_ok or number == float("inf"):
        bound = f"above {least:g}" if strict else f"of {least:g} or more"
        raise argparse.ArgumentTypeError(f"{value} must be a finite number {bound}")
    return number


def positive_float(value: str) -> float:
    """A number of seconds (or a rate) above zero."""
    return float(_number(value, float, 0, strict=True))


def non_negative_float(value: str) -> float:
    """A number of zero or more (0 often means "no limit")."""
    return float(_number(value, float, 0, strict=False))


def positive_int(value: str) -> int:
    """A count of one or more."""
    return int(_number(value, int, 1, strict=False))


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
