"""``pttd bench audio``: sane figures from the quick run (never checked against the targets), and
the measuring helpers on signals whose answers are known."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_checks import positive, verdict_agrees

from pttd.bench.audio import (
    AudioSettings,
    aligned,
    best_lag,
    format_report,
    frames_of,
    has_fec,
    lost_packets,
    pesq_wb,
)
from pttd.demo import speech_sample
from pttd.radio.audio.codec import Encoder, OpusSettings
from pttd.sim.audio import sine

PESQ_KEYS = ("codec_only", "chain", "codec_only_loss5", "chain_loss5", "chain_encrypted")
CPU_KEYS = (
    "libopus_encode",
    "tx_path",
    "tx_path_encrypted",
    "libopus_decode",
    "rx_path",
    "rx_path_encrypted",
)
TARGETS_MET = {
    "pesq_no_loss",
    "pesq_loss5",
    "tx_path",
    "rx_path",
    "pesq_encrypted",
    "tx_path_encrypted",
    "rx_path_encrypted",
}

Run = tuple[dict[str, Any], Path]  # the session's `pttd bench --quick` (conftest.py)


def test_pesq_scores_are_on_the_scale(quick_run: Run) -> None:
    audio = quick_run[0]["audio"]
    pesq = audio["pesq_wb"]
    for key in PESQ_KEYS:
        assert 1.0 <= pesq[key] <= 4.7, (key, pesq[key])
    assert pesq["resampling_only"] > 4.5  # the 16k -> 48k -> 16k conversions are transparent
    assert audio["ratios"]["pesq_no_loss"] == pytest.approx(
        pesq["chain"] / pesq["codec_only"], abs=2e-3
    )
    assert audio["ratios"]["pesq_encrypted"] == pytest.approx(
        pesq["chain_encrypted"] / pesq["chain"], abs=2e-3
    )
    assert set(audio["targets_met"]) == TARGETS_MET


def test_verdicts_agree_with_the_figures(quick_run: Run) -> None:
    audio = quick_run[0]["audio"]
    targets, ratios, met = audio["targets"], audio["ratios"], audio["targets_met"]
    assert set(targets) == {"pesq_ratio", "cpu_ratio", "e2ee_pesq_ratio", "e2ee_cpu_ratio"}
    assert all(positive(t) for t in targets.values()), targets
    quality = {"pesq_no_loss": "pesq_ratio", "pesq_loss5": "pesq_ratio"}
    quality["pesq_encrypted"] = "e2ee_pesq_ratio"
    cost = {"tx_path": "cpu_ratio", "rx_path": "cpu_ratio"}
    cost |= {"tx_path_encrypted": "e2ee_cpu_ratio", "rx_path_encrypted": "e2ee_cpu_ratio"}
    assert set(quality) | set(cost) == set(met)
    for key, target in quality.items():  # quality: at least the target
        assert verdict_agrees(met[key], ratios[key], targets[target], at_most=False), key
    for key, target in cost.items():  # cost: at most the target
        assert positive(ratios[key]), key
        assert verdict_agrees(met[key], ratios[key], targets[target], at_most=True), key


def test_encrypted_figures_are_against_the_clear_ones(quick_run: Run) -> None:
    audio = quick_run[0]["audio"]
    cpu, ratios = audio["cpu_us_per_frame"], audio["ratios"]
    for path in ("tx_path", "rx_path"):
        assert ratios[f"{path}_encrypted"] == pytest.approx(
            cpu[f"{path}_encrypted"] / cpu[path], abs=0.01
        ), path
    encrypted = audio["encrypted"]
    assert encrypted["room"] and encrypted["suite"] >= 1
    assert encrypted["chain_packets_unopened"] == 0  # B opened every packet A sealed
    chain = audio["rounds"]["chain"][-1]["chain_encrypted"]
    assert chain["packets_sent"] == chain["packets_received"] > 0


def test_cpu_figures_are_positive(quick_run: Run) -> None:
    audio = quick_run[0]["audio"]
    cpu = audio["cpu_us_per_frame"]
    for key in CPU_KEYS:
        assert positive(cpu[key]), (key, cpu[key])


def test_loss_is_real_and_only_where_asked(quick_run: Run) -> None:
    audio = quick_run[0]["audio"]
    assert audio["lost"] == 0  # the lossless chain lost nothing
    loss = audio["loss"]
    assert loss["packets_lost"] == round(0.05 * loss["packets"])
    assert loss["chain"]["proxy_dropped"] == loss["packets_lost"]
    assert loss["chain"]["packets_sent"] - loss["chain"]["packets_received"] == loss["packets_lost"]
    codec = loss["codec_only"]
    assert codec["lost"] == codec["fec"] + codec["no_fec_data"] + codec["concealed"]
    assert codec["lost"] == loss["packets_lost"]


def test_quick_settings_and_table(quick_run: Run) -> None:
    audio = quick_run[0]["audio"]
    settings = audio["settings"]
    assert settings["quick"] is True
    assert settings["chain_rounds"] == len(audio["rounds"]["chain"]) == 1
    assert settings["cpu_rounds"] == len(audio["rounds"]["cpu_us_per_frame"])
    text = format_report(audio)
    assert "PESQ WB" in text and "libopus" in text
    assert text.count("PASS") + text.count("FAIL") == len(TARGETS_MET)
    assert "encrypted" in text


def test_quick_defaults_are_smaller() -> None:
    full = AudioSettings()
    assert full.chain_rounds == 3 and full.cpu_rounds == 7 and full.cpu_frames == 500


def test_best_lag_finds_a_known_delay() -> None:
    x = speech_sample(48000)[:24000]
    delayed = np.concatenate([np.zeros(1234, np.int16), x, np.zeros(500, np.int16)])
    assert best_lag(delayed.astype(np.float64), x.astype(np.float64)) == 1234
    part, lag = aligned(delayed, x)
    assert lag == 1234 and np.array_equal(part, x)


def test_pesq_of_a_signal_against_itself_is_the_top_of_the_scale() -> None:
    x = speech_sample(16000)
    assert pesq_wb(x, x.astype(np.float64)) > 4.5


def test_fec_data_is_seen_only_when_the_encoder_adds_it() -> None:
    speech = speech_sample(48000)
    frames = frames_of(speech, 960)

    def fec_share(loss: int) -> float:
        encoder = Encoder(OpusSettings(expected_loss_percent=loss))
        return sum(has_fec(encoder.encode(f)) for f in frames) / len(frames)

    assert fec_share(0) == 0
    assert fec_share(15) > 0.5  # libopus 1.3.1: FEC from about 8 % expected loss on
    assert not has_fec(b"") and not has_fec(b"\xf8")


def test_lost_packets_are_seeded_and_counted() -> None:
    lost = lost_packets(249, 0.05, 7)
    assert len(lost) == 12 and lost == lost_packets(249, 0.05, 7)
    assert lost != lost_packets(249, 0.05, 8)
    assert all(0 <= k < 249 for k in lost)


def test_frames_pad_the_last_one() -> None:
    frames = frames_of(sine(440, 0.05), 960)
    assert len(frames) == 3 and all(f.shape == (960,) for f in frames)
    assert not frames[-1][480:].any()
