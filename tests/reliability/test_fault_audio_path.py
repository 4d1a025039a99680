"""Packet loss and jitter on the audio path: what the listener hears.

Device A talks the shipped speech sample; device B hears it through the fault proxy, first on a
clean link, then with 10 % of the audio frames from the server lost (whole websocket binary
frames, so the framing stays valid and B's jitter buffer sees gaps in the packet ids) and every
chunk delayed by up to 60 ms (in order, as TCP delivers). Figures, printed:

* delivered: packets B received / packets A sent;
* concealed, recovered: B's jitter buffer and decoder filling the gaps (concealment, Opus FEC);
* envelope r: the correlation of the 20 ms loudness envelope of what B played with what A's
  microphone captured, after alignment by cross-correlation (1.0: same shape);
* PESQ WB (``pttd.bench.audio.pesq_wb``) when the ``pesq`` extra is installed, else left out.

Asserted, generously (a loaded CI machine is noisy): the clean link delivers every packet and the
envelope matches closely; the lossy one loses packets, its gaps are concealed or recovered, and
the speech is still there in shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from faultproxy import FaultProxy
from relkit import SAMPLE_RATE, Radio, pair_over_wire, radios_stopped, start_radio
from waits import eventually

from pttd.demo import speech_sample
from pttd.radio.audio import Pcm
from pttd.radio.config import AudioConfig
from pttd.server.app import RoomServer
from pttd.server.registry import Registry

FRAME = SAMPLE_RATE // 50  # 20 ms
LOSS = 0.10
JITTER_S = 0.06


def best_lag(heard: npt.NDArray[np.float64], sent: npt.NDArray[np.float64]) -> int:
    size = 1 << (heard.shape[0] + sent.shape[0] - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(heard, size) * np.conj(np.fft.rfft(sent, size)), size)
    return int(np.argmax(corr[: heard.shape[0]]))


def envelope(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    frames = x[: x.shape[0] // FRAME * FRAME].reshape(-1, FRAME)
    out: npt.NDArray[np.float64] = np.sqrt(np.mean(frames**2, axis=1))
    return out


def measure(sent: Pcm, heard: Pcm) -> dict[str, Any]:
    s = sent.astype(np.float64)
    h = heard.astype(np.float64)
    lag = best_lag(h, s)
    part = np.zeros_like(s)
    got = h[lag : lag + s.shape[0]]
    part[: got.shape[0]] = got
    r = float(np.corrcoef(envelope(s), envelope(part))[0, 1])
    figures: dict[str, Any] = {"envelope_r": round(r, 3), "lag_ms": round(lag / SAMPLE_RATE * 1e3)}
    try:
        from pttd.bench.audio import pesq_wb

        figures["pesq_wb"] = round(pesq_wb(sent, part), 2)
    except Exception as exc:  # pesq not installed, or the helper changed: the figure is optional
        figures["pesq_wb"] = f"n/a ({type(exc).__name__})"
    return figures


async def speaker_plays(radio: Radio, seconds: float) -> None:
    """Wait until the device's speaker has played ``seconds`` more (its own audio clock)."""
    speaker = radio.sim.speaker
    blocks = speaker.blocks + round(seconds / speaker.period)
    await eventually(lambda: speaker.blocks >= blocks, what=f"{seconds} s played")


async def one_talk(a: Radio, b: Radio, speech: Pcm) -> dict[str, Any]:
    await speaker_plays(b, 0.4)  # B's 'connected' tone plays out
    b.sim.speaker.clear()
    sent0 = a.sim.device.counters.packets_sent
    received0 = b.sim.device.counters.packets_received
    stats0 = b.sim.device.mixer.stats
    mic = a.sim.mic
    a.sim.button.press()
    # The whole speech and 0.3 s more go into A's microphone (it starts over at each opening).
    spoken = speech.shape[0] + round(0.3 * SAMPLE_RATE)
    await eventually(lambda: mic.is_open and mic.position >= spoken, what="the speech spoken")
    a.sim.button.release()
    await a.wait_mic_closed()
    mixer = b.sim.device.mixer
    await eventually(
        lambda: mixer.stats.played > stats0.played and not mixer.stats.streams,
        what="B's stream played out",
    )
    await speaker_plays(b, 0.2)  # and what followed it
    stats = mixer.stats
    sent = a.sim.device.counters.packets_sent - sent0
    received = b.sim.device.counters.packets_received - received0
    return {
        "sent": sent,
        "received": received,
        "delivered": round(received / sent, 3) if sent else 0.0,
        "played": stats.played - stats0.played,
        "concealed": stats.concealed - stats0.concealed,
        "recovered": stats.recovered - stats0.recovered,
        **measure(speech, b.sim.speaker.recording()),
    }


async def test_loss_and_jitter_on_the_listener_path(
    tmp_path: Path, registry: Registry, server: RoomServer
) -> None:
    speech = speech_sample(SAMPLE_RATE)
    audio = AudioConfig(sample_rate=SAMPLE_RATE, volume=87)  # default bitrate, FEC on
    async with FaultProxy(server.port, seed=11) as proxy:
        a = await start_radio(
            tmp_path, await pair_over_wire(server.url, registry, "talker"), mic=speech, audio=audio
        )
        b = await start_radio(
            tmp_path,
            await pair_over_wire(server.url, registry, "listener"),
            url=proxy.url,
            audio=audio,
        )
        async with radios_stopped([a, b]):
            await a.wait_online()
            await b.wait_online()
            clean = await one_talk(a, b, speech)

            proxy.lose_audio(LOSS)
            proxy.jitter(0.0, JITTER_S)
            connects = b.connects
            proxy.drop()  # B reconnects through the lossy, jittery path
            await b.wait_reconnected(connects)
            lossy = await one_talk(a, b, speech)
    impaired = f"{LOSS:.0%} loss + {JITTER_S * 1e3:.0f} ms jitter"
    print(f"\naudio path, clean: {clean}\naudio path, {impaired}: {lossy}")

    assert clean["sent"] > 200 and clean["received"] == clean["sent"]
    assert clean["envelope_r"] > 0.8
    assert proxy.filters and sum(f.dropped for f in proxy.filters) > 0
    assert 0 < lossy["received"] < lossy["sent"]
    assert lossy["concealed"] + lossy["recovered"] > 0
    assert lossy["envelope_r"] > 0.5
