"""``pttd bench …`` on the command line: a bad value is one usage line and exit status 2, before
any benchmark runs (nothing here runs one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pttd import cli
from pttd.bench import BENCHMARKS
from pttd.bench.common import TARGETS_MISSED, exit_status, finish, missed, plain
from pttd.bench.suite import targets_met

BAD_ARGUMENTS = [
    # (arguments after `pttd bench`, what the one error line must say)
    (["--quick", "--out", "{missing}/x.json"], "argument --out:"),
    (["--out", "{tmp}"], "argument --out:"),
    (["--plot", "{missing}/x.png"], "argument --plot:"),
    (["server", "--out", "{missing}/x.json"], "argument --out:"),
    (["audio", "--out", "{missing}/x.json"], "argument --out:"),
    (["latency", "--quick", "--out", "{missing}/x.json"], "argument --out:"),
    (["server", "--listeners", "0"], "argument --listeners:"),
    (["server", "--packets", "-5"], "argument --packets:"),
    (["server", "--latency-packets", "many"], "argument --latency-packets:"),
    (["server", "--rounds", "0"], "argument --rounds:"),
    (["hostile", "--seconds", "0"], "argument --seconds:"),
    (["hostile", "--quick", "--out", "{missing}/x.json"], "argument --out:"),
    # The run-all's options before a benchmark's name: the benchmark would ignore them.
    (["--quick", "server", "--listeners", "5"], "--quick before 'server'"),
    (["-q", "--no-pin", "audio"], "--no-pin, --quiet before 'audio'"),
]


def pttd(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pttd.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(("argv", "says"), BAD_ARGUMENTS)
def test_a_bad_value_is_one_usage_error(argv: list[str], says: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    done = pttd("bench", *(a.format(missing=missing, tmp=tmp_path) for a in argv), timeout=30)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr
    assert says in errors[0]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not missing.exists() and list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("value", ["70000", "http"])
def test_the_baseline_server_refuses_a_bad_port(value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pttd.bench.baseline", "--port", value],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "argument --port:" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- exit status


def test_exit_status_says_whether_every_target_was_met() -> None:
    assert TARGETS_MISSED not in (0, 1, 2)  # success, could not run, usage error
    assert exit_status({"p99_ms": True, "ratio": True}, report_only=False) == 0
    assert exit_status({"p99_ms": True, "ratio": False}, report_only=False) == TARGETS_MISSED
    assert exit_status({"p99_ms": False, "ratio": False}, report_only=True) == 0
    assert exit_status({}, report_only=False) == 0


def test_a_figure_not_measured_is_not_a_missed_target() -> None:
    assert missed({"clipped_ms": True, "device_own_rss_mb": None}) == []
    assert exit_status({"clipped_ms": True, "device_own_rss_mb": None}, report_only=False) == 0
    assert missed({"a": False, "b": None, "c": False}) == ["a", "c"]


def test_a_missed_target_is_told_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert finish("pttd bench x", {"a": True, "b": False}, report_only=False) == TARGETS_MISSED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 of 2 targets missed (b)" in err and "--report-only" in err
    assert finish("pttd bench x", {"a": True, "b": False}, report_only=True) == 0
    assert finish("pttd bench x", {"a": True}, report_only=False) == 0
    assert capsys.readouterr().err == ""


def test_the_suite_takes_its_targets_from_the_summary() -> None:
    report = {
        "summary": [
            {"benchmark": "server", "figure": "delivery p99", "met": True},
            {"benchmark": "latency", "figure": "device RSS", "met": False},
            {"benchmark": "latency", "figure": "clipped", "met": None},
        ]
    }
    met = targets_met(report)
    assert met == {
        "server: delivery p99": True,
        "latency: device RSS": False,
        "latency: clipped": None,
    }
    assert exit_status(met, report_only=False) == TARGETS_MISSED


@pytest.mark.parametrize("benchmark", [None, *BENCHMARKS])
def test_every_benchmark_takes_report_only(benchmark: str | None) -> None:
    argv = ["bench", *([benchmark] if benchmark else []), "--quick"]
    parser = cli.build_parser("bench")
    assert parser.parse_args(argv).report_only is False
    assert parser.parse_args([*argv, "--report-only"]).report_only is True


# --------------------------------------------------------------------------- help


def help_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("benchmark", [None, *BENCHMARKS])
def test_help_is_plain_text_with_the_exit_status(
    benchmark: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_text(["bench", *([benchmark] if benchmark else [])], capsys)
    assert "``" not in text and ":data:" not in text and ":mod:" not in text
    assert "--report-only" in text and "exit status:" in text
    assert f"  {TARGETS_MISSED}  the run completed but missed a target" in text


def test_bench_usage_shows_the_benchmark_as_optional(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(["bench"], capsys)
    usage = text.split("\n\n")[0]
    assert usage.startswith("usage: pttd bench [-h]") and "--report-only" in usage
    assert usage.rstrip().endswith("[BENCHMARK [options]]")
    assert "BENCHMARK ..." not in usage
    assert "pip install -e '.[plot]'" in text and "pttd[plot]" not in text


def test_plain_takes_out_restructuredtext_markup() -> None:
    doc = "Runs ``pttd bench``; see :data:`BENCHMARKS` and :class:`~pttd.x.Y`.\n"
    assert plain(doc) == "Runs pttd bench; see BENCHMARKS and pttd.x.Y."
    assert plain(None) == ""
