"""``pttd demo``: one real run, its figures labelled and agreeing (never checked for speed), and its
command line."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from pttd import cli
from pttd.demo import speech_span

RATE = 48000


def pttd(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pttd.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    done = pttd("demo", "--json", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def test_the_demo_report_labels_what_each_figure_measures(report: dict[str, Any]) -> None:
    assert report["ok"] is True
    for key in ("speech_s", "heard_s"):  # the old, ambiguous names
        assert key not in report
    assert report["packets_received"] == report["packets_sent"] > 0
    # A holds the PTT for the speech sample and a little more; it sends from the talk permit on.
    assert report["speech_sample_s"] < report["ptt_held_s"]
    assert report["audio_sent_s"] == pytest.approx(report["packets_sent"] * 0.02, abs=0.006)
    assert report["audio_sent_s"] <= report["ptt_held_s"] + 0.02
    # The speech, without the silence around it, is in the sample and in what B played.
    assert 0 < report["speech_span_s"] <= report["speech_sample_s"]
    assert report["heard_speech_span_s"] >= report["speech_span_s"] - 0.1  # none of it lost
    assert report["heard_speech_span_s"] <= report["audio_sent_s"]


def test_speech_span_leaves_out_the_silence_around_it() -> None:
    x = np.zeros(RATE, np.int16)
    x[4800 : 4800 + 24000] = 8000  # 0.5 s of "speech" from 0.1 s
    x[30000] = 100  # below 2 % of the loudest: not speech
    assert speech_span(x, RATE) == pytest.approx(0.5)
    assert speech_span(np.zeros(RATE, np.int16), RATE) == 0.0
    assert speech_span(np.zeros(0, np.int16), RATE) == 0.0


def test_log_level_takes_any_case() -> None:
    args = cli.build_parser("demo").parse_args(["demo", "--log-level", "debug"])
    assert args.log_level == "DEBUG"
    assert cli.build_parser("demo").parse_args(["demo"]).log_level == "WARNING"


def test_a_bad_log_level_is_one_usage_error() -> None:
    done = pttd("demo", "--log-level", "LOUD", timeout=30)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "argument --log-level:" in errors[0] and "LOUD" in errors[0]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
