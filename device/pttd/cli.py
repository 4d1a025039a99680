"""The ``pttd`` command: one entry point, a subcommand per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pttd import __version__
from pttd.errors import PttdError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pttd", description="Internet push-to-talk radio: device daemon and room server."
    )
    parser.add_argument("--version", action="version", version=f"pttd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from pttd.audio.cli import add_parser as add_audio  # noqa: PLC0415
    from pttd.bench import add_parser as add_bench  # noqa: PLC0415
    from pttd.demo import add_parser as add_demo  # noqa: PLC0415
    from pttd.doctor import add_parser as add_doctor  # noqa: PLC0415
    from pttd.run import add_parser as add_run  # noqa: PLC0415
    from pttd.server.admin import add_parser as add_server  # noqa: PLC0415

    add_demo(sub)
    add_run(sub)
    add_server(sub)
    add_audio(sub)
    add_bench(sub)
    add_doctor(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except PttdError as exc:
        print(f"pttd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
