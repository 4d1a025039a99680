"""The issue's proof through the real path: the real page (index.html + app.js, a dispatcher
logged in, ``?tap=1``), the real room server with its web console, simulated radios paired
through the real pairing flow. PESQ of browser → radio and radio → browser, each within 0.1 of
the radio-to-radio chain measured in the same run.

* radio → radio and radio → browser, from ONE talk: the talker radio's simulated microphone
  plays the speech sample while its PTT is held; the server relays the same packets at the same
  moment to the listener radio (scored from its recording speaker) and to the page (scored from
  what its player worklet rendered: the test tap). Both are scored on the same packets under the
  same load, so a scheduling hiccup of the machine hits both.
* browser → radio: the page's talk button is held; Chromium's fake microphone plays the speech
  sample (with silence around it); the page encodes (WebCodecs) and sends; the listener radio
  plays it and is scored.

The page runs with its DEFAULT audio engine settings: the jitter buffer users get.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from audio_harness import fake_mic_file, floats_from_b64
from browser import artifacts_dir, chromium, chromium_path
from playwright.async_api import Page, expect
from webpage import Pages, log_in

from pttd.bench.audio import RATE, REF_RATE, TAIL_S, UNITY_VOLUME, aligned, pesq_wb
from pttd.bench.common import poll
from pttd.demo import speech_sample
from pttd.radio.audio import to_pcm
from pttd.radio.audio.resample import resample
from pttd.radio.config import AudioConfig
from pttd.server.app import ServerSettings
from pttd.sim.audio import silence
from pttd.sim.device import SimDevice
from pttd.sim.loopback import ROOM, loopback

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="no chromium (scripts/setup)")

MARGIN = 0.1  # the bound
DISPATCHER = "desk"
PASSWORD = "desk-secret"
LEAD_S, FILE_TAIL_S = 0.5, 1.0  # silence around the speech in the fake microphone's file
DRAIN_S = 10.0
UI_MS = 15_000


def speech_48k() -> Any:
    return to_pcm(resample(speech_sample(REF_RATE), REF_RATE, RATE))


def scored(output: Any) -> tuple[float, int]:
    """PESQ WB of a 48 kHz recording of the speech sample (aligned by cross-correlation, as
    ``pttd bench audio`` does), and where the speech starts in it (samples)."""
    signal = np.asarray(output)
    if signal.dtype != np.int16:
        signal = to_pcm(np.asarray(signal, np.float64) * 32768.0)
    part, lag = aligned(signal, speech_48k())
    return pesq_wb(speech_sample(REF_RATE), resample(part, RATE, REF_RATE)), lag


async def drained(sim: SimDevice, played_before: int) -> None:
    mixer = sim.device.mixer
    ok = await poll(lambda: mixer.stats.played > played_before and not mixer.stats.streams, DRAIN_S)
    assert ok, f"{sim.name}: the talk did not play out: {mixer.stats}"


async def page_played(page: Page) -> tuple[Any, dict[str, Any]]:
    await page.wait_for_function(
        "() => pttdTap.streams.length === 1 && pttdTap.streams[0].drainedAt !== null",
        timeout=UI_MS,
    )
    info = await page.evaluate(
        "(() => { const s = pttdTap.streams[0];"
        " return {...s, pushedAt: s.pushedAt.slice(), decodedAt: s.decodedAt.length}; })()"
    )
    played = floats_from_b64(await page.evaluate(PLAYED_JS))
    return played, info


PLAYED_JS = """(() => {
  const chunks = pttdTap.played;
  const all = new Float32Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) { all.set(c, at); at += c.length; }
  const bytes = new Uint8Array(all.buffer);
  let raw = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    raw += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(raw);
})()"""


def report(figures: dict[str, Any]) -> None:
    out = artifacts_dir().parent / "web-audio"
    out.mkdir(parents=True, exist_ok=True)
    (out / "chain_quality.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nchain_quality: {json.dumps(figures)}")


async def test_browser_and_radio_within_the_radio_chain(tmp_path: Path) -> None:
    speech = speech_48k()
    speech_s = speech.shape[0] / RATE
    mic_file = fake_mic_file(tmp_path, lead_s=LEAD_S, tail_s=FILE_TAIL_S)
    settings = ServerSettings(host="127.0.0.1", port=0, web_port=0, registry_poll=0.05)
    async with loopback(settings) as world, chromium(fake_audio=mic_file) as browser:
        world.registry.add_user(DISPATCHER, PASSWORD, [ROOM])
        talker = await world.add_device("talker", speech)
        listener = await world.add_device(
            "listener", silence(0.1, sample_rate=RATE), replace(AudioConfig(), volume=UNITY_VOLUME)
        )
        await talker.online()
        await listener.online()
        pages = Pages(browser)
        try:
            page = await pages.open()
            assert world.server.web_url is not None
            await log_in(page, f"{world.server.web_url}?tap=1", DISPATCHER, PASSWORD)
            await expect(page.locator("#link-state")).to_have_text("online")
            await expect(page.locator("#talk")).to_be_enabled()
            await page.wait_for_function("() => window.pttdTap !== undefined", timeout=UI_MS)
            await expect(page.locator("#online-list .member-name")).to_have_count(3)

            # 1. The talker radio talks: the listener radio and the page hear the same packets.
            await page.evaluate("() => pttdTap.reset()")
            listener.speaker.clear()
            before = listener.device.mixer.stats.played
            talker.button.press()
            await asyncio.sleep(speech_s + TAIL_S)
            talker.button.release()
            await drained(listener, before)
            radio_heard = listener.speaker.recording()
            browser_played, stream = await page_played(page)

            # 2. The page talks: the listener radio hears it.
            await page.evaluate("() => pttdTap.reset()")
            listener.speaker.clear()
            before = listener.device.mixer.stats.played
            await page.locator("#talk").hover()
            t_press = time.monotonic()
            await page.mouse.down()
            await expect(page.locator("#talk")).to_have_attribute("aria-pressed", "true")
            await asyncio.sleep(LEAD_S + speech_s + 0.6)
            await page.mouse.up()
            await expect(page.locator("#talk")).to_have_attribute("aria-pressed", "false")
            await drained(listener, before)
            from_browser = listener.speaker.recording()
            blocks = listener.speaker.played()
            capture = await page.evaluate("() => pttdTap.captures[0]")
        finally:
            await pages.close()
    assert not pages.errors, pages.errors

    chain, _ = scored(radio_heard)
    to_browser, _ = scored(browser_played)
    to_radio, lag = scored(from_browser)
    speech_at = blocks[0].t + lag / RATE - t_press
    figures = {
        "radio_to_radio": round(chain, 3),
        "radio_to_browser": round(to_browser, 3),
        "browser_to_radio": round(to_radio, 3),
        "press_to_speech_at_radio_s": round(speech_at, 3),
        "browser_player": stream["stats"],
        "listener_stats": str(listener.device.mixer.stats),
        "capture": {k: v for k, v in capture.items() if k != "tracks"},
    }
    report(figures)
    assert to_browser >= chain - MARGIN, figures
    assert to_radio >= chain - MARGIN, figures
