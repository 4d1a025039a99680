"""``pttd audio …``: look at the device's audio hardware.

``pttd audio list`` prints the devices PortAudio sees (index, name, host API, channels, default
rate), marking the system default input (capture) and output (playback); ``--json`` prints them
as a JSON object ``{"devices": [...]}`` instead. The index or any unique part of the name can go
into the config. PortAudio is loaded only when a command runs, so building the parser needs none.

A USB sound card chooses its own name: the table shows names through
:func:`pttd.redact.escape_controls`, so that none can move the cursor, clear the screen or forge
a line of the table; the JSON escapes them as JSON does.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pttd.redact import escape_controls

if TYPE_CHECKING:
    from pttd.radio.audio.devices import AudioDevice


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``audio`` and its subcommands to the ``pttd`` parser."""
    audio = sub.add_parser("audio", help="audio devices: list what PortAudio sees")
    asub = audio.add_subparsers(dest="audio_command", required=True, metavar="COMMAND")
    lst = asub.add_parser(
        "list", help="list audio devices; the index or part of the name goes into the config"
    )
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lst.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    from pttd.radio.audio.devices import list_devices  # noqa: PLC0415  (loads PortAudio)

    devices = list_devices()
    if args.json:
        # ensure_ascii: control characters in a name come out as \u escapes
        print(json.dumps({"devices": [d.to_json() for d in devices]}, indent=2))
        return 0
    for line in device_table(devices):
        print(line)
    return 0


def device_table(devices: Sequence[AudioDevice]) -> list[str]:
    """The lines ``pttd audio list`` prints: a header and one row a device, aligned, every
    cell as the terminal may show it (control characters escaped)."""
    if not devices:
        return ["no audio devices (PortAudio sees none; `aplay -l` and `arecord -l` list ALSA's)"]
    rows = [("#", "name", "host API", "in", "out", "rate", "default")]
    for d in devices:
        default = ",".join(
            k for k, on in (("in", d.default_input), ("out", d.default_output)) if on
        )
        rows.append(
            (
                str(d.index),
                escape_controls(d.name),
                escape_controls(d.hostapi),
                str(d.max_input_channels),
                str(d.max_output_channels),
                f"{d.default_samplerate:g}",
                default,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    numbers = {0, 3, 4, 5}
    lines = []
    for r in rows:
        cells = [
            c.rjust(w) if i in numbers else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines
