"""``pttd bench hostile``: the quick run's report has every phase, sane figures and verdicts that
agree with them (never checked for speed: latencies are only printed), and its table says it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench_checks import finite, positive, verdict_agrees

from pttd.bench.attacks import ATTACKS, AttackResult
from pttd.bench.hostile import NO_ATTACK, PHASE_SECONDS, format_report

Run = tuple[dict[str, Any], Path]  # the session's `pttd bench --quick` (conftest.py)


def test_a_reference_phase_then_every_attack(quick_run: Run) -> None:
    report = quick_run[0]["hostile"]
    assert report["seconds"] == PHASE_SECONDS[1]  # --quick
    assert [x["attack"] for x in report["phases"]] == [NO_ATTACK, *ATTACKS]
    for x in report["phases"]:
        assert x["seconds"] >= report["seconds"], x["attack"]
        assert (x["clients"] is None) == (x["attack"] == NO_ATTACK)
        if x["clients"] is not None:
            clients = AttackResult(**x["clients"])
            assert clients.connections > 0 and sum(clients.closed.values()) == clients.connections


def test_honest_figures_are_sane(quick_run: Run) -> None:
    report = quick_run[0]["hostile"]
    for x in report["phases"]:
        h = x["honest"]
        assert h["sent"] > 0 and h["received"] + h["lost"] == h["sent"], x["attack"]
        assert 0 < h["p50_ms"] <= h["p99_ms"] <= h["max_ms"], (x["attack"], h)
        assert h["lost"] == h["out_of_order"] == h["foreign"] == 0, (x["attack"], h)
    totals = report["honest"]
    assert totals["sent"] >= sum(x["honest"]["sent"] for x in report["phases"])
    assert totals["lost"] == totals["foreign"] == 0 and totals["stream_stopped"] is None


def test_server_figures_are_sane(quick_run: Run) -> None:
    report = quick_run[0]["hostile"]
    for x in report["phases"]:
        s = x["server"]
        assert positive(s["rss_mb"]) and s["rss_mb"] <= s["rss_peak_mb"], s
        assert positive(s["hwm_mb"])
        assert finite(s["cpu"]) and s["cpu"] >= 0
        assert isinstance(s["log_lines"], int) and s["log_lines"] >= 0
    f = report["figures"]
    assert f["rss_baseline_mb"] == report["phases"][0]["server"]["rss_mb"]
    peaks = [max(x["server"]["rss_peak_mb"], x["server"]["hwm_mb"]) for x in report["phases"]]
    assert f["rss_peak_mb"] == max(peaks)
    assert f["rss_growth_mb"] == round(f["rss_peak_mb"] - f["rss_baseline_mb"], 1)
    assert f["log_lines_worst"] == max(x["server"]["log_lines"] for x in report["phases"][1:])


def test_verdicts_agree_with_the_figures(quick_run: Run) -> None:
    report = quick_run[0]["hostile"]
    f, targets, met = report["figures"], report["targets"], report["targets_met"]
    assert (
        set(targets)
        == set(met)
        == {
            "lost",
            "forged_heard",
            "rss_growth_mb",
            "log_lines",
            "server_errors",
        }
    )
    assert (targets["lost"], targets["forged_heard"], targets["server_errors"]) == (0, 0, 0)
    assert met["lost"] == (f["lost"] == 0) and met["forged_heard"] == (f["forged_heard"] == 0)
    assert met["server_errors"] == (report["server_errors"] == [])
    growth = f["rss_growth_mb"]
    assert verdict_agrees(met["rss_growth_mb"], growth, targets["rss_growth_mb"], at_most=True)
    assert verdict_agrees(
        met["log_lines"], f["log_lines_worst"], targets["log_lines"], at_most=True
    )


def test_table(quick_run: Run) -> None:
    report = quick_run[0]["hostile"]
    text = format_report(report)
    assert text.count("PASS") + text.count("FAIL") == len(report["targets"])
    for name in [NO_ATTACK, *ATTACKS]:
        assert f"\n{name} " in text, name
