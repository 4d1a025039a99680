"""``pttd bench …``: benchmarks that print figures (and JSON). Tests never assert on their speed.

Each benchmark is a module of this package with ``add_arguments(parser)`` and ``run(args) -> int``;
listing it in :data:`BENCHMARKS` gives it its subcommand. The modules are imported only when the
``bench`` parser is built, so ``python -m pttd.bench.baseline`` stays light.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Final

# name -> (module under pttd.bench, one-line help). Order is the order of a future run-all.
BENCHMARKS: Final[dict[str, tuple[str, str]]] = {
    "server": (
        "server",
        "room server fan-out: one talker to N listeners, pttd against a bare websockets relay",
    ),
}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` and one subcommand per entry of :data:`BENCHMARKS` to the ``pttd`` parser."""
    bench = sub.add_parser("bench", help="benchmarks: print figures, optionally as JSON")
    bsub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    for name, (module_name, help_text) in BENCHMARKS.items():
        module = importlib.import_module(f"{__name__}.{module_name}")
        parser = bsub.add_parser(
            name,
            help=help_text,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(parser)
        parser.set_defaults(func=module.run)
