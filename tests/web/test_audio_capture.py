"""The browser's microphone in a real chromium (fake capture device playing the speech sample):
open only between startCapture and stopCapture, every track ended after it (the browser's
microphone indicator goes off), also when the button is released while the microphone is still
opening; the cues play beside a capture without stopping it."""

from __future__ import annotations

from pathlib import Path

from audio_harness import bench_page, fake_mic_file

WAIT_MS = 10_000


async def test_microphone_off_after_stop_capture(tmp_path: Path) -> None:
    async with bench_page(fake_mic_file(tmp_path)) as page:
        assert await page.evaluate("engine.capturing") is False
        assert await page.evaluate("pttdTap.captures.length") == 0
        await page.evaluate("engine.startCapture((bytes) => bench.packets.push(bytes))")
        await page.wait_for_function("bench.packets.length >= 5", timeout=WAIT_MS)
        live = await page.evaluate("pttdTap.captures[0].tracks.map((t) => t.readyState)")
        assert live == ["live"]
        await page.evaluate("engine.stopCapture()")
        ended = await page.evaluate("pttdTap.captures[0].tracks.map((t) => t.readyState)")
        count = await page.evaluate("bench.packets.length")
        assert ended == ["ended"]
        assert await page.evaluate("engine.capturing") is False
        # Nothing more comes once stopCapture has resolved (the encoder flushed and closed).
        await page.evaluate("engine.playCue('end')")  # 90 ms of the page's time passes
        assert await page.evaluate("bench.packets.length") == count
        assert page.errors == []


async def test_release_while_the_microphone_opens(tmp_path: Path) -> None:
    async with bench_page(fake_mic_file(tmp_path)) as page:
        await page.evaluate(
            "(async () => { const opening = engine.startCapture((b) => bench.packets.push(b));"
            " await engine.stopCapture(); await opening; })()"
        )
        tracks = await page.evaluate("pttdTap.captures[0].tracks.map((t) => t.readyState)")
        assert all(state == "ended" for state in tracks)
        assert await page.evaluate("engine.capturing") is False
        assert await page.evaluate("bench.packets.length") == 0
        # The next press works.
        await page.evaluate("engine.startCapture((b) => bench.packets.push(b))")
        await page.wait_for_function("bench.packets.length >= 3", timeout=WAIT_MS)
        await page.evaluate("engine.stopCapture()")
        assert await page.evaluate("pttdTap.captures[1].tracks[0].readyState") == "ended"
        assert page.errors == []


async def test_cues_play_beside_a_capture(tmp_path: Path) -> None:
    async with bench_page(fake_mic_file(tmp_path)) as page:
        await page.evaluate("engine.startCapture((b) => bench.packets.push(b))")
        await page.wait_for_function("bench.packets.length >= 2", timeout=WAIT_MS)
        before = await page.evaluate("bench.packets.length")
        await page.evaluate(
            "Promise.all(['permit', 'busy', 'end', 'error'].map((n) => engine.playCue(n)))"
        )
        # The capture went on while the cues played (the longest is 420 ms: ~20 packets).
        after = await page.evaluate("bench.packets.length")
        await page.evaluate("engine.stopCapture()")
        cues = await page.evaluate("pttdTap.cues.map((c) => [c.name, Math.round(c.ms)])")
        unknown = await page.evaluate(
            "(() => { try { engine.playCue('siren'); return null; }"
            " catch (e) { return e.message; } })()"
        )
        assert after > before
        assert cues == [["permit", 180], ["busy", 420], ["end", 90], ["error", 360]]
        assert unknown == 'unknown cue "siren"'
        assert page.errors == []
