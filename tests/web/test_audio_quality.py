"""The browser audio engine in a real chromium against the radio's own codec: PESQ of both
directions, each at least the radio-to-radio chain's minus 0.1.

* browser → radio: Chromium's fake microphone plays the speech sample; ``startCapture`` hands
  out Opus packets (WebCodecs ``AudioEncoder``); the radio's :class:`Decoder` (opuslib) decodes
  them.
* radio → browser: the radio's :class:`Encoder` (opuslib, the device's default settings) encodes
  the sample in 20 ms frames; the packets are pushed into the page at 20 ms intervals on its own
  clock (with a deep jitter buffer: see :data:`DEEP_BUFFER`); the test tap gives back what the
  player worklet rendered.
* the radio-to-radio chain: ``pttd bench audio``'s chain (two simulated devices and the room
  server on loopback), measured here with the same helpers.

Latency figures seen on the way (press → first packet; in test_audio_jitter, first packet
pushed → first sample rendered / at the speakers with the default buffer) are printed and
written to ``$PTTD_ARTIFACTS/web-audio/``; they are not asserted (tests never assert on
wall-clock speed).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from audio_harness import (
    CAPTURED_JS,
    b64_packets,
    bench_page,
    encoders_on_the_same_input,
    fake_mic_file,
    floats_from_b64,
    from_b64_packets,
    score_48k,
)
from browser import artifacts_dir

from pttd.bench.audio import RATE, REF_RATE, TAIL_S, codec_only, frames_of, run_chain, score
from pttd.demo import speech_sample
from pttd.radio.audio import to_pcm
from pttd.radio.audio.codec import Decoder, Encoder, OpusSettings
from pttd.radio.audio.resample import resample
from pttd.radio.config import AudioConfig

MARGIN = 0.1  # the bound: within 0.1 of the radio-to-radio chain
FRAME = 960
STREAM_ID = 41
FIRST_PACKET_ID = 4_294_967_200  # near the u32 wrap: ids wrap during the talk
DRAIN_TIMEOUT_MS = 15_000
# The quality test's jitter buffer: deep (500 ms), so that a loaded machine's scheduling delays
# (hundreds of ms seen with other suites running on two cores) are absorbed and what is scored is
# the audio path, not the machine. The default shallow buffer's behaviour under late, lost and
# reordered packets is test_audio_jitter's.
DEEP_BUFFER = {"target": 25, "maxDepth": 100}


def report(name: str, figures: dict[str, Any]) -> None:
    out = artifacts_dir().parent / "web-audio"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n{name}: {json.dumps(figures)}")


@pytest.fixture(scope="module")
def radio_chain_pesq() -> float:
    """The radio-to-radio figure the browser is held to: PESQ WB of ``pttd bench audio``'s
    chain (one round), or of the radio's codec alone when that is higher.

    The chain is timing-sensitive: on a loaded machine (another test's chromium beside it) late
    packets make its jitter buffer conceal, and its figure drops well below what the radio's
    audio path gives. The codec alone is what the chain reaches when nothing disturbs it (its
    benchmark target is 0.98 of it), so taking the higher of the two keeps the bound strict.
    """
    reference = speech_sample(REF_RATE)
    mic = to_pcm(resample(reference, REF_RATE, RATE))
    run = asyncio.run(run_chain(mic, AudioConfig(), frozenset()))
    chain = score(reference, mic, run.recording)
    clean, _ = codec_only(radio_packets(), frozenset(), FRAME)
    codec = score(reference, mic, clean)
    print(f"\nradio to radio: chain PESQ WB {chain:.3f}, codec only {codec:.3f}")
    return max(chain, codec)


def radio_packets() -> list[bytes]:
    """The speech sample as a radio sends it: its encoder, 20 ms frames, then the tail of
    silence its talker captures before the button is released."""
    mic = to_pcm(resample(speech_sample(REF_RATE), REF_RATE, RATE))
    encoder = Encoder(OpusSettings.from_config(AudioConfig()))
    frames = frames_of(mic, FRAME) + [np.zeros(FRAME, np.int16)] * round(TAIL_S * 50)
    return [encoder.encode(f) for f in frames]


async def test_browser_to_radio(tmp_path: Path, radio_chain_pesq: float) -> None:
    mic = fake_mic_file(tmp_path, lead_s=0.5, tail_s=1.0)
    count = round((0.5 + speech_sample(REF_RATE).shape[0] / REF_RATE + 0.5) * 50)
    async with bench_page(mic) as page:
        texts = await page.evaluate("(n) => bench.capture(n)", count)
        capture = await page.evaluate(
            "(() => { const c = pttdTap.captures[0];"
            " return {...c, tracks: c.tracks.map((t) => t.readyState)}; })()"
        )
        errors = page.errors  # type: ignore[attr-defined]
        captured = floats_from_b64(await page.evaluate(CAPTURED_JS))
    packets = from_b64_packets(texts)
    assert len(packets) >= count
    decoder = Decoder(RATE)  # the radio's decoder
    heard = np.concatenate([decoder.decode(p) for p in packets])
    pesq, lag = score_48k(heard)
    # Held to the bound: the browser's encoder against the radio's on the same captured frames
    # (a starved machine can make Chromium drop capture input: that is neither encoder's).
    browser_codec, radio_codec = encoders_on_the_same_input(captured, heard)
    report(
        "browser_to_radio",
        {
            "pesq_wb": round(pesq, 3),
            "radio_chain_pesq_wb": round(radio_chain_pesq, 3),
            "packets": len(packets),
            "mean_packet_bytes": round(sum(map(len, packets)) / len(packets), 1),
            "lag_ms": round(lag / 48, 1),
            "press_to_mic_open_ms": round(capture["micOpenAt"] - capture["startedAt"], 1),
            "press_to_first_frame_ms": round(capture["firstFrameAt"] - capture["startedAt"], 1),
            "press_to_first_packet_ms": round(capture["firstPacketAt"] - capture["startedAt"], 1),
            "pesq_wb_browser_encoder_vs_capture": round(browser_codec, 3),
            "pesq_wb_radio_encoder_vs_capture": round(radio_codec, 3),
        },
    )
    assert errors == []
    assert capture["tracks"] == ["ended"]
    assert browser_codec >= radio_codec - MARGIN, (browser_codec, radio_codec, pesq)


async def test_radio_to_browser(radio_chain_pesq: float) -> None:
    packets = radio_packets()
    schedule = [
        [k, (FIRST_PACKET_ID + k) % 2**32, text] for k, text in enumerate(b64_packets(packets))
    ]
    async with bench_page(options=DEEP_BUFFER) as page:
        await page.evaluate("([id, s]) => bench.play(id, s)", [STREAM_ID, schedule])
        await page.wait_for_function(
            "pttdTap.streams.length === 1 && pttdTap.streams[0].drainedAt !== null",
            timeout=DRAIN_TIMEOUT_MS,
        )
        stream = await page.evaluate("pttdTap.streams[0]")
        played = floats_from_b64(await page.evaluate("bench.played()"))
        errors = page.errors  # type: ignore[attr-defined]
    pesq, lag = score_48k(played)
    stats = stream["stats"]
    figures: dict[str, Any] = {
        "pesq_wb": round(pesq, 3),
        "radio_chain_pesq_wb": round(radio_chain_pesq, 3),
        "packets": len(packets),
        "played_s": round(played.shape[0] / RATE, 3),
        "lag_ms": round(lag / 48, 1),
        **{f"player_{k}": v for k, v in stats.items()},
    }
    report("radio_to_browser", figures)
    assert errors == []
    assert stream["reason"] == "ended"
    # Every packet played, but for silent frames the buffer may skip to shrink after a burst.
    assert stats["played"] + stats["shrunk"] == len(packets)
    assert stats["concealed"] == stats["late"] == stats["skipped"] - stats["shrunk"] == 0
    assert pesq >= radio_chain_pesq - MARGIN, (pesq, radio_chain_pesq)
