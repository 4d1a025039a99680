"""``pttd bench …``: benchmarks that print figures (and JSON). Tests never assert on their speed.

Each benchmark is a module of this package with ``add_arguments(parser)`` and ``run(args) -> int``;
listing it in :data:`BENCHMARKS` gives it its subcommand. The modules are imported only when the
``bench`` parser is built, so ``python -m pttd.bench.baseline`` stays light.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from pttd.bench.common import EXIT_STATUS_HELP, plain

# name -> (module under pttd.bench, one-line help). Order is the run-all's order.
BENCHMARKS: Final[dict[str, tuple[str, str]]] = {
    "server": (
        "server",
        "room server fan-out: one talker to N listeners, pttd against a bare websockets relay",
    ),
    "audio": (
        "audio",
        "PESQ of the whole chain against the codec alone; CPU per frame against raw libopus; "
        "the same in an end-to-end encrypted room against clear",
    ),
    "latency": (
        "latency",
        "access time, mouth-to-ear, late entry, clipping, pttd's RSS above its imports; "
        "access and mouth-to-ear in an end-to-end encrypted room against clear",
    ),
    "hostile": (
        "hostile",
        "an honest talk beside each hostile-client attack: its latency and losses, the server's "
        "memory and log",
    ),
}


if TYPE_CHECKING:  # generic for type checkers only
    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    _SubParsers = argparse._SubParsersAction


class BenchmarkName(_SubParsers):
    """The benchmark's name. Refuses ``pttd bench``'s own options before it: the benchmark's
    defaults would replace them without a word (``pttd bench --quick server`` ran the full
    server benchmark)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        name = values[0] if isinstance(values, Sequence) and values else values
        given = [
            action.option_strings[-1]
            for action in parser._actions
            if action.option_strings
            and action.default is not argparse.SUPPRESS
            and getattr(namespace, action.dest, action.default) != action.default
        ]
        if given:
            parser.error(
                f"{', '.join(given)} before {name!r}: a benchmark ignores the options before its "
                f"name; put them after it (see pttd bench {name} --help)"
            )
        super().__call__(parser, namespace, values, option_string)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` and one subcommand per entry of :data:`BENCHMARKS` to the ``pttd`` parser.

    ``pttd bench`` with no benchmark named runs them all (:mod:`pttd.bench.suite`).
    """
    suite = importlib.import_module(f"{__name__}.suite")
    bench = sub.add_parser(
        "bench",
        help="benchmarks: print figures, optionally as JSON; with none named, run them all",
        description=plain(suite.__doc__),
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    suite.add_arguments(bench)
    bench.set_defaults(func=suite.run)
    # The benchmark is optional (none: run them all), which argparse's usage would not show.
    usage = bench.format_usage().removeprefix("usage: ").rstrip().replace("%", "%%")
    indent = " " * len(f"usage: {bench.prog} ")
    bench.usage = f"{usage}\n{indent}[BENCHMARK [options]]"
    bsub = bench.add_subparsers(
        dest="bench_command",
        action=BenchmarkName,
        required=False,
        metavar="BENCHMARK",
        title="benchmarks",
        description="name one to run only it, with its own options (pttd bench BENCHMARK --help)",
    )
    for name, (module_name, help_text) in BENCHMARKS.items():
        module = importlib.import_module(f"{__name__}.{module_name}")
        parser = bsub.add_parser(
            name,
            help=help_text,
            description=plain(module.__doc__),
            epilog=EXIT_STATUS_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(parser)
        parser.set_defaults(func=module.run)
