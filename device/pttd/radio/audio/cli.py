"""``pttd audio …``: look at the device's audio hardware.

``pttd audio list`` prints the devices PortAudio sees (index, name, host API, channels, default
rate), marking the system default input (capture) and output (playback); ``--json`` prints them
as a JSON object ``{"devices": [...]}`` instead. The index or any unique part of the name can go
into the config. PortAudio is loaded only when a command runs, so building the parser needs none.
"""

from __future__ import annotations

import argparse
import json


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
        print(json.dumps({"devices": [d.to_json() for d in devices]}, indent=2))
        return 0
    if not devices:
        print("no audio devices (PortAudio sees none; `aplay -l` and `arecord -l` list ALSA's)")
        return 0
    rows = [("#", "name", "host API", "in", "out", "rate", "default")]
    for d in devices:
        default = ",".join(
            k for k, on in (("in", d.default_input), ("out", d.default_output)) if on
        )
        rows.append(
            (
                str(d.index),
                d.name,
                d.hostapi,
                str(d.max_input_channels),
                str(d.max_output_channels),
                f"{d.default_samplerate:g}",
                default,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    numbers = {0, 3, 4, 5}
    for r in rows:
        cells = [
            c.rjust(w) if i in numbers else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
    return 0
