"""``pttd bench …``: benchmarks that print figures (and JSON). Tests never assert on their speed.

Each benchmark is a module of this package with ``add_arguments(parser)`` and ``run(args) -> int``;
listing it in :data:`BENCHMARKS` gives it its subcommand. The modules are imported only when the
``bench`` parser is built, so ``python -m pttd.bench.baseline`` stays light.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Final

# name -> (module under pttd.bench, one-line help). Order is the run-all's order.
BENCHMARKS: Final[dict[str, tuple[str, str]]] = {
    "server": (
        "server",
        "room server fan-out: one talker to N listeners, pttd against a bare websockets relay",
    ),
    "audio": (
        "audio",
        "PESQ of the whole chain against the codec alone; CPU per frame against raw libopus",
    ),
    "latency": (
        "latency",
        "access time, mouth-to-ear, late entry, clipping, device RSS, on loopback",
    ),
}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` and one subcommand per entry of :data:`BENCHMARKS` to the ``pttd`` parser.

    ``pttd bench`` with no benchmark named runs them all (:mod:`pttd.bench.suite`).
    """
    suite = importlib.import_module(f"{__name__}.suite")
    bench = sub.add_parser(
        "bench",
        help="benchmarks: print figures, optionally as JSON; with none named, run them all",
        description=suite.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    suite.add_arguments(bench)
    bench.set_defaults(func=suite.run)
    bsub = bench.add_subparsers(dest="bench_command", required=False, metavar="BENCHMARK")
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
