"""The browser's player with its default (shallow) jitter buffer, in a real chromium: lost,
reordered, duplicated, late, bursty and malformed packets play on without a crash, a missing
packet is concealed, a new talk replaces the one playing, without the test tap nothing is kept,
and with it no more than its last two minutes. The latency seen (first packet pushed → first
sample rendered, and → at the speakers by the context's output timestamp) is reported, not
asserted."""

from __future__ import annotations

from typing import Any

from audio_harness import b64_packets, bench_page, floats_from_b64
from test_audio_quality import radio_packets, report

DRAIN_TIMEOUT_MS = 15_000
# Deeper than the default 8 frames so that a loaded machine's bursts do not make the player skip
# (which would hide the concealment counted here); the start target stays the default 2.
OPTIONS = {"maxDepth": 50}


async def play(page: Any, stream_id: int, schedule: list[list[Any]], index: int) -> dict[str, Any]:
    await page.evaluate("([id, s]) => bench.play(id, s)", [stream_id, schedule])
    await page.wait_for_function(
        f"pttdTap.streams.length > {index} && pttdTap.streams[{index}].drainedAt !== null",
        timeout=DRAIN_TIMEOUT_MS,
    )
    info: dict[str, Any] = await page.evaluate(
        f"(() => {{ const s = pttdTap.streams[{index}];"
        " return {...s, pushedAt: s.pushedAt.length, decodedAt: s.decodedAt.length}; })()"
    )
    return info


async def test_clean_talk_latency() -> None:
    packets = b64_packets(radio_packets()[:100])
    async with bench_page() as page:
        info = await play(page, 1, [[k, k, p] for k, p in enumerate(packets)], 0)
        errors = page.errors
    figures = {
        "target_frames": 2,
        "first_push_to_first_decoded_ms": round(info["firstDecodedAt"] - info["firstPushAt"], 1),
        "first_push_to_first_rendered_ms": round(info["firstRenderedAt"] - info["firstPushAt"], 1),
        "output_latency_ms": round(info["outputLatencyMs"], 1),
        **{f"player_{k}": v for k, v in info["stats"].items()},
    }
    if info["firstPlayedAt"] is not None:
        figures["first_push_to_speaker_ms"] = round(info["firstPlayedAt"] - info["firstPushAt"], 1)
    report("radio_to_browser_latency", figures)
    assert errors == []
    assert info["reason"] == "ended"
    assert info["stats"]["played"] == 100


async def test_loss_reorder_duplicate_late_burst_malformed() -> None:
    packets = b64_packets(radio_packets()[:100])
    schedule: list[list[Any]] = []
    for k, p in enumerate(packets):
        if k == 10:  # lost
            continue
        if k == 20:  # 20 and 21 swapped
            schedule += [[21, 21, packets[21]], [21, 20, p]]
            continue
        if k == 21:
            continue
        if k == 40:  # arrives long after its slot played
            continue
        if k == 60:  # not Opus: the decoder fails, a fresh one takes the next packet
            schedule.append([60, 60, "/////w=="])  # TOC 0xff: 63 frames of 20 ms
            continue
        if 70 <= k <= 74:  # a stall, then a burst
            schedule.append([78, k, p])
            continue
        schedule.append([k, k, p])
        if k == 30:  # duplicated
            schedule.append([k, k, p])
        if k == 50:
            schedule.append([50, 40, packets[40]])
    schedule.sort(key=lambda item: item[0])
    async with bench_page(options=OPTIONS) as page:
        info = await play(page, 2, schedule, 0)
        played = floats_from_b64(await page.evaluate("bench.played()"))
        decode_errors = await page.evaluate("pttdTap.decodeErrors")
        errors = page.errors
    stats = info["stats"]
    report(
        "jitter",
        {
            **{f"player_{k}": v for k, v in stats.items()},
            "late_dropped_before_decoding": info["lateDropped"],
            "decode_errors": decode_errors,
        },
    )
    assert errors == []
    assert info["reason"] == "ended"
    assert stats["concealed"] >= 2  # packets 10 and 40 (and 60, unless its decoder said nothing)
    assert info["lateDropped"] >= 2  # the second copy of 30, and 40
    # Every slot is played or concealed: 10, 40 (late), 60 (not decoded) and the stalled 70-74
    # (given up on once later ones came) are concealed.
    assert stats["played"] + stats["concealed"] + stats["skipped"] == 100
    assert stats["played"] >= 90
    assert decode_errors == 1
    assert played.shape[0] >= 100 * 960
    assert float(abs(played).max()) <= 1.5


async def test_new_talk_replaces_and_untapped_page_keeps_nothing() -> None:
    packets = b64_packets(radio_packets()[:30])
    async with bench_page(options=OPTIONS) as page:
        # A talk that never ends, then another one: the first is dropped at once.
        await page.evaluate(
            "([s]) => { engine.startPlayback(7);"
            " s.forEach(([k, id, b]) => engine.pushPacket(7, Uint8Array.from(atob(b), (c) =>"
            " c.charCodeAt(0)), id)); }",
            [[[k, k, p] for k, p in enumerate(packets)]],
        )
        second = await play(page, 8, [[k, k, p] for k, p in enumerate(packets)], 1)
        first = await page.evaluate("pttdTap.streams[0]")
        assert first["reason"] == "replaced"
        assert second["reason"] == "ended"
        assert second["stats"]["played"] == 30
        assert page.errors == []
    async with bench_page(options=OPTIONS, tap=False) as page:
        await page.evaluate(
            "([s]) => bench.play(9, s.map(([k, id, b]) => [0, id, b]))",
            [[[k, k, p] for k, p in enumerate(packets)]],
        )
        ended = await page.evaluate(
            "new Promise((resolve) => engine.addEventListener('playback-ended',"
            " (e) => resolve(e.detail), {once: true}))"
        )
        assert ended["stats"]["played"] == 30
        assert await page.evaluate("typeof window.pttdTap") == "undefined"
        assert page.errors == []


async def test_the_tap_keeps_at_most_its_last_two_minutes() -> None:
    """Even in test mode the tap is bounded: the last TAP_KEEP_S (120 s) of played samples and
    of per-packet timings, the oldest dropped."""
    async with bench_page(options=OPTIONS) as page:
        kept = await page.evaluate(
            """async () => {
              const { TAP_KEEP_S, SAMPLE_RATE } = await import('/static/audio.js');
              const t = window.pttdTap;
              t.reset();
              for (let k = 0; k < 1300; k++) {  // 130 s of 100 ms chunks, each its number
                t.keepPlayed(new Float32Array(4800).fill(k));
              }
              return {keep: TAP_KEEP_S * SAMPLE_RATE, samples: t.playedSamples,
                      total: t.played.reduce((n, c) => n + c.length, 0),
                      first: t.played[0][0], last: t.played.at(-1)[0],
                      dropped: t.playedDropped};
            }"""
        )
        assert kept["total"] == kept["samples"] == kept["keep"] == 120 * 48000
        assert (kept["first"], kept["last"]) == (100, 1299)  # the oldest 10 s went
        assert kept["dropped"] == 100 * 4800
        # the player's own chunks go through the same bound
        packets = b64_packets(radio_packets()[:30])
        played = await play(page, 9, [[k, k, p] for k, p in enumerate(packets)], 0)
        assert played["stats"]["played"] == 30
        assert await page.evaluate("pttdTap.playedSamples") <= 120 * 48000
        assert page.errors == []
