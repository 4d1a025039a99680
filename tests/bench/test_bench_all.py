"""``pttd bench`` with no benchmark named: every benchmark, one table, one JSON file (the quick
run; figures never checked against the targets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pttd.bench import BENCHMARKS
from pttd.bench.suite import format_report, plot

Run = tuple[dict[str, Any], Path]  # the session's `pttd bench --quick` (conftest.py)


def test_every_benchmark_is_in_the_report(quick_run: Run) -> None:
    report = quick_run[0]
    assert report["quick"] is True
    for name in BENCHMARKS:
        assert name in report, name
        assert "targets" in report[name] and "targets_met" in report[name]
    assert report["server"]["pttd"]["lost"] == 0 and report["server"]["baseline"]["lost"] == 0
    assert report["hostile"]["figures"]["lost"] == 0


def test_summary_rows_put_figures_beside_targets(quick_run: Run) -> None:
    summary = quick_run[0]["summary"]
    assert {row["benchmark"] for row in summary} == set(BENCHMARKS)
    assert len(summary) == 24  # audio 7, latency 10
    for row in summary:
        assert row["target"] and isinstance(row["met"], bool), row
        assert row["value"] is not None and row["value"] >= 0, row
    assert quick_run[0]["all_targets_met"] == all(row["met"] for row in summary)
    missed = [f"{row['benchmark']}: {row['figure']}" for row in summary if row["met"] is False]
    assert quick_run[0]["targets_missed"] == missed  # values: speed, not checked


def test_out_file_holds_the_same_json(quick_run: Run) -> None:
    assert json.loads(quick_run[1].read_text()) == quick_run[0]
    assert quick_run[0]["json"] == str(quick_run[1])
    assert quick_run[0]["plot"] is None  # --no-plot


def test_human_table(quick_run: Run) -> None:
    text = format_report(quick_run[0])
    assert text.count("PASS") + text.count("FAIL") == len(quick_run[0]["summary"])
    for name in BENCHMARKS:
        assert name in text


def test_plot_draws_a_png_or_says_it_cannot(quick_run: Run, tmp_path: Path) -> None:
    png = tmp_path / "latency.png"
    drawn = plot(quick_run[0], [3_000_000, 4_000_000, 12_000_000], png)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert drawn is False and not png.exists()
    else:
        assert drawn is True and png.read_bytes().startswith(b"\x89PNG")
