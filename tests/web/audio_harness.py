"""The browser audio engine's test bench: a tiny aiohttp app serving ``pttd/web`` and a test page
that loads ``audio.js`` with the test tap on, plus the signal helpers the audio tests share.

The page (``/test.html?options=…``) makes an :class:`AudioEngine` of those options (``tap: true``
turns the test tap on: the engine never looks at the URL), initialises it and puts three
helpers on ``window.bench``:

* ``capture(count)``: startCapture, collect ``count`` packets, stopCapture; the packets base64.
* ``play(streamId, schedule)``: startPlayback, then push each ``[slot, packetId, base64]`` at
  ``slot × 20 ms`` after the start (real-time pacing on the page's clock), then stopPlayback.
* ``played()``: what the player rendered (the tap), as base64 little-endian float32.

Everything is served from 127.0.0.1 (a secure context: WebCodecs and AudioWorklet need one).
"""

from __future__ import annotations

import base64
import json
import wave
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import numpy.typing as npt
from aiohttp import web
from browser import chromium, new_context
from playwright.async_api import Page

from pttd.bench.audio import RATE, REF_RATE, aligned, frames_of, pesq_wb
from pttd.demo import speech_sample
from pttd.radio.audio import Pcm, to_pcm
from pttd.radio.audio.codec import Decoder, Encoder, OpusSettings
from pttd.radio.audio.resample import resample
from pttd.radio.config import AudioConfig

WEB = Path(str(resources.files("pttd") / "web"))
FAKE_MIC_RATE = 44100  # Chromium's fake capture device runs at 44.1 kHz
LOAD_TIMEOUT_MS = 15_000

TEST_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>pttd audio engine bench</title>
<script type="module">
import { AudioEngine } from '/static/audio.js';

const params = new URLSearchParams(location.search);
const engine = new AudioEngine(JSON.parse(params.get('options') || '{}'));
await engine.init();

function fromB64(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}
function toB64(bytes) {
  let raw = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    raw += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(raw);
}

window.engine = engine;
window.bench = {
  packets: [],
  async capture(count) {
    this.packets = [];
    let enough;
    const done = new Promise((resolve) => { enough = resolve; });
    await engine.startCapture((bytes) => {
      this.packets.push(bytes);
      if (this.packets.length === count) enough();
    });
    await done;
    await engine.stopCapture();
    return this.packets.map(toB64);
  },
  async play(streamId, schedule) {
    const items = schedule.map(([slot, id, b64]) => [slot, id, fromB64(b64)]);
    engine.startPlayback(streamId);
    const t0 = performance.now();
    for (const [slot, id, bytes] of items) {
      const wait = t0 + slot * 20 - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      engine.pushPacket(streamId, bytes, id);
    }
    await engine.stopPlayback(streamId);
  },
  played() {
    const chunks = window.pttdTap.played;
    const total = chunks.reduce((n, c) => n + c.length, 0);
    const all = new Float32Array(total);
    let at = 0;
    for (const c of chunks) { all.set(c, at); at += c.length; }
    return toB64(new Uint8Array(all.buffer));
  },
};
window.benchReady = true;
</script>
"""


def make_app() -> web.Application:
    async def test_page(_request: web.Request) -> web.Response:
        return web.Response(text=TEST_PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/test.html", test_page)
    app.router.add_static("/static/", WEB)
    return app


@asynccontextmanager
async def served() -> AsyncIterator[str]:
    """The bench's web app on 127.0.0.1 (a port the OS picks); yields its base URL."""
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def bench_page(
    fake_mic: Path | None = None, options: dict[str, Any] | None = None, *, tap: bool = True
) -> AsyncIterator[Page]:
    """A chromium page on the test page, the tap on unless told (and ``fake_mic`` as its
    microphone), its engine initialised."""
    async with served() as base, chromium(fake_audio=fake_mic) as browser:
        context = await new_context(browser, tls=False)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # ?tap=1 in the URL as well, tap or not: by itself it turns nothing on (the option does).
        query = "tap=1&options=" + quote(json.dumps({**(options or {}), "tap": tap}))
        await page.goto(f"{base}/test.html?{query}")
        try:
            await page.wait_for_function("window.benchReady === true", timeout=LOAD_TIMEOUT_MS)
        except Exception as exc:
            raise AssertionError(f"the bench page did not load: {errors}") from exc
        page.errors = errors  # type: ignore[attr-defined]
        try:
            yield page
        finally:
            await context.close()


# --------------------------------------------------------------------------- signals


def write_wav(path: Path, pcm: Pcm, rate: int) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.ascontiguousarray(pcm, "<i2").tobytes())
    return path


def fake_mic_file(directory: Path, lead_s: float = 0.5, tail_s: float = 1.0) -> Path:
    """The speech sample for Chromium's fake microphone: at its 44.1 kHz (one HQ resampling
    from the 16 kHz original, none in Chromium), with silence before and after."""
    speech = to_pcm(resample(speech_sample(REF_RATE), REF_RATE, FAKE_MIC_RATE))
    lead = np.zeros(round(lead_s * FAKE_MIC_RATE), np.int16)
    tail = np.zeros(round(tail_s * FAKE_MIC_RATE), np.int16)
    return write_wav(directory / "speech-44k.wav", np.concatenate([lead, speech, tail]), 44100)


def b64_packets(packets: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(p).decode("ascii") for p in packets]


def from_b64_packets(texts: Sequence[str]) -> list[bytes]:
    return [base64.b64decode(t) for t in texts]


def floats_from_b64(text: str) -> npt.NDArray[np.float32]:
    return np.frombuffer(base64.b64decode(text), "<f4").copy()


def score_48k(output: npt.NDArray[Any]) -> tuple[float, int]:
    """PESQ WB of a 48 kHz float or int16 ``output`` of the speech sample, aligned by
    cross-correlation as ``pttd bench audio`` does; and the lag in samples."""
    reference = speech_sample(REF_RATE)
    sent = to_pcm(resample(reference, REF_RATE, RATE))
    signal = np.asarray(output)
    if signal.dtype != np.int16:
        signal = to_pcm(np.asarray(signal, np.float64) * 32768.0)
    part, lag = aligned(signal, sent)
    return pesq_wb(reference, resample(part, RATE, REF_RATE)), lag


CAPTURED_JS = """(() => {
  const frames = pttdTap.captured;
  const all = new Float32Array(frames.reduce((n, f) => n + f.length, 0));
  let at = 0;
  for (const f of frames) { all.set(f, at); at += f.length; }
  const bytes = new Uint8Array(all.buffer);
  let raw = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    raw += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(raw);
})()"""


def encoders_on_the_same_input(
    captured: npt.NDArray[Any], browser_decoded: npt.NDArray[Any]
) -> tuple[float, float]:
    """PESQ WB of what the browser's encoder made of the page's captured frames (decoded by
    libopus, as a radio does) and of what the radio's encoder makes of the very same frames,
    both against those frames: the two encoders compared on one input. What the capture itself
    got (on a starved machine Chromium's audio thread can drop input) counts for neither."""
    frames = to_pcm(np.asarray(captured, np.float64) * 32768.0)
    encoder = Encoder(OpusSettings.from_config(AudioConfig()))
    decoder = Decoder(RATE)
    whole = frames[: frames.shape[0] - frames.shape[0] % 960]
    radio = np.concatenate([decoder.decode(encoder.encode(f)) for f in frames_of(whole, 960)])
    reference = resample(whole, RATE, REF_RATE)

    def against_capture(output: npt.NDArray[Any]) -> float:
        signal = np.asarray(output)
        if signal.dtype != np.int16:
            signal = to_pcm(np.asarray(signal, np.float64) * 32768.0)
        part, _ = aligned(signal, whole)
        return pesq_wb(reference, resample(part, RATE, REF_RATE))

    return against_capture(browser_decoded), against_capture(radio)
