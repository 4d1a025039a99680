"""Mouth-to-ear between the web console in a real browser and a simulated radio.

Part of ``pttd bench latency``. A room server on loopback with its web console
(:mod:`pttd.server.web`), a simulated radio paired with it, and Debian's chromium (headless,
driven by Playwright; never a browser of Playwright's own) on the console's page, logged in as a
dispatcher, with the page's test tap on (``?tap=1``: the page then marks the times below on the
``performance.now()`` clock; without it the page keeps nothing).

* **browser → radio**: chromium's fake microphone plays a click train (1 ms at -1 dBFS every
  500 ms, silence between). The page holds the talk button (a mouse press on it, as a user's);
  the radio's simulated speaker records. Mouth: when a click entered the page's capture graph
  (the audio context's frame, taken back from the output clock by the context's output latency);
  ear: when the radio's speaker played the first sample at -10 dBFS or more after the press
  (the simulated card's clock, as in the radio-to-radio figure). The click heard is paired with
  the last click captured before it (the clicks are 500 ms apart, the path far shorter).
* **radio → browser**: the radio talks its bench signal (the impulse at 100 ms after the press,
  as in the radio-to-radio run); mouth: the impulse's capture time on the radio's simulated card;
  ear: when the page's player output the talk's first sample at -10 dBFS or more, at the
  speakers (the audio context's output timestamp: the output latency included, as a real
  speaker would hear it).

The page's clock is tied to this process's monotonic clock by the round trip of reading
``performance.now()`` (the fastest of several: the error is under half that round trip, well
under a millisecond here). Figures are nearest-rank p50/p95 over the presses.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
import time
import wave
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from pttd.bench.common import distribution, poll
from pttd.bench.server import BenchError
from pttd.radio.audio import Pcm
from pttd.radio.config import AudioConfig
from pttd.radio.machine import Link
from pttd.server.app import ServerSettings
from pttd.sim.audio import FULL_SCALE
from pttd.sim.device import SimDevice
from pttd.sim.loopback import ROOM, loopback

CHROMIUM: Final = os.environ.get("PTTD_CHROMIUM", "/usr/bin/chromium")
RATE: Final = 48000
CLICK_PERIOD_S: Final = 0.5
CLICK_LEVEL: Final = 0.9
CLICK_WIDTH: Final = 48  # 1 ms
CLICKS_S: Final = 30.0  # the fake microphone's file (chromium loops it)
DISPATCHER: Final = "desk"
UI_TIMEOUT_MS: Final = 20_000
HEAR_TIMEOUT: Final = 5.0  # a click comes every 500 ms: heard within this of the press
DRAIN_TIMEOUT: Final = 5.0
ONLINE_TIMEOUT: Final = 10.0
THRESHOLD: Final = round(0.3 * FULL_SCALE)  # -10 dBFS, as the page's marks


def chromium_path() -> str | None:
    """Debian's chromium (or ``$PTTD_CHROMIUM``), or None when it is not installed."""
    return shutil.which(CHROMIUM)


def chromium_args(fake_audio: Path | None = None) -> list[str]:
    """Flags for a headless browser on a test or bench page: fake media without prompts, audio
    that plays without a gesture and (with ``fake_audio``) a WAV file as the microphone."""
    args = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
        "--no-sandbox",  # root in CI containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
    ]
    if fake_audio is not None:
        args.append(f"--use-file-for-fake-audio-capture={fake_audio}")
    return args


def click_train(seconds: float) -> Pcm:
    """Silence with a 1 ms click at -1 dBFS every 500 ms (the first at 250 ms)."""
    x = np.zeros(round(seconds * RATE), np.int16)
    for start in range(round(CLICK_PERIOD_S / 2 * RATE), x.shape[0], round(CLICK_PERIOD_S * RATE)):
        x[start : start + CLICK_WIDTH] = round(CLICK_LEVEL * FULL_SCALE)
    return x


def write_wav(path: Path, pcm: Pcm, rate: int = RATE) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


async def page_clock_offset(page: Any, rounds: int = 15) -> float:
    """``performance.now()`` in the page less this process's monotonic clock, in ms, from the
    fastest of ``rounds`` reads (its midpoint)."""
    best: tuple[float, float] | None = None
    for _ in range(rounds):
        t0 = time.monotonic()
        now_ms = float(await page.evaluate("performance.now()"))
        t1 = time.monotonic()
        if best is None or t1 - t0 < best[0]:
            best = (t1 - t0, now_ms - (t0 + t1) / 2 * 1000)
    assert best is not None
    return best[1]


async def wait_in_page(page: Any, condition: str, arg: object, within: float, what: str) -> None:
    """Wait until ``condition`` (a JS function of ``arg``) holds in the page; BenchError saying
    ``what`` (and within how long) if it does not."""
    from playwright.async_api import TimeoutError as PageTimeout  # noqa: PLC0415 - optional

    try:
        await page.wait_for_function(condition, arg=arg, polling=5, timeout=within * 1000)
    except PageTimeout:
        raise BenchError(f"{what} within {within:g} s") from None


async def radio_drained(radio: SimDevice) -> bool:
    return await poll(
        lambda: not radio.device.machine.incoming and not radio.device.mixer.stats.streams,
        DRAIN_TIMEOUT,
    )


async def browser_to_radio(page: Any, radio: SimDevice, offset_ms: float) -> float:
    """One press of the page's talk button: the first click the radio plays, from the page's
    capture to the radio's speaker, in ms."""
    radio.speaker.clear()
    t_press = time.monotonic()
    await page.hover("#talk")
    await page.mouse.down()
    try:
        heard = await poll(
            lambda: radio.speaker.first_above(THRESHOLD, since=t_press) is not None, HEAR_TIMEOUT
        )
        peaks = await page.evaluate("window.pttdTap.capturePeaks.slice()")
    finally:
        await page.mouse.up()
    if not heard:
        raise BenchError(f"the radio played no click within {HEAR_TIMEOUT:g} s of the page's press")
    t_ear = radio.speaker.first_above(THRESHOLD, since=t_press)
    assert t_ear is not None
    mouths = [(float(p) - offset_ms) / 1000 for p in peaks]
    before = [m for m in mouths if t_press - CLICK_PERIOD_S < m < t_ear]
    if not before:
        raise BenchError("the radio played a click the page had not captured")
    if not await radio_drained(radio):
        raise BenchError("the radio's stream did not end after the page's release")
    return (t_ear - max(before)) * 1000


async def radio_to_browser(page: Any, radio: SimDevice, impulse_at: int, offset_ms: float) -> float:
    """One press of the radio's PTT: its impulse, from the radio's microphone to the page's
    speakers, in ms."""
    streams = int(await page.evaluate("window.pttdTap.streams.length"))
    radio.button.press()
    try:
        await wait_in_page(
            page,
            """(n) => { const s = window.pttdTap.streams;
                        return s.length > n && s[n].peakPlayedAt !== null; }""",
            streams,
            HEAR_TIMEOUT,
            "the page played no impulse of the radio's talk",
        )
        peak = float(await page.evaluate("(n) => window.pttdTap.streams[n].peakPlayedAt", streams))
    finally:
        radio.button.release()
    await wait_in_page(
        page,
        "(n) => window.pttdTap.streams[n].drainedAt !== null",
        streams,
        DRAIN_TIMEOUT,
        "the radio's talk did not end in the page after its release",
    )
    t_mouth = radio.mic.time_of(impulse_at)
    if t_mouth is None:
        raise BenchError("the radio's microphone has no capture time for its impulse")
    return ((peak - offset_ms) / 1000 - t_mouth) * 1000


async def browser_presses(
    audio: AudioConfig, signal: Pcm, impulse_at: int, count: int
) -> dict[str, Any]:
    """``count`` presses each way between the page and a radio; ``{"skipped": why}`` when
    Playwright or chromium is missing."""
    try:
        from playwright.async_api import async_playwright  # noqa: PLC0415 - optional
    except ImportError:
        return {"skipped": "Playwright is not installed (pip install 'pttd[bench]')"}
    executable = chromium_path()
    if executable is None:
        return {"skipped": f"{CHROMIUM} is not installed (apt install chromium)"}
    password = secrets.token_urlsafe(12)
    settings = ServerSettings(host="127.0.0.1", port=0, web_port=0, web_test_tap=True)
    async with loopback(settings) as world:
        await asyncio.to_thread(world.registry.add_user, DISPATCHER, password, [ROOM])
        radio = await world.add_device("radio", signal, replace(audio, volume=100))
        async with asyncio.timeout(ONLINE_TIMEOUT):
            await radio.device.until(lambda m: m.link is Link.ONLINE)
        url = world.server.web_url
        assert url is not None
        with tempfile.TemporaryDirectory(prefix="pttd-bench-browser-") as tmp:
            clicks = Path(tmp) / "clicks.wav"
            write_wav(clicks, click_train(CLICKS_S))
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=executable, headless=True, args=chromium_args(clicks)
                )
                try:
                    page = await browser.new_page()
                    page.set_default_timeout(UI_TIMEOUT_MS)
                    await page.goto(f"{url}?tap=1")
                    await page.fill("#login-user", DISPATCHER)
                    await page.fill("#login-password", password)
                    await page.click("#login-submit")
                    await page.wait_for_selector("#link-state[data-state=online]")
                    await page.wait_for_function("window.pttdTap !== undefined")
                    await page.wait_for_selector("#talk:enabled")
                    offset = await page_clock_offset(page)
                    to_radio = [await browser_to_radio(page, radio, offset) for _ in range(count)]
                    to_browser = [
                        await radio_to_browser(page, radio, impulse_at, offset)
                        for _ in range(count)
                    ]
                    first_packet = await page.evaluate(
                        """window.pttdTap.captures
                             .filter((c) => c.firstPacketAt !== null)
                             .map((c) => c.firstPacketAt - c.startedAt)"""
                    )
                    version = browser.version
                finally:
                    await browser.close()
    return {
        "browser_to_radio_ms": distribution(to_radio),
        "radio_to_browser_ms": distribution(to_browser),
        "capture_to_first_packet_ms": distribution([float(v) for v in first_packet]),
        "browser": f"chromium {version} (headless)",
        "presses": count,
    }
