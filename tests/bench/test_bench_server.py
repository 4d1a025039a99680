"""``pttd bench server``: it runs end to end and reports sane figures (never checked for speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench_checks import positive, verdict_agrees

from pttd.bench.common import median, nearest_rank
from pttd.bench.server import BenchSettings, format_report

LISTENERS = 5
FIGURES = ("packets_per_s", "p50_ms", "p99_ms")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pttd.cli",
            "bench",
            "server",
            "--quick",
            "--listeners",
            str(LISTENERS),
            "--json",
            "--report-only",  # a missed target on a busy machine is no test failure
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), out


def test_report_has_both_servers_with_sane_figures(run: tuple[dict[str, Any], Path]) -> None:
    report, _ = run
    assert report["listeners"] == LISTENERS
    for server in ("pttd", "baseline"):
        figures = report[server]
        for key in FIGURES:
            assert positive(figures[key]), (server, key, figures[key])
        assert figures["p50_ms"] <= figures["p99_ms"]
        assert figures["lost"] == 0, (server, figures)
    assert positive(report["ratio_packets_per_s"])
    assert report["ratio_packets_per_s"] == pytest.approx(
        report["pttd"]["packets_per_s"] / report["baseline"]["packets_per_s"], rel=1e-2
    )
    targets, met = report["targets"], report["targets_met"]
    assert set(targets) == set(met) == {"p99_ms", "ratio"}
    assert all(positive(t) for t in targets.values()), targets
    # Each verdict agrees with its figure; whether the targets were met is speed, not checked.
    p99 = report["pttd"]["p99_ms"]
    assert verdict_agrees(met["p99_ms"], p99, targets["p99_ms"], at_most=True)
    ratio = report["ratio_packets_per_s"]
    assert verdict_agrees(met["ratio"], ratio, targets["ratio"], at_most=False)


def test_report_says_what_was_run(run: tuple[dict[str, Any], Path]) -> None:
    report, _ = run
    settings = report["settings"]
    assert settings["listeners"] == LISTENERS
    assert settings["quick"] is True
    assert settings["rounds"] == len(report["rounds"]) == 1
    assert settings["latency_packets"] > 0 and settings["throughput_packets"] > 0
    only = report["rounds"][0]
    for server in ("pttd", "baseline"):
        assert only[server]["lost"] == 0
        assert positive(only[server]["packets_per_s"])


def test_out_file_holds_the_same_json(run: tuple[dict[str, Any], Path]) -> None:
    report, out = run
    assert json.loads(out.read_text()) == report


def test_human_table_names_both_servers_and_targets(run: tuple[dict[str, Any], Path]) -> None:
    report, _ = run
    text = format_report(report)
    assert "baseline" in text and "pttd" in text
    assert text.count("PASS") + text.count("FAIL") == 2


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert nearest_rank(values, 50) == 50
    assert nearest_rank(values, 99) == 99
    assert nearest_rank(values, 100) == 100
    assert nearest_rank([7], 99) == 7
    assert nearest_rank([1, 2, 3], 50) == 2
    with pytest.raises(ValueError):
        nearest_rank([], 50)


def test_median_is_rounded() -> None:
    assert median([3.0, 1.0, 2.0], 1) == 2.0
    assert median([1.0, 2.0], 0) == 2.0  # 1.5 to even
    assert median([0.123456, 0.2], 3) == 0.162


def test_quick_defaults_are_smaller() -> None:
    full = BenchSettings()
    assert full.listeners == 100
    assert full.latency_packets == 250 and full.throughput_packets == 2000 and full.rounds == 3
