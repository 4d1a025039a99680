"""What the device benchmarks (``audio``, ``latency``) and the run-all share: distributions,
output, progress."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import pttd
from pttd.cliargs import output_file
from pttd.redact import setup_logging

log = logging.getLogger(__name__)

TARGETS_MISSED: Final = 3
"""Exit status of a run that completed but missed a target (unless ``--report-only``). The others:
0 every target met, 1 the benchmark could not run to the end, 2 a usage error."""

SOURCE_ROOT: Final = os.path.dirname(os.path.dirname(os.path.abspath(pttd.__file__)))

EXIT_STATUS_HELP: Final = f"""exit status:
  0  every target met
  {TARGETS_MISSED}  the run completed but missed a target (0 with --report-only)
  1  a benchmark could not run to the end
  2  a bad command line"""


def plain(docstring: str | None) -> str:
    """A module docstring as ``--help`` text: reST markup (````x````, ``:role:`x```) taken out."""
    text = re.sub(r":[a-z]+:`~?([^`]*)`", r"\1", docstring or "")
    return text.replace("``", "").strip()


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of an ascending sequence."""
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(len(ordered) * q / 100))
    return ordered[rank - 1]


def distribution(values_ms: Sequence[float], digits: int = 2) -> dict[str, Any]:
    """p50, p95 (nearest rank), min, max and the samples themselves, in milliseconds."""
    ordered = sorted(values_ms)
    return {
        "p50": round(nearest_rank(ordered, 50), digits),
        "p95": round(nearest_rank(ordered, 95), digits),
        "min": round(ordered[0], digits),
        "max": round(ordered[-1], digits),
        "n": len(ordered),
        "samples": [round(v, digits) for v in values_ms],
    }


def median(values: Sequence[float], digits: int) -> float:
    """The median (:func:`statistics.median`), rounded to ``digits``."""
    return round(statistics.median(values), digits)


def mark(ok: bool | None) -> str:
    """PASS, FAIL, or n/a for a figure that was not measured (``None``)."""
    return "n/a" if ok is None else "PASS" if ok else "FAIL"


def missed(targets_met: Mapping[str, bool | None]) -> list[str]:
    """The targets a report missed; one whose figure was not measured (``None``) is not missed."""
    return [name for name, met in targets_met.items() if met is False]


def exit_status(targets_met: Mapping[str, bool | None], report_only: bool) -> int:
    """0 when no target was missed (or ``--report-only``), else :data:`TARGETS_MISSED`."""
    return TARGETS_MISSED if missed(targets_met) and not report_only else 0


def finish(command: str, targets_met: Mapping[str, bool | None], report_only: bool) -> int:
    """The exit status of a completed run; when it is not 0, one line on stderr says why."""
    status = exit_status(targets_met, report_only)
    if status:
        names = missed(targets_met)
        print(
            f"{command}: {len(names)} of {len(targets_met)} targets missed ({', '.join(names)}); "
            f"exit status {status} (--report-only: 0)",
            file=sys.stderr,
        )
    return status


def server_command(db: Path, *options: str, log_level: str = "WARNING") -> list[str]:
    """``pttd server run`` on 127.0.0.1, a port the OS picks, registry ``db``, with ``options``:
    the room server as the benchmarks and the load tests start it, in a process of its own."""
    return [
        sys.executable,
        *("-m", "pttd.cli", "server", "run", "--host", "127.0.0.1", "--port", "0"),
        *("--db", str(db), "--log-level", log_level, *options),
    ]


def load_average() -> float | None:
    """The 1-minute load average: other work on the machine makes the figures noisy."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine(load_before: float | None) -> dict[str, Any]:
    """What the figures were measured on, and how busy it was (before the run, and now)."""
    return {
        "python": platform.python_version(),
        "pttd": pttd.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def add_output_arguments(parser: argparse.ArgumentParser, quick_help: str) -> None:
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--out",
        type=output_file,
        metavar="FILE",
        help="also write the JSON here (its folder must exist: checked before the run)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    add_report_only(parser)


def add_report_only(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--report-only",
        action="store_true",
        help=f"exit 0 after a completed run even if a target was missed (default: exit status "
        f"{TARGETS_MISSED})",
    )


def start_logging(quiet: bool) -> None:
    """Warnings from everything; progress (INFO) from the benchmarks unless ``quiet``."""
    setup_logging(logging.WARNING)
    logging.getLogger("pttd.bench").setLevel(logging.WARNING if quiet else logging.INFO)


def emit(
    report: dict[str, Any], args: argparse.Namespace, human: Callable[[dict[str, Any]], str]
) -> None:
    """Write the JSON to ``--out`` if given; print JSON (``--json``) or the human table."""
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text if args.json else human(report))


async def poll(condition: Callable[[], bool], within: float, every: float = 0.005) -> bool:
    """Wait until ``condition()`` holds, looking every ``every`` seconds; False after ``within``.

    For state that other threads change (a simulated speaker's recording, mixer counters): there
    is no asyncio event to wait on.
    """
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every)
    return True


def child_env() -> dict[str, str]:
    """This process's environment, with this pttd first on PYTHONPATH: a benchmark's child
    processes (servers, devices) import the same pttd, installed or not."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE_ROOT, env.get("PYTHONPATH")]))
    return env


def proc_status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM); None where there is none."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def proc_cpu_seconds(pid: int) -> float | None:
    """CPU time of a process's threads: from /proc/PID/task/*/schedstat (nanoseconds), else from
    /proc/PID/stat (clock ticks, coarse); None where there is no /proc."""
    total_ns = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                total_ns += int((task / "schedstat").read_text().split()[0])
    except OSError:
        pass
    else:
        if total_ns:
            return total_ns / 1e9
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
